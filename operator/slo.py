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
from alertpipe.operator.decisions.slo import SLOTotals, judge_slo, slo_condition, slo_totals
from alertpipe.operator.kube import KubeError
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

    async def tick(self, namespace: str, name: str) -> SLOStatus | None:
        key = (namespace, name)
        body = self.rec.store.pipelines.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec, _errors = self.rec.spec(body)
        if spec is None or spec.slo is None:
            self.forget(namespace, name)
            return None
        now_s = time.monotonic()
        history = self._history.setdefault(key, deque())
        history.append((now_s, slo_totals(await self.scraper.texts(namespace, name, "deliverer"))))
        window_s = parse_duration(spec.slo.window)
        while len(history) > 2 and now_s - history[1][0] >= window_s:
            history.popleft()  # the second-oldest still covers the whole window
        verdict = judge_slo(spec.slo, list(history), now_s, datetime.now(UTC))
        await self._write(body, verdict)
        return verdict

    async def _write(self, body: Mapping[str, Any], verdict: SLOStatus) -> None:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        new = verdict.model_dump(by_alias=True, mode="json", exclude_none=True)
        old = dict(status.get("slo") or {})
        # only the figures or the verdict changing is worth a write (not observedAt alone)
        if {k: v for k, v in old.items() if k != "observedAt"} == {k: v for k, v in new.items()
                                                                   if k != "observedAt"}:
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
