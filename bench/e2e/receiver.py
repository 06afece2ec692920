"""The end-to-end benchmark's webhook receiver, a process of its own: answers 200 and records, per
request, the arrival time and the hop stamps the deliverer's envelope carries.

    python -m bench.e2e.receiver --port 18090      # POST /hook/<name>; GET /records/<name>
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import orjson
from aiohttp import web

# name -> [key, arrival_ms, sentAtMs, processedAtMs, ingestTimeMs, eventTimeMs]
records: dict[str, list[list[object]]] = defaultdict(list)


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time() * 1000
    try:
        doc = orjson.loads(body)
        a = doc["alert"]
        row = [request.headers.get("Idempotency-Key", ""), now, doc.get("sentAtMs"), a.get("processedAtMs"),
               a.get("ingestTimeMs"), a.get("eventTimeMs")]
    except (ValueError, KeyError, TypeError):
        row = [request.headers.get("Idempotency-Key", ""), now, None, None, None, None]
    records[request.match_info["name"]].append(row)
    return web.Response(text="ok")


async def get_records(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(records.get(request.match_info["name"], [])),
                        content_type="application/json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/records/{name}", get_records)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
