"""What each AllNC component is for, one test each (docs/ALLNC.md): HyCon pulls a sample toward its
class and weighs classes equally, P2P's gradient reaches the batch features and the rows, GBBN's
re-balancing branch trains the encoder less and less (eta) and its head in full."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from allnc_train.config import resolve
from allnc_train.methods import build_model
from allnc_train.methods.losses import batch_class_means, class_balanced_weights, hycon_loss, p2p_loss
from allnc_train.schema import ConfigError
from nctools.core.geometry import simplex_etf
from tests.helpers.objectives import after_step, step_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(method: str = "allnc", *over: str):
    base = {"data": {"dataset": "synthetic", "num_classes": 4}, "model": {"arch": "ufm", "feature_dim": 6,
            "proj_hidden": 8, "proj_dim": 4}, "method": {"name": method}, "hycon": {"views": 1}}
    return resolve(base, list(over))


# ----------------------------------------------------------------------------- HyCon

@pytest.mark.parametrize("balanced", [False, True])
def test_hycon_gradient_pulls_a_sample_toward_its_class(balanced):
    C, p = 4, 8
    E = simplex_etf(C, p, dtype=torch.float32)
    labels = torch.cat([torch.tensor([0]), torch.arange(12) % C])
    # a class-0 probe halfway to class 1, the other samples on their class prototypes
    feats = torch.cat([(E[0] + E[1])[None] / 2, E[labels[1:]]]).requires_grad_(True)
    hycon_loss(feats, feats, labels, E, 0.1, balanced=balanced).backward()
    probe = feats.detach()[0] - 0.5 * feats.grad[0]  # one gradient step
    cos = lambda h, c: F.cosine_similarity(h, E[c], dim=0).item()  # noqa: E731
    assert cos(probe, 0) > cos(feats.detach()[0], 0) + 0.01  # toward its own class
    assert cos(probe, 1) < cos(feats.detach()[0], 1) - 0.01  # away from the class it strayed to


def test_hycon_class_balanced_weighting_gives_a_rare_class_the_weight_of_a_frequent_one():
    # a batch of 30 samples of class 0 and 1 of class 1, plus the two prototypes as columns
    labels = torch.tensor([0] * 30 + [1])
    columns = torch.cat([labels, torch.arange(2)])
    valid = torch.ones(31, 33, dtype=torch.bool)
    valid[:, :31].fill_diagonal_(False)
    w = class_balanced_weights(valid, columns, 2)
    for row in (0, 30):  # an anchor of the frequent class and the rare class's only sample
        per_class = [w[row, columns == c].sum().item() for c in (0, 1)]
        assert per_class == pytest.approx([1.0, 1.0])  # each class weighs 1 in the denominator
    # equal similarities: the plain denominator gives class 0 thirty times class 1's share, BCL's the same share
    a = torch.ones(31, 4)
    protos = torch.ones(2, 4)
    plain = hycon_loss(a, a, labels, protos, 1.0, balanced=False)
    bcl = hycon_loss(a, a, labels, protos, 1.0, balanced=True)
    assert plain.item() == pytest.approx(math.log(32))  # 32 equal terms in the denominator
    assert bcl.item() == pytest.approx(math.log(2))  # two classes of weight 1 each


def test_hycon_in_the_objective_acts_on_h_with_both_branches_as_anchors():
    torch.manual_seed(0)
    cfg = _cfg("allnc", "p2p.enabled=false", "gbbn.encoder_grad=full")
    model = build_model(cfg, 4, 6)
    assert model.projector is None  # feature_share 1: on h alone, no projection heads
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    batch, rebal = (torch.arange(6)[:, None], y), (torch.tensor([[3], [5]]), torch.tensor([1, 2]))
    _, parts, _ = step_loss(model, cfg, batch, rebal, 1.0)
    assert "hycon_h" in parts and "hycon_z" not in parts
    # at eta = 1 the re-balancing CE is weighted 0, so samples 3 and 5 get their extra gradient from HyCon alone
    loss, _, _ = step_loss(model, cfg, batch, rebal, 1.0)
    loss.backward()
    with_rebal = model.backbone.table.grad[[3, 5]].clone()
    model.zero_grad()
    loss, _, _ = step_loss(model, _cfg("allnc", "p2p.enabled=false", "hycon.rebal_anchors=false",
                                       "gbbn.encoder_grad=full"), batch, rebal, 1.0)
    loss.backward()
    assert not torch.allclose(with_rebal, model.backbone.table.grad[[3, 5]])
    cfg = _cfg("allnc", "hycon.feature_share=0.5")
    assert build_model(cfg, 4, 6).projector is not None


# ----------------------------------------------------------------------------- P2P

def test_p2p_batch_means_carry_gradient_to_the_batch_features_and_the_rows():
    torch.manual_seed(0)
    W = torch.randn(5, 8, requires_grad=True)
    running = torch.randn(5, 8, requires_grad=True)  # stands in for the buffer: absent classes, detached
    feats = torch.randn(12, 8, requires_grad=True)
    labels = torch.arange(12) % 4  # class 4 absent from the batch
    means, known = batch_class_means(feats, labels, running, torch.ones(5, dtype=torch.bool))
    assert torch.allclose(means[0], feats[labels == 0].mean(0)) and torch.equal(means[4], running[4].detach())
    loss, _ = p2p_loss(W, means - means.mean(0))
    loss.backward()
    assert running.grad is None and W.grad.abs().sum() > 0
    assert (feats.grad.abs().sum(1) > 0).all()  # every batch feature gets a gradient, not a tenth of one


def test_p2p_in_the_objective_reaches_features_and_the_inference_rows():
    torch.manual_seed(0)
    cfg = _cfg("allnc", "hycon.enabled=false", "gbbn.enabled=false")
    model = build_model(cfg, 4, 6)
    with torch.no_grad():
        model.classifier.weight.zero_()  # CE's gradient into the features is then zero: only P2P's is left
        model.classifier.bias.zero_()
    model.class_means.normal_()
    model.seen.fill_(True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    _, parts, _ = step_loss(model, cfg, (torch.arange(6)[:, None], y), None, 1.0)
    model.classifier.weight.data.normal_()
    loss, parts, _ = step_loss(model, cfg, (torch.arange(6)[:, None], y), None, 1.0)
    loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert (model.backbone.table.grad.abs().sum(1) > 0).all()


def test_p2p_running_variant_is_still_there():
    cfg = _cfg("allnc", "p2p.means=running", "hycon.enabled=false")
    model = build_model(cfg, 4, 6)
    y = torch.tensor([0, 1, 2, 3])
    loss, parts, stats = step_loss(model, cfg, (torch.arange(4)[:, None], y), (torch.arange(4)[:, None], y), 0.5)
    assert "p2p" in parts
    after_step(model, cfg, stats)
    assert model.seen.all()


# ----------------------------------------------------------------------------- GBBN

def test_gbbn_rebalancing_gradient_into_the_encoder_scales_with_eta_and_into_its_head_does_not():
    cfg = _cfg("allnc", "hycon.enabled=false", "p2p.enabled=false")
    torch.manual_seed(0)
    model = build_model(cfg, 4, 6)
    with torch.no_grad():
        model.head_delta.weight.normal_()
    conv = (torch.tensor([[4], [5]]), torch.tensor([0, 1]))  # samples 4, 5 in the conventional branch
    rebal = (torch.arange(4)[:, None], torch.tensor([0, 1, 2, 3]))  # samples 0..3 in the re-balancing one
    # each branch's CE alone, unscaled: its gradient into its samples' features and into the head difference D
    table, D = model.backbone.table, model.head_delta.weight
    ce_c = F.cross_entropy(model.classify_branch(model.features(conv[0][:, 0]), "conventional"), conv[1])
    ce_r = F.cross_entropy(model.classify_branch(model.features(rebal[0][:, 0]), "rebalancing"), rebal[1])
    c_enc, c_head = torch.autograd.grad(ce_c, [table, D])
    r_enc, r_head = torch.autograd.grad(ce_r, [table, D])
    for eta in (0.8, 0.5, 0.2):
        model.zero_grad()
        loss, _, _ = step_loss(model, cfg, conv, rebal, eta)
        loss.backward()
        # the re-balancing samples' features: (1 - eta) x eta x the branch's gradient (eta(t) on the encoder side)
        assert torch.allclose(table.grad[:4], (1 - eta) * eta * r_enc[:4], atol=1e-6)
        assert torch.allclose(table.grad[4:], eta * c_enc[4:], atol=1e-6)
        # the heads: each branch's loss weight, and nothing more (the re-balancing head is not scaled by eta)
        assert torch.allclose(D.grad, eta * c_head + (1 - eta) * r_head, atol=1e-6)
    full = _cfg("allnc", "hycon.enabled=false", "p2p.enabled=false", "gbbn.encoder_grad=full")
    model.zero_grad()
    loss, _, _ = step_loss(model, full, conv, rebal, 0.5)
    loss.backward()
    assert torch.allclose(table.grad[:4], 0.5 * r_enc[:4], atol=1e-6)  # unscaled when switched off
    assert _cfg("bbn").gbbn.encoder_grad == "full"


def test_gbbn_two_heads_average_to_the_inference_classifier():
    cfg = _cfg("allnc")
    model = build_model(cfg, 4, 6)
    with torch.no_grad():
        model.head_delta.weight.normal_()
        model.head_delta.bias.normal_()
    h = torch.randn(3, 6)
    mean = (model.classify_branch(h, "conventional") + model.classify_branch(h, "rebalancing")) / 2
    assert torch.allclose(mean, model.classify(h), atol=1e-6)
    assert model.weight is model.classifier.weight  # what dumps store and nctools measures
    one = build_model(_cfg("allnc", "gbbn.heads=1"), 4, 6)
    assert one.head_delta is None and torch.equal(one.classify_branch(h, "rebalancing"), one.classify(h))
    assert not hasattr(build_model(_cfg("bbn"), 4, 6), "head_delta")  # bbn: BBN's own model, one classifier
    with pytest.raises(ConfigError, match="gbbn.heads"):
        _cfg("etf", "gbbn.enabled=true", "gbbn.heads=2")


# ----------------------------------------------------------------------------- the controls

def _image_cfg(*over: str):
    return resolve({"data": {"dataset": "cifar10"}, "method": {"name": "allnc"},
                    "model": {"proj_hidden": 8, "proj_dim": 4}}, list(over))


def test_no_hycon_views_control_takes_ce_on_every_view_with_the_views_made():
    from allnc_train.schema import conventional_views

    torch.manual_seed(0)
    cfg = _image_cfg("hycon.enabled=false", "hycon.views_to_ce=true", "gbbn.enabled=false", "p2p.enabled=false")
    assert conventional_views(cfg) == 2  # HyCon's views are made though its loss is off
    assert conventional_views(_image_cfg("hycon.enabled=false")) == 1
    model = build_model(cfg, 10, 4).eval()  # eval: batch norm does not mix the views' statistics
    x, y = torch.randn(4, 2, 3, 32, 32), torch.tensor([0, 3, 3, 7])
    loss, parts, _ = step_loss(model, cfg, (x, y))
    assert "hycon" not in parts
    per_view = [F.cross_entropy(model(x[:, v]), y) for v in range(2)]
    assert loss.item() == pytest.approx(sum(per_view).item() / 2, rel=1e-5)  # every view is a CE sample
    only_first, _, _ = step_loss(model, _image_cfg("hycon.enabled=false", "gbbn.enabled=false", "p2p.enabled=false"),
                                 (x[:, :1], y))
    assert only_first.item() == pytest.approx(per_view[0].item(), rel=1e-5)


def test_views_to_ce_is_refused_where_views_are_one_vector_or_the_method_has_its_own_loss():
    with pytest.raises(ConfigError, match="hycon.views_to_ce"):
        _cfg("allnc", "hycon.enabled=false", "hycon.views_to_ce=true")
    with pytest.raises(ConfigError, match="hycon.views_to_ce"):
        _image_cfg("method.name=bbn", "hycon.enabled=false", "p2p.enabled=false", "hycon.views_to_ce=true")


def test_p2p_align_only_control_leaves_the_cosine_and_norm_terms_out():
    torch.manual_seed(0)
    cfg = _cfg("allnc", "hycon.enabled=false", "gbbn.enabled=false", "p2p.angle_weight=0", "p2p.norm_weight=0")
    model = build_model(cfg, 4, 8)
    batch = (torch.arange(8)[:, None], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    full, parts, _ = step_loss(model, _cfg("allnc", "hycon.enabled=false", "gbbn.enabled=false"), batch)
    align, align_parts, _ = step_loss(model, cfg, batch)
    assert align_parts["p2p"].item() == pytest.approx(align_parts["p2p_align"].item(), abs=1e-6)
    assert parts["p2p"].item() > align_parts["p2p"].item()  # the angle and norm terms were in the full loss


def test_bundled_controls_are_the_recipe_with_only_their_keys_changed():
    from allnc_train import make_configs
    from allnc_train.methods.allnc import CONTROLS
    from allnc_train.schema import flatten

    blocks = make_configs.method_blocks()
    base = flatten(blocks["allnc"][1])
    for control, (_, changes) in CONTROLS.items():
        block = flatten(blocks[f"allnc_{control}"][1])
        assert {k: v for k, v in block.items() if base[k] != v} == dict(changes)
