"""Delivery claims are short leases on real Redis: extended while a send waits, free soon after a crash."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from alertpipe.workers.deliverer.claims import ClaimResult, Claims

pytestmark = pytest.mark.integration


async def test_a_held_claim_outlives_its_lease_and_a_dropped_one_expires(redis_url: str, unique: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    ours, theirs = Claims(r, unique, "a", claim_ttl=0.6), Claims(r, unique, "b", claim_ttl=0.6)
    ours.start_renewing()
    try:
        assert await ours.acquire("k1") is ClaimResult.OK
        assert await ours.acquire("k2") is ClaimResult.OK
        ours.hold("k1")  # a slow send: three leases long
        await asyncio.sleep(1.8)
        assert await theirs.acquire("k1") is ClaimResult.BUSY, "the lease of a send in progress ran out"
        assert await theirs.acquire("k2") is ClaimResult.OK, "an unheld claim outlived its lease"
        ours.unhold("k1")  # as if the worker died: nobody extends it any more
        await asyncio.sleep(0.8)
        assert await theirs.acquire("k1") is ClaimResult.OK
        assert await theirs.mark_delivered("k1")
        assert await ours.acquire("k1") is ClaimResult.DELIVERED
    finally:
        await ours.close()
        await theirs.close()
        await r.aclose()
