"""The admission webhook's serving certificate for local runs, as the chart's genCA makes one.

A throwaway CA and a server certificate for 127.0.0.1 and localhost, written as a TLS Secret volume
mounts them (tls.crt, tls.key, ca.crt), so ``alertpipe operator --webhook-port 9443
--webhook-cert-dir DIR`` serves HTTPS the devstack's apiserver trusts (caBundle = ca.crt). ``devstack
env`` exports the folder as ALERTPIPE_WEBHOOK_CERT_DIR, the operator's default for that flag.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["WEBHOOK_CERT_FILES", "make_webhook_cert"]

WEBHOOK_CERT_FILES = ("tls.crt", "tls.key", "ca.crt")


def _openssl(folder: Path, *args: str) -> None:
    out = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {out.stderr.strip()[-300:]}")


def make_webhook_cert(folder: Path, days: int = 30) -> Path:
    """CA and server certificate in ``folder`` (kept when already there); returns the folder."""
    if all((folder / f).is_file() for f in WEBHOOK_CERT_FILES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    d = str(days)
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-subj", "/CN=alertpipe-devstack-webhook-ca", "-days", d)  # fmt: skip
    _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key.tmp", "-out", "tls.csr",
             "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n")
    _openssl(folder, "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "tls.crt.tmp", "-days", d, "-extfile", "san.ext")  # fmt: skip
    os.replace(folder / "tls.key.tmp", folder / "tls.key")
    os.replace(folder / "tls.crt.tmp", folder / "tls.crt")  # last: its presence means "complete"
    return folder
