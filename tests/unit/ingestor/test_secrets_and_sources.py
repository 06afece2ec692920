"""SecretResolver, parse_config_arg and the ConfigMap document check (pure parts, no cluster)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from alertpipe.workers.config import PipelineConfig, SecretKeyRef
from alertpipe.workers.config.loaders import FileConfigSource, KubeConfigMapSource, parse_config_arg
from alertpipe.workers.config.loaders.kube import backoff_delay, config_from_configmap_data
from alertpipe.workers.errors import ConfigError
from alertpipe.workers.secrets import SecretResolver

pytestmark = pytest.mark.unit

CONFIG = {
    "tenant": "acme",
    "pipeline": "p1",
    "kafka": {
        "bootstrapServers": "127.0.0.1:9092",
        "topics": {"events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"},
    },
    "redis": {"url": "redis://127.0.0.1:6379/0", "keyPrefix": "ap:acme:p1:"},
}


def test_secret_resolves_and_never_prints(tmp_path: Path) -> None:
    (tmp_path / "api-keys").mkdir()
    (tmp_path / "api-keys" / "keys").write_text("acme:s3cr3t-value\n")
    value = SecretResolver(tmp_path).resolve(SecretKeyRef(name="api-keys", key="keys"))
    assert value.get_secret_value() == "acme:s3cr3t-value"
    assert "s3cr3t" not in repr(value) and "s3cr3t" not in str(value)
    assert "s3cr3t" not in f"{value}"


def test_missing_secret_names_the_ref(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        SecretResolver(tmp_path).resolve(SecretKeyRef(name="hook", key="token"))
    msg = str(exc.value)
    assert "'hook'" in msg and "'token'" in msg and "--secrets-dir" in msg
    assert "\n" not in msg


def test_secret_key_cannot_escape_the_folder(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("x")
    with pytest.raises(ConfigError, match="not a valid Secret key"):
        SecretResolver(tmp_path / "a").resolve(SecretKeyRef(name="s", key="../../outside"))


def test_secrets_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTPIPE_SECRETS_DIR", str(tmp_path))
    assert SecretResolver().root == tmp_path
    monkeypatch.delenv("ALERTPIPE_SECRETS_DIR")
    assert SecretResolver().root == Path("/var/run/secrets/alertpipe")


def test_parse_config_arg(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_bytes(PipelineConfig.model_validate(CONFIG).to_json())
    src = parse_config_arg(f"file:{p}")
    assert isinstance(src, FileConfigSource)
    cfg = src.current()
    assert cfg is not None and cfg.tenant == "acme" and cfg.revision
    cm = parse_config_arg("configmap:team-a/p1-config")
    assert isinstance(cm, KubeConfigMapSource)
    assert (cm.namespace, cm.name) == ("team-a", "p1-config")


@pytest.mark.parametrize("arg", ["", "c.json", "file:", "configmap:ns", "configmap:NS/x", "http://x"])
def test_parse_config_arg_rejects(arg: str) -> None:
    with pytest.raises(ConfigError, match="file:PATH or configmap:NAMESPACE/NAME"):
        parse_config_arg(arg)


def test_configmap_document() -> None:
    import orjson

    cfg = config_from_configmap_data({"config.json": orjson.dumps(CONFIG).decode()})
    assert cfg.pipeline == "p1" and cfg.revision == cfg.content_revision()
    with pytest.raises(ConfigError, match="missing"):
        config_from_configmap_data({"other": "{}"})
    with pytest.raises(ConfigError, match="missing"):
        config_from_configmap_data(None)
    with pytest.raises(ConfigError, match="not JSON"):
        config_from_configmap_data({"config.json": "{nope"})
    bad = dict(CONFIG, pipeline="Not_A_Name")
    with pytest.raises(ConfigError, match=r"data\['config.json'\]\.pipeline"):
        config_from_configmap_data({"config.json": orjson.dumps(bad).decode()})


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, rng=rng) for a in range(40)]
    assert all(0.05 <= d <= 30.0 for d in delays)
    assert max(delays[20:]) > 1.0  # grows
    assert len(set(delays)) > 30  # jittered


def test_kafka_credentials_from_a_secret(tmp_path: Path) -> None:
    (tmp_path / "kafka-creds").mkdir()
    (tmp_path / "kafka-creds" / "sasl.username").write_text("svc-ingest\n")
    (tmp_path / "kafka-creds" / "sasl.password").write_text("pw-value-123")
    r = SecretResolver(tmp_path)
    read = r.key_of("kafka-creds")
    assert (read("sasl.username"), read("sasl.password"), read("sasl.mechanism")) == (
        "svc-ingest", "pw-value-123", None)