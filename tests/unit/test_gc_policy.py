from __future__ import annotations

import argparse
import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from alertpipe.workers import gc_policy

pytestmark = pytest.mark.unit


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Give the test process its collector back as it was (the policy is process-wide)."""
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_policy_freezes_start_up_objects_and_raises_the_young_thresholds(restore_gc: None) -> None:
    oldest = gc.get_threshold()[2]
    assert gc_policy.apply() is True
    assert gc.get_freeze_count() > 1000  # this process's imports: out of every collection
    assert gc.get_threshold() == (gc_policy.DEFAULT_YOUNG, gc_policy.MIDDLE, oldest)


def test_the_deliverers_own_thresholds(restore_gc: None) -> None:
    assert gc_policy.apply(20_000, middle=50, old=100) is True
    assert gc.get_threshold() == (20_000, 50, 100)


def test_zero_keeps_pythons_defaults(restore_gc: None) -> None:
    before = gc.get_threshold()
    assert gc_policy.apply(0) is False
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_argument_defaults_to_the_policy_and_takes_zero() -> None:
    parser = argparse.ArgumentParser()
    gc_policy.add_gc_argument(parser)
    assert parser.parse_args([]).gc_young == gc_policy.DEFAULT_YOUNG
    assert parser.parse_args(["--gc-young", "0"]).gc_young == 0
    other = argparse.ArgumentParser()
    gc_policy.add_gc_argument(other, default=20_000)
    assert other.parse_args([]).gc_young == 20_000


def test_every_collection_is_a_pause_observed_by_generation() -> None:
    registry = CollectorRegistry()
    pauses = gc_policy.GcPauses(registry, "evaluator").install()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        pauses.remove()
    gc.collect(2)  # removed: not observed

    def count(generation: str) -> float:
        v = registry.get_sample_value("alertpipe_gc_pause_seconds_count",
                                      {"worker": "evaluator", "generation": generation})
        return v or 0.0

    assert count("2") == 2
    assert count("0") >= 1  # and any young collection the allocations above started
    total = registry.get_sample_value("alertpipe_gc_pause_seconds_sum",
                                      {"worker": "evaluator", "generation": "2"})
    assert total is not None and total > 0
    assert pauses._callback not in gc.callbacks  # noqa: SLF001


def test_installing_twice_registers_one_callback() -> None:
    pauses = gc_policy.GcPauses(CollectorRegistry(), "deliverer")
    pauses.install().install()
    try:
        assert gc.callbacks.count(pauses._callback) == 1  # noqa: SLF001
    finally:
        pauses.remove()
