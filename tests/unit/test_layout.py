"""The package layout: import names mapped onto operator/ and workers/, every package in the wheel."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_is_untouched() -> None:
    # importlib, not `import operator`: mypy run from the checkout would see the folder operator/.
    operator = importlib.import_module("operator")
    import alertpipe.operator
    import alertpipe.workers

    assert operator.add(2, 3) == 5
    assert Path(str(operator.__file__)).parent != ROOT
    assert Path(alertpipe.operator.__file__).parent == ROOT / "operator"
    assert Path(alertpipe.workers.__file__).parent == ROOT / "workers"


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in (("alertpipe", "alertpipe"), ("operator", "alertpipe.operator"),
                         ("workers", "alertpipe.workers")):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed, f"pyproject [tool.setuptools] packages differs: {sorted(found ^ listed)}"
    for name in listed:
        importlib.import_module(name)
