"""The two baselines named after their papers: BBN (allnc_train.methods.bbn) and the fixed ETF with the
dot-regression loss (allnc_train.methods.etf_dr)."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from allnc_train.config import resolve
from allnc_train.methods.bbn import BBNModel, bbn_alpha, bbn_backbone, bbn_loss, build_bbn_model
from allnc_train.methods.etf_dr import NormalisedFeatures, build_etf_dr_model, dot_regression_loss, etf_dr_loss
from allnc_train.models import FreeFeatures, NCModel, ResNetCifar, torchvision_backbone
from allnc_train.schedules import gbbn_eta
from nctools.core.geometry import simplex_etf

pytestmark = pytest.mark.usefixtures("one_torch_thread")

C = 4


def _tiny_bbn(seed: int = 0, mix_scale: float = 2.0) -> BBNModel:
    torch.manual_seed(seed)
    return BBNModel(bbn_backbone(ResNetCifar(1, 1), mix_scale), C)  # 3 basic blocks; d = 64


def _batches(seed: int = 1, n: int = 6, views: int = 2):
    g = torch.Generator().manual_seed(seed)
    xc = torch.randn(n, views, 3, 8, 8, generator=g)
    xr = torch.randn(n, 1, 3, 8, 8, generator=g)
    yc = torch.randint(0, C, (n,), generator=g)
    yr = torch.randint(0, C, (n,), generator=g)
    return (xc, yc), (xr, yr)


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def _all_zero(grads: list[torch.Tensor]) -> bool:
    return all(bool((g == 0).all()) for g in grads)


# ---------------------------------------------------------------------------------------------
# BBN
# ---------------------------------------------------------------------------------------------

def test_bbn_inference_feature_is_what_the_classifier_reads():
    model = _tiny_bbn().eval()
    x = torch.randn(3, 3, 8, 8)
    h = model.features(x)
    assert h.shape == (3, 128) and model.feature_dim == 128 and model.backbone.branch_dim == 64
    assert model.weight.shape == (C, 128) and model.bias.shape == (C,)
    assert torch.equal(model(x), model.classify(h))
    f_c, f_r = model.backbone.conventional(x), model.backbone.rebalancing(x)
    assert torch.allclose(h, torch.cat([f_c, f_r], 1))  # official: 2 * cat(0.5 f_c, 0.5 f_r)
    assert torch.allclose(model.mix(f_c, f_r, 0.5), h)
    paper = _tiny_bbn(mix_scale=1.0).eval()
    assert torch.allclose(paper.features(x), torch.cat([0.5 * paper.backbone.conventional(x),
                                                       0.5 * paper.backbone.rebalancing(x)], 1))
    # nn.Sequential(backbone, linear head) is the whole inference network (what nctools' extractor runs)
    head = torch.nn.Linear(128, C)
    head.load_state_dict({"weight": model.weight, "bias": model.bias})
    assert torch.allclose(torch.nn.Sequential(model.backbone, head)(x), model(x))
    assert {"class_means", "prototypes", "seen", "proto_seen"} <= set(model.state_dict())
    assert model.class_means.shape == (C, 128)


def test_bbn_split_keeps_the_backbone_and_adds_an_independent_block():
    torch.manual_seed(0)
    net = ResNetCifar(1, 1).eval()
    x = torch.randn(2, 3, 8, 8)
    plain = net(x)
    bb = bbn_backbone(net).eval()
    assert torch.allclose(bb.conventional(x), plain, atol=1e-6)  # conventional branch = the original network
    assert len(bb.shared.layers) == 2  # the last basic block of stage 3 left the shared layers
    conv, rebal = dict(bb.conventional_block.named_parameters()), dict(bb.rebalancing_block.named_parameters())
    assert conv.keys() == rebal.keys() and not torch.equal(conv["conv1.weight"], rebal["conv1.weight"])
    shared_ids = {id(p) for p in bb.shared.parameters()}
    assert not shared_ids & {id(p) for p in [*conv.values(), *rebal.values()]}


@pytest.mark.parametrize("alpha, live, dead", [(1.0, "conventional_block", "rebalancing_block"),
                                               (0.0, "rebalancing_block", "conventional_block")])
def test_bbn_loss_at_the_ends_of_the_schedule(alpha, live, dead):
    model = _tiny_bbn()
    batch, rebal = _batches()
    loss, parts = bbn_loss(model, batch, rebal, alpha)
    loss.backward()
    assert _all_zero(_grads(getattr(model.backbone, dead)))  # no gradient into the other branch's block
    assert not _all_zero(_grads(getattr(model.backbone, live)))
    W, b, d = model.weight.detach(), model.bias.detach(), 64
    with torch.no_grad():
        if alpha == 1.0:  # CE of the conventional branch alone: z = W_c (2 f_c) + b
            z = 2 * model.backbone.conventional(batch[0][:, 0]) @ W[:, :d].T + b
            expected = F.cross_entropy(z, batch[1])
        else:  # CE of the re-balancing branch alone
            z = 2 * model.backbone.rebalancing(rebal[0][:, 0]) @ W[:, d:].T + b
            expected = F.cross_entropy(z, rebal[1])
    assert torch.allclose(loss, expected, atol=1e-6)
    other = parts["ce_rebal"] if alpha == 1.0 else parts["ce"]
    assert torch.isfinite(other) and set(parts) == {"ce", "ce_rebal", "loss"}


def test_bbn_shared_layers_learn_from_both_branches():
    model, alpha = _tiny_bbn(), 0.7
    (xc, yc), (xr, yr) = _batches()
    loss, _ = bbn_loss(model, (xc, yc), (xr, yr), alpha)
    loss.backward()
    total = _grads(model.backbone.shared)
    model.zero_grad(set_to_none=True)
    # the same loss by hand; split the shared layers' gradient into the part through each branch
    shared = list(model.backbone.shared.parameters())
    f_c, f_r = model.backbone.conventional(xc[:, 0]), model.backbone.rebalancing(xr[:, 0])
    z = model.classify(model.mix(f_c, f_r, alpha))
    by_hand = alpha * F.cross_entropy(z, yc) + (1 - alpha) * F.cross_entropy(z, yr)
    assert torch.allclose(by_hand, loss)
    g_c, g_r = torch.autograd.grad(by_hand, [f_c, f_r], retain_graph=True)
    via_c = torch.autograd.grad(f_c, shared, g_c, retain_graph=True)
    via_r = torch.autograd.grad(f_r, shared, g_r)
    assert not _all_zero(list(via_c)) and not _all_zero(list(via_r))
    for t, a, b in zip(total, via_c, via_r):
        assert torch.allclose(t, a + b, atol=1e-5, rtol=1e-4)


def test_bbn_alpha_is_the_parabola():
    assert [bbn_alpha(t, 10) for t in range(10)] == [gbbn_eta(t, 10, 2.0) for t in range(10)]
    assert bbn_alpha(0, 10) == 1.0 and bbn_alpha(5, 10) == 0.75
    with pytest.raises(ValueError, match="alpha"):
        bbn_loss(_tiny_bbn(), *_batches(), 1.5)


def test_bbn_state_dict_round_trip_gives_identical_logits():
    model = _tiny_bbn(seed=0)
    batch, rebal = _batches()
    for _ in range(2):  # move the weights and the BatchNorm statistics away from their initial values
        model.zero_grad(set_to_none=True)
        bbn_loss(model, batch, rebal, 0.6)[0].backward()
        with torch.no_grad():  # plain gradient steps (torch.optim's first step imports torch._dynamo: seconds)
            for p in model.parameters():
                p -= 0.1 * p.grad
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = _tiny_bbn(seed=5)
    again.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(model.eval()(x), again.eval()(x))


def test_bbn_free_features_with_identity_branch_maps():
    cfg = resolve({"method": {"name": "bbn"}, "model": {"arch": "ufm", "feature_dim": 3},
                   "data": {"dataset": "synthetic", "num_classes": C}})
    torch.manual_seed(0)
    model = build_bbn_model(cfg, C, num_samples=7)
    idx = torch.tensor([6, 0, 2])
    t = model.backbone.shared.table[idx]
    assert torch.equal(model.backbone.conventional(idx), t) and torch.equal(model.backbone.rebalancing(idx), t)
    assert torch.allclose(model.features(idx), torch.cat([t, t], 1)) and model(idx).shape == (3, C)
    assert torch.equal(model.backbone.conventional_block.weight, torch.eye(3))
    loss, _ = bbn_loss(model, (idx[:, None], torch.tensor([0, 1, 2])), (idx.flip(0)[:, None], torch.tensor([3, 3, 1])),
                       0.5)
    loss.backward()
    assert model.backbone.shared.table.grad[idx].abs().sum() > 0
    torch.manual_seed(1)
    again = build_bbn_model(cfg, C, num_samples=7)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(idx), model(idx))
    assert "backbone.shared.table" in model.state_dict()


def test_bbn_torchvision_resnet50():
    x = torch.randn(1, 3, 32, 32)
    torch.manual_seed(0)
    with torch.no_grad():
        plain = torchvision_backbone("resnet50").eval()(x)
    cfg = resolve({"method": {"name": "bbn"}, "model": {"arch": "resnet50"}})
    torch.manual_seed(0)  # the same draws: the conventional branch is that very network
    model = build_bbn_model(cfg, C, num_samples=1).eval()
    bb = model.backbone
    assert model.feature_dim == 4096 and bb.branch_dim == 2048 and model.weight.shape == (C, 4096)
    assert len(bb.shared.layer4) == 2  # layer4[-1] became the two branch blocks
    assert type(bb.conventional_block).__name__ == "Bottleneck" and bb.rebalancing_block.conv1.in_channels == 2048
    extra = sum(p.numel() for p in bb.rebalancing_block.parameters())
    assert sum(p.numel() for p in bb.parameters()) == 23_508_032 + extra  # torchvision ResNet-50 without fc
    with torch.no_grad():
        assert torch.allclose(bb.conventional(x), plain, atol=1e-5)
        assert model.features(x).shape == (1, 4096) and torch.equal(model(x), model.classify(model.features(x)))
    with pytest.raises(ValueError, match="method bbn has a model and loss of its own: set hycon.enabled to false"):
        resolve({"method": {"name": "bbn"}, "hycon": {"enabled": True}})  # the config refuses it first


# ---------------------------------------------------------------------------------------------
# Fixed ETF + dot-regression loss
# ---------------------------------------------------------------------------------------------

def _dr_bruteforce(h, y, W, feature_norm=None):
    """Float64 loops over samples, from the definition: (loss, d loss / d h)."""
    B = h.shape[0]
    loss, grad = 0.0, torch.zeros_like(h, dtype=torch.float64)
    for i in range(B):
        w = W[y[i]].double()
        hi = h[i].double()
        e_w = float(torch.sqrt(sum(w[k] ** 2 for k in range(len(w)))))
        e_h = float(torch.sqrt(sum(hi[k] ** 2 for k in range(len(hi))))) if feature_norm is None else feature_norm
        dot = float(sum(w[k] * hi[k] for k in range(len(w))))
        loss += (dot - e_w * e_h) ** 2 / (2 * e_w * e_h) / B
        grad[i] = (dot - e_w * e_h) / (e_w * e_h) * w / B  # the norms are constants for the gradient
    return loss, grad


def test_dr_zero_at_the_aligned_optimum_positive_elsewhere():
    W = simplex_etf(C, 6, dtype=torch.float32)
    y = torch.tensor([0, 1, 3, 3])
    assert float(dot_regression_loss(W[y], y, W)) < 1e-7
    assert float(dot_regression_loss(2.5 * W[y], y, W, feature_norm=2.5)) < 1e-6
    assert float(dot_regression_loss(2.5 * W[y], y, W, feature_norm=1.0)) > 0.1
    h = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    assert float(dot_regression_loss(h, y, W)) > 0
    assert float(dot_regression_loss(W[[1, 0, 2, 0]], y, W)) > 0  # another class's vertex


@pytest.mark.parametrize("feature_norm", [None, 2.0])
def test_dr_value_and_gradient_match_the_bruteforce_twin(feature_norm):
    g = torch.Generator().manual_seed(3)
    W = 1.5 * simplex_etf(C, 5, dtype=torch.float64)
    y = torch.tensor([2, 0, 2, 1, 3])
    h = torch.randn(5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    loss = dot_regression_loss(h, y, W, feature_norm=feature_norm)
    loss.backward()
    ref_loss, ref_grad = _dr_bruteforce(h.detach(), y, W, feature_norm)
    assert abs(loss.item() - ref_loss) < 1e-12
    assert torch.allclose(h.grad, ref_grad, atol=1e-12)
    w_hat = F.normalize(W[y], dim=1)  # the gradient lies along the target row: nothing pushes off other rows
    residual = h.grad - (h.grad * w_hat).sum(1, keepdim=True) * w_hat
    assert residual.abs().max() < 1e-12


def test_dr_fixed_rows_get_no_gradient_and_the_model_follows_the_official_head():
    W = simplex_etf(C, 6, dtype=torch.float32).requires_grad_(True)
    h = torch.randn(3, 6, requires_grad=True)
    dot_regression_loss(h, torch.tensor([0, 1, 2]), W).backward()
    assert W.grad is None and h.grad is not None
    cfg = resolve({"method": {"name": "etf"}, "model": {"arch": "ufm", "feature_dim": 6},
                   "data": {"dataset": "synthetic", "num_classes": C}})
    torch.manual_seed(0)
    model = build_etf_dr_model(cfg, C, num_samples=9)
    assert isinstance(model, NCModel) and isinstance(model.backbone, NormalisedFeatures)
    assert model.classifier is None and model.bias is None
    assert "etf_weight" not in dict(model.named_parameters())
    idx = torch.arange(9)
    loss, parts = etf_dr_loss(model, (idx[:, None], idx % C))
    loss.backward()
    assert model.backbone.backbone.table.grad.abs().sum() > 0 and model.backbone.bn.weight.grad is not None
    assert set(parts) == {"dr", "loss"}
    model.eval()
    h = model.features(idx)
    assert torch.allclose(h.norm(dim=1), torch.ones(9), atol=1e-6)  # BN, then L2 normalisation
    assert torch.equal(model(idx), model.classify(h))
    assert torch.allclose(model(idx), h @ model.weight.T)
    again = build_etf_dr_model(cfg, C, num_samples=9)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.eval()(idx), model(idx))


def test_dr_loss_refuses_a_learnable_classifier():
    model = NCModel(FreeFeatures(4, 3), C)
    with pytest.raises(ValueError, match="fixed ETF"):
        etf_dr_loss(model, (torch.arange(4)[:, None], torch.arange(4)))
