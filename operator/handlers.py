"""Kopf registrations: watches feed the Reconciler, admission webhooks validate, deletion cleans topics.

Handlers stay thin: they hand bodies to the Reconciler (which schedules the real work) or call the
pure validators. The watch handlers are ``async`` although they never await: Kopf runs a sync
handler in a thread pool, an extra hop per watch event that only costs CPU and latency here.
AlertRules and AlertPipelines are fed through Kopf *indexers* on purpose: Kopf holds every handler
until all indexed kinds are fully listed, so the first reconcile after a restart sees every rule
and writes nothing that was already right.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from alertpipe.operator.decisions.topics import desired_topics
from alertpipe.operator.decisions.validation import (
    errors_text,
    schema_change_errors,
    validate_pipeline,
    validate_pipeline_spec,
    validate_rule_in,
)
from alertpipe.operator.decisions.warnings import spec_warnings
from alertpipe.operator.kafka_admin import KafkaAdminError
from alertpipe.operator.models import GROUP, PIPELINE_PLURAL, RULE_PLURAL, VERSION
from alertpipe.operator.reconciler import Reconciler
from alertpipe.operator.scaler import Scaler

__all__ = ["RULE_WEBHOOK_ID", "PIPELINE_WEBHOOK_ID", "register"]

logger = logging.getLogger(__name__)

RULE_WEBHOOK_ID = "validate-alertrule"
PIPELINE_WEBHOOK_ID = "validate-alertpipeline"
MANAGED = {"app.kubernetes.io/managed-by": "alertpipe-operator"}


def _deletes_topics(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("deletionPolicy") == "Delete")


def _operator_scaled(spec: kopf.Spec, **_: Any) -> bool:
    """Some role has autoscaling on with the operator's own engine (cheap: no spec parse)."""
    for role in ("evaluator", "deliverer"):
        workload = spec.get(role) or {}
        auto = workload.get("autoscaling") or {}
        if workload.get("enabled", True) and auto.get("enabled") and auto.get("engine") != "keda":
            return True
    return False


class _QuietAutoscale(logging.Filter):
    """Drop Kopf's "Timer 'autoscale' succeeded." line: one per pipeline per interval says nothing
    (the scaler logs and posts an Event when it changes something; failures still log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Timer 'autoscale' succeeded."


def _has_rollout(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("rollout") is not None


class _QuietRolloutTimer(logging.Filter):
    """Kopf logs every successful timer run at INFO; the rollout timer runs every second or two and
    logs its decisions itself (operator/rollouts.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "rollout_step' succeeded" not in message and "slo_watch' succeeded" not in message


def _has_slo(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("slo") is not None


def _plain(body: kopf.Body) -> dict[str, Any]:
    """The watch event's own dicts (top level copied): Kopf's field views cost a lookup per key."""
    return dict(body)


def register(
    registry: kopf.OperatorRegistry,
    rec: Reconciler,
    *,
    webhooks: bool = True,
    scaler: Scaler | None = None,
    rollout_interval: float = 2.0,
) -> None:
    """Attach every handler to ``registry``, bound to ``rec``; admission handlers only with ``webhooks``;
    the autoscaling timer with ``scaler``; the canary rollout timer every ``rollout_interval`` s."""

    if scaler is not None:
        objects = logging.getLogger("kopf.objects")
        if not any(isinstance(f, _QuietAutoscale) for f in objects.filters):
            objects.addFilter(_QuietAutoscale())

        @kopf.timer(
            GROUP,
            VERSION,
            PIPELINE_PLURAL,
            id="autoscale",
            interval=rec.settings.scale_interval,
            when=_operator_scaled,
            registry=registry,
        )
        async def autoscale(name: str, namespace: str | None, **_: Any) -> None:
            await scaler.tick(namespace or "", name)

    @kopf.index(GROUP, VERSION, PIPELINE_PLURAL, registry=registry)
    async def pipelines_feed(body: kopf.Body, **_: Any) -> None:
        rec.pipeline_seen(_plain(body))

    @kopf.index(GROUP, VERSION, RULE_PLURAL, registry=registry)
    async def rules_feed(body: kopf.Body, **_: Any) -> None:
        rec.rule_seen(_plain(body))

    @kopf.on.event(GROUP, VERSION, PIPELINE_PLURAL, registry=registry)
    async def pipeline_event(type: str, name: str, namespace: str | None, **_: Any) -> None:
        rec.queue.ready.set()
        if type == "DELETED":
            rec.pipeline_gone(namespace or "", name)

    @kopf.on.event(GROUP, VERSION, RULE_PLURAL, registry=registry)
    async def rule_event(type: str, name: str, namespace: str | None, **_: Any) -> None:
        rec.queue.ready.set()
        if type == "DELETED":
            rec.rule_gone(namespace or "", name)

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)
    async def deployment_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        rec.deployment_seen(_plain(body), deleted=type == "DELETED")

    logging.getLogger("kopf.objects").addFilter(_QuietRolloutTimer())

    @kopf.timer(GROUP, VERSION, PIPELINE_PLURAL, interval=rollout_interval, when=_has_rollout,
                registry=registry)
    async def rollout_step(name: str, namespace: str | None, **_: Any) -> None:
        await rec.rollouts.tick(namespace or "", name)

    @kopf.timer(GROUP, VERSION, PIPELINE_PLURAL, interval=rec.settings.slo_interval, when=_has_slo,
                registry=registry)
    async def slo_watch(name: str, namespace: str | None, **_: Any) -> None:
        await rec.slo.tick(namespace or "", name)

    @kopf.on.delete(GROUP, VERSION, PIPELINE_PLURAL, when=_deletes_topics, registry=registry)
    async def delete_topics(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> None:
        namespace = namespace or ""
        parsed, errors = validate_pipeline(namespace, name, dict(spec))  # never another namespace's
        if parsed is None:
            logger.warning(
                "%s/%s: spec invalid, cannot tell its topics; keeping them: %s",
                namespace,
                name,
                errors_text(errors),
            )
            return
        names = [w.name for w in desired_topics(namespace, name, parsed.kafka)]
        try:
            options = await rec.topics.kafka_options(namespace, parsed)
            admin = rec.admins.get(parsed.kafka.bootstrap_servers, options)
            import asyncio

            gone = await asyncio.to_thread(admin.delete, names)
        except KafkaAdminError as exc:
            raise kopf.TemporaryError(f"deleting topics: {exc}", delay=10) from None
        logger.info("%s/%s: deleted topics %s (deletionPolicy: Delete)", namespace, name, ", ".join(gone))

    if not webhooks:
        return

    @kopf.on.validate(
        GROUP, VERSION, RULE_PLURAL, id=RULE_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
    )
    def validate_alertrule(body: kopf.Body, name: str | None, namespace: str | None, **_: Any) -> None:
        labels = dict(body.metadata.labels)
        # Channel names are checked against each pipeline of the namespace that will select this
        # rule, as that pipeline's status will check them.
        from alertpipe.operator.decisions.selector import matches

        selecting = []
        for p in rec.store.pipelines_in(namespace or ""):
            pspec, _errs = validate_pipeline_spec(p.get("spec"))
            if pspec is not None and matches(pspec.rule_selector, labels):
                selecting.append((str(p["metadata"]["name"]), list(pspec.channels), pspec.event_schema,
                                  list(pspec.lookups.tables)))
        verdict = validate_rule_in(name or "rule", body.get("spec"), selecting)
        if not verdict.valid:
            raise kopf.AdmissionError(f"AlertRule {name}: {verdict.message}", code=422)

    @kopf.on.validate(
        GROUP,
        VERSION,
        PIPELINE_PLURAL,
        id=PIPELINE_WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    def validate_alertpipeline(
        body: kopf.Body,
        name: str | None,
        namespace: str | None,
        warnings: list[str],
        old: kopf.Body | None = None,
        **_: Any,
    ) -> None:
        spec, errors = validate_pipeline(namespace or "", name or "", body.get("spec"))
        if spec is None:
            raise kopf.AdmissionError(f"AlertPipeline {name}: {errors_text(errors)}", code=422)
        errors = schema_change_errors(old.get("spec") if old is not None else None, spec)
        if errors:
            msg = f"AlertPipeline {name}: incompatible schema change: {errors_text(errors)}"
            raise kopf.AdmissionError(msg, code=422)
        warnings.extend(spec_warnings(spec))
