"""A local FCM HTTP v1 API: POST /v1/projects/{project}/messages:send.

Follows Firebase's public docs: ``Authorization: Bearer <OAuth2 access token>`` (401
UNAUTHENTICATED otherwise, 403 PERMISSION_DENIED for a token of another project); a JSON body
``{"message": {...}}`` with exactly one of token, topic, condition and string-only ``data``
(400 INVALID_ARGUMENT); a registration token nobody holds is 404 UNREGISTERED, one of another
project 403 SENDER_ID_MISMATCH; over the project's quota 429 QUOTA_EXCEEDED with Retry-After.
Errors are google.rpc Status objects with an FcmError detail; success is 200 ``{"name":
"projects/<p>/messages/<id>"}``. Like FCM it does not deduplicate: ``devices`` lists every
notification each registration token received.
"""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from typing import Any

import orjson
from aiohttp import web

from tests.receivers.http import HttpReceiver
from tests.receivers.limits import RateLimit
from tests.receivers.recorder import Recorder

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def fcm_error(status: int, message: str, error_code: str | None = None, **headers: str) -> web.Response:
    err: dict[str, Any] = {"code": status, "message": message, "status": HTTP_STATUS.get(status, "UNKNOWN")}
    if error_code is not None:
        err["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]
    return web.json_response({"error": err}, status=status, headers=headers)


class FcmReceiver(HttpReceiver):
    def __init__(self, recorder: Recorder | None = None) -> None:
        super().__init__(recorder)
        self.access_tokens: dict[str, str] = {}  # OAuth2 access token -> the project it is for
        self.registrations: dict[str, str] = {}  # registration token -> the project of its app
        self.limits: dict[str, RateLimit] = defaultdict(RateLimit)  # per project
        self.devices: dict[str, list[dict[str, Any]]] = defaultdict(list)  # token or /topics/x -> messages

    def project(self, project: str, access_token: str, *registration_tokens: str) -> None:
        self.access_tokens[access_token] = project
        for t in registration_tokens:
            self.registrations[t] = project

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)

    def _refuse(
        self,
        request: web.Request,
        body: bytes,
        status: int,
        message: str,
        code: str | None = None,
        **headers: str,
    ) -> web.Response:
        self._record(request, body, status)
        return fcm_error(status, message, code, **headers)

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.read()
        scripted = await self._scripted(request, body)
        if scripted is not None:
            return scripted
        project = request.match_info["project"]
        header = request.headers.get("Authorization", "")
        owner = self.access_tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if owner is None:
            return self._refuse(
                request,
                body,
                401,
                "Request had invalid authentication credentials. Expected"
                " OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        if owner != project:
            return self._refuse(
                request,
                body,
                403,
                f"Permission 'cloudmessaging.messages.create' denied on"
                f" resource '//cloudresourcemanager.googleapis.com/projects/{project}'",
            )
        limit = self.limits[project]
        if not limit.take():
            wait = str(max(1, math.ceil(limit.wait())))
            return self._refuse(
                request, body, 429, "Quota exceeded for project.", "QUOTA_EXCEEDED", **{"Retry-After": wait}
            )
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._refuse(request, body, 400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        message = doc.get("message") if isinstance(doc, dict) else None
        err = self._check(message)
        if err is not None:
            return self._refuse(request, body, 400, err, "INVALID_ARGUMENT")
        assert isinstance(message, dict)
        target = message.get("token") or f"/topics/{message.get('topic') or message.get('condition')}"
        if "token" in message:
            holder = self.registrations.get(message["token"])
            if holder is None:
                return self._refuse(request, body, 404, "Requested entity was not found.", "UNREGISTERED")
            if holder != project:
                return self._refuse(request, body, 403, "SenderId mismatch", "SENDER_ID_MISMATCH")
        self.devices[target].append(message)
        self._record(request, body, 200)
        return web.json_response({"name": f"projects/{project}/messages/0:{secrets.token_hex(8)}"})

    @staticmethod
    def _check(message: Any) -> str | None:
        if not isinstance(message, dict):
            return 'Invalid JSON payload received. Unknown name "message".'
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if len(targets) != 1:
            return "Exactly one of message.token, message.topic or message.condition must be set."
        data = message.get("data", {})
        if not isinstance(data, dict):
            return "Invalid value at 'message.data'."
        for i, (k, v) in enumerate(data.items()):
            if not isinstance(v, str):
                return f"Invalid value at 'message.data[{i}].value' ({k}), TYPE_STRING expected."
        note = message.get("notification", {})
        if not isinstance(note, dict) or not set(note) <= {"title", "body", "image"}:
            return "Invalid value at 'message.notification'."
        android = message.get("android", {})
        if android.get("priority", "normal") not in ("normal", "high"):
            return "Invalid value at 'message.android.priority'."
        return None


async def start_fcm_receiver(port: int = 0, recorder: Recorder | None = None) -> FcmReceiver:
    r = FcmReceiver(recorder)
    await r.start(port)
    return r
