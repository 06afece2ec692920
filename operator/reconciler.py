"""The reconcile loop: observed AlertPipelines and AlertRules in, topics, config, workloads and status out.

Kopf feeds the ``Store`` (watch events) and the ``WorkQueue`` schedules one reconcile per pipeline and
one rule-status pass per namespace. Each reconcile reads the desired state from the pure decisions and
writes only what differs from the live objects, so a resync or an operator restart writes nothing.
Transient failures (Kafka down, 409, 5xx) retry with capped, jittered backoff; an impossible spec
stops with a permanent reason in status until the spec changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alertpipe.operator import metrics
from alertpipe.operator.decisions.compile import CONFIG_KEY, compile_config, config_map_name
from alertpipe.operator.decisions.conditions import Observed, Want, merge_conditions, pipeline_conditions
from alertpipe.operator.decisions.connectivity import CONNECTIVITY_REASONS, secret_not_found
from alertpipe.operator.decisions.killswitches import active_switches, describe_active, next_expiry
from alertpipe.operator.decisions.patch import merge_patch
from alertpipe.operator.decisions.replicas import operator_scaled, reconciled_replicas
from alertpipe.operator.decisions.scaling import SCALING_CONDITIONS
from alertpipe.operator.decisions.selector import matches
from alertpipe.operator.decisions.topics import TopicWant, desired_topics, plan_topics
from alertpipe.operator.decisions.validation import (
    RuleVerdict,
    errors_text,
    validate_pipeline,
    validate_rule,
)
from alertpipe.operator.decisions.workloads import (
    DESIRED_HASH,
    Owner,
    deployment_name,
    desired_config_map,
    desired_objects,
    drifted,
    needs_update,
)
from alertpipe.operator.kafka_admin import AdminPool, KafkaAdminError
from alertpipe.operator.keda_engine import reconcile_keda
from alertpipe.operator.kube import Kube, KubeError
from alertpipe.operator.models import ROLES, AlertPipelineSpec
from alertpipe.operator.queue import WorkQueue
from alertpipe.operator.redis_check import RedisChecks
from alertpipe.operator.rollouts import Rollouts, condition_of
from alertpipe.operator.scrape import Scraper
from alertpipe.workers.config.connection import kafka_options
from alertpipe.workers.config.models import ChannelSpec, RuleEntry
from alertpipe.workers.errors import ConfigError

__all__ = ["OperatorSettings", "Reconciler", "Store"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
Key = Hashable  # (kind, namespace, name); kind "pipeline" or "rules" (name "")
FIRST_KINDS = ("Deployment", "ServiceAccount")  # written before the other owned objects


@dataclass(frozen=True)
class OperatorSettings:
    image: str = "alertpipe:latest"
    role_images: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"  # a role's spec.<role>.imagePullPolicy wins
    image_pull_secrets: tuple[str, ...] = ()  # Secret names in each pipeline's namespace
    rule_debounce: float = 0.2  # seconds a rule change waits for more changes...
    rule_max_wait: float = 1.0  # ...but never longer than this after the first one
    resync: float = 300.0  # seconds between full resyncs
    concurrency: int = 8
    scale_interval: float = 10.0  # seconds between lag observations (our engine; KEDA's pollingInterval)
    pod_address_annotation: str | None = None  # canary analysis: pod address from this annotation


def _essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata", {})
    return (
        meta.get("uid"),
        meta.get("generation"),
        tuple(sorted((meta.get("labels") or {}).items())),
        meta.get("deletionTimestamp"),
    )


class Store:
    """The operator's view of the cluster, fed by Kopf's watches (plain dicts, latest seen)."""

    def __init__(self) -> None:
        self.pipelines: dict[tuple[str, str], JSON] = {}
        self.rules: dict[tuple[str, str], JSON] = {}
        self.deployments: dict[tuple[str, str], JSON] = {}
        # pipeline -> (revision, names of the rules live in it)
        self.compiled: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}

    def put(self, table: dict[tuple[str, str], JSON], body: Mapping[str, Any]) -> bool:
        """Store ``body``; True when its essence (uid, generation, labels, deletion) changed."""
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        old = table.get(key)
        table[key] = dict(body)
        return old is None or _essence(old) != _essence(body)

    def rules_in(self, namespace: str) -> list[JSON]:
        return [b for (ns, _), b in sorted(self.rules.items()) if ns == namespace]

    def pipelines_in(self, namespace: str) -> list[JSON]:
        return [b for (ns, _), b in sorted(self.pipelines.items()) if ns == namespace]


def _now() -> datetime:
    return datetime.now(UTC)


def _backoff(attempt: int) -> float:
    return float(random.uniform(0.5, 1.0) * min(60.0, 0.5 * 2.0 ** min(attempt, 10)))  # noqa: S311 - jitter only


def _strip_status_noise(status: Mapping[str, Any] | None) -> JSON:
    return dict(status or {})


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, admins: AdminPool | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.admins = admins or AdminPool()
        self.store = Store()
        self.queue = WorkQueue(self._work, concurrency=settings.concurrency)
        self._failures: dict[Key, int] = {}
        self._verdicts: dict[tuple[Any, ...], RuleVerdict] = {}
        self._kafka_failures: dict[tuple[str, str], int] = {}
        self._redis_failures: dict[tuple[str, str], int] = {}
        self._redis_checks = RedisChecks(
            lambda ns, n: self.kube.get("Secret", ns, n), 0.9 * settings.resync
        )
        self._kafka_pool = ThreadPoolExecutor(8, thread_name_prefix="kafka-admin")
        self._specs: dict[tuple[Any, Any], tuple[AlertPipelineSpec | None, list[tuple[str, str]]]] = {}
        # pipeline -> (wanted topics, when verified, refused shrinks)
        self._topics_ok: dict[tuple[str, str], tuple[Any, float, tuple[tuple[str, int, int], ...]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # (kind, namespace, name) -> (desired hash last applied, when)
        self._applied: dict[tuple[str, str, str], tuple[str | None, float]] = {}
        # (kind, namespace, name) -> the owned object as last applied (non-Deployment kinds), and the
        # keys a watch event showed changed or deleted behind the operator's back
        self._owned: dict[tuple[str, str, str], JSON] = {}
        self._suspect: set[tuple[str, str, str]] = set()
        # resourceVersions the operator's own writes produced, per owned object (the last few): a
        # watch event of one of them is never drift, however late it arrives
        self._ours: dict[tuple[str, str, str], deque[str]] = {}
        # canary rollouts: the tracks' documents, the candidate's objects, the step timer (rollouts.py)
        self.rollouts = Rollouts(self, Scraper(kube, settings.pod_address_annotation))

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
        self._topics_ok.pop((namespace, name), None)
        self._redis_checks.forget(namespace, name)
        for key in [k for k in self._applied if k[1] == namespace and k[2].startswith(f"{name}-")]:
            del self._applied[key]
        for key in [k for k in self._owned if k[1] == namespace and k[2].startswith(f"{name}-")]:
            del self._owned[key]
            self._suspect.discard(key)
            self._ours.pop(key, None)
        self._debounced(("rules", namespace, ""))
        metrics.PIPELINES.set(len(self.store.pipelines))
        with contextlib.suppress(KeyError):  # never reconciled to the end
            metrics.PIPELINE_RECONCILED.remove(namespace, name)

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
        meta = body.get("metadata", {})
        key = (str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        desired = self._owned.get(key)
        pipeline = (meta.get("labels") or {}).get("alertpipe.io/pipeline")
        if desired is None or not pipeline or meta.get("resourceVersion") in self._ours.get(key, ()):
            return
        ref = (desired["metadata"].get("ownerReferences") or [{}])[0]
        stored = self.store.pipelines.get((key[1], pipeline))
        if stored is None or stored["metadata"].get("uid") != ref.get("uid"):
            return  # an object of a pipeline that is gone (or an older one of the same name)
        if stored["metadata"].get("deletionTimestamp"):
            return
        if deleted or drifted(desired, body):
            logger.info("%s %s/%s changed outside the operator; restoring", *key)
            self._applied.pop(key, None)
            self._suspect.add(key)
            self.queue.schedule(("pipeline", key[1], pipeline), 0.0)

    def _wrote(self, key: tuple[str, str, str], response: Mapping[str, Any]) -> None:
        rv = (response.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._ours.setdefault(key, deque(maxlen=8)).append(str(rv))

    def _restored(self, key: tuple[str, str, str], pipeline: Mapping[str, Any] | None) -> None:
        """After a write: an Event when the write undid a change made outside the operator."""
        if key in self._suspect:
            self._suspect.discard(key)
            if pipeline is not None:
                kind, _ns, name = key
                message = f"{kind} {name} was changed or deleted outside the operator; restored"
                self.event_soon(pipeline, "Warning", "DriftCorrected", message)

    def resync_all(self) -> None:
        for ns, name in list(self.store.pipelines):
            self.queue.schedule(("pipeline", ns, name), random.uniform(0, 5))  # noqa: S311 - spread only

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync)
            self.resync_all()

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
            delay = 0.1 if isinstance(exc, KubeError) and exc.status == 409 else _backoff(attempt)
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

    async def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event about ``obj`` (best effort: a failed Event never fails a reconcile)."""
        meta = obj["metadata"]
        now = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "alertpipe.io/v1alpha1"),
                "kind": obj.get("kind", "AlertPipeline"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "alertpipe-operator"},
            "reportingComponent": "alertpipe-operator",
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
        }
        metrics.EVENTS.labels(reason=reason).inc()
        try:
            await self.kube.create(ev)
        except KubeError as exc:
            logger.warning(
                "could not post Event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc
            )

    async def _kafka_options(self, namespace: str, spec: AlertPipelineSpec) -> dict[str, str]:
        ref = spec.kafka.credentials_secret_ref
        data: dict[str, str] = {}
        field = "spec.kafka.credentialsSecretRef"
        if ref is not None:
            secret = await self.kube.get("Secret", namespace, ref.name)
            if secret is None:
                f = secret_not_found(field, ref.name, None, namespace)
                raise KafkaAdminError(f.message, f.reason)
            import base64

            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        try:  # the workers build theirs the same way (alertpipe.workers.config.connection)
            options = kafka_options(spec.kafka, data.get)
        except ConfigError as exc:
            key = next((k for k in ("sasl.username", "sasl.password") if k not in data), None)
            if ref is not None and key is not None:
                f = secret_not_found(field, ref.name, key, namespace)
                raise KafkaAdminError(f.message, f.reason) from None
            raise KafkaAdminError(f"spec.{exc}") from None
        options.pop("bootstrap.servers")
        return options

    def _spec(self, body: Mapping[str, Any]) -> tuple[AlertPipelineSpec | None, list[tuple[str, str]]]:
        """The pipeline's parsed spec, cached per (uid, generation)."""
        meta = body["metadata"]
        key = (meta.get("uid"), meta.get("generation"))
        hit = self._specs.get(key)
        if hit is None:
            if len(self._specs) > 10_000:
                self._specs.clear()
            ns, name = meta.get("namespace") or "", meta.get("name") or ""
            hit = self._specs[key] = validate_pipeline(ns, name, body.get("spec"))
        return hit

    def _verdict(self, rule: Mapping[str, Any], channels: list[ChannelSpec] | None) -> RuleVerdict:
        meta = rule["metadata"]
        ckey = (
            tuple(sorted(c.name for c in channels)) if channels is not None else None
        )  # names are what rules check
        key = (
            meta.get("uid"),
            meta.get("generation"),
            meta.get("resourceVersion") if not meta.get("generation") else 0,
            ckey,
        )
        hit = self._verdicts.get(key)
        if hit is None:
            hit = validate_rule(meta["name"], rule.get("spec"), channels)
            if len(self._verdicts) > 50_000:
                self._verdicts.clear()
            self._verdicts[key] = hit
        return hit

    async def reconcile_pipeline(self, namespace: str, name: str) -> float | None:
        body = self.store.pipelines.get((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        generation = meta.get("generation")
        status = _strip_status_noise(body.get("status"))
        prev_conditions = list(status.get("conditions") or [])
        now = _now()
        spec, errors = self._spec(body)
        if spec is None:
            message = errors_text(errors)
            await self._write_status(
                body, status, Observed(spec_errors=message), now, {"observedGeneration": generation}
            )
            if not any(
                c.get("reason") == "InvalidSpec" and c.get("message") == message for c in prev_conditions
            ):
                await self.event(body, "Warning", "InvalidSpec", message)
            metrics.RECONCILES.labels(kind="AlertPipeline", result="invalid").inc()
            return None

        owner = Owner(namespace, name, meta["uid"])

        # 1. topics run in a thread while the config and workloads are written
        want = desired_topics(namespace, name, spec.kafka)
        topics_task = asyncio.create_task(self._reconcile_topics(body, status, spec, want))
        redis_task = asyncio.create_task(self._check_redis(body, spec))

        # 2. workloads. The Deployments (and the ServiceAccount their pods need) go out first, on
        # their own: on a busy apiserver every concurrent write slows the others, and the Deployments
        # are what starts pods. The rest (Role, RoleBinding, Service, ConfigMap) follows in one round.
        scaled = self._scaled_replicas(namespace, name, spec, now)
        desired = desired_objects(
            owner,
            spec,
            self.settings.image,
            self.settings.role_images,
            self.settings.image_pull_policy,
            self.settings.image_pull_secrets,
            scaled,
        )
        desired = self.rollouts.pin_stable_image(body, spec, desired)  # an image being rolled out
        first = [o for o in desired if o["kind"] in FIRST_KINDS]
        rest = [o for o in desired if o["kind"] not in FIRST_KINDS]
        first_task = asyncio.ensure_future(asyncio.gather(*(self._apply(o, body) for o in first)))

        # 3. rules -> config, computed while those requests are in flight
        try:
            entries: list[RuleEntry] = []
            invalid: list[str] = []
            for rule in self.store.rules_in(namespace):
                if not matches(spec.rule_selector, rule["metadata"].get("labels") or {}):
                    continue
                verdict = self._verdict(rule, list(spec.channels))
                if verdict.valid and verdict.spec is not None:
                    entries.append(RuleEntry(name=rule["metadata"]["name"], spec=verdict.spec))
                else:
                    invalid.append(f"{rule['metadata']['name']}: {verdict.message}")
            config = compile_config(namespace, name, spec, entries, now)
            config, candidate = await self.rollouts.documents(body, spec, config)
            cm = desired_config_map(owner, config)
            summary = f"config revision {config.revision}: {len(entries)} rule(s)"

            live_deployments: dict[str, JSON] = {}
            for obj, live in zip(first, await first_task, strict=True):
                if obj["kind"] == "Deployment":
                    live_deployments[obj["metadata"]["name"]] = live
            await asyncio.gather(
                asyncio.gather(*(self._apply(o, body) for o in rest)),
                self._apply_config_map(body, cm, summary),
            )
            await self.rollouts.apply_candidate(body, owner, spec, candidate, desired)
            compiled = (config.revision, frozenset(e.name for e in entries))
            if self.store.compiled.get((namespace, name)) != compiled:
                self.store.compiled[(namespace, name)] = compiled
                # rule statuses name the live revision; debounced so many compiles make one pass
                self._debounced(("rules", namespace, ""))
        except BaseException:
            first_task.cancel()
            topics_task.cancel()
            redis_task.cancel()
            raise
        for role in ROLES:
            if not getattr(spec, role).enabled:
                dname = deployment_name(name, role)
                if (namespace, dname) in self.store.deployments:  # watched, so no read per reconcile
                    await self.kube.delete("Deployment", namespace, dname)
                    await self.event(
                        body, "Normal", "WorkloadRemoved", f"{role} disabled: deleted Deployment {dname}"
                    )
        if not spec.ingestor.enabled and await self.kube.get(
            "Service", namespace, deployment_name(name, "ingestor")
        ):
            await self.kube.delete("Service", namespace, deployment_name(name, "ingestor"))

        desired_replicas: dict[str, int] = {
            r: scaled.get(r, getattr(spec, r).replicas) for r in ROLES if getattr(spec, r).enabled
        }
        available: dict[str, int] = {}
        for r in desired_replicas:
            dep = self.store.deployments.get((namespace, deployment_name(name, r))) or live_deployments.get(
                deployment_name(name, r), {}
            )
            fresh = live_deployments.get(deployment_name(name, r), {})
            rv_store = int((dep.get("metadata") or {}).get("resourceVersion") or 0)
            rv_fresh = int((fresh.get("metadata") or {}).get("resourceVersion") or 0)
            newest = dep if rv_store >= rv_fresh else fresh
            available[r] = int((newest.get("status") or {}).get("availableReplicas") or 0)

        topics_error, topics_reason, refused, retry = await topics_task
        redis_error, redis_reason, redis_retry = await redis_task
        if redis_retry is not None:
            retry = redis_retry if retry is None else min(retry, redis_retry)

        # 4. kill switches and status
        active = active_switches(spec.kill_switches, now)
        lines = tuple(describe_active(active))
        all_lines = tuple(describe_active(spec.kill_switches))
        expired = tuple(x for x in all_lines if x not in lines)
        observed = Observed(
            topics_error=topics_error,
            topics_reason=topics_reason or "KafkaUnavailable",
            redis_error=redis_error,
            redis_reason=redis_reason or "RedisUnreachable",
            refused_shrinks=refused,
            rules_valid=len(entries),
            rules_invalid=tuple(invalid),
            desired_replicas=dict(desired_replicas),
            available_replicas=dict(available),
            kill_switches=lines,
            expired_switches=expired,
            canary=condition_of(body),
        )
        extra = {
            "observedGeneration": generation,
            "revision": config.revision,
            "configMap": config_map_name(name),
            "rules": {
                "valid": len(entries),
                "invalid": len(invalid),
                "disabled": sum(1 for e in entries if any(d.name == e.name for d in active.disabled_rules)),
            },
            "invalidRules": sorted(i.split(":", 1)[0] for i in invalid),
            "topics": {w.purpose: w.name for w in want},
            "replicas": {
                r: {"desired": n, "available": available.get(r, 0)} for r, n in desired_replicas.items()
            },
        }
        # KEDA engine: its ScaledObjects; status.scaling loses the roles no longer autoscaled
        extra["scaling"] = await reconcile_keda(self, body, owner, spec, status, now) or None
        new_conditions = await self._write_status(body, status, observed, now, extra, operator_scaled(spec))
        await self._transition_events(body, prev_conditions, new_conditions)

        expiry = next_expiry(spec.kill_switches, now)
        if expiry is not None:
            until = (expiry - now).total_seconds() + 0.05
            retry = until if retry is None else min(retry, until)
        metrics.PIPELINE_RECONCILED.labels(namespace=namespace, pipeline=name).set_to_current_time()
        return retry

    async def _reconcile_topics(
        self,
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        spec: AlertPipelineSpec,
        want: list[TopicWant],
    ) -> tuple[str, str, tuple[tuple[str, int, int], ...], float | None]:
        """(error, its condition reason, refused shrinks, retry-after) for the pipeline's topics.

        A pipeline whose topics were verified with the same wanted set within ``resync`` seconds is
        not asked about again: rule edits then never wait on Kafka.
        """
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        wanted = tuple(want), spec.kafka.bootstrap_servers
        cached = self._topics_ok.get(key)
        if (
            cached is not None
            and cached[0] == wanted
            and time.monotonic() - cached[1] < 0.9 * self.settings.resync
        ):
            return "", "", cached[2], None
        try:
            options = await self._kafka_options(meta["namespace"], spec)
            loop = asyncio.get_running_loop()
            # the first use of a cluster builds its AdminClient: not on the event loop
            admin = await loop.run_in_executor(
                self._kafka_pool, self.admins.get, spec.kafka.bootstrap_servers, options
            )
            seen = await loop.run_in_executor(self._kafka_pool, admin.observe, [w.name for w in want])
            plan = plan_topics(want, seen)
            done = await loop.run_in_executor(self._kafka_pool, admin.apply, plan) if plan.changes else []
        except KafkaAdminError as exc:
            attempt = self._kafka_failures.get(key, 0)
            self._kafka_failures[key] = attempt + 1
            self._topics_ok.pop(key, None)
            delay = _backoff(attempt)
            logger.warning("%s/%s: %s; retrying in %.1f s", *key, exc, delay)
            return str(exc), exc.reason, (), delay
        self._kafka_failures.pop(key, None)
        refused = tuple(plan.refused_shrinks)
        self._topics_ok[key] = (wanted, time.monotonic(), refused)
        known = set((status.get("topics") or {}).values())
        # one Event per reason, naming every topic: a new pipeline posts one, not five
        by_reason: dict[str, list[str]] = {}
        for line in done:
            reason = (
                "TopicCreated"
                if line.startswith("created")
                else ("PartitionsGrown" if line.startswith("grew") else "TopicConfigured")
            )
            by_reason.setdefault(reason, []).append(line)
        for topic in plan.adopt:
            if topic not in known and not any(topic in d for d in done):
                by_reason.setdefault("TopicAdopted", []).append(f"adopted existing topic {topic}")
        for reason, lines in by_reason.items():
            self.event_soon(body, "Normal", reason, "; ".join(lines))
        return "", "", refused, None

    async def _check_redis(
        self, body: Mapping[str, Any], spec: AlertPipelineSpec
    ) -> tuple[str, str, float | None]:
        """(error, its condition reason, retry-after) for the pipeline's Redis (redis_check)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        failure = await self._redis_checks.check(*key, spec.redis)
        if failure is None:
            self._redis_failures.pop(key, None)
            return "", "", None
        attempt = self._redis_failures.get(key, 0)
        self._redis_failures[key] = attempt + 1
        delay = _backoff(attempt)
        logger.warning("%s/%s: %s; retrying in %.1f s", *key, failure.message, delay)
        return failure.message, failure.reason, delay

    def event_soon(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event without holding up the reconcile."""
        task = asyncio.create_task(self.event(dict(obj), type_, reason, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _apply_config_map(self, body: Mapping[str, Any], cm: JSON, summary: str) -> None:
        """Create or update the config ConfigMap; no read while what we last wrote is what we want."""
        meta = cm["metadata"]
        key = ("ConfigMap", meta["namespace"], meta["name"])
        text = cm["data"][CONFIG_KEY]
        self._owned[key] = cm
        written = self._applied.get(key)
        if (
            written is not None
            and written[0] == text
            and time.monotonic() - written[1] < 0.9 * self.settings.resync
        ):
            return
        if written is not None:
            # It exists (we wrote it): one merge patch, no read, no resourceVersion needed.
            try:
                out = await self.kube.merge_patch(
                    "ConfigMap",
                    meta["namespace"],
                    meta["name"],
                    {"metadata": {"annotations": meta["annotations"]}, "data": cm["data"]},
                )
                self._wrote(key, out)
                self._applied[key] = (text, time.monotonic())
                self.event_soon(body, "Normal", "ConfigUpdated", summary)
                self._restored(key, body)
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
        live = None
        try:
            self._wrote(key, await self.kube.create(cm))
            self.event_soon(body, "Normal", "ConfigCreated", summary)
            self._restored(key, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            live = await self.kube.get("ConfigMap", meta["namespace"], meta["name"])
        if live is not None and ((live.get("data") or {}).get(CONFIG_KEY) != text or drifted(cm, live)):
            cm = {**cm, "metadata": {**meta, "resourceVersion": live["metadata"]["resourceVersion"]}}
            self._wrote(key, await self.kube.replace(cm))
            self.event_soon(body, "Normal", "ConfigUpdated", summary)
            self._restored(key, body)
        self._suspect.discard(key)
        self._applied[key] = (text, time.monotonic())

    async def _apply(self, obj: JSON, pipeline: Mapping[str, Any] | None = None) -> JSON:
        """Make the live object match ``obj``; writes nothing when it already does.

        Deployments are compared against the watched copy; the other kinds are not read again while
        the same desired hash was applied within the resync period (their watch, ``owned_seen``, drops
        that memory when one is changed by hand). A new object is created without a read first; a 409
        falls back to read-and-compare.
        """
        meta = obj["metadata"]
        kind, ns, name = obj["kind"], meta["namespace"], meta["name"]
        key = (kind, ns, name)
        want_hash = meta.get("annotations", {}).get(DESIRED_HASH)
        fresh = 0.9 * self.settings.resync
        if kind == "Deployment":
            watched = self.store.deployments.get((ns, name))
            if watched is not None and not needs_update(obj, watched):
                return watched
        else:
            self._owned[key] = obj
            applied = self._applied.get(key)
            if applied is not None and applied[0] == want_hash and time.monotonic() - applied[1] < fresh:
                return {}
        live = None
        if key in self._applied or (kind == "Deployment" and (ns, name) in self.store.deployments):
            live = await self.kube.get(kind, ns, name)
        if live is None:
            try:
                created = await self.kube.create(obj)
                self._wrote(key, created)
                self._applied[key] = (want_hash, time.monotonic())
                self._restored(key, pipeline)
                return created
            except KubeError as exc:
                if exc.status != 409:
                    raise
                live = await self.kube.get(kind, ns, name)
                if live is None:
                    raise
        if not needs_update(obj, live):
            self._applied[key] = (want_hash, time.monotonic())
            self._suspect.discard(key)
            return live
        body = {**obj, "metadata": dict(meta)}
        live_meta = live["metadata"]
        body["metadata"]["resourceVersion"] = live_meta["resourceVersion"]
        body["metadata"]["annotations"] = {
            **(live_meta.get("annotations") or {}),
            **meta.get("annotations", {}),
        }
        body["metadata"]["labels"] = {**(live_meta.get("labels") or {}), **meta.get("labels", {})}
        if kind == "Service":
            spec = dict(body["spec"])
            for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if k in live.get("spec", {}):
                    spec[k] = live["spec"][k]
            body["spec"] = spec
        logger.info("updating %s %s/%s", kind, ns, name)
        replaced = await self.kube.replace(body)
        self._wrote(key, replaced)
        self._applied[key] = (want_hash, time.monotonic())
        self._restored(key, pipeline)
        return replaced

    def _scaled_replicas(
        self, namespace: str, name: str, spec: AlertPipelineSpec, now: datetime
    ) -> dict[str, int]:
        """Replicas of the autoscaled roles: what the scaler set on the live Deployment (watched)."""
        out: dict[str, int] = {}
        for role in ROLES:
            live = self.store.deployments.get((namespace, deployment_name(name, role)))
            have = (live or {}).get("spec", {}).get("replicas")
            n = reconciled_replicas(spec, role, None if have is None else int(have), now)
            if n is not None:
                out[role] = n
        return out

    async def _write_status(
        self,
        body: Mapping[str, Any],
        status: JSON,
        observed: Observed,
        now: datetime,
        extra: JSON,
        scaled: list[str] | None = None,
    ) -> list[JSON]:
        wants: list[Want] = pipeline_conditions(observed)
        conditions = merge_conditions(
            status.get("conditions") or [], wants, now, extra.get("observedGeneration")
        )
        if scaled:
            # the scaler's conditions are its own: kept while it runs, dropped when it stops
            conditions += [c for c in status.get("conditions") or [] if c.get("type") in SCALING_CONDITIONS]
        new_status = {**status, **extra, "conditions": conditions}
        if new_status.get("scaling", 0) is None:
            del new_status["scaling"]
        if extra.get("replicas") is not None:
            new_status["replicas"] = extra["replicas"]
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

    async def _transition_events(
        self, body: Mapping[str, Any], before: list[Mapping[str, Any]], after: list[JSON]
    ) -> None:
        prev = {c.get("type"): c for c in before}
        for c in after:
            old = prev.get(c["type"])
            if old is not None and old.get("status") == c["status"] and old.get("reason") == c["reason"]:
                if c["type"] != "KillSwitchActive" or old.get("message") == c["message"]:
                    continue
            t, reason = c["type"], c["reason"]
            if t == "KillSwitchActive" and c["status"] == "True":
                await self.event(body, "Warning", "KillSwitchOn", c["message"])
            elif t == "KillSwitchActive" and reason == "KillSwitchExpired":
                await self.event(body, "Normal", "KillSwitchExpired", c["message"])
            elif t == "KillSwitchActive" and old is not None and old.get("status") == "True":
                await self.event(body, "Normal", "KillSwitchOff", "every kill switch is off")
            elif t == "TopicsReady" and reason == "PartitionDecreaseNotSupported":
                await self.event(body, "Warning", reason, c["message"])
            elif t in ("TopicsReady", "RedisReady") and reason in CONNECTIVITY_REASONS:
                await self.event(body, "Warning", reason, c["message"])
            elif t == "Ready" and c["status"] == "True":
                await self.event(body, "Normal", "Ready", c["message"])

    # --- rule statuses ----------------------------------------------------------------------

    async def _write_rule_status(
        self, rule: Mapping[str, Any], status: JSON, new_status: JSON, rejected: str | None
    ) -> None:
        meta = rule["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        patched = await self.kube.merge_patch(
            "AlertRule", namespace, name, {"status": merge_patch(status, new_status)}, sub="status"
        )
        stored = self.store.rules.get((namespace, name))
        if stored is not None and stored["metadata"].get("uid") == patched.get("metadata", {}).get("uid"):
            stored["status"] = patched.get("status", new_status)
        old = next((c for c in status.get("conditions") or [] if c.get("type") == "Valid"), None)
        if rejected is not None and (old is None or old.get("message") != rejected):
            self.event_soon(
                {**rule, "kind": "AlertRule", "apiVersion": "alertpipe.io/v1alpha1"},
                "Warning",
                "RuleRejected",
                rejected,
            )

    async def reconcile_rule_statuses(self, namespace: str) -> float | None:
        now = _now()
        pipelines = []
        for p in self.store.pipelines_in(namespace):
            spec, _ = self._spec(p)
            if spec is not None and not p["metadata"].get("deletionTimestamp"):
                pipelines.append((p["metadata"]["name"], spec))
        if any((namespace, n) not in self.store.compiled for n, _ in pipelines):
            # A pipeline not yet compiled since start: its reconcile schedules this pass when done,
            # so statuses are written once, complete (and not at all after a restart).
            return None
        writes = []
        for rule in self.store.rules_in(namespace):
            meta = rule["metadata"]
            labels = meta.get("labels") or {}
            feeding = [(n, s) for n, s in pipelines if matches(s.rule_selector, labels)]
            errors: list[tuple[str, str]] = []
            if feeding:
                for pname, pspec in feeding:
                    for path, reason in self._verdict(rule, list(pspec.channels)).errors:
                        entry = (path, reason if len(feeding) == 1 else f"{reason} (pipeline {pname})")
                        if entry not in errors:
                            errors.append(entry)
            else:
                errors = list(self._verdict(rule, None).errors)
            valid = not errors
            if valid:
                want = Want(
                    "Valid",
                    "True",
                    "Compiled" if feeding else "CompiledNotSelected",
                    "compiles" + ("" if feeding else "; no AlertPipeline in this namespace selects it"),
                )
            else:
                want = Want("Valid", "False", "InvalidRule", errors_text(errors))
            status = dict(rule.get("status") or {})
            conditions = merge_conditions(status.get("conditions") or [], [want], now, meta.get("generation"))
            live = []
            for pname, _ in feeding:
                compiled = self.store.compiled.get((namespace, pname))
                if compiled and meta["name"] in compiled[1]:
                    live.append({"pipeline": pname, "revision": compiled[0]})
            new_status = {
                **status,
                "observedGeneration": meta.get("generation"),
                "conditions": conditions,
                "pipelines": [n for n, _ in feeding],
                "live": live,
            }
            if new_status != status:
                writes.append(
                    self._write_rule_status(rule, status, new_status, None if valid else want.message)
                )
        sem = asyncio.Semaphore(16)

        async def bounded(coro: Any) -> None:
            async with sem:
                await coro

        await asyncio.gather(*(bounded(w) for w in writes))
        return None
