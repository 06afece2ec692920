"""Consumer group names and the offset reset policy of the Kafka-consuming roles.

Part of the contract because both sides need them: the workers join these groups, the operator reads
their committed offsets to measure lag (and names them in KEDA ScaledObjects).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["GROUPS_STAGE_SUFFIX", "OFFSET_RESET", "consumer_group"]

OFFSET_RESET: Literal["earliest"] = "earliest"  # a group without a committed offset reads from the start
GROUPS_STAGE_SUFFIX = "-groups"  # the evaluator's second stage (repartition topic) group: <group>-groups


def consumer_group(
    tenant: str, pipeline: str, role: Literal["evaluator", "deliverer", "history"]
) -> str:
    """The default consumer group of ``role`` in one pipeline (a worker's --group overrides it)."""
    if role == "evaluator":
        return f"alertpipe-{tenant}-{pipeline}-evaluator"
    return f"alertpipe.{tenant}.{pipeline}.{role}"
