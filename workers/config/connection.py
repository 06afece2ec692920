"""The Kafka connection every role builds the same way: librdkafka options from the contract's
KafkaSettings and the pipeline's credentials Secret.

One function for the operator's admin client and every worker, so they agree on security: the
credentials Secret holds ``sasl.username`` and ``sasl.password`` and may hold ``sasl.mechanism``
and ``security.protocol``; with credentials and no protocol named (there or in ``clientOptions``)
the connection is SASL_SSL with SCRAM-SHA-512. (The operator used to default to that while the
workers passed only the user name and password, so the operator reached Kafka and they could not.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from alertpipe.workers.config.models import SecretKeyRef
from alertpipe.workers.errors import ConfigError

__all__ = ["DEFAULT_SASL_MECHANISM", "DEFAULT_SECURITY_PROTOCOL", "KafkaConnection", "kafka_options"]

DEFAULT_SECURITY_PROTOCOL = "SASL_SSL"
DEFAULT_SASL_MECHANISM = "SCRAM-SHA-512"
REQUIRED_KEYS = ("sasl.username", "sasl.password")
OPTIONAL_KEYS = ("sasl.mechanism", "security.protocol")


class KafkaConnection(Protocol):
    """What a connection needs: the contract's KafkaSettings and the operator's KafkaSpec both are."""

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def client_options(self) -> Mapping[str, str]: ...

    @property
    def credentials_secret_ref(self) -> SecretKeyRef | None: ...


def kafka_options(
    kafka: KafkaConnection, secret: Callable[[str], str | None] | None = None
) -> dict[str, Any]:
    """librdkafka options shared by every client of a pipeline (a role adds its own on top).

    ``secret(key)`` reads a key of the credentials Secret (None: the key is not there); it is
    called only when ``kafka.credentialsSecretRef`` is set.
    """
    opts: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers, **kafka.client_options}
    ref = kafka.credentials_secret_ref
    if ref is None or secret is None:
        return opts
    for key in REQUIRED_KEYS:
        value = secret(key)
        if value is None:
            raise ConfigError("kafka.credentialsSecretRef", f"Secret {ref.name!r} has no key {key!r}")
        opts[key] = value
    for key in OPTIONAL_KEYS:
        value = secret(key)
        if value is not None:
            opts[key] = value
    opts.setdefault("security.protocol", DEFAULT_SECURITY_PROTOCOL)
    opts.setdefault("sasl.mechanism", DEFAULT_SASL_MECHANISM)
    return opts
