"""A delivery's chain: the channel, then its fallbacks when it gives up; and the order per channel.

Firing and resolved of one alert reach a channel in order: a resolve waits for the firing's task
(``_chains``), and, when that firing was parked on the retry topic, is parked behind it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from alertpipe.workers.alerts import Alert
from alertpipe.workers.deliverer.attempt import Attempt, Seams
from alertpipe.workers.deliverer.context import DeliveryContext
from alertpipe.workers.deliverer.outcomes import Outcome

__all__ = ["Chains"]


class Chains:
    def __init__(self, seams: Seams) -> None:
        self._s = seams
        self._chains: dict[str, asyncio.Future[Any]] = {}

    async def deliver(self, alert: Alert, channel: str, ctx: DeliveryContext) -> None:
        """Deliver to ``channel`` and, if it gives up, to its fallback chain; one (id, channel) at a time."""
        chain_key = f"{alert.id}:{channel}"
        prev = self._chains.get(chain_key)
        me: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._chains[chain_key] = me
        try:
            if prev is not None and not prev.done():
                # firing and resolved of one alert reach a channel in order (a resolve never overtakes)
                await asyncio.shield(prev)
            await self._chain(alert, channel, ctx)
        finally:
            me.set_result(None)
            if self._chains.get(chain_key) is me:
                del self._chains[chain_key]

    async def _chain(self, alert: Alert, channel: str, ctx: DeliveryContext) -> None:
        s = self._s
        parking = s.parking
        visited = {channel}
        name = channel
        while True:
            behind = parking.firing_parked_until(alert, name)
            if behind is not None and parking.topic:
                # its firing notification is parked: the resolve waits behind it (order per channel)
                delay = max(behind - time.time(), 0.0) + 0.05
                outcome = await parking.park(alert, name, ctx, delay, "behind its parked firing")
            else:
                outcome = await Attempt(s, alert, name, ctx).run()
            if alert.status == "firing" and outcome is not Outcome.PARKED:
                parking.firing_settled(alert.id, name)
            if outcome not in (Outcome.DEAD, Outcome.SKIPPED_DEAD):
                return
            ch = s.channels.get(name, s.config())
            fb = ch.spec.fallback if ch else None
            if fb is None or fb in visited:
                return
            visited.add(fb)
            s.outcomes.log(alert, "fallback", name, reason=f"trying fallback channel {fb!r}")
            name = fb
            ctx = ctx.fresh()
