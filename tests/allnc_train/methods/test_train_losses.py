"""The losses, schedules and the per-step objective: values at known points and gradient routing."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from allnc_train.config import resolve
from allnc_train.methods import build_model
from allnc_train.methods.losses import ema_class_means, hycon_loss, logit_adjusted_ce, p2p_loss
from allnc_train.schedules import gbbn_eta, learning_rate
from allnc_train.schema import OptimConfig
from nctools.core.geometry import simplex_etf
from tests.helpers.objectives import after_step, step_loss


def test_simplex_etf_geometry():
    for C, d in [(10, 9), (10, 64), (100, 128)]:
        E = simplex_etf(C, d, dtype=torch.float32).double()
        G = E @ E.T
        assert torch.allclose(G.diagonal(), torch.ones(C, dtype=torch.float64), atol=1e-6)
        off = G[~torch.eye(C, dtype=torch.bool)]
        assert torch.allclose(off, torch.full_like(off, -1 / (C - 1)), atol=1e-6)
    with pytest.raises(ValueError, match="needs dim"):
        simplex_etf(10, 8, dtype=torch.float32)


# ----------------------------------------------------------------------------- P2P

def test_p2p_is_zero_for_aligned_etf_and_positive_otherwise():
    E = simplex_etf(10, 16, dtype=torch.float32)
    loss, parts = p2p_loss(2.5 * E, 0.3 * E)
    assert loss.item() < 1e-6 and all(v.item() < 1e-6 for v in parts.values())  # float32 round-off
    rotated = torch.roll(E, 1, dims=0)  # still an ETF, but rows and means no longer aligned
    loss, parts = p2p_loss(E, rotated)
    assert parts["p2p_align"].item() > 0.5 and parts["p2p_angle"].item() < 1e-6
    squeezed = E.clone()
    squeezed[5:] = E[5:].mean(0) + 0.1 * E[5:]  # tail rows collapse toward one direction
    assert p2p_loss(squeezed, squeezed)[1]["p2p_angle"].item() > 0.05
    unequal = E * torch.linspace(1, 3, 10)[:, None]
    assert p2p_loss(unequal, unequal)[1]["p2p_norm"].item() > 0.05


def test_p2p_gradients_reach_weight_and_features_not_the_running_means():
    torch.manual_seed(0)
    W = torch.randn(5, 8, requires_grad=True)
    running = torch.randn(5, 8, requires_grad=True)  # stands in for the buffer; must get no gradient
    feats = torch.randn(12, 8, requires_grad=True)
    labels = torch.arange(12) % 4  # class 4 absent from the batch
    means, seen = ema_class_means(running, torch.ones(5, dtype=torch.bool), feats, labels, 0.9)
    loss, _ = p2p_loss(W, means - means.mean(0))
    loss.backward()
    assert W.grad.abs().sum() > 0 and feats.grad.abs().sum() > 0
    assert running.grad is None
    assert torch.equal(means[4], running[4].detach()) and seen.all()


def test_ema_class_means():
    running = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 0.0]])
    seen = torch.tensor([True, True, False])
    feats = torch.tensor([[3.0, 3.0], [2.0, 0.0], [4.0, 2.0]])
    means, now = ema_class_means(running, seen, feats, torch.tensor([0, 2, 2]), momentum=0.5)
    assert torch.allclose(means, torch.tensor([[2.0, 2.0], [5.0, 5.0], [3.0, 1.0]]))
    assert now.tolist() == [True, True, True]


# ----------------------------------------------------------------------------- HyCon

def _views(centres, labels, noise, V=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = centres[labels]  # (B, p)
    return base[:, None, :] + noise * torch.randn(len(labels), V, centres.shape[1], generator=g)


def test_hycon_lower_for_collapsed_than_scattered_classes():
    C, p = 6, 16
    labels = torch.arange(24) % C
    E = simplex_etf(C, p, dtype=torch.float32)
    collapsed = _views(E, labels, noise=0.01)
    g = torch.Generator().manual_seed(1)
    scattered = torch.randn(24, 2, p, generator=g)
    protos_scattered = torch.stack([F.normalize(scattered[labels == c].flatten(0, 1), dim=1).mean(0)
                                    for c in range(C)])
    low = hycon_loss(collapsed, collapsed, labels, E, 0.1)
    high = hycon_loss(scattered, scattered, labels, protos_scattered, 0.1)
    assert low.item() < 0.5 * high.item()
    # Collapsed features are near the optimum: about log(#positives) of the uniform-over-positives floor.
    positives = 2 * 24 // C - 1 + 1
    assert low.item() < math.log(positives) + 0.1


def test_hycon_gradients_reach_anchors_and_prototypes_not_keys():
    torch.manual_seed(0)
    anchors = torch.randn(8, 2, 5, requires_grad=True)
    keys = torch.randn(8, 2, 5, requires_grad=True)
    protos = torch.randn(4, 5, requires_grad=True)
    loss = hycon_loss(anchors, keys, torch.arange(8) % 4, protos, 0.2)
    loss.backward()
    assert anchors.grad.abs().sum() > 0 and keys.grad is None
    assert protos.grad.abs().sum() > 0  # the caller detaches them to make them targets (hycon.prototype_grad)
    flat = hycon_loss(anchors.detach().flatten(0, 1), keys.flatten(0, 1), (torch.arange(8) % 4).repeat_interleave(2),
                      protos, 0.2)
    assert torch.isclose(flat, loss)  # (N, p) with per-row labels is the same loss as (B, V, p)


def test_hycon_ignores_unestimated_prototypes_and_survives_single_samples():
    anchors = torch.randn(3, 2, 4)
    labels = torch.tensor([0, 1, 2])
    valid = torch.tensor([True, False, False])
    a = hycon_loss(anchors, anchors, labels, torch.randn(3, 4), 0.1, valid)
    b = hycon_loss(anchors, anchors, labels, torch.randn(3, 4) * 50, 0.1, valid)
    assert torch.isfinite(a) and not torch.isclose(a, b)  # only the valid prototype (class 0) counts
    one_view = hycon_loss(torch.randn(4, 1, 3), torch.randn(4, 1, 3), torch.arange(4), torch.zeros(4, 3), 0.1,
                          torch.zeros(4, dtype=torch.bool))
    assert one_view.item() == 0.0  # no positives anywhere: nothing to pull


# ----------------------------------------------------------------------------- LA, schedules

def test_logit_adjusted_ce_is_ce_of_shifted_logits():
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 0, 1])
    log_prior = torch.tensor([0.7, 0.2, 0.1]).log()
    assert torch.isclose(logit_adjusted_ce(logits, y, log_prior, 1.5), F.cross_entropy(logits + 1.5 * log_prior, y))


def test_gbbn_eta_and_learning_rate():
    assert gbbn_eta(0, 200, 2) == 1.0 and math.isclose(gbbn_eta(100, 200, 2), 0.75)
    assert math.isclose(gbbn_eta(100, 200, 1), 0.5) and gbbn_eta(199, 200, 4) > gbbn_eta(199, 200, 2)
    c = OptimConfig(epochs=200, lr=0.1, warmup_epochs=5, schedule="step", milestones=[160, 180], step_gamma=0.01)
    assert math.isclose(learning_rate(c, 0, 10), 0.1 / 50)
    assert learning_rate(c, 1599, 10) == 0.1 and math.isclose(learning_rate(c, 1600, 10), 0.001)
    assert math.isclose(learning_rate(c, 1800, 10), 1e-5)
    c = OptimConfig(epochs=10, lr=0.2, warmup_epochs=0, schedule="cosine")
    assert learning_rate(c, 0, 5) == 0.2 and learning_rate(c, 49, 5) < 1e-3


# ----------------------------------------------------------------------------- the objective

def _cfg(method, **over):
    base = {"data": {"dataset": "synthetic", "num_classes": 4}, "model": {"arch": "ufm", "feature_dim": 6,
            "proj_hidden": 8, "proj_dim": 4}, "method": {"name": method}}
    return resolve(base, [f"{k.replace('__', '.')}={v}" for k, v in over.items()])


def _batch(V):
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    return torch.arange(6)[:, None].repeat(1, V), y


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_objective_routes_gradients(share):
    torch.manual_seed(0)
    cfg = _cfg("allnc", hycon__feature_share=share)
    model = build_model(cfg, 4, 6)
    assert (model.projector is not None) == (share < 1) and model.head_delta is not None
    loss, parts, stats = step_loss(model, cfg, _batch(2), _batch(1), 0.7)
    assert {"ce", "hycon", "hycon_h", "ce_rebal", "p2p", "loss"} <= set(parts)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    before = model.class_means.clone()
    after_step(model, cfg, stats)
    assert model.seen.all() and model.proto_seen.all() == (share < 1) and not torch.equal(before, model.class_means)


def test_etf_classifier_is_fixed_and_bbn_mixes_branches():
    cfg = _cfg("etf")
    model = build_model(cfg, 4, 6)
    assert model.classifier is None and "etf_weight" not in dict(model.named_parameters())
    loss, parts, _ = step_loss(model, cfg, _batch(1), None, 1.0)
    loss.backward()
    assert set(parts) == {"ce", "loss"}
    cfg = _cfg("bbn")
    model = build_model(cfg, 4, 6)
    loss, parts, _ = step_loss(model, cfg, _batch(1), _batch(1), 0.25)
    assert torch.isclose(parts["loss"], 0.25 * parts["ce"] + 0.75 * parts["ce_rebal"])
    assert model.projector is None  # no HyCon heads unless HyCon is on
