"""The two evaluator tracks of a rollout as documents: the stable and candidate PipelineConfig, the
candidate's Deployment, and the names they use. Pure.

The status.canary written by the rollout timer says where the rollout stands; this turns it into
bucket ranges (weight % of the 10,000 buckets, from 0 up, belong to the candidate) and, during a
handover, event-time emit bounds. Kill switches, channels and settings come from the compiled
config for both tracks (they apply at once); only the rules are rolled out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from alertpipe.operator.decisions.canary import ACTIVE
from alertpipe.operator.decisions.workloads import labels, with_hash
from alertpipe.operator.rollout_models import CanaryStatus, RolloutSpec
from alertpipe.workers.config.durations import parse_duration
from alertpipe.workers.config.models import PipelineConfig, RuleEntry
from alertpipe.workers.config.tracks import BUCKETS, BucketRange, Track

__all__ = [
    "CANDIDATE_COMPONENT",
    "candidate_config_map_name",
    "candidate_deployment",
    "candidate_deployment_name",
    "candidate_replicas",
    "pinned_image",
    "revision",
    "rules_revision",
    "shadow_topic",
    "splittable",
    "stable_rules_for",
    "track_documents",
    "warmup_ms",
]

JSON = dict[str, Any]
CANDIDATE_COMPONENT = "evaluator-canary"
MIN_WARMUP_MS = 10_000


def candidate_config_map_name(pipeline: str) -> str:
    return f"{pipeline}-config-canary"


def candidate_deployment_name(pipeline: str) -> str:
    return f"{pipeline}-evaluator-canary"


def shadow_topic(cfg: PipelineConfig) -> str:
    return f"{cfg.kafka.topics.alerts}-shadow"


def rules_revision(rules: Sequence[RuleEntry]) -> str:
    return PipelineConfig.revision_of_rules(list(rules))


def revision(rules_rev: str, image: str | None) -> str:
    """What a rollout rolls out: a rule set and the evaluator image that runs it."""
    if not image:
        return rules_rev
    return hashlib.sha256(f"{rules_rev}\x1f{image}".encode()).hexdigest()[:16]


def pinned_image(
    desired: str, live: str | None, st: CanaryStatus | None, rollout: RolloutSpec | None, candidate_rev: str
) -> str:
    """The image the *stable* evaluator runs: the spec's, unless a rollout holds the live one while
    the spec's image is a candidate (it reaches stable with the promotion's second handover)."""
    if rollout is None or live is None or live == desired:
        return desired
    if st is not None and st.phase == "Succeeded" and st.stable_revision == candidate_rev:
        return desired
    if (st is not None and st.phase in ACTIVE and st.candidate_revision == candidate_rev
            and st.handover is not None and st.handover.kind == "toStable"):
        return desired
    return live


def splittable(rules: Sequence[RuleEntry]) -> bool:
    """True when every rule groups by deviceId, so a key's whole state lives on one track."""
    return all("deviceId" in r.spec.by for r in rules)


def warmup_ms(rollout: RolloutSpec, cfg: PipelineConfig) -> int:
    """spec.rollout.warmup, or the longest memory of a rule (window + slide, for, absence) plus the
    allowed lateness, at least 10 s."""
    if rollout.warmup is not None:
        return round(parse_duration(rollout.warmup) * 1000)
    longest = 0.0
    for r in cfg.rules:
        s = r.spec
        if s.aggregate is not None:
            longest = max(longest, parse_duration(s.aggregate.window)
                          + parse_duration(s.aggregate.every or s.aggregate.window))
        if s.absence is not None:
            longest = max(longest, parse_duration(s.absence.for_))
        if s.for_ is not None:
            longest = max(longest, parse_duration(s.for_))
    return max(MIN_WARMUP_MS, round((longest + parse_duration(cfg.allowed_lateness)) * 1000))


def _live(st: CanaryStatus | None, revision: str) -> bool:
    """A rollout of this very candidate is running."""
    return st is not None and st.phase in ACTIVE and st.candidate_revision == revision


def stable_rules_for(
    compiled: PipelineConfig, stable_rules: Sequence[RuleEntry] | None, st: CanaryStatus | None,
    rollout: RolloutSpec | None, candidate_rev: str | None = None,
) -> list[RuleEntry]:
    """The rules the stable track runs: the compiled ones unless a rollout holds them back. A stable
    track without rules (a new pipeline whose rules were seen after it) has nothing to compare a
    candidate with: its first rules apply at once."""
    if rollout is None or not stable_rules:
        return list(compiled.rules)
    if rules_revision(stable_rules) == compiled.rules_revision():
        return list(compiled.rules)
    cand = candidate_rev or compiled.rules_revision()
    if st is not None and st.phase == "Succeeded" and st.stable_revision == cand:
        return list(compiled.rules)
    if _live(st, cand) and st is not None and st.handover is not None and st.handover.kind == "toStable":
        return list(compiled.rules)
    return list(stable_rules)  # a rollout runs, is about to start, or rolled this candidate back


def _b(weight: int) -> int:
    return weight * BUCKETS // 100


def _ranges(st: CanaryStatus, candidate: bool) -> list[BucketRange]:
    """Bucket ranges of one track at this point of the rollout (both tracks together cover every
    bucket once, plus the moving range twice with complementary emit bounds)."""
    h = st.handover
    if h is None:
        w = _b(st.weight)
        return [BucketRange(start=0, end=w)] if candidate else [BucketRange(start=w, end=BUCKETS)]
    a, b = _b(h.from_weight), _b(h.to_weight)
    to_candidate = h.kind != "toStable"
    moving = BucketRange(start=a, end=b, emit_from_ms=h.cut_ms) if candidate == to_candidate else (
        BucketRange(start=a, end=b, emit_until_ms=h.cut_ms))
    out = [moving]
    if candidate and a > 0:
        out.insert(0, BucketRange(start=0, end=a))
    if not candidate and b < BUCKETS:
        out.append(BucketRange(start=b, end=BUCKETS))
    return out


def _candidate_config(compiled: PipelineConfig, st: CanaryStatus, shadow: bool) -> PipelineConfig:
    rev = st.candidate_revision[:8]
    topics = compiled.kafka.topics
    changes: dict[str, Any] = {}
    if topics.repartition is not None:  # its stage 1 and 2 never mix with the stable track's
        changes["repartition"] = f"{topics.repartition}-candidate"
    if shadow:
        changes.update(alerts=shadow_topic(compiled), late=shadow_topic(compiled),
                       dead_letter=shadow_topic(compiled))
    kafka = compiled.kafka.model_copy(update={"topics": topics.model_copy(update=changes)})
    redis = compiled.redis.model_copy(update={"key_prefix": f"{compiled.redis.key_prefix}canary-{rev}:"})
    if shadow:
        ranges = [BucketRange(start=0, end=BUCKETS)]
    elif st.phase in ("Starting", "WaitingForPromote"):
        ranges = []
    else:
        ranges = _ranges(st, candidate=True)
    track = Track(name="candidate", ranges=ranges, start_at="latest", shadow=shadow,
                  consumer_group=f"alertpipe-{compiled.tenant}-{compiled.pipeline}-evaluator-canary-{rev}")
    return compiled.model_copy(update={"kafka": kafka, "redis": redis, "track": track}).with_revision()


def track_documents(
    compiled: PipelineConfig, stable_rules: Sequence[RuleEntry] | None, st: CanaryStatus | None,
    rollout: RolloutSpec | None, candidate_rev: str | None = None,
) -> tuple[PipelineConfig, PipelineConfig | None]:
    """(stable config, candidate config or None) for the compiled config and the rollout's state;
    ``candidate_rev`` is the candidate's revision (rules and image), by default the rules'."""
    rules = stable_rules_for(compiled, stable_rules, st, rollout, candidate_rev)
    stable = compiled.model_copy(update={"rules": rules})
    if rollout is None or st is None or not _live(st, candidate_rev or compiled.rules_revision()):
        return stable.with_revision(), None
    shadowing = rollout.strategy == "shadow-then-canary" and st.phase in (
        "Starting", "Shadow", "WaitingForPromote")
    if st.phase in ("Progressing", "Promoting"):
        track = Track(name="stable", ranges=_ranges(st, candidate=False))
        stable = stable.model_copy(update={"track": track})
    return stable.with_revision(), _candidate_config(compiled, st, shadowing)


def candidate_replicas(stable_replicas: int) -> int:
    """Replicas of the candidate Deployment while a rollout runs: the evaluator's replicas, or its
    autoscaling minReplicas (at least one pod). The lag scaler counts them against the evaluator's
    maxReplicas (operator/scaler.py, ``other_tracks_replicas``); the candidate itself is not scaled.
    """
    return max(1, stable_replicas)


def candidate_deployment(stable: JSON, pipeline: str, replicas: int, image: str | None = None) -> JSON:
    """The candidate track's Deployment, from the stable evaluator's desired one: its own name,
    component label and selector (the stable ReplicaSet must never adopt its pods), its own config,
    and ``image`` (the spec's evaluator image, which the stable one may be pinned away from)."""
    dep: JSON = {k: v for k, v in stable.items()}
    meta = dict(dep["metadata"])
    meta["name"] = candidate_deployment_name(pipeline)
    meta["labels"] = {**labels(pipeline, CANDIDATE_COMPONENT), "alertpipe.io/track": "candidate"}
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                           if k != "alertpipe.io/desired-hash"}
    spec = dict(dep["spec"])
    spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": {**spec["selector"]["matchLabels"],
                                        "app.kubernetes.io/component": CANDIDATE_COMPONENT}}
    template = dict(spec["template"])
    template["metadata"] = {"labels": dict(meta["labels"])}
    pod = dict(template["spec"])
    containers = []
    for c in pod["containers"]:
        c = dict(c)
        if image:
            c["image"] = image
        c["command"] = [
            f"configmap:{meta['namespace']}/{candidate_config_map_name(pipeline)}"
            if a.startswith("configmap:") else a for a in c["command"]
        ]
        containers.append(c)
    pod["containers"] = containers
    template["spec"] = pod
    spec["template"] = template
    dep["metadata"], dep["spec"] = meta, spec
    return with_hash(dep)
