"""An aiohttp server speaking the generic webhook, Slack incoming-webhook and PagerDuty Events v2 shapes.

The Slack and PagerDuty checks follow their public docs: Slack answers ``ok`` or a plain-text error
(``invalid_payload``, ``invalid_blocks``, ``no_text``; 404 ``no_service`` for an unknown hook);
PagerDuty answers 202 ``{"status": "success", "message": "Event processed", "dedup_key": ...}`` or
400 ``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.receivers.recorder import Received, Recorder

PD_SEVERITIES = {"critical", "error", "warning", "info"}
PD_ACTIONS = {"trigger", "acknowledge", "resolve"}
SLACK_BLOCKS = {"section", "header", "context", "divider", "actions", "image", "rich_text", "input", "file"}


@dataclass(frozen=True)
class Reply:
    """A scripted answer: status, optional Retry-After, optional delay before answering."""

    status: int = 200
    retry_after: float | str | None = None
    delay: float = 0.0
    body: str = ""


def verify(secret: bytes, headers: Any, body: bytes, tolerance: float = 300.0) -> bool:
    """What a real receiver does with X-Alertpipe-Signature: recompute, constant-time compare."""
    ts = headers.get("X-Alertpipe-Timestamp", "")
    sig = headers.get("X-Alertpipe-Signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > tolerance:
        return False
    expected = "v1=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig)


def slack_errors(payload: Any) -> str | None:
    """The error text Slack would answer, or None for a valid incoming-webhook message."""
    if not isinstance(payload, dict):
        return "invalid_payload"
    blocks = payload.get("blocks")
    text = payload.get("text")
    if blocks is None and not text:
        return "no_text"
    if blocks is not None:
        if not isinstance(blocks, list) or len(blocks) > 50:
            return "invalid_blocks"
        for b in blocks:
            if not isinstance(b, dict) or b.get("type") not in SLACK_BLOCKS:
                return "invalid_blocks"
            if b["type"] == "header":
                t = b.get("text", {})
                if t.get("type") != "plain_text" or not 0 < len(t.get("text", "")) <= 150:
                    return "invalid_blocks"
            if b["type"] == "section":
                if "text" not in b and "fields" not in b:
                    return "invalid_blocks"
                if "text" in b and not 0 < len(b["text"].get("text", "")) <= 3000:
                    return "invalid_blocks"
                fields = b.get("fields", [])
                if len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields):
                    return "invalid_blocks"
            if b["type"] == "context" and not 0 < len(b.get("elements", [])) <= 10:
                return "invalid_blocks"
    return None


def pagerduty_errors(event: Any) -> list[str]:
    """Errors PagerDuty would list for an Events API v2 event (empty: valid)."""
    if not isinstance(event, dict):
        return ["Event object is invalid"]
    errs = []
    rk = event.get("routing_key")
    if not isinstance(rk, str) or len(rk) != 32:
        errs.append("'routing_key' must be a 32 character integration key")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errs.append("'event_action' is invalid (must be trigger, acknowledge or resolve)")
    dk = event.get("dedup_key")
    if action in ("acknowledge", "resolve") and not dk:
        errs.append("'dedup_key' is required for acknowledge and resolve")
    if dk is not None and (not isinstance(dk, str) or len(dk) > 255):
        errs.append("'dedup_key' must be a string of at most 255 characters")
    if action == "trigger":
        p = event.get("payload")
        if not isinstance(p, dict):
            errs.append("'payload' is missing or not an object")
        else:
            if not isinstance(p.get("summary"), str) or not 0 < len(p["summary"]) <= 1024:
                errs.append("'payload.summary' is required (at most 1024 characters)")
            if not isinstance(p.get("source"), str) or not p["source"]:
                errs.append("'payload.source' is required")
            if p.get("severity") not in PD_SEVERITIES:
                errs.append("'payload.severity' must be critical, error, warning or info")
    return errs


class HttpReceiver:
    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder or Recorder()
        self.secrets: dict[str, bytes] = {}  # path prefix -> webhook signing secret
        self.slack_tokens: set[str] = set()
        self._scripts: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0
        self.pagerduty_incidents: dict[str, str] = {}  # dedup_key -> last action (a PagerDuty incident)

    # --- control ------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, prefix: str, replies: list[Reply]) -> None:
        self._scripts.setdefault(prefix, deque()).extend(replies)

    def set_default(self, prefix: str, reply: Reply | None) -> None:
        if reply is None:
            self._defaults.pop(prefix, None)
        else:
            self._defaults[prefix] = reply

    def _reply_for(self, path: str) -> Reply | None:
        for prefix, q in self._scripts.items():
            if path.startswith(prefix) and q:
                return q.popleft()
        for prefix, r in self._defaults.items():
            if path.startswith(prefix):
                return r
        return None

    async def start(self, port: int = 0) -> HttpReceiver:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen(port)
        return self

    def add_routes(self, app: web.Application) -> None:
        """The APIs this receiver speaks (a subclass speaking another API overrides this)."""
        app.router.add_post("/webhook/{name}", self._webhook)
        app.router.add_post("/slack/{token}", self._slack)
        app.router.add_post("/pagerduty/v2/enqueue", self._pagerduty)

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def down(self) -> None:
        """Stop listening: clients get connection refused on this port until ``up()``."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        if self._site is None:
            await self._listen(self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers -----------------------------------------------------------------------------

    async def _scripted(self, request: web.Request, body: bytes) -> web.Response | None:
        reply = self._reply_for(request.path)
        if reply is None:
            return None
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = {}
        if reply.retry_after is not None:
            headers["Retry-After"] = str(reply.retry_after)
        self._record(request, body, reply.status)
        return web.Response(
            status=reply.status, text=reply.body or f"scripted {reply.status}", headers=headers
        )

    def _record(
        self, request: web.Request, body: bytes, status: int, signature_ok: bool | None = None
    ) -> None:
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = None
        self.recorder.add(
            Received(request.path, dict(request.headers), body, doc, status, time.time(), signature_ok)
        )

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        scripted = await self._scripted(request, body)
        if scripted is not None:
            return scripted
        secret = next((s for p, s in self.secrets.items() if request.path.startswith(p)), None)
        ok = verify(secret, request.headers, body) if secret is not None else None
        status = 401 if ok is False else 200
        self._record(request, body, status, ok)
        return web.Response(status=status, text="bad signature" if ok is False else "ok")

    async def _slack(self, request: web.Request) -> web.Response:
        body = await request.read()
        scripted = await self._scripted(request, body)
        if scripted is not None:
            return scripted
        if self.slack_tokens and request.match_info["token"] not in self.slack_tokens:
            self._record(request, body, 404)
            return web.Response(status=404, text="no_service")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        err = slack_errors(payload)
        status = 400 if err else 200
        self._record(request, body, status)
        return web.Response(status=status, text=err or "ok")

    async def _pagerduty(self, request: web.Request) -> web.Response:
        body = await request.read()
        scripted = await self._scripted(request, body)
        if scripted is not None:
            return scripted
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            event = None
        errs = pagerduty_errors(event)
        if errs:
            self._record(request, body, 400)
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errs}, status=400
            )
        self.pagerduty_incidents[event["dedup_key"]] = event["event_action"]
        self._record(request, body, 202)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]}, status=202
        )


async def start_http_receiver(port: int = 0, recorder: Recorder | None = None) -> HttpReceiver:
    """Start on 127.0.0.1 (a free port unless given); ``await receiver.stop()`` when done."""
    return await HttpReceiver(recorder).start(port)
