"""Write the inputs and expected numbers of tests/nctools/io/test_stored_sources.py.

Run once, from the repository root, with the code whose numbers are to be kept:

    python tests/nctools/io/data/make_stored_sources.py

It writes four kinds of input that ``nctools analyze`` accepts (a dump, a folder of shards, an
allnc_train checkpoint, a ResNet-32 state dict with an image folder) into
``tests/nctools/io/data/stored_sources/`` and the summary each one gives into ``expected.json``. The test
then checks that later code gives the same numbers from the same files.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from click.testing import CliRunner
from PIL import Image

HERE = Path(__file__).resolve().parent / "stored_sources"
sys.path.insert(0, str(HERE.parents[4]))  # the repository root, for tests.helpers

from tests.helpers.cli import make_dump  # noqa: E402


def make_inputs() -> dict:
    import nctools
    from allnc_train.config import load_config
    from allnc_train.data import build_data
    from allnc_train.methods import build_model
    from allnc_train.models import NCModel, ResNetCifar
    from allnc_train.schema import to_dict

    if HERE.exists():
        shutil.rmtree(HERE)
    HERE.mkdir(parents=True)
    dump = make_dump(HERE / "dump.safetensors")
    whole = nctools.load_dump(dump)
    half = whole.num_samples // 2
    for i, part in enumerate((slice(0, half), slice(half, None))):
        nctools.save_dump(HERE / "shards" / f"part-{i:04d}.safetensors", whole.features[part], whole.labels[part],
                          whole.weight, whole.bias, metadata=whole.metadata)

    torch.manual_seed(0)
    cfg = load_config(None, ["data.dataset=synthetic", "model.arch=ufm", "data.num_classes=4", "data.n_max=30",
                             "data.imbalance_ratio=10", "model.feature_dim=6"])
    data = build_data(cfg.data, views=1)
    model = build_model(cfg, data.num_classes, len(data.train_labels))
    ckpt = HERE / "run" / "checkpoints" / "epoch_0003.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"format": "allnc_train.checkpoint/1", "epoch": 3, "config": to_dict(cfg), "model": model.state_dict(),
                "class_counts": data.class_counts, "class_names": data.class_names}, ckpt)

    torch.manual_seed(0)
    torch.save(NCModel(ResNetCifar(5, 1), 3).state_dict(), HERE / "resnet32.pt")
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate("abc"):
        (HERE / "images" / name).mkdir(parents=True)
        for i in range(4):
            image = (torch.rand(32, 32, 3, generator=g) * 80 + 60 * c).to(torch.uint8)
            Image.fromarray(image.numpy()).save(HERE / "images" / name / f"{i}.png")
    return {
        "dump": ["dump.safetensors"],
        "shards": ["shards"],
        "checkpoint": ["run/checkpoints/epoch_0003.pt"],
        "state_dict": ["resnet32.pt", "--arch", "resnet32", "--data", "images", "--device", "cpu"],
    }


def summaries(cases: dict, out: Path) -> dict:
    """``nctools analyze --format json`` of each case, run from inside the fixture folder."""
    from nctools.cli import cli

    found = {}
    for name, args in cases.items():
        args = [str(HERE / a) if (HERE / a).exists() else a for a in args]
        result = CliRunner().invoke(cli, ["analyze", *args, "--out", str(out / name), "--format", "json", "--quiet",
                                          "--device", "cpu"])
        if result.exit_code != 0:
            raise SystemExit(f"{name}: {result.output}")
        found[name] = json.loads(result.stdout)["summary"]
    return found


if __name__ == "__main__":
    import tempfile

    cases = make_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        expected = {"cases": cases, "summaries": summaries(cases, Path(tmp))}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {HERE}")
