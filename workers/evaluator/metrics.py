"""The evaluator's Prometheus metrics (``alertpipe_evaluator_*``), in a registry of their own.

Labels stay bounded: tenant, rule, status, partition (a pipeline has tens of partitions), never a
device id. Counters are bumped per batch from the engine's counts, not per event.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["LOOP_PHASES", "EvaluatorMetrics"]

# where the worker loop's wall time goes (dedup_wait: blocked on a Redis dedup answer; lookup_wait:
# on the batch's lookup rows)
LOOP_PHASES = ("consume", "decode", "dedup_wait", "lookup_wait", "evaluate", "checkpoint", "housekeeping")


class _LoopSeconds(Collector):
    """``alertpipe_evaluator_loop_seconds_total{phase}`` from a plain dict the loop adds to: a
    float add per phase and batch, cheaper than a labelled Counter's lock."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily("alertpipe_evaluator_loop_seconds",
                                  "Wall time of the worker loop by phase.", labels=("phase",))
        for phase, secs in self.seconds.items():
            fam.add_metric((phase,), secs)
        yield fam

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class EvaluatorMetrics:
    def __init__(self, tenant: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        t = ("tenant",)
        self.tenant = tenant
        self.consumed = Counter("alertpipe_evaluator_events_consumed_total", "Events read from Kafka.",
                                t, registry=r).labels(tenant)
        self.evaluated = Counter("alertpipe_evaluator_events_evaluated_total",
                                 "Events accepted by the engine (released in seq order).", t,
                                 registry=r).labels(tenant)
        self.deduped = Counter("alertpipe_evaluator_events_deduped_total",
                               "Replayed or duplicated events skipped.", ("tenant", "by"), registry=r)
        self.skipped = Counter("alertpipe_evaluator_events_skipped_total",
                               "Events of keys another canary track owns, skipped before decoding.", t,
                               registry=r).labels(tenant)
        self.suppressed = Counter("alertpipe_evaluator_alerts_suppressed_total",
                                  "Alert transitions another canary track publishes (a handover's warm-up).",
                                  t, registry=r).labels(tenant)
        self.late = Counter("alertpipe_evaluator_events_late_total",
                            "Events older than the watermark, sent to the late topic.", t,
                            registry=r).labels(tenant)
        self.malformed = Counter("alertpipe_evaluator_events_malformed_total",
                                 "Events sent to the dead-letter topic.", t, registry=r).labels(tenant)
        self.gaps = Counter("alertpipe_evaluator_gaps_total", "Sequence gaps detected.", t,
                            registry=r).labels(tenant)
        self.gap_events = Counter("alertpipe_evaluator_gap_missing_events_total",
                                  "Sequence numbers never seen within the lateness bound.", t,
                                  registry=r).labels(tenant)
        self.alerts = Counter("alertpipe_evaluator_alerts_total", "Alert transitions produced.",
                              ("tenant", "rule", "status"), registry=r)
        self.batch_seconds = Histogram("alertpipe_evaluator_batch_processing_seconds",
                                       "Time to process one consumed batch.", registry=r)
        self.event_to_alert = Histogram("alertpipe_evaluator_event_to_alert_seconds",
                                        "From the triggering event (event time or ingest time) to the alert"
                                        " being produced.", ("basis",), buckets=_LATENCY_BUCKETS, registry=r)
        self.watermark_delay = Gauge("alertpipe_evaluator_watermark_delay_seconds",
                                     "Wall clock minus the partition's watermark.", ("partition",),
                                     registry=r)
        self.checkpoint_seconds = Histogram("alertpipe_evaluator_checkpoint_seconds",
                                            "Flush + snapshot to Redis + offset commit.", registry=r)
        self.checkpoint_bytes = Gauge("alertpipe_evaluator_checkpoint_bytes",
                                      "Size of the last checkpoint (full or delta) of a partition.",
                                      ("partition",), registry=r)
        self.checkpoints = Counter("alertpipe_evaluator_checkpoints_total",
                                   "Partition checkpoints written, by kind (full, delta).", ("kind",),
                                   registry=r)
        self.revision = Gauge("alertpipe_evaluator_config_revision_info",
                              "The loaded PipelineConfig revision (value 1).", ("revision",), registry=r)
        self.lag = Gauge("alertpipe_evaluator_consumer_lag_messages",
                         "High watermark minus the next offset to process.", ("partition",), registry=r)
        self.paused = Gauge("alertpipe_evaluator_paused", "1 while the stopEvaluation kill switch holds.",
                            registry=r)
        self.held = Gauge("alertpipe_evaluator_reorder_held_events", "Events waiting in reorder buffers.",
                          registry=r)
        self.groups = Gauge("alertpipe_evaluator_active_groups", "Group keys with rule state.", registry=r)
        self.assigned = Gauge("alertpipe_evaluator_assigned_partitions", "Partitions this process owns.",
                              registry=r)
        self.out_of_touch = Gauge("alertpipe_evaluator_partitions_leader_unreachable",
                                  "Events partitions whose leader has not answered for 3 s (their watermark"
                                  " holds: no idleness while a link is cut).", registry=r)
        self.rules = Gauge("alertpipe_evaluator_rules", "Rules loaded (enabled).", registry=r)
        self.loop_seconds: dict[str, float] = dict.fromkeys(LOOP_PHASES, 0.0)
        r.register(_LoopSeconds(self.loop_seconds))
        # the repartition stage (rules whose groups span devices)
        self.forwarded = Counter("alertpipe_evaluator_repartition_forwarded_total",
                                 "Events forwarded to the repartition topic (one per event and rule).", t,
                                 registry=r).labels(tenant)
        self.group_events = Counter("alertpipe_evaluator_repartition_events_total",
                                    "Forwarded events read by the group stage, by result (accepted,"
                                    " duplicate, late, stale).", ("tenant", "result"), registry=r)
        self.group_watermark_delay = Gauge("alertpipe_evaluator_group_watermark_delay_seconds",
                                           "Wall clock minus the group stage's watermark.", ("partition",),
                                           registry=r)
        self.group_assigned = Gauge("alertpipe_evaluator_group_assigned_partitions",
                                    "Repartition partitions this process owns.", registry=r)
        # lookup tables (lookup('t', key) in rules): rows per batch, from the cache or Redis
        lookup_rows = Counter("alertpipe_evaluator_lookup_rows_total",
                              "Lookup rows the batches' events needed, by result: hit (cached, within"
                              " the TTL), miss (read from Redis), unfetched (never read: evaluated as"
                              " absent).", ("tenant", "result"), registry=r)
        self.lookup_hits = lookup_rows.labels(tenant, "hit")
        self.lookup_misses = lookup_rows.labels(tenant, "miss")
        self.lookup_unfetched = lookup_rows.labels(tenant, "unfetched")
        self.lookup_fetch_seconds = Histogram("alertpipe_evaluator_lookup_fetch_seconds",
                                              "One batch's Redis round trip for its missing lookup rows.",
                                              registry=r)
        self.lookup_cached = Gauge("alertpipe_evaluator_lookup_cached_rows",
                                   "Lookup rows in this process's cache.", registry=r)
        self._revision: str | None = None

    def set_revision(self, revision: str) -> None:
        if self._revision is not None:
            self.revision.remove(self._revision)
        self._revision = revision
        self.revision.labels(revision).set(1)
