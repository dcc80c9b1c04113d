"""Evaluation and feature dumps: one no-grad pass gives features, labels and logits."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .models import NCModel


@torch.no_grad()
def collect(model: NCModel, loader: Iterable, device: torch.device, channels_last: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (N, d) float32, labels (N,) int64 and logits (N, C) float32, on the CPU, in loader order.

    In full precision: the dumped features are what NC1..NC4 are measured on.

    ``loader`` yields (x, y) batches, on the CPU (a DataLoader) or already on ``device`` (the batched
    pipeline). Everything stays on ``device`` until one copy of each result to the CPU at the end.
    ``channels_last``: lay image batches out channels-last (as the model is).
    """
    was_training = model.training
    model.eval()
    feats, labels, logits = [], [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4 and x.is_floating_point():
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=False):
            h = model.features(x)
            z = model.classify(h)
        feats.append(h.float())
        logits.append(z.float().to("cpu", non_blocking=True))  # (N, C) can outgrow a GPU (iNaturalist: 14 GB)
        labels.append(y.to(device, non_blocking=True))
    model.train(was_training)
    if not feats:
        return torch.zeros(0, model.feature_dim), torch.zeros(0, dtype=torch.int64), torch.zeros(0, model.num_classes)
    return torch.cat(feats).cpu(), torch.cat(labels).cpu(), torch.cat(logits)


def accuracy_by_group(logits: torch.Tensor, labels: torch.Tensor, groups: Sequence[str]) -> dict[str, float | None]:
    """Top-1 accuracy (percent) overall and for the many / medium / few classes (None if a group is empty).

    Group accuracy averages over the group's samples (the usual LT convention on balanced test sets).

    >>> acc = accuracy_by_group(torch.tensor([[2., 0], [0, 1], [3, 0]]), torch.tensor([0, 1, 1]), ["many", "few"])
    >>> round(acc["top1"], 2), acc["many"], acc["few"], acc["medium"]
    (66.67, 100.0, 50.0, None)
    """
    correct = (logits.argmax(1) == labels).double()
    group_of = [groups[c] for c in labels.tolist()]
    out: dict[str, float | None] = {"top1": 100.0 * correct.mean().item() if len(labels) else None}
    for g in ("many", "medium", "few"):
        mask = torch.tensor([x == g for x in group_of], dtype=torch.bool)
        out[g] = 100.0 * correct[mask].mean().item() if mask.any() else None
    return out


def write_dump(path: Path, features: torch.Tensor, labels: torch.Tensor, model: NCModel, class_counts: Sequence[int],
               dtype: str, metadata: dict) -> Path:
    """A feature dump in nctools' format (docs/DEFINITIONS.md) through ``nctools.save_dump`` (atomic)."""
    from nctools import save_dump

    weight = model.weight.detach().float().cpu()
    bias = None if model.bias is None else model.bias.detach().float().cpu()
    return save_dump(path, features.to(getattr(torch, dtype)), labels, weight=weight, bias=bias,
                     class_counts=torch.tensor(list(class_counts), dtype=torch.int64), metadata=metadata)
