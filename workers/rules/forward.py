"""Rules whose groups span devices, in a per-partition engine: forwarded to the repartition stage
(groups.py), evaluated there. No I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alertpipe.workers.rules.state import RuleState

__all__ = ["ForwardState"]


class ForwardState(RuleState):
    """A rule whose groups span devices, in a per-partition engine: it keeps no state here and
    forwards each selected event with its group key to the repartition stage."""

    __slots__ = ()
    kind = "forward"

    def on_event(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        key = self.key(d)
        if key is not None:
            self.ctx.forwarded.append((self.rule, key, ts, ingest, d))

    def on_timer(self, due: int) -> None:
        return None

    def firing(self) -> Iterable[tuple[Any, int]]:
        return ()

    def load(self, rows: list[Any], wm: int, mend: bool = False) -> None:
        return None  # state of a per-partition evaluation before the repartition stage: retired

    def reschedule(self, wm: int) -> None:
        return None
