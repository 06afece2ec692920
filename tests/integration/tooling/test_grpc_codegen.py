"""The committed gRPC gencode (workers/ingestor/ingest_pb2.py, .pyi) is what ingest.proto generates.

Committed rather than built at install: the wheel, the image and an editable checkout need no
protoc, and mypy reads the .pyi. This test regenerates both with the pinned grpcio-tools and
fails on any difference (regenerate: the command in the failure message).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from grpc_tools import protoc

pytestmark = [pytest.mark.integration, pytest.mark.tooling]  # runs protoc

ROOT = Path(__file__).resolve().parents[3]
HERE = ROOT / "workers" / "ingestor"
REGENERATE = (
    "regenerate: .venv/bin/python -m grpc_tools.protoc -Iworkers/ingestor --python_out=workers/ingestor"
    " --pyi_out=workers/ingestor ingest.proto"
)


def test_committed_gencode_matches_the_proto(tmp_path: Path) -> None:
    rc = protoc.main(
        ["protoc", f"-I{HERE}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", "ingest.proto"]
    )
    assert rc == 0
    for name in ("ingest_pb2.py", "ingest_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), f"{name} is stale; {REGENERATE}"


def test_gencode_runs_on_the_pinned_protobuf() -> None:
    text = (HERE / "ingest_pb2.py").read_text()
    m = re.search(r"Protobuf Python Version: (\d+)\.(\d+)\.(\d+)", text)
    assert m is not None
    gencode = tuple(int(x) for x in m.groups())
    runtime = tuple(int(x) for x in version("protobuf").split(".")[:3])
    assert gencode[0] == runtime[0] and gencode <= runtime, (gencode, runtime)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"protobuf>={".".join(map(str, gencode))},<{gencode[0] + 1}"' in pyproject
