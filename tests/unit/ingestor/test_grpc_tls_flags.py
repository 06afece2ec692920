"""The ingestor's --grpc-tls-cert/--grpc-tls-key flags: both or neither, only with --grpc-port, and
files that are not there or not PEM are refused at start with the flag named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from alertpipe.workers.errors import ConfigError
from alertpipe.workers.ingestor.cli import add_arguments, grpc_tls

pytestmark = pytest.mark.unit


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--config", "file:/dev/null", *argv])


def test_no_tls_flags_is_plaintext() -> None:
    assert grpc_tls(args("--grpc-port", "9090")) is None
    assert grpc_tls(args()) is None


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--grpc-port", "9090", "--grpc-tls-cert", "c"), "--grpc-tls-key"),
        (("--grpc-port", "9090", "--grpc-tls-key", "k"), "--grpc-tls-cert"),
        (("--grpc-tls-cert", "c", "--grpc-tls-key", "k"), "--grpc-port"),
    ],
)
def test_incomplete_tls_flags_are_refused_with_the_flag(argv: tuple[str, ...], flag: str) -> None:
    with pytest.raises(ConfigError) as exc:
        grpc_tls(args(*argv))
    assert exc.value.path == flag


def test_missing_or_non_pem_files_are_refused_at_start(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    with pytest.raises(ConfigError, match=r"--grpc-tls-cert: cannot read .*tls\.crt"):
        grpc_tls(args("--grpc-port", "1", "--grpc-tls-cert", str(cert), "--grpc-tls-key", str(key)))
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key.write_text("not a key")
    with pytest.raises(ConfigError, match=r"--grpc-tls-key: .*tls\.key is not PEM"):
        grpc_tls(args("--grpc-port", "1", "--grpc-tls-cert", str(cert), "--grpc-tls-key", str(key)))
