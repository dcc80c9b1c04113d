"""Import a script of examples/ as a module (examples/ is not a package: its scripts are for users to
copy; the experiments are the package ``experiments``, imported as such)."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.helpers.paths import REPO

EXAMPLES = REPO / "examples"


def load_example(name: str) -> ModuleType:
    """examples/<name>.py, imported under ``name``."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
