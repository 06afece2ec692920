"""Why a pipeline cannot reach its Kafka or Redis, as a condition reason and a one-line message.

librdkafka reports a failed admin call as a bare ``_TIMED_OUT`` ("Failed while waiting for
controller"); the reason it timed out (connection refused, a failed SASL handshake) arrives
separately, through the client's error callback. These functions take both and say which it was,
naming the address and the client's own words, so TopicsReady tells the tenant what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CONNECTIVITY_REASONS",
    "Failure",
    "kafka_failure",
    "redis_failure",
    "secret_not_found",
]

UNREACHABLE = frozenset(
    {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_RESOLVE", "_TIMED_OUT_QUEUE", "NETWORK_EXCEPTION"}
)
AUTH = frozenset(
    {
        "_AUTHENTICATION",
        "SASL_AUTHENTICATION_FAILED",
        "_SSL",
        "ILLEGAL_SASL_STATE",
        "UNSUPPORTED_SASL_MECHANISM",
    }
)
AUTHZ = frozenset({"TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"})

CONNECTIVITY_REASONS = frozenset(
    {
        "KafkaUnreachable",
        "AuthFailed",
        "TopicAuthorizationFailed",
        "KafkaError",
        "SecretNotFound",
        "RedisUnreachable",
        "RedisAuthFailed",
    }
)

# librdkafka's timings change on every attempt; a message that changes would rewrite status each time
_TIMING = re.compile(r"\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)")


@dataclass(frozen=True)
class Failure:
    reason: str  # a condition reason, one of CONNECTIVITY_REASONS
    message: str  # one line, no credentials


def _clean(detail: str) -> str:
    return _TIMING.sub("", detail).strip()


def kafka_failure(
    what: str, bootstrap: str, code: str, detail: str, client_errors: Sequence[tuple[str, str]] = ()
) -> Failure:
    """The failure of one admin call ``what`` (e.g. "describe topic t"): its error ``code`` and
    ``detail``, with ``client_errors`` the (code, detail) pairs the client reported meanwhile."""
    auth = next((d for c, d in reversed(client_errors) if c in AUTH), None)
    if code in AUTH or auth is not None:
        return Failure(
            "AuthFailed",
            f"Kafka at {bootstrap} refused the credentials: {_clean(auth or detail)}; check the Secret named "
            "by spec.kafka.credentialsSecretRef (sasl.username, sasl.password, sasl.mechanism)",
        )
    if code in AUTHZ:
        return Failure(
            "TopicAuthorizationFailed",
            f"Kafka at {bootstrap} denied {what}: {code} ({_clean(detail)}); grant the pipeline's Kafka user "
            "Describe, Create and Alter on its topics",
        )
    transport = next(
        (d for c, d in reversed(client_errors) if c in UNREACHABLE and c != "_ALL_BROKERS_DOWN"), None
    )
    if code in UNREACHABLE or transport is not None:
        return Failure(
            "KafkaUnreachable",
            f"cannot reach Kafka at {bootstrap} (spec.kafka.bootstrapServers): {_clean(transport or detail)}",
        )
    return Failure("KafkaError", f"{what} at {bootstrap}: {code}: {_clean(detail)}")


def secret_not_found(field: str, name: str, key: str | None, namespace: str) -> Failure:
    """A Secret (or a key of it) that ``field`` names is missing."""
    which = f"Secret {name!r}" if key is None else f"key {key!r} of Secret {name!r}"
    return Failure("SecretNotFound", f"{field}: {which} not found in namespace {namespace}; create it")


def redis_failure(address: str, error: str) -> Failure:
    """Redis at ``address`` (host:port, never the URL: it may hold a password) did not answer PING."""
    lowered = error.lower()
    if "auth" in lowered or "password" in lowered or "noperm" in lowered:
        return Failure("RedisAuthFailed", f"Redis at {address} refused the credentials: {error}")
    return Failure("RedisUnreachable", f"cannot reach Redis at {address} (spec.redis): {error}")
