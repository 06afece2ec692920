"""Runs the chart's Argo CD health scripts the way Argo CD does: the object as the global ``obj``, the
script's returned table read as (status, message), in Lua 5.1 (Argo CD's gopher-lua speaks 5.1) with
no os/io/debug library (Argo CD does not open them for health scripts either)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lupa import lua51  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
CUSTOMIZATIONS = ROOT / "charts" / "alertpipe" / "files" / "argocd"
STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def script(group: str, kind: str) -> Path:
    return CUSTOMIZATIONS / group / kind / "health.lua"


def as_json(obj: Any) -> Any:
    """What Argo CD hands the script: the object as JSON (timestamps are strings, not datetimes)."""
    return json.loads(json.dumps(obj, default=str))


def load_yaml(path: Path) -> Any:
    return as_json(yaml.safe_load(path.read_text()))


def run_health(lua_source: str, obj: Any) -> Health:
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=True)
    g = lua.globals()
    for lib in ("os", "io", "debug", "package", "require", "dofile", "loadfile", "python"):
        g[lib] = None
    g.obj = lua.table_from(as_json(obj), recursive=True)
    hs = lua.execute(lua_source)
    if hs is None:
        raise AssertionError("the health script returned nothing")
    status, message = hs["status"], hs["message"]
    if status not in STATUSES:
        raise AssertionError(f"the health script returned status {status!r}, not one of {STATUSES}")
    return Health(str(status), "" if message is None else str(message))
