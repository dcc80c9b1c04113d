"""The distribution as a user installs it: its own name on the registry, one version, a light core
with extras, and install lines that name it."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys

import nctools
from nctools.extras import DISTRIBUTION, EXTRAS
from tests.helpers.paths import REPO

SETUP = configparser.ConfigParser()
SETUP.read(REPO / "setup.cfg", encoding="utf-8")
LIGHT_CORE = {"torch", "numpy", "pandas", "safetensors", "tqdm", "click", "matplotlib"}
# What only an extra brings: the light core must run without any of it.
EXTRA_MODULES = ("torchvision", "timm", "yaml", "lightning", "transformers", "accelerate")


def _names(requirements: str) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", line.strip())[0].lower() for line in requirements.strip().splitlines()}


def test_the_distribution_has_its_own_name_and_one_version():
    assert SETUP["metadata"]["name"] == DISTRIBUTION == "neural-collapse-tools"  # "nctools" is another project
    assert SETUP["metadata"]["version"] == "attr: nctools.__version__"
    import allnc_train

    assert allnc_train.__version__ == nctools.__version__


def test_changelog_top_entry_is_this_version():
    heading = next(line for line in (REPO / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
                   if line.startswith("## "))
    assert re.match(rf"## {re.escape(nctools.__version__)}\b", heading), heading


def test_core_is_light_and_the_extras_are_the_documented_ones():
    assert _names(SETUP["options"]["install_requires"]) == LIGHT_CORE
    extras = {name: _names(reqs) for name, reqs in SETUP["options.extras_require"].items()}
    assert list(extras) == list(EXTRAS)
    assert "torchvision" in extras["vision"] and "timm" in extras["vision"]
    assert {"torchvision", "pyyaml"} <= extras["train"]
    assert set().union(*(reqs for name, reqs in extras.items() if name != "dev")) < extras["dev"]


def test_every_install_line_names_the_distribution():
    """No README, page, example or error message may send a user to the registry's other "nctools"."""
    old = re.compile(r"pip install [\"']?nctools\b|[\"'`]nctools\[")
    files = [REPO / "README.md", REPO / "CONTRIBUTING.md", *REPO.glob("docs/*.md"), *REPO.glob("benchmarks/*.md"),
             *REPO.glob("examples/*.py"), *REPO.glob("nctools/**/*.py"), *REPO.glob("allnc_train/**/*.py")]
    found = [f"{path.relative_to(REPO)}: {line.strip()}" for path in files
             for line in path.read_text(encoding="utf-8").splitlines() if old.search(line)]
    assert found == []


# Run first in a fresh interpreter: every module that only an extra installs is missing, as in the light install.
_LIGHT = f"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(EXTRA_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (light install)")
sys.meta_path.insert(0, Missing())
import torch, nctools
from nctools.cli import main
"""


def _light(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _LIGHT + code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_demo_and_analyze_run_on_the_light_core(tmp_path):
    done = _light("""
labels = torch.arange(4).repeat(25)
nctools.save_dump("d.safetensors", torch.randn(4, 8)[labels] + 0.1 * torch.randn(100, 8), labels, torch.randn(4, 8))
for argv in (["demo", "--quiet"], ["analyze", "d.safetensors", "--out", "rep", "--quiet", "--format", "json"]):
    try:
        main(argv)
    except SystemExit as done:
        assert done.code == 0, (argv, done.code)
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "nctools-demo" / "report.pdf").is_file() and (tmp_path / "rep" / "metrics.json").is_file()


def test_a_missing_extra_is_named_with_its_install_line(tmp_path):
    done = _light("""
torch.save({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}, "m.pt")
main(["analyze", "m.pt", "--arch", "resnet18", "--data", "."])
""", tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"pip install '{DISTRIBUTION}[vision]'" in done.stderr
