"""Configs are untrusted input: bounded size, depth and aliases, no key written
twice, finite floats, ranges and sizes checked before any work, and messages that quote at most a
short prefix of a bad value. Each case goes through ``allnc-train --print-config``, which resolves
the config exactly as a run does and trains nothing."""
from __future__ import annotations

import os
import time

import pytest

from allnc_train.cli import main
from allnc_train.config import load_config, resolve
from allnc_train.schema import ConfigError

BASE = "method:\n  name: ce\ndata:\n  dataset: synthetic\nmodel:\n  arch: ufm\n"


def run(tmp_path, capsys, text: str | bytes, *sets: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    tic = time.perf_counter()
    code = main(["--config", str(path), "--print-config", *(["--set", *sets] if sets else [])])
    assert time.perf_counter() - tic < 30  # never a hang (the alias bomb took unbounded time and memory)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, err


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" whose last level sits under a known key (optim.milestones): 9^9 values expanded."""
    lines = ["a0: &a0 [" + ", ".join(["1"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\noptim:\n  milestones: [" + ", ".join([f"*a{levels - 1}"] * width) + "]\n"


def test_an_alias_bomb_under_a_known_key_is_refused_at_once(tmp_path, capsys):
    code, err = run(tmp_path, capsys, alias_bomb())
    assert code == 2 and "config.yaml expands to more than 100000 values once its aliases are followed" in err
    assert len(err) < 300


def test_a_5000_deep_config_is_one_line(tmp_path, capsys):
    code, err = run(tmp_path, capsys, "optim:\n  milestones: " + "[" * 5000 + "]" * 5000 + "\n")
    assert code == 2 and "config.yaml is nested deeper than 32 levels" in err


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path, capsys):
    code, err = run(tmp_path, capsys, BASE + "optim:\n  lr: 0.1\n  lr: 100\n")
    assert code == 2 and "the key 'lr' appears twice in one mapping (lines 8 and 9)" in err


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "1e999"])
def test_non_finite_floats_are_refused_naming_the_key(tmp_path, capsys, value):
    code, err = run(tmp_path, capsys, BASE + f"optim:\n  lr: {value}\n")
    assert code == 2 and "config key 'optim.lr' must be a finite number" in err


def test_non_finite_override_is_refused(tmp_path, capsys):
    code, err = run(tmp_path, capsys, BASE, "hycon.temperature=inf")
    assert code == 2 and "config key 'hycon.temperature' must be a finite number, got 'inf'" in err


@pytest.mark.parametrize("sets, message", [
    (("data.num_classes=1",), "config key 'data.num_classes' must lie in [2, 1000000], got 1."),
    (("seed=1180591620717411303424",), "config key 'seed' must lie in [0, 9223372036854775807], got 11805916207"),
    (("data.subset_seed=4294967296",), "config key 'data.subset_seed' must lie in [0, 4294967295]"),
    (("data.n_max=1000000000000",), "config keys 'data.n_max' = 1000000000000 and 'model.feature_dim' = 64 ask for"),
    (("model.feature_dim=100000000",), "config keys 'data.n_max' = None and 'model.feature_dim' = 100000000 ask for"),
    (("data.dataset=cifar10", "model.arch=resnet32", "data.image_size=100000"),
     "config keys 'optim.batch_size' = 128 and 'data.image_size' = 100000 ask for"),
    (("data.num_classes=1000000", "model.feature_dim=100000"), "and 'model.feature_dim' = 100000 ask for"),
])
def test_values_are_checked_before_any_work_naming_the_key(tmp_path, capsys, sets, message):
    code, err = run(tmp_path, capsys, BASE, *sets)
    assert code == 2 and message in err


def test_a_huge_bad_value_is_quoted_as_a_short_prefix(tmp_path, capsys):
    code, err = run(tmp_path, capsys, BASE + "optim:\n  epochs: [" + ", ".join(["7"] * 20000) + "]\n")
    assert code == 2 and "config key 'optim.epochs' must be an integer, got [7, 7, 7, 7, 7, 7, ...]." in err


def test_an_integer_beyond_pythons_conversion_limit_is_one_line(tmp_path, capsys):
    code, err = run(tmp_path, capsys, BASE + "seed: " + "9" * 5000 + "\n")
    assert code == 2 and "config.yaml holds a value that cannot be read" in err


def test_a_non_utf8_config_names_the_file(tmp_path, capsys):
    code, err = run(tmp_path, capsys, BASE.encode() + b"seed: \xff\xfe\n")
    assert code == 2 and "config.yaml is not UTF-8 text (byte 0xff at offset" in err


def test_a_config_over_the_size_limit_is_refused_unread(tmp_path, capsys):
    code, err = run(tmp_path, capsys, BASE + "#" * (1 << 20) + "\n")
    assert code == 2 and "more than a config's limit of 1048576" in err


def test_a_folder_or_a_fifo_is_named_for_what_it_is(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    with pytest.raises(ConfigError, match="configs is a folder, not a config file"):
        load_config(folder)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="pipe.yaml is not a regular file"):
        load_config(fifo)  # never opened: that would wait for a writer


def test_a_good_config_still_resolves():
    cfg = resolve({"method": {"name": "ce"}, "optim": {"lr": "1e-3", "milestones": [3, 4]}}, ["seed=7"])
    assert cfg.optim.lr == 0.001 and cfg.seed == 7 and cfg.optim.milestones == [3, 4]


def test_analysing_a_strangers_checkpoint_never_downloads(tmp_path, monkeypatch):
    import allnc_train.data as data
    from allnc_train.checkpoint import CHECKPOINT_FORMAT
    from allnc_train.methods import build_model
    from allnc_train.nctools_plugin import read_checkpoint
    from allnc_train.schema import to_dict
    from nctools.io.sources import SourceError, SourceOptions

    root = tmp_path / "their folder"
    root.mkdir()
    cfg = resolve({"method": {"name": "ce"}, "data": {"source": "torchvision", "download": True, "root": str(root)}})
    contents = {"format": CHECKPOINT_FORMAT, "epoch": 1, "config": to_dict(cfg),
                "model": build_model(cfg, 10, 1).state_dict(), "class_counts": [1] * 10,
                "class_names": [str(c) for c in range(10)]}
    asked = []

    def build_data(data_cfg, views):
        asked.append(data_cfg.download)
        raise OSError("stopped here")

    monkeypatch.setattr(data, "build_data", build_data)
    with pytest.raises(SourceError, match="cannot read the checkpoint's dataset"):
        read_checkpoint(tmp_path / "ckpt.pt", contents, SourceOptions(device="cpu"))
    assert asked == [False] and list(root.iterdir()) == []
