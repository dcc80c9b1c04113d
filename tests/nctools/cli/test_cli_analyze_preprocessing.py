"""``nctools analyze --arch``: state dicts as frameworks save them (Lightning, torch.compile, DDP,
nested and prefixed keys) and explicit preprocessing (--image-size, --mean, --std, --transform)."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from tests.helpers.cli import image_folder, invoke

torchvision = pytest.importorskip("torchvision")

CIFAR = ["--image-size", "32", "--mean", "0.4914,0.4822,0.4465", "--std", "0.2470,0.2435,0.2616"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random resnet18(num_classes=3) saved as frameworks save it, and a 3-class image folder."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    forms = {
        "plain": state,
        "lightning": {"state_dict": {"model." + k: v for k, v in state.items()}, "epoch": 3, "global_step": 30},
        "compiled": {"_orig_mod." + k: v for k, v in state.items()},
        "ddp": {"module." + k: v for k, v in state.items()},
    }
    paths = {}
    for name, obj in forms.items():
        paths[name] = root / f"{name}.{'ckpt' if name == 'lightning' else 'pt'}"
        torch.save(obj, paths[name])
    paths["data"] = image_folder(root / "images", per_class=2)
    paths["state"] = state
    return paths


def _analyze(tmp_path, weights, data, *args):
    return invoke("analyze", weights, "--arch", "resnet18", "--data", data, "--out", tmp_path / "out",
                  "--format", "json", "--device", "cpu", *args)


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning:")]


@pytest.mark.parametrize("form", ["lightning", "compiled", "ddp"])
def test_framework_state_dicts_give_the_plain_numbers(files, tmp_path, form, one_torch_thread):
    plain = _analyze(tmp_path / "a", files["plain"], files["data"], *CIFAR)
    other = _analyze(tmp_path / "b", files[form], files["data"], *CIFAR)
    assert plain.exit_code == 0 and other.exit_code == 0, other.output
    assert json.loads(other.stdout)["summary"] == json.loads(plain.stdout)["summary"]
    assert json.loads(other.stdout)["source"]["metadata"]["weights"]  # which reading of the file was used
    assert _warnings(other) == []


def test_preprocessing_is_recorded_and_shown(files, tmp_path):
    result = invoke("analyze", files["plain"], "--arch", "resnet18", "--data", files["data"], *CIFAR,
                    "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    assert "preprocessing 32 px (resize 32, centre crop, bilinear), mean 0.4914,0.4822,0.4465" in header
    options = json.loads((tmp_path / "out" / "metrics.json").read_text())["options"]
    assert options["preprocessing"] == {"size": 32, "resize": 32, "crop": "center", "interpolation": "bilinear",
                                        "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}


def test_assumed_preprocessing_is_one_warning_line(files, tmp_path):
    result = _analyze(tmp_path, files["plain"], files["data"])
    assert result.exit_code == 0, result.output
    (warning,) = _warnings(result)
    assert "224 px (resize 256, centre crop, bilinear), mean 0.485,0.456,0.406, std 0.229,0.224,0.225" in warning
    assert "--image-size, --mean and --std" in warning
    assert json.loads(result.stdout)["options"]["preprocessing"]["assumed"] is True
    partly = _analyze(tmp_path / "size", files["plain"], files["data"], "--image-size", "32")  # mean, std assumed
    assert len(_warnings(partly)) == 1 and "32 px" in _warnings(partly)[0]
    quiet = _analyze(tmp_path / "q", files["plain"], files["data"], "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_transform_from_a_module(files, tmp_path, monkeypatch):
    (tmp_path / "nct_my_transforms.py").write_text(textwrap.dedent("""
        import numpy as np
        import torch

        MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
        STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)

        def cifar_eval():
            def transform(image):
                x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
                return (x.float() / 255 - MEAN) / STD
            return transform

        def not_a_tensor():
            return lambda image: "pixels"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = _analyze(tmp_path / "a", files["plain"], files["data"], "--transform", "nct_my_transforms:cifar_eval")
    assert mine.exit_code == 0, mine.output
    assert _warnings(mine) == []
    assert json.loads(mine.stdout)["options"]["preprocessing"] == {"transform": "nct_my_transforms:cifar_eval"}
    flags = _analyze(tmp_path / "b", files["plain"], files["data"], *CIFAR)
    got, want = json.loads(mine.stdout)["summary"], json.loads(flags.stdout)["summary"]
    for key, value in want.items():  # the same images, normalised alike: the same numbers
        assert got[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value), key
    bad = _analyze(tmp_path / "c", files["plain"], files["data"], "--transform", "nct_my_transforms:not_a_tensor")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "--transform nct_my_transforms:not_a_tensor: turns an image into a str" in bad.output
    missing = _analyze(tmp_path / "d", files["plain"], files["data"], "--transform", "nct_no_such_module:f")
    assert missing.exit_code == 2 and "cannot import 'nct_no_such_module'" in missing.output
    both = _analyze(tmp_path / "e", files["plain"], files["data"], "--transform", "nct_my_transforms:cifar_eval",
                    "--image-size", "32")
    assert both.exit_code == 2 and "--transform replaces --image-size" in both.output


def test_ambiguous_state_dict_names_the_ways_and_state_key_settles_it(files, tmp_path):
    state = files["state"]
    path = tmp_path / "two.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in state.items()},
                "ema": {"model." + k: v.clone() for k, v in state.items()}}, path)
    result = _analyze(tmp_path / "a", path, files["data"], *CIFAR)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert ("fit the architecture resnet18 in 2 ways ('state_dict' entry minus prefix 'model.'; "
            "'ema' entry minus prefix 'model.'); choose one with --state-key KEY") in result.output
    chosen = _analyze(tmp_path / "b", path, files["data"], *CIFAR, "--state-key", "ema")
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)["options"]["state_key"] == "ema"


def test_unknown_prefix_names_the_keys_and_strip_prefix_settles_it(files, tmp_path):
    path = tmp_path / "student.pt"
    torch.save({"student." + k: v for k, v in files["state"].items()}, path)
    result = _analyze(tmp_path / "a", path, files["data"], *CIFAR)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "the weights do not fit the architecture resnet18: the closest reading (the top level) lacks 122" in (
        result.output)
    assert "(bn1.bias, bn1.num_batches_tracked, bn1.running_mean and 119 more)" in result.output
    assert "has 122 keys it does not know (student.bn1.bias" in result.output
    assert "--strip-prefix P" in result.output
    fixed = _analyze(tmp_path / "b", path, files["data"], *CIFAR, "--strip-prefix", "student")
    assert fixed.exit_code == 0, fixed.output
    no_such_key = _analyze(tmp_path / "c", path, files["data"], *CIFAR, "--state-key", "model")
    assert no_such_key.exit_code == 2 and "--state-key 'model' names no dict of tensors" in no_such_key.output


@pytest.mark.parametrize("option, value, words", [
    ("--mean", "1,2", "expected three numbers R,G,B"),
    ("--std", "0.2,0,0.2", "expected three numbers above 0"),
    ("--mean", "a,b,c", "expected three numbers R,G,B"),
])
def test_bad_rgb_is_a_one_line_usage_error(files, tmp_path, option, value, words):
    result = _analyze(tmp_path, files["plain"], files["data"], option, value)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and option in result.output and words in result.output
