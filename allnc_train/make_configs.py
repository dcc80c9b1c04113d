"""Write the bundled YAML configs: ``python -m allnc_train.make_configs [DIR]``.

One recipe per dataset (CIFAR-10/100-LT at beta = 100 / 50 / 10 and balanced, ImageNet-LT,
iNaturalist 2018, and the unconstrained-features recipes: balanced CE and beta = 100) crossed with
one block per method of the methods table (its ``recipe``) and per ablation (AllNC without each of its
three components).
The YAML files are data; this module is how they stay consistent, and a test checks that the
shipped files equal its output.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .methods import METHODS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# LDAM-DRW's CIFAR recipe (ResNet-32, SGD 0.9, batch 128, wd 2e-4, 5 warm-up epochs), 200 epochs, cosine.
CIFAR_OPTIM = {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
               "warmup_epochs": 5, "schedule": "cosine"}
# The common ImageNet-LT / iNaturalist recipe: 90 epochs, batch 256, lr 0.1, cosine.
LARGE_OPTIM = {"epochs": 90, "batch_size": 256, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
               "warmup_epochs": 5, "schedule": "cosine"}


def method_blocks() -> dict[str, tuple[str, dict]]:
    """(description, config sections) by file-name suffix: each method's recipe (the methods table), and
    its ablations, the recipe with one component switched off (``allnc_no_hycon``, ...)."""
    def copy(recipe: dict) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in recipe.items()}

    blocks = {m.name: (f"method {m.name}: {m.summary}", copy(m.recipe)) for m in METHODS.values()}
    for method in METHODS.values():
        for part in method.ablations:
            block = copy(method.recipe)
            block[part]["enabled"] = False
            blocks[f"{method.name}_no_{part}"] = (f"method {method.name} without {part}", block)
        for control, (summary, changes) in method.controls.items():
            block = copy(method.recipe)
            for key, value in changes.items():
                section, _, name = key.partition(".")
                block[section][name] = value
            blocks[f"{method.name}_{control}"] = (f"method {method.name}, control: {summary}", block)
    return blocks


def _cifar(name: str, beta: float) -> dict:
    return {
        "data": {"dataset": name, "source": "folder", "root": f"data/{name}", "imbalance_ratio": beta,
                 "subset_seed": 0, "image_size": 32, "augment": "standard", "num_workers": 4},
        # CIFAR-100 needs d >= 99 for a simplex ETF: width 2 gives a 128-d feature.
        "model": {"arch": "resnet32", "width": 1 if name == "cifar10" else 2, "proj_hidden": 512, "proj_dim": 128},
        "optim": dict(CIFAR_OPTIM),
        "run": {"dump_every": 1, "dump_test": True, "dump_dtype": "float32"},
    }


def _large(name: str, arch: str, root: str, train: str, test: str, wd: float) -> dict:
    return {
        "data": {"dataset": name, "source": "splits", "root": root, "train_split": train, "test_split": test,
                 "image_size": 224, "augment": "standard", "num_workers": 8},
        "model": {"arch": arch, "proj_hidden": 2048, "proj_dim": 128},
        "optim": {**LARGE_OPTIM, "weight_decay": wd},
        # A float16 train dump of ImageNet-LT is about 0.5 GB (iNaturalist about 1.8 GB): dump every 10 epochs.
        "run": {"dump_every": 10, "dump_test": False, "dump_dtype": "float16"},
    }


PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def recipes() -> dict[str, tuple[str, dict]]:
    """Dataset recipes by file-name prefix: (description, config sections)."""
    out = {}
    for name in ("cifar10", "cifar100"):
        for beta in (100, 50, 10):
            out[f"{name}_lt_r{beta}"] = (f"{PRETTY[name]}-LT, imbalance ratio {beta}, ResNet-32", _cifar(name, beta))
        out[f"{name}_balanced"] = (f"{PRETTY[name]}, balanced (full training set), ResNet-32", _cifar(name, 1))
    out["imagenet_lt"] = ("ImageNet-LT (Liu et al. 2019 splits), ResNeXt-50 32x4d",
                          _large("imagenet_lt", "resnext50", "data/imagenet", "data/ImageNet_LT/ImageNet_LT_train.txt",
                                 "data/ImageNet_LT/ImageNet_LT_test.txt", 5e-4))
    out["inat2018"] = ("iNaturalist 2018, ResNet-50",
                       _large("inat2018", "resnet50", "data/inat2018", "data/inat2018/iNaturalist18_train.txt",
                              "data/inat2018/iNaturalist18_val.txt", 1e-4))
    return out


# The unconstrained-features recipes (Fang et al. 2021: one free feature per sample): long enough that
# balanced CE reaches a simplex ETF (cos-Std < 0.02, NC3 < 0.01), weight decay strong enough for CE-LT's
# minority collapse and weak enough that the features keep their size. The balanced set has 124 samples per
# class, 1,240 in all, against the long-tailed 1,236 (500 ... 5): the same N, so runs compare across beta.
# The search behind these numbers is in docs/ALLNC.md.
UFM_EPOCHS = 200
UFM = {
    "data": {"dataset": "synthetic", "num_classes": 10, "n_max": 500, "imbalance_ratio": 100},
    "model": {"arch": "ufm", "feature_dim": 32, "ufm_init_std": 0.1},
    "optim": {"epochs": UFM_EPOCHS, "batch_size": 128, "lr": 0.5, "momentum": 0.9, "weight_decay": 2e-3,
              "warmup_epochs": 0, "schedule": "cosine"},
    # evaluate every 10 epochs; dump only the last epoch (dump_every > epochs: the last epoch always dumps)
    "run": {"eval_every": 10, "dump_every": UFM_EPOCHS, "dump_test": False, "dump_dtype": "float32"},
}
UFM_BALANCED_N = 124  # per class: 10 x 124 = 1,240, the long-tailed set's 1,236 samples rounded
UFM_METHODS = ("ce", "la", "etf", "bbn", "allnc", "allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn")


def _ufm_block(method: str) -> dict:
    block = method_blocks()[method][1]
    if "hycon" in block:  # the views of a free feature are all the same vector: one view is enough
        block["hycon"]["views"] = 1
    return block


def all_configs() -> dict[str, str]:
    """File name -> YAML text of every bundled config."""
    files = {}
    for prefix, (desc, base) in recipes().items():
        for method, (about, block) in method_blocks().items():
            files[f"{prefix}_{method}.yaml"] = _render(f"{desc}; {about}", {**base, **block, "seed": 0})
    ufm = "unconstrained features (Fang et al. 2021), 10 classes, 32-d"
    for method in UFM_METHODS:
        about = method_blocks()[method][0]
        files[f"ufm_lt_r100_{method}.yaml"] = _render(f"{ufm}, imbalance ratio 100 (500 ... 5); {about}",
                                                      {**UFM, **_ufm_block(method), "seed": 0})
    balanced = {**UFM, "data": {**UFM["data"], "n_max": UFM_BALANCED_N, "imbalance_ratio": 1}}
    files["ufm_balanced_ce.yaml"] = _render(f"{ufm}, balanced ({UFM_BALANCED_N} per class); {method_blocks()['ce'][0]}",
                                            {**balanced, **_ufm_block("ce"), "seed": 0})
    return files


def _render(description: str, sections: dict) -> str:
    order = ["seed", "data", "model", "method", "gbbn", "hycon", "p2p", "optim", "run"]
    ordered = {k: sections[k] for k in order if k in sections}
    header = (f"# {description}\n# Generated by `python -m allnc_train.make_configs`: edit the generator, not this "
              "file.\n# Every key not listed keeps its default from allnc_train/schema.py.\n")
    return header + yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    target = Path((argv or sys.argv[1:] or [CONFIG_DIR])[0])
    target.mkdir(parents=True, exist_ok=True)
    for name, text in all_configs().items():
        (target / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(all_configs())} configs to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
