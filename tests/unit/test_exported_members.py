"""Each package's public surface is what its ``__all__`` says (httpx's test_exported_members): a name
a package exposes without listing it, or lists without having it, fails; no module is re-exported;
``__all__`` is sorted (constants, classes, functions), and every module's ``__all__`` names what exists."""

from __future__ import annotations

import ast
import asyncio
import importlib
import pkgutil
import tomllib
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def _imported_from_outside(source: str) -> set[str]:
    """Names the source binds by importing from outside alertpipe (for its own code, not offered)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("alertpipe"):
            out |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def _offered(pkg: types.ModuleType, source: str) -> set[str]:
    """Public names the package holds, minus its submodules and what it imported for its own code."""
    outside = _imported_from_outside(source)
    return {
        name
        for name, value in vars(pkg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name not in outside
    }


def _source(pkg: types.ModuleType) -> str:
    return Path(str(pkg.__file__)).read_text()


def _isort_order(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_is_exactly_what_it_exports(name: str) -> None:
    pkg = importlib.import_module(name)
    offered = _offered(pkg, _source(pkg))
    listed = getattr(pkg, "__all__", None)
    if listed is None:
        assert not offered, f"{name} exposes {sorted(offered)} but has no __all__"
        return
    assert set(listed) == offered, (
        f"{name}.__all__ differs from what it exposes: {sorted(set(listed) ^ offered)}"
    )
    assert len(listed) == len(set(listed)), f"{name}.__all__ lists a name twice"
    assert list(listed) == sorted(listed, key=_isort_order), f"{name}.__all__ is not sorted"
    modules = [n for n in listed if isinstance(getattr(pkg, n), types.ModuleType)]
    assert not modules, f"{name} re-exports modules {modules}: export what they hold instead"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_module_all_names_what_exists(name: str) -> None:
    pkg = importlib.import_module(name)
    for info in pkgutil.iter_modules(pkg.__path__, name + "."):
        if info.ispkg or info.name.endswith(".__main__"):  # packages have their own test; __main__ runs
            continue
        if info.name.endswith("_pb2"):  # protoc gencode, kept as generated (test_grpc_codegen)
            continue
        mod = importlib.import_module(info.name)
        listed = getattr(mod, "__all__", None)
        assert listed is not None, f"{info.name} has no __all__"
        missing = [n for n in listed if not hasattr(mod, n)]
        assert not missing, f"{info.name}.__all__ names what it does not have: {missing}"
        modules = [n for n in listed if isinstance(getattr(mod, n), types.ModuleType)]
        assert not modules, f"{info.name}.__all__ lists modules {modules}"


def test_the_check_sees_an_unlisted_name() -> None:
    source = "from typing import Any\nimport asyncio\nfrom alertpipe.workers.config import PipelineConfig\n"
    pkg = types.ModuleType("alertpipe.fake")
    vars(pkg).update(Any=object(), asyncio=asyncio, PipelineConfig=object(), helper=len)
    assert _offered(pkg, source) == {"PipelineConfig", "helper"}
