"""The alertpipe console script: subcommands found past global options, help that lists every role."""

from __future__ import annotations

import pytest

from alertpipe import cli

pytestmark = pytest.mark.unit


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("operator", "ingestor", "evaluator", "deliverer", "rules", "devstack"):
        assert name in out


@pytest.mark.parametrize("argv", [["--log-level", "DEBUG", "rules", "--help"], ["rules", "--help"]])
def test_subcommand_found_past_global_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "alertpipe rules" in capsys.readouterr().out


def test_every_command_module_has_the_protocol() -> None:
    for name in cli.COMMANDS:
        module = cli._load(name)
        assert callable(module.add_arguments) and callable(module.run), name


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bind_host_replaces_only_wildcards(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.setenv("ALERTPIPE_BIND_HOST", "127.0.3.7")
    args = argparse.Namespace(host="0.0.0.0", metrics_host="10.1.2.3")
    cli._apply_bind_host(args)
    assert (args.host, args.metrics_host) == ("127.0.3.7", "10.1.2.3")
    monkeypatch.delenv("ALERTPIPE_BIND_HOST")
    args = argparse.Namespace(host="0.0.0.0")
    cli._apply_bind_host(args)
    assert args.host == "0.0.0.0"
