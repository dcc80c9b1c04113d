"""Run the ``>>>`` examples of allnc_train (pytest's --doctest-modules covers only nctools/)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import allnc_train

MODULES = sorted(m.name for m in pkgutil.iter_modules(allnc_train.__path__, "allnc_train."))


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
