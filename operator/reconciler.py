"""The reconcile loop: observed AlertPipelines and AlertRules in, topics, config, workloads and status out.

Kopf feeds the ``Store`` (watch events) and the ``WorkQueue`` schedules one reconcile per pipeline and
one rule-status pass per namespace. ``reconcile_pipeline`` is orchestration: it gathers what is
(apiserver, Kafka, Redis), asks the pure decisions (operator/decisions/: workloads, compile,
pipeline_status, rule_status, events) what should be, and hands the writes to its helpers: ``apply``
(owned objects, drift), ``topics`` (Kafka topics) and ``events`` (Kubernetes Events). Only what
differs from the live objects is written, so a resync or an operator restart writes nothing.
Transient failures (Kafka down, 409, 5xx) retry with capped, jittered backoff; an impossible spec
stops with a permanent reason in status until the spec changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from alertpipe.operator import metrics
from alertpipe.operator.apply import Applier
from alertpipe.operator.backoff import backoff
from alertpipe.operator.context import OperatorSettings
from alertpipe.operator.decisions.compile import compile_config
from alertpipe.operator.decisions.conditions import Observed
from alertpipe.operator.decisions.connectivity import Failure
from alertpipe.operator.decisions.events import invalid_spec_event, transition_events
from alertpipe.operator.decisions.patch import merge_patch
from alertpipe.operator.decisions.pipeline_status import (
    Findings,
    autoscaled_replicas,
    available_replicas,
    desired_replicas,
    next_status,
    pipeline_status,
    retry_after,
    select_rules,
)
from alertpipe.operator.decisions.replicas import operator_scaled
from alertpipe.operator.decisions.topics import desired_topics
from alertpipe.operator.decisions.validation import (
    errors_text,
)
from alertpipe.operator.decisions.warnings import spec_warnings
from alertpipe.operator.decisions.workloads import (
    DESIRED_HASH,
    Owner,
    desired_config_map,
    desired_objects,
)
from alertpipe.operator.events import EventPoster
from alertpipe.operator.kafka_admin import AdminPool, KafkaAdminError
from alertpipe.operator.keda_engine import reconcile_keda
from alertpipe.operator.kube import Kube, KubeError
from alertpipe.operator.models import AlertPipelineSpec, RedisSpec
from alertpipe.operator.parsed import Parsed
from alertpipe.operator.queue import WorkQueue
from alertpipe.operator.redis_check import RedisChecks
from alertpipe.operator.rollouts import Rollouts, condition_of
from alertpipe.operator.rule_statuses import RuleStatuses
from alertpipe.operator.scrape import Scraper
from alertpipe.operator.slo import SLOWatch
from alertpipe.operator.slo import condition_of as slo_condition_of
from alertpipe.operator.store import Store
from alertpipe.operator.topics import Admins, Topics

__all__ = ["OperatorSettings", "Reconciler", "Store"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
Key = Hashable  # (kind, namespace, name); kind "pipeline" or "rules" (name "")
FIRST_KINDS = ("Deployment", "ServiceAccount")  # written before the other owned objects


def _now() -> datetime:
    return datetime.now(UTC)


class RedisCheck(Protocol):
    """redis_check.RedisChecks: does the pipeline's Redis answer (in-memory in unit tests)."""

    async def check(self, namespace: str, name: str, spec: RedisSpec) -> Failure | None: ...
    def forget(self, namespace: str, name: str) -> None: ...


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        admins: Admins | None = None,
        redis: RedisCheck | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.store = Store()
        self.queue = WorkQueue(self._work, concurrency=settings.concurrency)
        self.events = EventPoster(kube)
        self.admins: Admins = admins or AdminPool()
        self.topics = Topics(kube, self.admins, self.events, settings.resync)
        self.applier = Applier(
            kube, self.store.deployments, self.store.pipelines, self.events, settings.resync
        )
        self._redis: RedisCheck = redis or RedisChecks(
            lambda ns, n: self.kube.get("Secret", ns, n), 0.9 * settings.resync
        )
        self._failures: dict[Key, int] = {}
        self._redis_failures: dict[tuple[str, str], int] = {}
        self.parsed = Parsed()
        self.rule_statuses = RuleStatuses(kube, self.store, self.parsed, self.events)
        # canary rollouts: the tracks' documents, the candidate's objects, the step timer (rollouts.py)
        self.rollouts = Rollouts(self, Scraper(kube, settings.pod_address_annotation))
        self.slo = SLOWatch(self, self.rollouts.scraper)  # status.slo; SLOMet comes from it below

    # --- inputs from Kopf -------------------------------------------------------------------

    def pipeline_seen(self, body: Mapping[str, Any]) -> None:
        if self.store.put(self.store.pipelines, body):
            meta = body["metadata"]
            self.queue.schedule(("pipeline", meta["namespace"], meta["name"]), 0.0)
            self._debounced(("rules", meta["namespace"], ""))
        metrics.PIPELINES.set(len(self.store.pipelines))

    def pipeline_gone(self, namespace: str, name: str) -> None:
        self.store.pipelines.pop((namespace, name), None)
        self.store.compiled.pop((namespace, name), None)
        self.topics.forget(namespace, name)
        self._redis.forget(namespace, name)
        self.applier.forget_pipeline(namespace, name)
        self._debounced(("rules", namespace, ""))
        metrics.PIPELINES.set(len(self.store.pipelines))
        with contextlib.suppress(KeyError):  # never reconciled to the end
            metrics.PIPELINE_RECONCILED.remove(namespace, name)
        metrics.forget_config_revision(namespace, name)
        self.slo.forget(namespace, name)

    def rule_seen(self, body: Mapping[str, Any]) -> None:
        if self.store.put(self.store.rules, body):
            self._rule_changed(body["metadata"]["namespace"])
        metrics.RULES.set(len(self.store.rules))

    def rule_gone(self, namespace: str, name: str) -> None:
        self.store.rules.pop((namespace, name), None)
        self._rule_changed(namespace)
        metrics.RULES.set(len(self.store.rules))

    def _debounced(self, key: Key) -> None:
        self.queue.schedule(key, self.settings.rule_debounce, max_wait=self.settings.rule_max_wait)

    def _rule_changed(self, namespace: str) -> None:
        for p in self.store.pipelines_in(namespace):
            self._debounced(("pipeline", namespace, p["metadata"]["name"]))
        self._debounced(("rules", namespace, ""))

    def deployment_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        old = self.store.deployments.get(key)
        if deleted:
            self.store.deployments.pop(key, None)
        else:
            self.store.deployments[key] = dict(body)
        pipeline = (meta.get("labels") or {}).get("alertpipe.io/pipeline")
        if not pipeline or (key[0], pipeline) not in self.store.pipelines:
            return

        def brief(b: Mapping[str, Any] | None) -> Any:
            if b is None:
                return None
            return (
                b.get("status", {}).get("availableReplicas"),
                b.get("spec", {}).get("replicas"),
                (b.get("metadata", {}).get("annotations") or {}).get(DESIRED_HASH),
            )

        if deleted or brief(old) != brief(body):
            self.queue.schedule(("pipeline", key[0], pipeline), 0.05)

    def owned_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """A watch event of an owned ConfigMap, Service, ServiceAccount, Role or RoleBinding: when it
        no longer holds what the operator applied (edited or deleted by hand), reconcile its pipeline
        now instead of at the next resync. Our own writes match what we applied and change nothing."""
        pipeline = self.applier.owned_changed(body, deleted)
        if pipeline is not None:
            self.queue.schedule(("pipeline", str(body["metadata"]["namespace"]), pipeline), 0.0)

    def resync_all(self) -> None:
        for ns, name in list(self.store.pipelines):
            self.queue.schedule(("pipeline", ns, name), random.uniform(0, 5))  # noqa: S311 - spread only

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync)
            self.resync_all()

    # --- the helpers' entry points (rollouts, scaler and the KEDA engine use them too) -----------

    async def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event about ``obj`` (best effort: a failed Event never fails a reconcile)."""
        await self.events.post(obj, type_, reason, message)

    def event_soon(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event without holding up the reconcile."""
        self.events.soon(obj, type_, reason, message)

    def spec(self, body: Mapping[str, Any]) -> tuple[AlertPipelineSpec | None, list[tuple[str, str]]]:
        """The pipeline's parsed spec, cached per (uid, generation)."""
        return self.parsed.spec(body)

    # --- the work ---------------------------------------------------------------------------

    async def _work(self, key: Key) -> float | None:
        assert isinstance(key, tuple)  # noqa: S101 - only this module schedules keys
        kind, namespace, name = key
        label = "AlertPipeline" if kind == "pipeline" else "AlertRule"
        t0 = time.perf_counter()
        try:
            if kind == "pipeline":
                again = await self.reconcile_pipeline(namespace, name)
            else:
                again = await self.reconcile_rule_statuses(namespace)
        except (KubeError, KafkaAdminError, OSError) as exc:
            attempt = self._failures.get(key, 0)
            self._failures[key] = attempt + 1
            reason = f"http{exc.status}" if isinstance(exc, KubeError) else type(exc).__name__
            metrics.RECONCILES.labels(kind=label, result="error").inc()
            metrics.ERRORS.labels(kind=label, reason=reason).inc()
            delay = 0.1 if isinstance(exc, KubeError) and exc.status == 409 else backoff(attempt)
            logger.warning("reconcile %s/%s (%s): %s; retrying in %.1f s", namespace, name, kind, exc, delay)
            return delay
        finally:
            metrics.RECONCILE_SECONDS.labels(kind=label).observe(time.perf_counter() - t0)
        self._failures.pop(key, None)
        metrics.RECONCILES.labels(kind=label, result="ok").inc()
        took = time.perf_counter() - t0
        logger.log(
            logging.INFO if took > 1.0 else logging.DEBUG,
            "reconciled %s %s/%s in %.0f ms",
            kind,
            namespace,
            name,
            took * 1000,
        )
        return again

    async def reconcile_pipeline(self, namespace: str, name: str) -> float | None:
        body = self.store.pipelines.get((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        generation = meta.get("generation")
        status = dict(body.get("status") or {})
        prev_conditions = list(status.get("conditions") or [])
        now = _now()
        spec, errors = self.spec(body)
        if spec is None:
            message = errors_text(errors)
            await self._write_status(
                body, status, Observed(spec_errors=message), now, {"observedGeneration": generation}
            )
            if (e := invalid_spec_event(prev_conditions, message)) is not None:
                await self.events.post(body, e.type, e.reason, e.message)
            metrics.RECONCILES.labels(kind="AlertPipeline", result="invalid").inc()
            return None

        if generation != status.get("observedGeneration"):  # once per generation
            for warning in spec_warnings(spec):
                self.event_soon(body, "Warning", "SpecWarning", warning)
        owner = Owner(namespace, name, meta["uid"])

        # 1. topics and the Redis check run while the config and workloads are written
        want = desired_topics(namespace, name, spec.kafka)
        topics_task = asyncio.create_task(self.topics.reconcile(body, status, spec, want))
        redis_task = asyncio.create_task(self._check_redis(body, spec))

        # 2. workloads. The Deployments (and the ServiceAccount their pods need) go out first, on
        # their own: on a busy apiserver every concurrent write slows the others, and the Deployments
        # are what starts pods. The rest (Role, RoleBinding, Service, ConfigMap) follows in one round.
        scaled = autoscaled_replicas(namespace, name, spec, self.store.deployments, now)
        s = self.settings
        desired = desired_objects(
            owner, spec, s.image, s.role_images, s.image_pull_policy, s.image_pull_secrets, scaled
        )
        desired = self.rollouts.pin_stable_image(body, spec, desired)  # an image being rolled out
        first = [o for o in desired if o["kind"] in FIRST_KINDS]
        rest = [o for o in desired if o["kind"] not in FIRST_KINDS]
        first_task = asyncio.ensure_future(asyncio.gather(*(self.applier.apply(o, body) for o in first)))

        # 3. rules -> config, computed while those requests are in flight
        try:
            entries, invalid = select_rules(
                self.store.rules_in(namespace),
                spec.rule_selector,
                lambda rule: self.parsed.verdict(rule, list(spec.channels), spec.lookups.tables),
            )
            config = compile_config(namespace, name, spec, entries, now)
            config, candidate = await self.rollouts.documents(body, spec, config)
            cm = desired_config_map(owner, config)
            summary = f"config revision {config.revision}: {len(entries)} rule(s)"

            written: dict[str, JSON] = {}
            for obj, live in zip(first, await first_task, strict=True):
                if obj["kind"] == "Deployment":
                    written[obj["metadata"]["name"]] = live
            await asyncio.gather(
                asyncio.gather(*(self.applier.apply(o, body) for o in rest)),
                self.applier.apply_config_map(body, cm, summary),
            )
            await self.rollouts.apply_candidate(body, owner, spec, candidate, desired)
            compiled = (config.revision, frozenset(e.name for e in entries))
            metrics.set_config_revision(namespace, name, config.revision)
            if self.store.compiled.get((namespace, name)) != compiled:
                self.store.compiled[(namespace, name)] = compiled
                # rule statuses name the live revision; debounced so many compiles make one pass
                self._debounced(("rules", namespace, ""))
        except BaseException:
            first_task.cancel()
            topics_task.cancel()
            redis_task.cancel()
            raise
        await self.applier.remove_disabled(body, spec)

        wanted = desired_replicas(spec, scaled)
        topics = await topics_task
        redis_error, redis_reason, redis_retry = await redis_task

        # 4. kill switches and status
        findings = Findings(
            revision=config.revision,
            entries=entries,
            invalid=invalid,
            topics=want,
            desired_replicas=wanted,
            available_replicas=available_replicas(namespace, name, wanted, self.store.deployments, written),
            topics_error=topics.error,
            topics_reason=topics.reason,
            refused_shrinks=topics.refused_shrinks,
            redis_error=redis_error,
            redis_reason=redis_reason,
            canary=condition_of(body),
            slo=slo_condition_of(body),
            # KEDA engine: its ScaledObjects; status.scaling loses the roles no longer autoscaled
            extra={"scaling": await reconcile_keda(self, body, owner, spec, status, now) or None},
        )
        observed, fields = pipeline_status(name, generation, spec, findings, now)
        new_conditions = await self._write_status(body, status, observed, now, fields, operator_scaled(spec))
        await self.events.post_all(body, transition_events(prev_conditions, new_conditions))
        metrics.PIPELINE_RECONCILED.labels(namespace=namespace, pipeline=name).set_to_current_time()
        return retry_after(spec, now, topics.retry, redis_retry)

    async def _check_redis(
        self, body: Mapping[str, Any], spec: AlertPipelineSpec
    ) -> tuple[str, str, float | None]:
        """(error, its condition reason, retry-after) for the pipeline's Redis (redis_check)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        failure = await self._redis.check(*key, spec.redis)
        if failure is None:
            self._redis_failures.pop(key, None)
            return "", "", None
        attempt = self._redis_failures.get(key, 0)
        self._redis_failures[key] = attempt + 1
        delay = backoff(attempt)
        logger.warning("%s/%s: %s; retrying in %.1f s", *key, failure.message, delay)
        return failure.message, failure.reason, delay

    async def _write_status(
        self,
        body: Mapping[str, Any],
        status: JSON,
        observed: Observed,
        now: datetime,
        fields: JSON,
        scaled: list[str] | None = None,
    ) -> list[JSON]:
        new_status, conditions = next_status(status, observed, now, fields, scaled)
        if new_status != status:
            meta = body["metadata"]
            patched = await self.kube.merge_patch(
                "AlertPipeline",
                meta["namespace"],
                meta["name"],
                {"status": merge_patch(status, new_status)},
                sub="status",
            )
            # Keep the store current, so the next reconcile compares against what we wrote.
            stored = self.store.pipelines.get((meta["namespace"], meta["name"]))
            if stored is not None and stored["metadata"].get("uid") == patched.get("metadata", {}).get("uid"):
                stored["status"] = patched.get("status", new_status)
        return conditions

    async def reconcile_rule_statuses(self, namespace: str) -> float | None:
        return await self.rule_statuses.reconcile(namespace)
