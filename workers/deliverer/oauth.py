"""OAuth2 access tokens for the push channel (FCM HTTP v1) from a Google service-account key.

The JWT bearer grant (RFC 7523), as Google's token endpoint takes it: a JWT signed RS256 with the
service account's private key (``kid`` = its ``private_key_id``; claims iss = ``client_email``,
scope = firebase.messaging, aud = the account's ``token_uri``, iat, exp = iat + 1 h) is POSTed as
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`` to ``token_uri``, which
answers ``{"access_token", "expires_in", "token_type": "Bearer"}``. One token per service account
(keyed by a hash of its JSON, so a rotated key gets a new token at once) is kept until
``REFRESH_MARGIN`` before it expires; concurrent sends wait for one exchange instead of each making
one. The POST goes through the deliverer's guarded exchange (SSRF policy, timeouts) like a send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson

from alertpipe.workers.deliverer.policy import parse_retry_after
from alertpipe.workers.errors import DeliveryError

__all__ = ["FCM_SCOPE", "JWT_BEARER_GRANT", "REFRESH_MARGIN", "ServiceAccount", "TokenCache", "TokenPost"]

logger = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # noqa: S105 - a grant type, not a secret
ASSERTION_LIFETIME = 3600  # Google accepts at most one hour
REFRESH_MARGIN = 300.0  # seconds before expiry a token is replaced (a send never carries a dying one)
TOKEN_TIMEOUT = 10.0
_FORM = "application/x-www-form-urlencoded"
_KEPT = 64  # service accounts whose tokens are cached (a pipeline has a few push channels)

TokenPost = Callable[[str, bytes, dict[str, str], float, str], Awaitable[tuple[int, str, str | None]]]
"""A guarded POST that reads the whole answer: (url, body, headers, timeout, content type) ->
(status, text, Retry-After)."""


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The fields of a service-account key file (``type: service_account``) the grant needs."""

    client_email: str
    private_key_id: str
    token_uri: str
    private_key: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> ServiceAccount:
        """From the key file's JSON; DeliveryError naming what is wrong (retryable: it may be fixed)."""
        try:
            doc: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise DeliveryError("fcm service account: the Secret is not JSON", retryable=True) from None
        if not isinstance(doc, dict) or doc.get("type") != "service_account":
            why = 'fcm service account: not a key file ("type": "service_account")'
            raise DeliveryError(why, retryable=True)
        missing = [k for k in ("client_email", "private_key", "private_key_id", "token_uri")
                   if not isinstance(doc.get(k), str) or not doc[k]]  # fmt: skip
        if missing:
            raise DeliveryError(f"fcm service account: missing {', '.join(missing)}", retryable=True)
        if not doc["token_uri"].startswith(("https://", "http://")):
            raise DeliveryError("fcm service account: token_uri is not an http(s) URL", retryable=True)
        return cls(doc["client_email"], doc["private_key_id"], doc["token_uri"], doc["private_key"])

    def assertion(self, now: float) -> str:
        """The signed JWT of the grant (RS256, ``kid`` = private_key_id)."""
        iat = int(now)
        claims = {"iss": self.client_email, "scope": FCM_SCOPE, "aud": self.token_uri,
                  "iat": iat, "exp": iat + ASSERTION_LIFETIME}  # fmt: skip
        try:
            return jwt.encode(
                claims, self.private_key, algorithm="RS256", headers={"kid": self.private_key_id}
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # the key's text never goes into the message; the type of failure does
            raise DeliveryError(
                f"fcm service account: private_key cannot sign RS256 ({type(exc).__name__})", retryable=True
            ) from None


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # on the cache's clock


class TokenCache:
    """Access tokens per service account, exchanged when missing or within REFRESH_MARGIN of expiry."""

    def __init__(self, post: TokenPost, clock: Callable[[], float] = time.time) -> None:
        self._post = post
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.exchanges = 0  # token requests made (a test and the debug log read it)

    async def token(self, account_json: str) -> str:
        """A valid access token for the service account whose key file is ``account_json``."""
        key = hashlib.sha256(account_json.encode()).hexdigest()
        hit = self._tokens.get(key)
        if hit is not None and hit.expires_at - REFRESH_MARGIN > self._clock():
            return hit.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._tokens.get(key)  # another send may have exchanged while this one waited
            if hit is not None and hit.expires_at - REFRESH_MARGIN > self._clock():
                return hit.value
            token = await self._exchange(ServiceAccount.parse(account_json))
            while len(self._tokens) >= _KEPT:  # the oldest account first (a rotated key's, likely)
                old = next(iter(self._tokens))
                self._tokens.pop(old)
                if old in self._locks and not self._locks[old].locked():
                    del self._locks[old]
            self._tokens[key] = token
            return token.value

    def forget(self, account_json: str) -> None:
        """Drop the cached token (FCM said 401: revoked or expired early); the next send exchanges."""
        self._tokens.pop(hashlib.sha256(account_json.encode()).hexdigest(), None)

    async def _exchange(self, account: ServiceAccount) -> _Token:
        now = self._clock()
        body = urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": account.assertion(now)}).encode()
        self.exchanges += 1
        status, text, retry_after = await self._post(account.token_uri, body, {}, TOKEN_TIMEOUT, _FORM)
        doc: Any
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
        if status != 200:
            err = doc if isinstance(doc, dict) else {}
            what = " ".join(f"{err.get('error', '')}: {err.get('error_description', '')}".split())
            raise DeliveryError(
                f"fcm token exchange: HTTP {status} {what.strip(': ') or text[:200]}",
                retryable=status == 429 or status >= 500,
                status=status,
                retry_after=parse_retry_after(retry_after, time.time()),
            )
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise DeliveryError(
                "fcm token exchange: no access_token in the answer", retryable=True, status=status
            )
        expires_in = doc.get("expires_in", ASSERTION_LIFETIME)
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = ASSERTION_LIFETIME
        logger.info("fcm access token for %s exchanged, valid %ds", account.client_email, int(expires_in))
        return _Token(doc["access_token"], now + float(expires_in))
