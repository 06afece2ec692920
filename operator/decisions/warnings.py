"""Valid specs that will not do what their author expects: one line each, with the field path.

They never block a spec. The admission webhook returns them as admission warnings (``kubectl
apply`` prints ``Warning: ...``) and the reconciler posts them once per generation as a
``SpecWarning`` Event.
"""

from __future__ import annotations

from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.durations import parse_duration

__all__ = ["FAILOVER_SECONDS", "spec_warnings"]

# A Kafka leader failover on default broker settings: the dead broker is fenced after
# broker.session.timeout.ms (9 s), then leaders are elected and clients refresh their metadata.
FAILOVER_SECONDS = 15.0


def spec_warnings(spec: AlertPipelineSpec) -> list[str]:
    """What in ``spec`` is valid but risky (docs/reliability.md measures each)."""
    out: list[str] = []
    idle = parse_duration(spec.idle_timeout)
    if idle < FAILOVER_SECONDS:
        out.append(
            f"spec.idleTimeout: {spec.idle_timeout} is shorter than a Kafka leader failover "
            f"(~{FAILOVER_SECONDS:g}s): a partition whose leader moves looks idle, the watermark passes "
            "its held events and they come late (alerts missed); use at least 30s"
        )
    return out
