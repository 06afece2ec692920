"""A lean 2xx webhook sink for the deliverer benchmark: counts by Idempotency-Key per path, records
latency (receive time - the alert's processedAtMs, which the benchmark sets to its produce time).

    python -m bench.deliverer.sink --port 18080      # GET /stats, POST /reset
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import orjson
from aiohttp import web

counts: dict[str, set[str]] = defaultdict(set)
requests: dict[str, int] = defaultdict(int)
latencies: dict[str, list[float]] = defaultdict(list)
first_last: dict[str, list[float]] = {}


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time()
    path = request.path
    key = request.headers.get("Idempotency-Key", "")
    requests[path] += 1
    counts[path].add(key)
    try:
        produced = orjson.loads(body)["alert"]["processedAtMs"] / 1000
        latencies[path].append(now - produced)
    except (ValueError, KeyError, TypeError):
        pass
    fl = first_last.setdefault(path, [now, now])
    fl[1] = now
    return web.Response(text="ok")


async def stats(request: web.Request) -> web.Response:
    out: dict[str, dict[str, object]] = {}
    for path in requests:
        out[path] = {
            "requests": requests[path],
            "keys": len(counts[path]),
            "first": first_last[path][0],
            "last": first_last[path][1],
        }
        if request.query.get("latencies"):
            out[path]["latencies"] = latencies[path]
    return web.Response(body=orjson.dumps(out), content_type="application/json")


async def reset(request: web.Request) -> web.Response:
    for d in (counts, requests, latencies, first_last):
        d.clear()
    return web.Response(text="ok")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
