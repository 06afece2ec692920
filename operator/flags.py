"""The operator's flags checked before anything starts, each refusal one line saying what to pass.

Without this a bad flag surfaced late, as a traceback: a ``--webhook-manage`` name the apiserver
refuses (Kopf names each webhook ``<handler>.<NAME>`` and Kubernetes wants webhook names fully
qualified, at least three dot-separated segments), or a webhook port with no certificate (Kopf then
tries to self-sign and stops on a missing extra dependency).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["WebhookFlags", "check_webhook_flags", "webhook_names"]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CERT_HELP = (
    "pass --webhook-cert-dir DIR (tls.crt and tls.key, and ca.crt, as a TLS Secret mounts them) or"
    ' --webhook-cert FILE --webhook-key FILE; on the devstack, eval "$(alertpipe devstack env)" sets'
    " ALERTPIPE_WEBHOOK_CERT_DIR to a certificate it made"
)


@dataclass(frozen=True)
class WebhookFlags:
    port: int = 0
    cert: str | None = None
    key: str | None = None
    cert_dir: str | None = None
    ca: str | None = None
    manage: str | None = None


def webhook_names(handler_ids: Sequence[str], manage: str) -> list[str]:
    """The webhook names Kopf builds in managed mode (``<handler id>.<NAME>``)."""
    return [f"{h}.{manage}" for h in handler_ids]


def _port(flag: str, value: int) -> str | None:
    if not 0 <= value <= 65535:
        return f"{flag} {value}: a port is 0..65535 (0 turns it off)"
    return None


def check_webhook_flags(f: WebhookFlags, handler_ids: Sequence[str]) -> list[str]:
    """What is wrong with the webhook flags, one line each (empty: they can work)."""
    errors = [e for e in (_port("--webhook-port", f.port),) if e]
    if f.manage is not None:
        if not f.port:
            errors.append(
                f"--webhook-manage {f.manage}: needs --webhook-port (the webhook server it registers)"
            )
        if len(f.manage) > 200 or not _SUBDOMAIN.match(f.manage):
            errors.append(
                f"--webhook-manage {f.manage}: not a valid object name; use lowercase letters, digits,"
                " '-' and '.', e.g. --webhook-manage alertpipe.example.com"
            )
        else:
            short = [n for n in webhook_names(handler_ids, f.manage) if n.count(".") < 2]
            if short:
                errors.append(
                    f"--webhook-manage {f.manage}: the webhooks would be named {', '.join(short)}, and the"
                    " apiserver wants at least three dot-separated segments; pass a domain-like name such as"
                    f" --webhook-manage {f.manage.split('.')[0]}.alertpipe.io"
                )
    if not f.port:
        return errors
    if f.cert_dir is not None and f.cert is None and f.key is None:
        missing = [n for n in ("tls.crt", "tls.key") if not os.path.isfile(os.path.join(f.cert_dir, n))]
        if missing:
            errors.append(f"--webhook-cert-dir {f.cert_dir}: no {' or '.join(missing)} there; {CERT_HELP}")
        return errors
    if f.cert is None and f.key is None:
        errors.append(f"--webhook-port {f.port} needs a serving certificate: {CERT_HELP}")
        return errors
    if (f.cert is None) != (f.key is None):
        given, other = (
            ("--webhook-cert", "--webhook-key") if f.key is None else ("--webhook-key", "--webhook-cert")
        )
        errors.append(f"{given} needs {other} too (the certificate and its private key)")
    for flag, path in (("--webhook-cert", f.cert), ("--webhook-key", f.key), ("--webhook-ca", f.ca)):
        if path is not None and not os.path.isfile(path):
            errors.append(f"{flag} {path}: no such file")
    return errors
