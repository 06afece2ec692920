"""The evaluator's pure pieces: the fast decode path agrees with the shared codec, rule selection
honours kill switches, dedup keys are stable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.evaluator.records import fast_decode as _fast_decode
from alertpipe.workers.evaluator.redis_state import RedisState, dedup_key
from alertpipe.workers.evaluator.settings import compile_rules, engine_settings
from alertpipe.workers.events import EventError, decode_event

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**45)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "tenant": st.sampled_from(["acme", "globex", "", 1]),
        "deviceId": st.one_of(st.text(max_size=3), st.integers(-5, 5), st.text(min_size=257, max_size=258)),
        "seq": st.one_of(st.integers(-2, 10), st.booleans(), st.floats(allow_nan=False)),
        "ts": st.one_of(
            st.integers(0, 8_000_000_000_000),
            st.just("2026-01-01T00:00:00Z"),
            st.booleans(),
            st.floats(1e12, 2e12),
        ),
        "type": st.one_of(st.text(max_size=3), st.integers(-5, 5)),
        "value": json_values,
    },
)


@settings(max_examples=400)
@given(st.one_of(events, json_values))
def test_fast_decode_accepts_only_what_decode_event_accepts(obj: Any) -> None:
    raw = orjson.dumps(obj)
    fast = _fast_decode(orjson.loads, raw, "acme")
    try:
        ev = decode_event(raw, "acme")
    except EventError:
        assert fast is None
        return
    if fast is not None:  # the fast path may decline (then decode_event decides); if it accepts, it agrees
        assert fast == (ev.data, ev.device_id, ev.seq, ev.ts_ms)


def test_fast_decode_takes_the_common_case_and_declines_garbage() -> None:
    ev = {"tenant": "acme", "deviceId": "d", "seq": 3, "ts": 1_767_225_600_000, "type": "cpu"}
    assert _fast_decode(orjson.loads, orjson.dumps(ev), "acme") == (ev, "d", 3, 1_767_225_600_000)
    assert _fast_decode(orjson.loads, b"not json", "acme") is None
    assert _fast_decode(orjson.loads, None, "acme") is None


def config(**extra: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "tenant": "acme",
            "pipeline": "main",
            "allowedLateness": "2s",
            "kafka": {
                "bootstrapServers": "127.0.0.1:1",
                "topics": {"events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"},
            },
            "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "p"},
            "rules": [
                {"name": "one", "spec": {"threshold": {"condition": "value > 1"}}},
                {"name": "two", "spec": {"threshold": {"condition": "value > 2"}}},
                {"name": "bad", "spec": {"threshold": {"condition": "nosuch(value)"}}},
            ],
            **extra,
        }
    ).with_revision()


def test_compile_rules_skips_disabled_and_invalid_rules() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert [r.name for r in compile_rules(config(), now)] == ["one", "two"]
    switches = {
        "killSwitches": {
            "disabledRules": [
                {"name": "one", "reason": "noisy"},
                {"name": "two", "reason": "expired", "until": (now - timedelta(minutes=1)).isoformat()},
            ]
        }
    }
    assert [r.name for r in compile_rules(config(**switches), now)] == ["two"]


def test_engine_settings_from_config() -> None:
    cfg = config()
    s = engine_settings(cfg)
    assert (s.tenant, s.pipeline, s.lateness_ms, s.revision) == ("acme", "main", 2000, cfg.revision)


def test_dedup_key_is_stable_and_scoped() -> None:
    k = dedup_key("ap:x", "acme", "d1", 7)
    assert k == dedup_key("ap:x", "acme", "d1", 7) and k.startswith(b"ap:x:ev:") and len(k) == 8 + 12
    assert (
        len(
            {
                k,
                dedup_key("ap:x", "acme", "d1", 8),
                dedup_key("ap:x", "acme", "d2", 7),
                dedup_key("ap:x", "globex", "d1", 7),
                dedup_key("ap:y", "acme", "d1", 7),
            }
        )
        == 5
    )


class _Consumer:
    """A consumer whose local queue holds ``queued`` records; records the calls made."""

    def __init__(self, queued: int) -> None:
        self.queued = queued
        self.calls: list[tuple[str, int, float]] = []

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.calls.append(("consume", n, timeout))
        k = min(n, self.queued)
        self.queued -= k
        return ["m"] * k


@pytest.mark.parametrize(("queued", "full", "got"),
                         [(0, 5000, 0), (3, 5000, 3), (9000, 5000, 5000), (2, 1, 1)])
def test_a_batch_waits_for_its_first_record_only(queued: int, full: int, got: int) -> None:
    from types import SimpleNamespace

    from alertpipe.workers.evaluator.worker import Evaluator

    c = _Consumer(queued)
    me = SimpleNamespace(consumer=c, opts=SimpleNamespace(poll_timeout=0.1))
    assert len(Evaluator._next_batch(me, full)) == got  # type: ignore[arg-type]
    # never consume(n > 1, timeout > 0): it would wait for n records, below n/timeout ev/s the timeout
    assert c.calls[0] == ("consume", 1, 0.1)
    assert all(timeout == 0 for _kind, _n, timeout in c.calls[1:])


class _Script:
    def __init__(self, src: str, calls: list[str]) -> None:
        self.src = src
        self.calls = calls

    def __call__(self, keys: list[Any], args: list[Any]) -> bytes:
        self.calls.append(self.src)
        if "'NX'" in self.src:
            raise redis.ResponseError("ERR syntax error")  # what a Redis older than 7.0 answers
        return b"0" * (len(args[0]) // int(args[3]))


class _OldRedis:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def register_script(self, src: str) -> _Script:
        return _Script(src, self.calls)


def test_dedup_falls_back_to_get_then_set_on_a_redis_older_than_7() -> None:
    client = _OldRedis()
    state = RedisState(client, "p", "events")  # type: ignore[arg-type]
    key = dedup_key("p", "acme", "d1", 1)
    assert state.check([key, key], [0, 0], [1, 2], 60) == b"00"
    assert state.check([key], [0], [3], 60) == b"0"
    # the SET NX GET script was tried once; every answer since came from the GET-then-SET one
    assert ["'NX'" in c for c in client.calls] == [True, False, False]


def test_dedup_errors_other_than_the_old_syntax_are_raised() -> None:
    class Broken(_OldRedis):
        def register_script(self, src: str) -> Any:
            def fail(keys: list[Any], args: list[Any]) -> bytes:
                raise redis.ResponseError("NOSCRIPT or OOM: anything else")
            return fail

    state = RedisState(Broken(), "p", "events")  # type: ignore[arg-type]
    with pytest.raises(redis.ResponseError, match="anything else"):
        state.check([dedup_key("p", "acme", "d1", 1)], [0], [1], 60)
