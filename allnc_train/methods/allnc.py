"""AllNC (Zhang, Li, Geng, Chen, "All-around Neural Collapse for Imbalanced Classification",
arXiv 2408.07253): cross-entropy with all three of its parts switched on.

- GBBN, the generalised bilateral-branch schedule: a re-balancing branch (reversed sampler) whose
  share of the loss grows as 1 - eta(t), eta(t) = 1 - (t / T)^gamma; by default two classification
  heads (inference uses their mean) and the re-balancing branch's gradient into the encoder scaled
  by eta(t).
- HyCon, the hybrid contrastive loss (NC1), on the penultimate features with class prototypes.
- P2P, the peer-to-peer loss between class means and classifier rows (NC2, NC3).

The objective is the cross-entropy family's (:mod:`allnc_train.methods.components`, where each part
is described); the bundled configs also train AllNC without each part (``allnc_no_gbbn``, ...).
"""
from __future__ import annotations

from .components import nc_model
from .method import Method
from .plain import CE

__all__ = ["ALLNC"]

# AllNC as we read it (docs/ALLNC.md): every key written out, so a config file says the whole recipe.
RECIPE = {"method": {"name": "allnc"},
          "gbbn": {"enabled": True, "gamma": 2.0, "sampler": "reversed", "heads": 2, "encoder_grad": "eta"},
          "hycon": {"enabled": True, "weight": 1.0, "temperature": 0.1, "views": 2, "prototype_momentum": 0.9,
                    "feature_share": 1.0, "balanced": True, "prototypes": "classifier", "prototype_grad": False,
                    "rebal_anchors": True, "fade": False, "views_to_ce": False},
          "p2p": {"enabled": True, "weight": 1.0, "momentum": 0.9, "means": "batch", "align_weight": 1.0,
                  "angle_weight": 1.0, "norm_weight": 1.0}}

# Controls that separate what each part does from what it costs or optimises (docs/RESULTS.md): each is
# the recipe with the listed keys changed.
CONTROLS = {
    "p2p_align_only": ("P2P keeps only its self-duality term (no cosine or norm targets)",
                       {"p2p.angle_weight": 0.0, "p2p.norm_weight": 0.0}),
    "no_hycon_views": ("HyCon off, its contrastive views still made and each fed to CE (same augmentation and "
                       "compute)", {"hycon.enabled": False, "hycon.views_to_ce": True}),
    "no_decoupling": ("GBBN's sampler and two heads kept, the re-balancing gradient into the encoder not scaled "
                      "by eta(t)", {"gbbn.encoder_grad": "full"}),
    "running_prototypes": ("HyCon's prototypes are running class means of the features, not the classifier rows",
                           {"hycon.prototypes": "running"}),
}

ALLNC = Method("allnc", "AllNC: cross-entropy with GBBN, HyCon and P2P (Zhang et al. 2024)", nc_model,
               CE.build_objective, components={"gbbn": True, "hycon": True, "p2p": True},
               defaults={"gbbn.heads": 2, "gbbn.encoder_grad": "eta"}, recipe=RECIPE,
               ablations=("gbbn", "hycon", "p2p"), controls=CONTROLS)
