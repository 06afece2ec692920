"""The per-tenant SLO watch: on a timer, scrape a pipeline's deliverer pods (operator/scrape.py),
keep the cumulative totals of the last window, judge them (decisions/slo.py) and write status.slo.
The reconcile turns status.slo into the SLOMet condition (``condition_of``), as it does for the
canary, so the conditions have one writer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from alertpipe.operator.decisions.conditions import Want
from alertpipe.operator.decisions.patch import merge_patch
from alertpipe.operator.decisions.slo import (
    SLOTotals,
    base_of,
    judge_slo,
    same_measurement,
    seed_of,
    slo_condition,
    slo_totals,
)
from alertpipe.operator.kube import KubeError
from alertpipe.operator.metrics import forget_slo_objective, set_slo_objective
from alertpipe.operator.scrape import Scraper
from alertpipe.operator.slo_models import SLOStatus
from alertpipe.workers.config.durations import parse_duration

if TYPE_CHECKING:
    from alertpipe.operator.context import Context

__all__ = ["SLOWatch", "condition_of", "slo_status"]

logger = logging.getLogger(__name__)


def slo_status(body: Mapping[str, Any]) -> SLOStatus | None:
    raw = (body.get("status") or {}).get("slo")
    return SLOStatus.model_validate(raw) if raw else None


def condition_of(body: Mapping[str, Any]) -> Want | None:
    """The SLOMet condition of a pipeline whose spec asks for an SLO (status.slo measured)."""
    if not (body.get("spec") or {}).get("slo"):
        return None
    return slo_condition(slo_status(body))


class SLOWatch:
    def __init__(self, rec: Context, scraper: Scraper) -> None:
        self.rec = rec
        self.scraper = scraper
        self._history: dict[tuple[str, str], deque[tuple[float, SLOTotals]]] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._history.pop((namespace, name), None)
        forget_slo_objective(namespace, name)

    async def tick(self, namespace: str, name: str) -> SLOStatus | None:
        key = (namespace, name)
        body = self.rec.store.pipelines.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec, _errors = self.rec.spec(body)
        if spec is None or spec.slo is None:
            self.forget(namespace, name)
            return None
        set_slo_objective(namespace, name, parse_duration(spec.slo.latency_p99), spec.slo.success_ratio)
        now_s, now = time.monotonic(), datetime.now(UTC)
        window_s = parse_duration(spec.slo.window)
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque()
            last = slo_status(body)
            if last is not None and last.base is not None:  # a restart: the window goes on from there
                history.append(seed_of(last.base, now_s, now, window_s))
        history.append((now_s, slo_totals(await self.scraper.texts(namespace, name, "deliverer"))))
        while len(history) > 2 and now_s - history[1][0] >= window_s:
            history.popleft()  # the second-oldest still covers the whole window
        verdict = judge_slo(spec.slo, list(history), now_s, now)
        verdict = verdict.model_copy(update={"base": base_of(list(history), now_s, window_s, now)})
        await self._write(body, verdict)
        return verdict

    async def _write(self, body: Mapping[str, Any], verdict: SLOStatus) -> None:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        new = verdict.model_dump(by_alias=True, mode="json", exclude_none=True)
        old = dict(status.get("slo") or {})
        # only the figures, the verdict or the base totals changing is worth a write (not a time alone)
        if same_measurement(old, new):
            return
        try:
            patched = await self.rec.kube.merge_patch(
                "AlertPipeline", meta["namespace"], meta["name"],
                {"status": merge_patch(status, {**status, "slo": new})}, sub="status")
        except KubeError as exc:
            logger.warning("%s/%s: could not write status.slo: %s", meta["namespace"], meta["name"], exc)
            return
        stored = self.rec.store.pipelines.get((meta["namespace"], meta["name"]))
        if stored is not None and stored["metadata"].get("uid") == (patched.get("metadata") or {}).get("uid"):
            stored["status"] = patched.get("status", {**status, "slo": new})
        # the reconcile carries the verdict into the SLOMet condition
            self.rec.queue.schedule(("pipeline", meta["namespace"], meta["name"]), 0.0)
