"""One Kafka connection model for every role (issue 18): with credentials and no protocol named,
the operator defaulted to SASL_SSL / SCRAM-SHA-512 while the workers passed only the user name and
password. Every role now builds its options with ``kafka_options``."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertpipe.operator.models import KafkaSpec
from alertpipe.workers.config import KafkaSettings, PipelineConfig, SecretKeyRef, kafka_options
from alertpipe.workers.deliverer.kafka_io import client_options
from alertpipe.workers.errors import ConfigError
from alertpipe.workers.secrets import SecretResolver

pytestmark = pytest.mark.unit

TOPICS = {"events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"}
SECRET = {"sasl.username": "svc", "sasl.password": "pw"}


def settings(**extra: object) -> KafkaSettings:
    return KafkaSettings.model_validate({"bootstrapServers": "k:9092", "topics": TOPICS,
                                         "credentialsSecretRef": {"name": "kafka", "key": "unused"}, **extra})


def test_credentials_without_a_protocol_mean_sasl_ssl_with_scram_for_every_role(tmp_path: Path) -> None:
    expected = {"bootstrap.servers": "k:9092", "sasl.username": "svc", "sasl.password": "pw",
                "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}
    assert kafka_options(settings(), SECRET.get) == expected
    # the operator's spec model gives the same
    spec = KafkaSpec.model_validate({"bootstrapServers": "k:9092", "credentialsSecretRef": {"name": "kafka",
                                                                                             "key": "x"}})
    assert kafka_options(spec, SECRET.get) == expected
    # a worker reading the mounted Secret (evaluator, ingestor) gives the same
    (tmp_path / "kafka").mkdir()
    for k, v in SECRET.items():
        (tmp_path / "kafka" / k).write_text(v)
    assert kafka_options(settings(), SecretResolver(tmp_path).key_of("kafka")) == expected


def test_the_secret_or_client_options_choose_protocol_and_mechanism() -> None:
    named = {**SECRET, "sasl.mechanism": "PLAIN", "security.protocol": "SASL_PLAINTEXT"}
    opts = kafka_options(settings(), named.get)
    assert (opts["security.protocol"], opts["sasl.mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")
    opts = kafka_options(settings(clientOptions={"security.protocol": "SASL_PLAINTEXT"}), SECRET.get)
    assert (opts["security.protocol"], opts["sasl.mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    plain = KafkaSettings.model_validate({"bootstrapServers": "k:9092", "topics": TOPICS})
    assert kafka_options(plain, SECRET.get) == {"bootstrap.servers": "k:9092"}  # no credentials: none


def test_a_secret_without_the_user_name_says_which_key() -> None:
    with pytest.raises(ConfigError, match="Secret 'kafka' has no key 'sasl.username'"):
        kafka_options(settings(), {"sasl.password": "pw"}.get)


def test_the_deliverer_builds_the_same_options() -> None:
    cfg = PipelineConfig.model_validate({
        "tenant": "t", "pipeline": "p", "revision": "r", "redis": {"url": "redis://x", "keyPrefix": "p"},
        "kafka": settings().model_dump(by_alias=True)})

    def secret(ref: SecretKeyRef) -> str:
        if ref.key not in SECRET:
            raise ConfigError("secretKeyRef", f"{ref.name}/{ref.key} not found")
        return SECRET[ref.key]

    assert client_options(cfg, secret) == kafka_options(cfg.kafka, SECRET.get)
