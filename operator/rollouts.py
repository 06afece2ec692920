"""The rollout controller: the I/O around the canary step machine (decisions/canary.py).

Two entry points. The reconciler calls ``documents`` (which rules the stable track runs, and the
candidate's config, from status.canary; decisions/tracks.py) and ``apply_candidate`` (the candidate
ConfigMap, Deployment and topics, or their removal). The Kopf timer calls ``tick``: it observes
(candidate readiness, the tracks' metrics scraped from their pods, the shadow comparison), calls
``advance`` and writes status.canary and the Events it returns, then asks for a reconcile, which
turns the new status into bucket ranges. The stable rules of record live in the stable ConfigMap
itself (read once per pipeline after a restart), so an operator restart resumes a rollout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from alertpipe.operator.decisions.analysis import Totals, judge, past, sample
from alertpipe.operator.decisions.canary import ACTIVE, Observation, advance, analysis_due, canary_condition
from alertpipe.operator.decisions.compile import CONFIG_KEY, config_map_name
from alertpipe.operator.decisions.conditions import Want, merge_conditions
from alertpipe.operator.decisions.replicas import autoscaled
from alertpipe.operator.decisions.shadow import tally
from alertpipe.operator.decisions.topics import TopicWant, plan_topics
from alertpipe.operator.decisions.tracks import (
    CANDIDATE_COMPONENT,
    candidate_config_map_name,
    candidate_deployment,
    candidate_deployment_name,
    candidate_replicas,
    pinned_image,
    revision,
    rules_revision,
    shadow_topic,
    splittable,
    track_documents,
    warmup_ms,
)
from alertpipe.operator.decisions.workloads import (
    DESIRED_HASH,
    Owner,
    deployment_name,
    desired_config_map,
    labels,
    with_hash,
)
from alertpipe.operator.kafka_admin import KafkaAdminError
from alertpipe.operator.rollout_models import AnalysisResult, CanaryStatus, RolloutSpec, ShadowDiff
from alertpipe.operator.scrape import Scraper
from alertpipe.operator.shadow_reader import read_alerts
from alertpipe.workers.config.durations import parse_duration
from alertpipe.workers.config.models import PipelineConfig, RuleEntry

if TYPE_CHECKING:
    from alertpipe.operator.context import Context
    from alertpipe.operator.models import AlertPipelineSpec

__all__ = ["Rollouts", "canary_status", "condition_of"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
Key = tuple[str, str]
SHADOW_READ_EVERY = 5.0  # seconds between two readings of the alert topics in shadow mode


def canary_status(body: Any) -> CanaryStatus | None:
    raw = (body.get("status") or {}).get("canary")
    return CanaryStatus.model_validate(raw) if raw else None


def condition_of(body: Any) -> Want | None:
    return canary_condition(canary_status(body))


@dataclass(frozen=True)
class _Inputs:
    compiled: PipelineConfig
    candidate_revision: str  # rules and image the spec asks for
    stable_revision: str  # rules and image the stable track runs now
    stable_rules: list[RuleEntry]
    splittable: bool
    warmup_ms: int
    lateness_ms: int
    partitions: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class Rollouts:
    def __init__(self, rec: Context, scraper: Scraper) -> None:
        self.rec = rec
        self.scraper = scraper
        self._stable: dict[Key, list[RuleEntry] | None] = {}
        self._inputs: dict[Key, _Inputs] = {}
        self._baseline: dict[Key, tuple[int, Totals, Totals]] = {}
        self._shadow_at: dict[Key, float] = {}
        self._topics_ok: set[tuple[str, ...]] = set()
        self._images: dict[Key, tuple[str, str]] = {}  # (the spec's evaluator image, what stable runs)
        self._leftover: set[Key] = set()  # candidate ConfigMaps whose Deployment is being removed

    # --- called by the reconciler -----------------------------------------------------------------

    async def _stable_rules(self, namespace: str, name: str) -> list[RuleEntry] | None:
        key = (namespace, name)
        if key not in self._stable:
            cm = await self.rec.kube.get("ConfigMap", namespace, config_map_name(name))
            text = ((cm or {}).get("data") or {}).get(CONFIG_KEY)
            self._stable[key] = list(PipelineConfig.from_json(text).rules) if text else None
        return self._stable[key]

    def pin_stable_image(self, body: Any, spec: AlertPipelineSpec, desired: list[JSON]) -> list[JSON]:
        """``desired`` with the stable evaluator's image held at the live one while the spec's image
        is a rollout's candidate (decisions/tracks.pinned_image); remembers both images."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        dname = deployment_name(meta["name"], "evaluator")
        index = next((i for i, o in enumerate(desired)
                      if o["kind"] == "Deployment" and o["metadata"]["name"] == dname), None)
        if index is None:
            return desired
        want = str(desired[index]["spec"]["template"]["spec"]["containers"][0]["image"])
        live_dep = self.rec.store.deployments.get((key[0], dname))
        live = None
        if live_dep is not None:
            pod_spec = ((live_dep.get("spec") or {}).get("template") or {}).get("spec") or {}
            live = str(pod_spec["containers"][0].get("image")) if pod_spec.get("containers") else None
        inputs = self._inputs.get(key)
        rules_rev = inputs.compiled.rules_revision() if inputs is not None else ""
        image = pinned_image(want, live, canary_status(body), spec.rollout, revision(rules_rev, want))
        self._images[key] = (want, image)
        if image == want:
            return desired
        dep = desired[index]
        containers = [{**dep["spec"]["template"]["spec"]["containers"][0], "image": image},
                      *dep["spec"]["template"]["spec"]["containers"][1:]]
        pod = {**dep["spec"]["template"]["spec"], "containers": containers}
        template = {**dep["spec"]["template"], "spec": pod}
        meta = {**dep["metadata"], "annotations": {k: v for k, v in dep["metadata"]["annotations"].items()
                                                   if k != DESIRED_HASH}}
        pinned = with_hash({**dep, "metadata": meta, "spec": {**dep["spec"], "template": template}})
        return [*desired[:index], pinned, *desired[index + 1:]]

    async def documents(
        self, body: Any, spec: AlertPipelineSpec, compiled: PipelineConfig
    ) -> tuple[PipelineConfig, PipelineConfig | None]:
        """(stable config, candidate config or None): without spec.rollout, the compiled config."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if spec.rollout is None:
            self._stable[key] = list(compiled.rules)
            self._inputs.pop(key, None)
            return compiled, None
        stable_rules = await self._stable_rules(*key)
        want, runs = self._images.get(key, ("", ""))
        candidate_rev = revision(compiled.rules_revision(), want)
        stable, candidate = track_documents(compiled, stable_rules, canary_status(body), spec.rollout,
                                            candidate_rev)
        self._stable[key] = list(stable.rules)
        self._inputs[key] = _Inputs(
            compiled=compiled, candidate_revision=candidate_rev,
            stable_revision=revision(rules_revision(stable.rules), runs), stable_rules=list(stable.rules),
            splittable=splittable(compiled.rules) and splittable(stable.rules),
            warmup_ms=warmup_ms(spec.rollout, compiled),
            lateness_ms=round(parse_duration(compiled.allowed_lateness) * 1000),
            partitions=spec.kafka.topics.events.partitions,
        )
        return stable, candidate

    async def apply_candidate(
        self, body: Any, owner: Owner, spec: AlertPipelineSpec, candidate: PipelineConfig | None,
        desired: list[JSON],
    ) -> None:
        """The candidate track's ConfigMap, topics and Deployment; removed when there is none."""
        ns, name = owner.namespace, owner.name
        dname = candidate_deployment_name(name)
        cm_name = candidate_config_map_name(name)
        if candidate is None:
            if (ns, dname) in self.rec.store.deployments:
                # silence it first: a stopping pod takes seconds to exit and must not publish meanwhile
                await self._silence(ns, cm_name)
                await self.rec.kube.delete("Deployment", ns, dname)
                self._leftover.add((ns, cm_name))
                self.rec.event_soon(body, "Normal", "WorkloadRemoved", f"canary track removed: {dname}")
            elif (ns, cm_name) in self._leftover:  # its pods are gone: the config can go too
                self.rec.applier.disown(("ConfigMap", ns, cm_name))  # not drift: ours
                await self.rec.kube.delete("ConfigMap", ns, cm_name)
                self._leftover.discard((ns, cm_name))
            return
        self._leftover.discard((ns, cm_name))
        await self._ensure_topics(ns, spec, candidate)
        cm = desired_config_map(owner, candidate)
        cm["metadata"]["name"] = candidate_config_map_name(name)
        cm["metadata"]["labels"] = labels(name, "config-canary")
        summary = f"candidate config revision {candidate.revision}: {len(candidate.rules)} rule(s)"
        await self.rec.applier.apply_config_map(body, cm, summary)
        stable = next((o for o in desired if o["kind"] == "Deployment"
                       and o["metadata"]["name"].endswith("-evaluator")), None)
        if stable is not None:
            want = self._images.get((ns, name), ("", ""))[0] or None
            auto = autoscaled(spec, "evaluator")
            base = auto.min_replicas if auto is not None else spec.evaluator.replicas
            dep = candidate_deployment(stable, name, candidate_replicas(base), want)
            await self.rec.applier.apply(dep, body)

    async def _silence(self, ns: str, cm_name: str) -> None:
        """The candidate's config with no bucket range (it evaluates and publishes nothing)."""
        cm = await self.rec.kube.get("ConfigMap", ns, cm_name)
        text = ((cm or {}).get("data") or {}).get(CONFIG_KEY)
        if not text:
            return
        cfg = PipelineConfig.from_json(text)
        if cfg.track is None or not cfg.track.ranges:
            return
        quiet = cfg.model_copy(update={"track": cfg.track.model_copy(update={"ranges": []})}).with_revision()
        key = ("ConfigMap", ns, cm_name)
        patch = {"data": {CONFIG_KEY: quiet.to_json().decode()}}
        out = await self.rec.kube.merge_patch("ConfigMap", ns, cm_name, patch)
        # the reconciler's memory of that ConfigMap: ours is this write now (not drift), nothing cached
        self.rec.applier.wrote(key, out)
        self.rec.applier.forget(key)
        self.rec.applier.disown(key)

    async def _ensure_topics(self, ns: str, spec: AlertPipelineSpec, candidate: PipelineConfig) -> None:
        topics = spec.kafka.topics
        want = []
        if candidate.kafka.topics.repartition is not None:
            want.append(TopicWant("repartitionCandidate", candidate.kafka.topics.repartition,
                                  topics.repartition.partitions, 86_400_000))
        if candidate.track is not None and candidate.track.shadow:
            want.append(TopicWant("shadowAlerts", shadow_topic(candidate), topics.alerts.partitions,
                                  86_400_000))
        names = tuple(sorted(w.name for w in want))
        if not want or names in self._topics_ok:
            return
        try:
            options = await self.rec.topics.kafka_options(ns, spec)
            admin = await asyncio.to_thread(self.rec.admins.get, spec.kafka.bootstrap_servers, options)
            seen = await asyncio.to_thread(admin.observe, list(names))
            plan = plan_topics(want, seen)
            if plan.changes:
                await asyncio.to_thread(admin.apply, plan)
            self._topics_ok.add(names)
        except KafkaAdminError as exc:
            logger.warning("%s: canary topics %s not ready: %s", ns, ", ".join(names), exc)

    # --- the timer -----------------------------------------------------------------------------

    async def tick(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        body = self.rec.store.pipelines.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        spec, _errors = self.rec.spec(body)
        inputs = self._inputs.get(key)
        if spec is None or spec.rollout is None or inputs is None:
            return
        rollout = spec.rollout
        st = canary_status(body)
        now = _now_ms()
        active = st is not None and st.phase in ACTIVE
        stable_rev = st.stable_revision if st is not None and active else inputs.stable_revision
        obs = Observation(
            now_ms=now, candidate_revision=inputs.candidate_revision, stable_revision=stable_rev,
            splittable=inputs.splittable, warmup_ms=inputs.warmup_ms, lateness_ms=inputs.lateness_ms,
            candidate_ready=bool(st and st.phase == "Starting") and await self._ready(key, inputs),
            analysis=await self._analyse(key, rollout, now) if analysis_due(rollout, st, now) else None,
            shadow_diff=await self._shadow(key, spec, st, inputs, now),
            old_owner_past_cut=await self._past_cut(key, st, now),
        )
        decision = advance(rollout, st, obs)
        if decision.status != st:
            await self._write(body, decision.status)
            self.rec.queue.schedule(("pipeline", namespace, name), 0.0)
        for type_, reason, message in decision.events:
            self.rec.event_soon(body, type_, reason, message)

    async def _past_cut(self, key: Key, st: CanaryStatus | None, now: int) -> bool:
        """A due handover's old owner (stable, or the candidate when stable takes keys back) has a
        watermark past the cut: it published everything before the cut before it drops the keys."""
        h = st.handover if st is not None else None
        if h is None or now < h.done_ms:
            return True
        old = CANDIDATE_COMPONENT if h.kind == "toStable" else "evaluator"
        return past(await self.scraper.track(key[0], key[1], old), h.cut_ms, now)

    async def _ready(self, key: Key, inputs: _Inputs) -> bool:
        """Candidate pods answer and hold every events partition."""
        t = await self.scraper.track(key[0], key[1], CANDIDATE_COMPONENT)
        return t.pods > 0 and t.assigned >= inputs.partitions

    async def _analyse(self, key: Key, rollout: RolloutSpec, now: int) -> AnalysisResult | None:
        stable = await self.scraper.track(key[0], key[1], "evaluator")
        cand = await self.scraper.track(key[0], key[1], CANDIDATE_COMPONENT)
        interval = parse_duration(rollout.analysis.interval) * 1000
        base = self._baseline.get(key)
        if base is None or now - base[0] > 3 * interval:
            self._baseline[key] = (now, stable, cand)
            return None  # the first scrape of a run: an interval is measured from here
        if now - base[0] < 0.8 * interval:
            return None
        self._baseline[key] = (now, stable, cand)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000))
        s_sample = sample(base[1], stable) if stable.pods else None
        c_sample = sample(base[2], cand) if cand.pods else None
        return judge(rollout.analysis, s_sample, c_sample, at)

    async def _shadow(
        self, key: Key, spec: AlertPipelineSpec, st: CanaryStatus | None, inputs: _Inputs, now: int
    ) -> ShadowDiff | None:
        if (st is None or st.phase not in ("Shadow", "WaitingForPromote") or spec.rollout is None
                or spec.rollout.strategy != "shadow-then-canary"):
            return None
        if time.monotonic() - self._shadow_at.get(key, 0.0) < SHADOW_READ_EVERY:
            return None
        self._shadow_at[key] = time.monotonic()
        since = st.shadow_diff.since_ms if st.shadow_diff and st.shadow_diff.since_ms else (
            st.step_started_ms + inputs.warmup_ms)
        until = now - inputs.lateness_ms - 2000
        if until <= since:
            return None
        options = {"bootstrap.servers": spec.kafka.bootstrap_servers,
                   **await self.rec.topics.kafka_options(key[0], spec)}
        topics = inputs.compiled.kafka.topics
        read_from = since - 60_000  # record timestamps trail event times by the pipeline's latency
        stable = await asyncio.to_thread(read_alerts, options, topics.alerts, read_from)
        cand = await asyncio.to_thread(read_alerts, options, shadow_topic(inputs.compiled), read_from)
        return tally(stable, cand, since, until)

    async def _write(self, body: Any, st: CanaryStatus | None) -> None:
        meta = body["metadata"]
        value = orjson.loads(st.model_dump_json(by_alias=True)) if st is not None else None
        # the Canary condition in the same write, so status.canary and the condition never disagree
        # (the reconciler computes the same one from status.canary on its next pass)
        previous = list((body.get("status") or {}).get("conditions") or [])
        want = canary_condition(st)
        conditions = [c for c in previous if c.get("type") != "Canary"]
        if want is not None:
            conditions += merge_conditions(previous, [want], datetime.now(UTC), meta.get("generation"))
        patched = await self.rec.kube.merge_patch(
            "AlertPipeline", meta["namespace"], meta["name"],
            {"status": {"canary": value, "conditions": conditions}}, sub="status")
        stored = self.rec.store.pipelines.get((meta["namespace"], meta["name"]))
        if stored is not None and stored["metadata"].get("uid") == patched.get("metadata", {}).get("uid"):
            stored["status"] = patched.get("status", {})
        judged = f" (analysis {st.last_analysis.verdict}: {st.last_analysis.message})" if (
            st is not None and st.last_analysis is not None) else ""
        logger.info("%s/%s: canary %s%s", meta["namespace"], meta["name"],
                    f"{st.phase} {st.weight}%: {st.message}" if st is not None else "cleared", judged)
