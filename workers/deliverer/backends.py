"""The deliverer's seams to Kafka and Redis: what it needs of a consumer, a producer and the claim
store (Protocols), and ``KafkaRedis``, the implementation a real run uses. Unit tests pass in-memory
ones (tests/unit/deliverer/memory.py); integration tests run the real thing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition

from alertpipe.workers.config import PipelineConfig, SecretKeyRef, parse_duration
from alertpipe.workers.deliverer.claims import ClaimResult, Claims
from alertpipe.workers.deliverer.kafka_io import AsyncProducer
from alertpipe.workers.errors import DeliveryError

__all__ = ["Backends", "ClaimStore", "KafkaConsumer", "KafkaRedis", "Publisher"]


class KafkaConsumer(Protocol):
    """The part of confluent_kafka.Consumer the deliverer uses (called from one thread only)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[[Any, list[TopicPartition]], None] = ...,
        on_revoke: Callable[[Any, list[TopicPartition]], None] = ...,
        on_lost: Callable[[Any, list[TopicPartition]], None] = ...,
    ) -> None: ...
    def poll(self, timeout: float) -> Any: ...
    def consume(self, num_messages: int, timeout: float) -> list[Any]: ...
    def assignment(self) -> list[Any]: ...
    def pause(self, partitions: list[Any]) -> None: ...
    def resume(self, partitions: list[Any]) -> None: ...
    def seek(self, partition: Any) -> None: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...
    def position(self, partitions: list[Any]) -> list[Any]: ...
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...
    def close(self) -> None: ...


class Publisher(Protocol):
    """An acked producer: ``send`` resolves when the broker has the record, ``fire`` does not wait."""

    def send(self, topic: str, key: bytes | str, value: bytes, headers: Any = None) -> Awaitable[None]: ...
    def fire(self, topic: str, key: bytes | str, value: bytes) -> None: ...
    def close(self) -> None: ...


class ClaimStore(Protocol):
    """The two-phase delivery claim (claims.py): claim, then a delivered or dead mark, or release."""

    async def acquire(self, delivery_key: str, *, replay: bool = False) -> ClaimResult: ...
    def hold(self, delivery_key: str) -> None: ...
    def unhold(self, delivery_key: str) -> None: ...
    async def mark_delivered(self, delivery_key: str) -> bool: ...
    async def mark_dead(self, delivery_key: str) -> None: ...
    async def release(self, delivery_key: str) -> None: ...
    def start_renewing(self) -> None: ...
    async def close(self) -> None: ...


class Backends(Protocol):
    """Makes the deliverer's Kafka clients and claim store once the first config is there."""

    def consumer(self, options: dict[str, Any]) -> KafkaConsumer: ...
    def producer(self, options: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Publisher: ...
    def claims(
        self, config: PipelineConfig, secret: Callable[[SecretKeyRef], str], owner: str, claim_ttl: float
    ) -> ClaimStore: ...
    async def close(self) -> None: ...


class KafkaRedis:
    """The real backends: confluent-kafka clients and claims in Redis (one pool of 32 connections)."""

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None

    def consumer(self, options: dict[str, Any]) -> KafkaConsumer:
        return Consumer(options)

    def producer(self, options: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Publisher:
        return AsyncProducer(options, loop)

    def claims(
        self, config: PipelineConfig, secret: Callable[[SecretKeyRef], str], owner: str, claim_ttl: float
    ) -> ClaimStore:
        r = config.redis
        if not r.url and r.url_secret_ref is None:
            raise DeliveryError("redis.url or redis.urlSecretRef must be set", retryable=False)
        url = r.url or secret(r.url_secret_ref)  # type: ignore[arg-type]
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=None)
        self._redis = aioredis.Redis(connection_pool=pool)
        return Claims(
            self._redis, r.key_prefix, owner, claim_ttl=claim_ttl, mark_ttl=parse_duration(config.dedup_ttl)
        )

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
