"""Scraping a track's evaluator pods for the canary analysis: list the pods of one component, GET
each one's /metrics, sum them (decisions/analysis.py). The only I/O of the analysis.

A pod's address is its ``status.podIP``, or, when the operator runs with
``--pod-address-annotation KEY``, the value of that annotation (the devstack's pod runner runs pods
as local processes on loopback addresses of their own and writes them there).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from alertpipe.operator.decisions.analysis import Totals, totals
from alertpipe.operator.decisions.workloads import METRICS_PORT
from alertpipe.operator.kube import Kube

__all__ = ["Scraper"]

logger = logging.getLogger(__name__)


def _address(pod: dict[str, Any], annotation: str | None) -> str | None:
    if annotation:
        found = (pod.get("metadata", {}).get("annotations") or {}).get(annotation)
        if found:
            return str(found)
    ip = (pod.get("status") or {}).get("podIP")
    return str(ip) if ip else None


class Scraper:
    def __init__(self, kube: Kube, address_annotation: str | None = None, port: int = METRICS_PORT,
                 timeout: float = 2.0) -> None:
        self.kube = kube
        self.annotation = address_annotation
        self.port = port
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _get(self, url: str) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.debug("scrape %s failed: %s", url, exc)
            return None

    async def texts(self, namespace: str, pipeline: str, component: str) -> list[str]:
        """The /metrics texts of the component's pods that answered."""
        selector = f"app.kubernetes.io/instance={pipeline},app.kubernetes.io/component={component}"
        pods = [p for p in await self.kube.list("Pod", namespace, selector)
                if not p["metadata"].get("deletionTimestamp")]
        addresses = [a for a in (_address(p, self.annotation) for p in pods) if a]
        texts = await asyncio.gather(*(self._get(f"http://{a}:{self.port}/metrics") for a in addresses))
        return [t for t in texts if t is not None]

    async def track(self, namespace: str, pipeline: str, component: str) -> Totals:
        """The summed metrics of the pods that answered (``pods`` counts them; 0: no data)."""
        return totals(await self.texts(namespace, pipeline, component))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
