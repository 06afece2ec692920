"""An evaluator whose Redis does not answer is not ready, and its /readyz says where it tried; once
Redis answers it is ready."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack.processes import free_port
from tests.integration.evaluator.conftest import EvaluatorProcess, Pipeline, wait_for

pytestmark = pytest.mark.integration


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:  # noqa: S310
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


def test_evaluator_not_ready_while_redis_is_unreachable(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    broken = dataclasses.replace(pipeline, redis_url=f"redis://:s3cret@{dead}/0")
    broken.write()
    e = EvaluatorProcess(broken, tmp_path).start()
    evaluators.append(e)
    def not_ready() -> tuple[int, str] | None:
        assert e.running(), e.log_text()[-3000:]
        r = readyz(e.metrics_port)
        return r if r[0] == 503 and r[1].startswith("Redis at") else None

    status, body = wait_for(not_ready, "/readyz naming Redis", 90)
    assert body.startswith(f"Redis at {dead} unreachable: ") and "s3cret" not in body, body

    pipeline.write()  # the live config now names a Redis that answers
    def ready() -> bool:
        assert e.running(), e.log_text()[-3000:]  # a Redis error must never end the process
        return readyz(e.metrics_port) == (200, "ok\n")

    wait_for(ready, "ready once Redis answers", 90)
