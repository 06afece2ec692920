"""An SMTP server on loopback (aiosmtpd) that records messages, with optional AUTH and scripted refusals."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class SmtpReceiver:
    username: str | None = None
    password: str | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    authenticated: list[str] = field(default_factory=list)
    refusals: deque[str] = field(default_factory=deque)  # e.g. "451 4.3.0 try later", "550 5.1.1 no user"
    port: int = 0
    tls: tuple[str, str] | None = None  # (cert file, key file): offer STARTTLS and require it
    _controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        if self.refusals:
            return self.refusals.popleft()
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, pw = auth_data.login.decode(), auth_data.password.decode()
            if user == self.username and pw == self.password:
                self.authenticated.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpReceiver:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.tls)
            kwargs.update(tls_context=ctx, require_starttls=True)
            if self.username is not None:
                kwargs.update(authenticator=self._auth, auth_required=True)
        elif self.username is not None:
            # AUTH offered without TLS on loopback; auth_required would make aiosmtpd warn (an error here)
            kwargs.update(authenticator=self._auth, auth_require_tls=False)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def start_smtp_receiver(
    username: str | None = None, password: str | None = None, tls: tuple[str, str] | None = None
) -> SmtpReceiver:
    """Start on a free loopback port (runs in its own thread); ``receiver.stop()`` when done.

    ``tls=(cert, key)`` offers STARTTLS and requires it (AUTH then only after STARTTLS).
    """
    return SmtpReceiver(username=username, password=password, tls=tls).start()
