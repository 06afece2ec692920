# ruff: noqa: E501
"""The operator's flags are checked before it starts: each refusal is one line saying what to pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertpipe.cli import build_parser
from alertpipe.operator.cli import flag_errors, run
from alertpipe.operator.flags import WebhookFlags, check_webhook_flags

pytestmark = pytest.mark.unit

IDS = ("validate-alertrule", "validate-alertpipeline")


def certs(folder: Path) -> Path:
    folder.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (folder / name).write_text("-----BEGIN-----\n")
    return folder


@pytest.mark.parametrize("name", ["alertpipe", "Alertpipe.io", "alert_pipe.io", "-x.io"])
def test_webhook_manage_names_the_apiserver_refuses_are_refused_with_an_example(name: str, tmp_path: Path) -> None:
    errors = check_webhook_flags(WebhookFlags(port=9443, cert_dir=str(certs(tmp_path / "c")), manage=name), IDS)
    assert len(errors) == 1 and errors[0].startswith(f"--webhook-manage {name}: ")
    assert "--webhook-manage " in errors[0].split(":", 1)[1]  # an example of what to pass


def test_a_two_segment_name_gives_three_segment_webhook_names(tmp_path: Path) -> None:
    flags = WebhookFlags(port=9443, cert_dir=str(certs(tmp_path / "c")), manage="alertpipe.io")
    assert check_webhook_flags(flags, IDS) == []
    short = check_webhook_flags(WebhookFlags(port=9443, cert_dir=str(tmp_path / "c"), manage="alertpipe"), IDS)
    assert "validate-alertrule.alertpipe, validate-alertpipeline.alertpipe" in short[0]
    assert "--webhook-manage alertpipe.alertpipe.io" in short[0]


def test_webhook_manage_without_a_port() -> None:
    assert check_webhook_flags(WebhookFlags(manage="alertpipe.io"), IDS) == [
        "--webhook-manage alertpipe.io: needs --webhook-port (the webhook server it registers)"
    ]


def test_a_port_without_certificate_says_what_to_pass() -> None:
    (e,) = check_webhook_flags(WebhookFlags(port=9443), IDS)
    assert e.startswith("--webhook-port 9443 needs a serving certificate: pass --webhook-cert-dir DIR")
    assert "--webhook-cert FILE --webhook-key FILE" in e and "alertpipe devstack env" in e


def test_a_cert_dir_without_the_files_and_half_a_key_pair(tmp_path: Path) -> None:
    (e,) = check_webhook_flags(WebhookFlags(port=9443, cert_dir=str(tmp_path)), IDS)
    assert e.startswith(f"--webhook-cert-dir {tmp_path}: no tls.crt or tls.key there; pass ")
    d = certs(tmp_path / "c")
    (e,) = check_webhook_flags(WebhookFlags(port=9443, cert=str(d / "tls.crt")), IDS)
    assert e == "--webhook-cert needs --webhook-key too (the certificate and its private key)"
    (e,) = check_webhook_flags(WebhookFlags(port=9443, cert=str(d / "tls.crt"), key=str(d / "nope")), IDS)
    assert e == f"--webhook-key {d / 'nope'}: no such file"
    assert check_webhook_flags(WebhookFlags(port=9443, cert=str(d / "tls.crt"), key=str(d / "tls.key")), IDS) == []
    assert check_webhook_flags(WebhookFlags(port=70000), IDS)[0].startswith("--webhook-port 70000: a port is")


def parse(*argv: str) -> object:
    return build_parser("operator").parse_args(["operator", *argv])


def test_the_command_answers_in_one_line_per_error_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ALERTPIPE_WEBHOOK_CERT_DIR", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    args = parse("--kubeconfig", str(kubeconfig), "--webhook-port", "9443", "--webhook-manage", "alertpipe")
    assert run(args) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("alertpipe operator: --webhook-") for line in err)
    assert "Traceback" not in "".join(err)


def test_the_devstack_cert_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = certs(tmp_path / "c")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    monkeypatch.setenv("ALERTPIPE_WEBHOOK_CERT_DIR", str(d))
    assert flag_errors(parse("--kubeconfig", str(kubeconfig), "--webhook-port", "9443")) == []  # type: ignore[arg-type]
    errors = flag_errors(parse("--kubeconfig", str(tmp_path / "none"), "--health-port", "-1"))  # type: ignore[arg-type]
    assert errors == [
        "--health-port -1: a port is 0..65535 (0 turns it off)",
        f"--kubeconfig {tmp_path / 'none'}: no such file (or unset KUBECONFIG to run in-cluster)",
    ]
