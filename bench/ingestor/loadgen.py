"""Load generator of the ingestor benchmark: POSTs batches of events over N keep-alive connections.

Runs as its own process (the server is measured, not the client). Prints one JSON line: request
count by status, events sent, and a per-request (end time, latency) series. Only loopback targets.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlparse

import aiohttp
import orjson


def bodies(batch: int, variants: int, tenant: str, offset: int) -> list[bytes]:
    out = []
    for v in range(variants):
        evs = [
            {"tenant": tenant, "deviceId": f"dev-{offset}-{v}-{i % 50}", "seq": v * batch + i,
             "ts": 1_767_323_000_000 + i, "type": "temperature", "value": 20.0 + i % 17,
             "labels": {"site": "s1", "rack": f"r{i % 8}"}}
            for i in range(batch)
        ]
        out.append(orjson.dumps(evs))
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--tenant", default="bench")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--offset", type=int, default=0)
    a = ap.parse_args()
    host = urlparse(a.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loadgen: only loopback targets")
    payloads = bodies(a.batch, 64, a.tenant, a.offset)
    headers = {"Authorization": f"Bearer {a.key}", "Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    series: list[tuple[float, float]] = []
    events = 0
    t_end = time.monotonic() + a.seconds
    conn = aiohttp.TCPConnector(limit=a.connections)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker(w: int) -> None:
            nonlocal events
            i = w
            url = a.url + "/v1/events"
            while time.monotonic() < t_end:
                body = payloads[i % len(payloads)]
                i += 1
                t0 = time.monotonic()
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
                    st = r.status
                t1 = time.monotonic()
                statuses[st] = statuses.get(st, 0) + 1
                if st == 202:
                    events += a.batch
                    series.append((time.time(), t1 - t0))
                else:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker(w) for w in range(a.connections)))
    sys.stdout.write(orjson.dumps({"statuses": statuses, "events": events, "series": series},
                                  option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(main())
