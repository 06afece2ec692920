"""Per-channel senders: one attempt of one delivery, success as a SendResult, failure as DeliveryError.

Webhooks to plain ``http://`` targets go through the lean keep-alive client in ``http1`` (half of
aiohttp's CPU per request; see there); https webhooks, Slack and PagerDuty share one aiohttp session.
Both resolve through the SSRF guard; redirects are not followed. Email goes through aiosmtplib
(STARTTLS and auth optional). SMS and push (mobile.py) post through the same guarded ``exchange``.
Every failure is classified here: ``retryable`` and, for HTTP, the status and Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
import orjson

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import ChannelSpec, SecretKeyRef, parse_duration
from alertpipe.workers.deliverer import payloads, privacy
from alertpipe.workers.deliverer.http1 import ConnectError, Http1Pool, ProtocolError, request_head
from alertpipe.workers.deliverer.mobile import MobileSenders
from alertpipe.workers.deliverer.policy import classify_http_status, parse_retry_after
from alertpipe.workers.deliverer.ssrf import GuardedResolver, SsrfPolicy, check_url
from alertpipe.workers.errors import AlertpipeError, DeliveryError
from alertpipe.workers.tracing import OUTGOING_TRACEPARENT, TRACEPARENT

__all__ = ["SendResult", "Sender", "SetupError", "Senders"]

logger = logging.getLogger(__name__)

USER_AGENT = "alertpipe-deliverer/0.1"
_EXCERPT = 300
MAX_TOKEN_ANSWER = 16 * 1024  # an OAuth2 token answer (Google access tokens run to 2 KiB)


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int | None
    detail: str
    note: str = ""  # what the audit log's delivered entry says (a partial fan-out's refused recipients)


class SetupError(DeliveryError):
    """A failure on our side (a secret missing, an unknown channel): says nothing about the receiver."""


class SecretLookup(Protocol):
    def __call__(self, ref: SecretKeyRef) -> str: ...


class Sender(Protocol):
    async def send(
        self, alert: Alert, channel: ChannelSpec, key: str, raw: bytes | None = None
    ) -> SendResult: ...


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


class Senders:
    """Owns the HTTP session and the per-kind send functions; ``send`` dispatches on the channel kind."""

    def __init__(
        self,
        secret: SecretLookup,
        ssrf_policy: Callable[[], SsrfPolicy],
        *,
        connection_limit: int = 0,
        lean_http: bool = True,
    ) -> None:
        self._secret = secret
        self._ssrf_policy = ssrf_policy
        self._session: aiohttp.ClientSession | None = None
        self._connection_limit = connection_limit
        self._checked: set[tuple[str, SsrfPolicy]] = set()
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._resolver: GuardedResolver | None = None  # made in the event loop (aiohttp's needs one)
        self._lean = Http1Pool(self._resolve) if lean_http else None
        self._targets: dict[str, tuple[str, int, str, str]] = {}
        self._dns: dict[tuple[str, int, SsrfPolicy], tuple[list[str], float]] = {}
        self._quitting: set[asyncio.Task[None]] = set()  # SMTP sessions saying goodbye
        self._mobile = MobileSenders(self.exchange, self._lookup, self._token_post)

    def _guard(self) -> GuardedResolver:
        if self._resolver is None:
            self._resolver = GuardedResolver(self._ssrf_policy)
        return self._resolver

    async def _resolve(self, host: str, port: int) -> list[str]:
        """Addresses of ``host`` through the SSRF guard, cached 30 s (as aiohttp's connector does)."""
        k = (host, port, self._ssrf_policy())
        hit = self._dns.get(k)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await self._guard().resolve(host, port, socket.AF_UNSPEC)
        addresses = list(dict.fromkeys(r["host"] for r in found))
        if len(self._dns) > 10_000:
            self._dns.clear()
        self._dns[k] = (addresses, now + 30.0)
        return addresses

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(total)
        if t is None:
            t = self._timeouts[total] = aiohttp.ClientTimeout(total=total, connect=min(total, 5.0))
        return t

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._guard(),
                limit=self._connection_limit,
                limit_per_host=0,
                ttl_dns_cache=30,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("Accept-Encoding",),
            )

    async def close(self) -> None:
        if self._quitting:
            await asyncio.wait(self._quitting, timeout=5)
        if self._lean is not None:
            self._lean.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _goodbye(self, client: aiosmtplib.SMTP) -> None:
        async def quit_() -> None:
            try:
                await client.quit()
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                client.close()

        if client.is_connected:
            task = asyncio.create_task(quit_(), name="smtp-quit")
            self._quitting.add(task)
            task.add_done_callback(self._quitting.discard)

    def _lookup(self, ref: SecretKeyRef, what: str) -> str:
        try:
            return self._secret(ref)
        except AlertpipeError as exc:
            raise SetupError(f"{what}: {exc}", retryable=True) from None

    async def send(
        self, alert: Alert, channel: ChannelSpec, key: str, raw: bytes | None = None
    ) -> SendResult:
        if alert.pii is not None:  # spec.pii: raw values for a channel that opted in, else masked
            alert, raw = privacy.for_channel(alert, channel.include_pii), None
        if channel.webhook is not None:
            return await self.send_webhook(alert, channel, key, raw)
        if channel.slack is not None:
            url = self._lookup(channel.slack.webhook_url_secret_ref, "slack webhook URL")
            body = orjson.dumps(payloads.slack_message(alert))
            return await self._post(url, body, {payloads.IDEMPOTENCY_HEADER: key}, 10.0)
        if channel.pagerduty is not None:
            routing = self._lookup(channel.pagerduty.routing_key_secret_ref, "pagerduty routing key")
            body = orjson.dumps(payloads.pagerduty_event(alert, routing))
            return await self._post(channel.pagerduty.url, body, {payloads.IDEMPOTENCY_HEADER: key}, 10.0)
        if channel.email is not None:
            return await self.send_email(alert, channel, key)
        if channel.sms is not None:
            return SendResult(*await self._mobile.send_sms(alert, channel, key))
        if channel.push is not None:
            return SendResult(*await self._mobile.send_push(alert, channel, key))
        raise SetupError(f"channel {channel.name!r} has no kind", retryable=False)

    async def send_webhook(
        self, alert: Alert, channel: ChannelSpec, key: str, raw: bytes | None = None
    ) -> SendResult:
        spec = channel.webhook
        assert spec is not None  # noqa: S101 - dispatched on it
        now = time.time()
        body = payloads.webhook_body(alert, channel.name, key, raw, sent_at_ms=int(now * 1000))
        ts = int(now)
        headers = {payloads.IDEMPOTENCY_HEADER: key, payloads.TIMESTAMP_HEADER: str(ts)}
        if spec.signing_secret_ref is not None:
            secret = self._lookup(spec.signing_secret_ref, "webhook signing secret")
            headers[payloads.SIGNATURE_HEADER] = payloads.sign(secret.encode(), ts, body)
        traceparent = OUTGOING_TRACEPARENT.get()
        if traceparent is not None:  # spec.tracing: the receiver may join the delivery's trace
            headers[TRACEPARENT] = traceparent
        return await self._post(spec.url, body, headers, parse_duration(spec.timeout))

    async def _post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        return _verdict(*await self.exchange(url, body, headers, timeout))

    async def exchange(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        content_type: str = "application/json",
        *,
        limit: int = 1024,
    ) -> tuple[int, str, str | None]:
        """One POST through the SSRF guard: (status, the body's first ``limit`` bytes, Retry-After)."""
        allow = self._ssrf_policy()
        if (url, allow) not in self._checked:
            check_url(url, allow)
            if len(self._checked) > 10_000:
                self._checked.clear()
            self._checked.add((url, allow))
        if self._lean is not None and url.startswith("http://"):
            return await self._post_lean(url, body, {"Content-Type": content_type, **headers}, timeout, limit)
        if self._session is None:
            await self.start()
        assert self._session is not None  # noqa: S101 - started above
        headers = {"Content-Type": content_type, **headers}
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout(timeout),
            ) as resp:
                data = await resp.read()
                text = data[:limit].decode("utf-8", errors="replace")
                status = resp.status
                retry_after_raw = resp.headers.get("Retry-After")
        except DeliveryError:
            raise
        except TimeoutError:
            raise DeliveryError(f"timed out after {timeout:g}s", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, DeliveryError):
                raise cause from None
            raise DeliveryError(f"cannot connect: {exc.os_error.strerror or exc}", retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"connection failed: {type(exc).__name__}: {exc}", retryable=True) from None
        return status, text, retry_after_raw

    async def _token_post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float, content_type: str
    ) -> tuple[int, str, str | None]:
        """A POST whose whole answer is read (an OAuth2 token answer can pass the 1 KiB of a send)."""
        return await self.exchange(url, body, headers, timeout, content_type, limit=MAX_TOKEN_ANSWER)

    def _target(self, url: str) -> tuple[str, int, str, str]:
        t = self._targets.get(url)
        if t is None:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = parts.netloc.rsplit("@", 1)[-1]
            if len(self._targets) > 10_000:
                self._targets.clear()
            t = self._targets[url] = (host, port, path, host_header)
        return t

    async def _post_lean(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float, limit: int = 1024
    ) -> tuple[int, str, str | None]:
        assert self._lean is not None  # noqa: S101 - checked by the caller
        host, port, path, host_header = self._target(url)
        try:
            head = request_head(
                "POST",
                path,
                host_header,
                {"User-Agent": USER_AGENT, **headers},
                len(body),
            )
        except ValueError as exc:
            raise DeliveryError(f"cannot build the request: {exc}", retryable=False) from None
        try:
            resp = await self._lean.post(host, port, head, body, timeout)
        except DeliveryError:
            raise
        except TimeoutError:
            raise DeliveryError(f"timed out after {timeout:g}s", retryable=True) from None
        except ConnectError as exc:
            raise DeliveryError(f"cannot connect: {exc.strerror or exc}", retryable=True) from None
        except (OSError, ProtocolError) as exc:
            raise DeliveryError(f"connection failed: {type(exc).__name__}: {exc}", retryable=True) from None
        text = resp.body[:limit].decode("utf-8", errors="replace")
        return resp.status, text, resp.headers.get("retry-after")

    async def send_email(self, alert: Alert, channel: ChannelSpec, key: str) -> SendResult:
        spec = channel.email
        assert spec is not None  # noqa: S101 - dispatched on it
        msg = payloads.email_message(alert, spec.from_address, list(spec.to), key)
        username = password = None
        if spec.username_secret_ref is not None:
            username = self._lookup(spec.username_secret_ref, "smtp username")
        if spec.password_secret_ref is not None:
            password = self._lookup(spec.password_secret_ref, "smtp password")
        client = aiosmtplib.SMTP(
            hostname=spec.host,
            port=spec.port,
            start_tls=spec.starttls,
            use_tls=False,
            username=username,
            password=password,
            tls_context=ssl.create_default_context(),
            timeout=30,
        )
        try:
            await client.connect()  # and STARTTLS, AUTH
            try:
                errors, response = await client.send_message(msg)
            finally:
                # The server holds the message at DATA's 250: QUIT off the delivery's path, so the
                # delivered mark is not one more round trip away (a crash in between repeats the email).
                self._goodbye(client)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            retryable = all(400 <= c < 500 for c in codes)
            raise DeliveryError(
                f"SMTP recipients refused: {_excerpt(str(exc))}",
                retryable=retryable,
                status=codes[0] if codes else None,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {exc.code}: {_excerpt(exc.message)}", retryable=400 <= exc.code < 500, status=exc.code
            ) from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"SMTP failed: {type(exc).__name__}: {_excerpt(str(exc))}", retryable=True
            ) from None
        if errors:
            refused = ", ".join(sorted(errors))
            raise DeliveryError(f"SMTP refused some recipients: {refused}", retryable=False)
        return SendResult(250, _excerpt(response))


def _verdict(status: int, text: str, retry_after_raw: str | None) -> SendResult:
    """A 2xx as a SendResult; anything else as a DeliveryError saying whether to retry."""
    verdict = classify_http_status(status)
    if verdict == "delivered":
        return SendResult(status, _excerpt(text))
    raise DeliveryError(
        f"HTTP {status}: {_excerpt(text)}",
        retryable=verdict == "retry",
        status=status,
        retry_after=parse_retry_after(retry_after_raw, time.time()),
    )
