"""The push channel with a service-account key (serviceAccountSecretRef) against the local FCM API and
token endpoint, on real Kafka and Redis: the deliverer signs the JWT bearer grant, the receiver
verifies it with the account's public key, one token serves every send until it nears expiry; a key
the endpoint does not know dead-letters with Google's reason; missing and expired tokens get FCM's 401."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from tests.integration.deliverer.conftest import Pipeline, make_alert, running_deliverer
from tests.integration.deliverer.test_mobile import DEVICES, FAST_RETRY, PROJECT, secret
from tests.receivers import wait_until
from tests.receivers.fcm import FCM_SCOPES, FcmReceiver, start_fcm_receiver

pytestmark = pytest.mark.integration


@pytest.fixture
async def fcm() -> AsyncIterator[FcmReceiver]:
    """The FCM API with DEVICES registered and no static access token: only exchanged ones work."""
    r = await start_fcm_receiver()
    r.registrations.update(dict.fromkeys(DEVICES, PROJECT))
    try:
        yield r
    finally:
        await r.stop()


def push(pipeline: Pipeline, name: str, key_file: dict[str, Any]) -> Any:
    ref = secret(pipeline, f"{name}-sa", "key.json", json.dumps(key_file))
    base = key_file["token_uri"].removesuffix("/token")  # the receiver serves both
    spec = {"projectId": PROJECT, "serviceAccountSecretRef": ref, "tokens": DEVICES, "url": base}
    return {"name": name, "push": spec, "retry": FAST_RETRY}


async def test_service_account_token_exchange_then_pages(pipeline: Pipeline, fcm: FcmReceiver) -> None:
    key_file = fcm.service_account(PROJECT)
    pipeline.update(channels=[push(pipeline, "phone", key_file)])
    alerts = [make_alert(i, ["phone"]) for i in range(1, 4)]
    async with running_deliverer(pipeline):
        pipeline.produce(alerts)
        await wait_until(lambda: len(fcm.recorder.accepted("/v1/")) == 6, 60, "3 alerts x 2 devices")
    assert fcm.exchanges == 1  # one token for every send (the first exchange is cached)
    (claims,) = fcm.assertions  # verified by the receiver with the account's public key
    assert claims["iss"] == key_file["client_email"] and claims["aud"] == key_file["token_uri"]
    assert claims["scope"] in FCM_SCOPES and claims["exp"] - claims["iat"] == 3600
    sends = [r for r in fcm.recorder.items if r.path.startswith("/v1/")]
    bearers = {r.headers["Authorization"] for r in sends}
    assert len(bearers) == 1 and bearers.pop()[7:] in fcm.access_tokens
    for token in DEVICES:
        assert sorted(m["data"]["alertId"] for m in fcm.devices[token]) == sorted(a.id for a in alerts)
    assert key_file["private_key"].splitlines()[1] not in str(pipeline.audit())


async def test_an_unknown_key_dead_letters_with_googles_reason(pipeline: Pipeline, fcm: FcmReceiver) -> None:
    key_file = fcm.service_account(PROJECT)
    stranger = fcm.service_account(PROJECT, "other")
    key_file["private_key"] = stranger["private_key"]  # signed with a key that is not this account's
    pipeline.update(channels=[push(pipeline, "phone", key_file)])
    async with running_deliverer(pipeline):
        pipeline.produce([make_alert(9, ["phone"])])
        await wait_until(lambda: len(pipeline.dead_letters()) == 1, 60, "one dead letter")
    (dead,) = pipeline.dead_letters()
    assert dead.attempts == 1 and dead.last_status == 400
    assert dead.reason == "fcm token exchange: HTTP 400 invalid_grant: Invalid JWT Signature."
    assert fcm.exchanges == 0 and not fcm.devices


async def test_missing_and_expired_access_tokens_get_fcms_401(fcm: FcmReceiver) -> None:
    key_file = fcm.service_account(PROJECT)
    fcm.token_lifetime = 1
    now = int(time.time())
    claims = {"iss": key_file["client_email"], "aud": key_file["token_uri"], "iat": now, "exp": now + 3600,
              "scope": sorted(FCM_SCOPES)[0]}  # fmt: skip
    assertion = jwt.encode(claims, key_file["private_key"], algorithm="RS256",
                           headers={"kid": key_file["private_key_id"]})  # fmt: skip
    send = fcm.url(f"/v1/projects/{PROJECT}/messages:send")
    message = {"message": {"token": DEVICES[0], "data": {"k": "v"}}}
    async with aiohttp.ClientSession() as http:
        grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        async with http.post(key_file["token_uri"], data=grant) as r:
            assert r.status == 200
            token = (await r.json())["access_token"]
        async with http.post(key_file["token_uri"], data={**grant, "grant_type": "password"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "unsupported_grant_type"
        async with http.post(send, json=message, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        await asyncio.sleep(1.1)
        for headers in ({"Authorization": f"Bearer {token}"}, {}):  # expired, then none at all
            async with http.post(send, json=message, headers=headers) as r:
                body = await r.json()
                assert r.status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
                assert body["error"]["code"] == 401 and "OAuth 2 access token" in body["error"]["message"]
