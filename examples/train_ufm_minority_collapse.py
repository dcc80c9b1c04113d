"""Minority collapse in the unconstrained-features model, and AllNC undoing it (CPU, about 2 min).

    python examples/train_ufm_minority_collapse.py [--out runs/ufm_demo]

Trains the bundled ``ufm_lt_r100_ce`` and ``ufm_lt_r100_allnc`` configs (10 classes, 500 ... 5
samples, one free 32-d feature per sample, SGD with weight decay, 200 epochs; docs/ALLNC.md) with
the real training loop,
then reads each run's last feature dump with ``nctools`` and prints the tail classes' mean pairwise
angle of the classifier rows and of the centred class means against the simplex-ETF optimum.
Under CE with weight decay the rare classes' rows and means are squeezed together (Fang et al.
2021, "complete minority collapse"); AllNC's P2P on the batch means and its two-head re-balancing
branch restore the ETF angles.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

import nctools
from allnc_train.cli import CONFIG_DIR
from allnc_train.config import load_config
from allnc_train.train import train
from nctools.core.geometry import icpa_optimum_deg
from nctools.io import layout


def mean_angle_deg(vectors: torch.Tensor) -> float:
    v = F.normalize(vectors.double(), dim=1)
    i, j = torch.triu_indices(len(v), len(v), 1)
    return torch.rad2deg(torch.acos((v @ v.T)[i, j].clamp(-1, 1))).mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ufm_demo")
    args = p.parse_args()
    print(f"simplex-ETF optimum: {icpa_optimum_deg(10):.2f} degrees")
    print(f"{'method':8s} {'rows, 5 rarest':>15s} {'means, 5 rarest':>16s} {'nctools tail rows':>18s} "
          f"{'tail means':>11s} {'few-shot acc':>13s}")
    for method in ("ce", "allnc"):
        out = Path(args.out) / method
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(CONFIG_DIR / f"ufm_lt_r100_{method}.yaml", ["run.progress=false"])
        record = train(cfg, out)
        # The dump's path from the run folder's layout, never from run.json (which could point anywhere).
        dump = nctools.load_dump(layout.dump_path(out, "train", record["epochs"][-1]["epoch"], cfg.run.dump_format))
        means = torch.stack([dump.features[dump.labels == c].mean(0) for c in range(dump.num_classes)])
        centred = means - means.mean(0)
        summary = nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias,
                                  class_counts=dump.class_counts).summary
        print(f"{method:8s} {mean_angle_deg(dump.weight[5:]):15.1f} {mean_angle_deg(centred[5:]):16.1f} "
              f"{summary['tail_icpa_mean_deg_classifier']:18.1f} {summary['tail_icpa_mean_deg_means']:11.1f} "
              f"{record['epochs'][-1]['eval_few']:13.1f}")


if __name__ == "__main__":
    main()
