"""`alertpipe deliverer` flags: the instance id from ALERTPIPE_INSTANCE_ID (the operator passes the pod
name), an explicit flag winning over it, and the HTTP client choice."""

from __future__ import annotations

import argparse

import pytest

from alertpipe.workers.deliverer.cli import add_arguments

pytestmark = pytest.mark.unit


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(["--config", "file:/dev/null", *argv])


def test_instance_id_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTPIPE_INSTANCE_ID", "payments-deliverer-7d9f-abcde")
    assert parse().instance_id == "payments-deliverer-7d9f-abcde"
    assert parse("--instance-id", "explicit").instance_id == "explicit"


def test_no_instance_id_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALERTPIPE_INSTANCE_ID", raising=False)
    assert parse().instance_id is None
    monkeypatch.setenv("ALERTPIPE_INSTANCE_ID", "")  # an empty downward-API value: dynamic membership
    assert parse().instance_id is None


def test_http_client_choice() -> None:
    assert parse().http_client == "lean"
    assert parse("--http-client", "aiohttp").http_client == "aiohttp"
    with pytest.raises(SystemExit):
        parse("--http-client", "curl")
