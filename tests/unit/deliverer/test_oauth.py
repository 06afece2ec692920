"""The push channel's OAuth2 token exchange: the RS256 JWT bearer grant as Google takes it, one
token per service account cached until shortly before it expires, one exchange for concurrent sends,
errors that say what is wrong without the key, and a 401 from FCM dropping the cached token."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alertpipe.workers.config import ChannelSpec, SecretKeyRef
from alertpipe.workers.deliverer.mobile import MobileSenders
from alertpipe.workers.deliverer.oauth import FCM_SCOPE, JWT_BEARER_GRANT, REFRESH_MARGIN, TokenCache
from alertpipe.workers.errors import DeliveryError
from tests.unit.deliverer.test_payloads import make_alert

pytestmark = pytest.mark.unit

TOKEN_URI = "https://oauth2.example.test/token"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def account(**kw: Any) -> str:
    doc = {"type": "service_account", "project_id": "acme-oncall", "private_key_id": "kid-1",
           "private_key": PEM, "client_email": "push@acme-oncall.iam.gserviceaccount.com",
           "token_uri": TOKEN_URI, **kw}  # fmt: skip
    return orjson.dumps(doc).decode()


class TokenEndpoint:
    """Answers token requests from a script (default: a fresh token, an hour); records the forms."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.forms: list[dict[str, str]] = []
        self.urls: list[str] = []

    async def __call__(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float, ctype: str
    ) -> tuple[int, str, str | None]:
        assert ctype == "application/x-www-form-urlencoded"
        self.urls.append(url)
        self.forms.append({k: v[0] for k, v in parse_qs(body.decode()).items()})
        await asyncio.sleep(0.01)  # a real round trip, so concurrent callers overlap
        if self.answers:
            return *self.answers.pop(0), None
        n = len(self.forms)
        answer = {"access_token": f"ya29.t{n}", "expires_in": 3599, "token_type": "Bearer"}
        return 200, orjson.dumps(answer).decode(), None


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_grant_is_an_rs256_jwt_bearer_assertion_google_would_verify() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    assert await TokenCache(endpoint, clock).token(account()) == "ya29.t1"
    (form,) = endpoint.forms
    assert endpoint.urls == [TOKEN_URI] and form["grant_type"] == JWT_BEARER_GRANT
    assert jwt.get_unverified_header(form["assertion"]) == {"alg": "RS256", "kid": "kid-1", "typ": "JWT"}
    claims = jwt.decode(form["assertion"], KEY.public_key(), algorithms=["RS256"], audience=TOKEN_URI,
                        options={"verify_exp": False, "verify_iat": False})  # fmt: skip
    assert claims == {"iss": "push@acme-oncall.iam.gserviceaccount.com", "scope": FCM_SCOPE, "aud": TOKEN_URI,
                      "iat": int(clock.now), "exp": int(clock.now) + 3600}  # fmt: skip
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):  # signed with this account's key, no other
        jwt.decode(form["assertion"], other.public_key(), algorithms=["RS256"], audience=TOKEN_URI,
                   options={"verify_exp": False, "verify_iat": False})  # fmt: skip


async def test_a_token_is_kept_until_shortly_before_it_expires() -> None:
    endpoint, clock = TokenEndpoint(), Clock()
    cache = TokenCache(endpoint, clock)
    assert await cache.token(account()) == "ya29.t1"
    clock.now += 3599 - REFRESH_MARGIN - 1
    assert await cache.token(account()) == "ya29.t1" and cache.exchanges == 1
    clock.now += 2  # inside the margin: replaced before it can die in flight
    assert await cache.token(account()) == "ya29.t2" and cache.exchanges == 2
    # a rotated key (another key file) is another account: its own token at once
    assert await cache.token(account(private_key_id="kid-2")) == "ya29.t3"
    cache.forget(account())
    assert await cache.token(account()) == "ya29.t4"


async def test_concurrent_sends_wait_for_one_exchange() -> None:
    endpoint = TokenEndpoint()
    cache = TokenCache(endpoint, Clock())
    got = await asyncio.gather(*(cache.token(account()) for _ in range(20)))
    assert set(got) == {"ya29.t1"} and len(endpoint.forms) == 1


@pytest.mark.parametrize(
    ("answer", "retryable", "reason"),
    [
        ((400, '{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}'), False,
         "HTTP 400 invalid_grant: Invalid JWT Signature."),
        ((503, "upstream unavailable"), True, "HTTP 503 upstream unavailable"),
        ((429, '{"error": "rate_limited"}'), True, "HTTP 429 rate_limited"),
        ((200, '{"token_type": "Bearer"}'), True, "no access_token in the answer"),
    ],
)
async def test_token_endpoint_errors(answer: tuple[int, str], retryable: bool, reason: str) -> None:
    with pytest.raises(DeliveryError) as exc:
        await TokenCache(TokenEndpoint(answer), Clock()).token(account())
    assert exc.value.retryable is retryable and exc.value.reason == f"fcm token exchange: {reason}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "the Secret is not JSON"),
        (account(type="authorized_user"), "not a key file"),
        (account(private_key_id=""), "missing private_key_id"),
        (account(token_uri="file:///etc/passwd"), "token_uri is not an http(s) URL"),
        (account(private_key="-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n"),
         "private_key cannot sign RS256"),
    ],
)
async def test_bad_key_files_are_refused_without_showing_the_key(text: str, reason: str) -> None:
    endpoint = TokenEndpoint()
    with pytest.raises(DeliveryError) as exc:
        await TokenCache(endpoint, Clock()).token(text)
    assert reason in exc.value.reason
    assert "PRIVATE KEY" not in exc.value.reason and "bm9wZQ" not in str(exc.value)
    assert endpoint.forms == []  # nothing was sent


async def test_push_with_a_service_account_exchanges_once_and_a_401_drops_the_token() -> None:
    endpoint = TokenEndpoint()
    sent: list[str] = []
    answers = [(200, '{"name": "projects/acme-oncall/messages/1"}'), (401, '{"error": {"code": 401}}'),
               (200, '{"name": "projects/acme-oncall/messages/2"}')]  # fmt: skip

    async def fcm(url: str, body: bytes, headers: dict[str, str], timeout: float, ctype: str) -> Any:
        sent.append(headers["Authorization"])
        return *answers.pop(0), None

    def secret(ref: SecretKeyRef, what: str) -> str:
        assert (ref.name, what) == ("sa", "fcm service account")
        return account()

    ch = ChannelSpec.model_validate({"name": "phone", "push": {
        "projectId": "acme-oncall", "serviceAccountSecretRef": {"name": "sa", "key": "key.json"},
        "tokens": ["tok-a"]}})  # fmt: skip
    senders = MobileSenders(fcm, secret, endpoint)
    alert = make_alert(channels=["phone"])
    await senders.send_push(alert, ch, "k1")
    with pytest.raises(DeliveryError) as exc:
        await senders.send_push(alert, ch, "k2")
    assert exc.value.retryable and exc.value.status == 401
    await senders.send_push(alert, ch, "k2")
    assert sent == ["Bearer ya29.t1", "Bearer ya29.t1", "Bearer ya29.t2"]
    assert len(endpoint.forms) == 2


def test_push_takes_exactly_one_kind_of_credential() -> None:
    base = {"projectId": "acme-oncall", "tokens": ["t"]}
    ref = {"name": "s", "key": "k"}
    for creds in ({}, {"serviceAccountSecretRef": ref, "accessTokenSecretRef": ref}):
        with pytest.raises(ValueError, match="exactly one of serviceAccountSecretRef, accessTokenSecretRef"):
            ChannelSpec.model_validate({"name": "phone", "push": {**base, **creds}})
