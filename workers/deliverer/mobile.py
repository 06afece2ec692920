"""The SMS (Twilio-shaped) and mobile push (FCM HTTP v1-shaped) senders.

Both APIs take one message per recipient, so one delivery (alert, channel) fans out to several
requests, sent one after the other (a 429 for one usually means the next would get one too). Each
request carries ``Idempotency-Key: <delivery key>/<recipient hash>``. Recipients the API accepted
are remembered per delivery key in this process, so a retry after a partial failure sends only to
the rest; across a crash the claim's window applies as for every channel (the push collapse key
makes a repeat replace the earlier notification on the device).

Outcome of a delivery: every recipient accepted or refused (a stale token, an unsubscribed number)
with at least one accepted is a success whose detail names the refused ones, masked; all refused
is a permanent failure; any channel-wide error (auth, quota, 5xx) raises at once, retryable or not.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import orjson

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import ChannelSpec, SecretKeyRef, parse_duration
from alertpipe.workers.deliverer import mobile_payloads as mp
from alertpipe.workers.deliverer.oauth import TokenCache, TokenPost
from alertpipe.workers.deliverer.payloads import IDEMPOTENCY_HEADER
from alertpipe.workers.deliverer.policy import parse_retry_after
from alertpipe.workers.errors import DeliveryError

__all__ = ["Exchange", "MobileSenders", "SecretText"]

logger = logging.getLogger(__name__)

Exchange = Callable[[str, bytes, dict[str, str], float, str], Awaitable[tuple[int, str, str | None]]]
"""One guarded POST: (url, body, headers, timeout, content type) -> (status, text, Retry-After)."""
SecretText = Callable[[SecretKeyRef, str], str]
"""A Secret's value (what names it for the error message)."""

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_REMEMBERED = 10_000  # delivery keys with a partial fan-out kept in memory
SendOne = Callable[[str], Awaitable[tuple[mp.Verdict, str | None]]]


def _recipient_key(key: str, recipient: str) -> str:
    return f"{key}/{hashlib.sha256(recipient.encode()).hexdigest()[:12]}"


class MobileSenders:
    """Fans one delivery out to its recipients and folds their answers into one result."""

    def __init__(self, exchange: Exchange, secret: SecretText, token_post: TokenPost | None = None) -> None:
        self._exchange = exchange
        self._secret = secret
        self.tokens = TokenCache(token_post or exchange)
        self._accepted: OrderedDict[str, set[str]] = OrderedDict()  # delivery key -> recipients done

    async def send_sms(self, alert: Alert, channel: ChannelSpec, key: str) -> tuple[int, str, str]:
        spec = channel.sms
        assert spec is not None  # noqa: S101 - dispatched on it
        token = self._secret(spec.auth_token_secret_ref, "twilio auth token")
        auth = "Basic " + base64.b64encode(f"{spec.account_sid}:{token}".encode()).decode()
        url = mp.twilio_url(spec)
        text = mp.sms_text(alert, spec.max_body_chars)
        timeout = parse_duration(spec.timeout)

        async def one(to: str) -> tuple[mp.Verdict, str | None]:
            headers = {"Authorization": auth, IDEMPOTENCY_HEADER: _recipient_key(key, to)}
            status, body, retry_after = await self._exchange(
                url, mp.sms_form(spec, to, text), headers, timeout, _FORM
            )
            return mp.twilio_verdict(status, body), retry_after

        return await self._fan_out(key, list(spec.to), one, mp.mask_number, 201)

    async def send_push(self, alert: Alert, channel: ChannelSpec, key: str) -> tuple[int, str, str]:
        spec = channel.push
        assert spec is not None  # noqa: S101 - dispatched on it
        url = mp.fcm_url(spec)
        timeout = parse_duration(spec.timeout)

        async def one(target: str) -> tuple[mp.Verdict, str | None]:
            # looked up per request: a token a refresher rotates in the Secret (or a new service-account
            # key) is taken once the deliverer's secret cache (10 s) lets it through
            account = None
            if spec.service_account_secret_ref is not None:
                account = self._secret(spec.service_account_secret_ref, "fcm service account")
                bearer = await self.tokens.token(account)
            else:
                assert spec.access_token_secret_ref is not None  # noqa: S101 - one of the two (PushChannel)
                bearer = self._secret(spec.access_token_secret_ref, "fcm access token")
            token = None if spec.topic is not None else target
            body = orjson.dumps(mp.fcm_message(alert, spec, token, key))
            headers = {"Authorization": f"Bearer {bearer}", IDEMPOTENCY_HEADER: _recipient_key(key, target)}
            status, text, retry_after = await self._exchange(url, body, headers, timeout, _JSON)
            if status == 401 and account is not None:
                self.tokens.forget(account)  # revoked or expired early: the retry exchanges anew
            return mp.fcm_verdict(status, text), retry_after

        targets = list(spec.tokens) if spec.topic is None else [f"/topics/{spec.topic}"]
        return await self._fan_out(key, targets, one, mp.mask_token, 200)

    async def _fan_out(
        self,
        key: str,
        recipients: list[str],
        one: SendOne,
        mask: Callable[[str], str],
        ok_status: int,
    ) -> tuple[int, str, str]:
        done = self._accepted.get(key, set())
        refused: list[str] = []
        sent: list[str] = []
        last_refusal: int | None = None
        for r in recipients:
            if r in done:
                continue
            verdict, retry_after = await one(r)
            if verdict.outcome == "sent":
                done = self._remember(key, r)
                sent.append(verdict.detail)
            elif verdict.outcome == "refused":
                refused.append(f"{mask(r)} ({verdict.detail})")
                last_refusal = verdict.status
            else:
                progress = f" ({len(done)}/{len(recipients)} recipients done)" if done else ""
                raise DeliveryError(
                    verdict.detail + progress,
                    retryable=verdict.retryable,
                    status=verdict.status,
                    retry_after=parse_retry_after(retry_after, time.time()),
                )
        self._accepted.pop(key, None)
        if not done:
            raise DeliveryError(
                f"every recipient refused: {'; '.join(refused)}", retryable=False, status=last_refusal
            )
        detail = f"sent to {len(done)}/{len(recipients)}"
        if sent:
            detail += f" ({', '.join(sent[:3])}{', …' if len(sent) > 3 else ''})"
        note = ""
        if refused:
            note = f"refused: {'; '.join(refused)}"
            logger.warning("delivery %s: some recipients %s", key, note)
        return ok_status, detail, note

    def _remember(self, key: str, recipient: str) -> set[str]:
        done = self._accepted.get(key)
        if done is None:
            done = self._accepted[key] = set()
            while len(self._accepted) > _REMEMBERED:
                self._accepted.popitem(last=False)
        done.add(recipient)
        return done
