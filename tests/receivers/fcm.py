"""A local FCM HTTP v1 API: POST /v1/projects/{project}/messages:send.

Follows Firebase's public docs: ``Authorization: Bearer <OAuth2 access token>`` (401
UNAUTHENTICATED otherwise, 403 PERMISSION_DENIED for a token of another project); a JSON body
``{"message": {...}}`` with exactly one of token, topic, condition and string-only ``data``
(400 INVALID_ARGUMENT); a registration token nobody holds is 404 UNREGISTERED, one of another
project 403 SENDER_ID_MISMATCH; over the project's quota 429 QUOTA_EXCEEDED with Retry-After.
Errors are google.rpc Status objects with an FcmError detail; success is 200 ``{"name":
"projects/<p>/messages/<id>"}``. Like FCM it does not deduplicate: ``devices`` lists every
notification each registration token received.

It is also Google's OAuth2 token endpoint (POST /token, the ``token_uri`` of the key files that
``service_account()`` makes): the JWT bearer grant (RFC 7523) with an RS256 assertion, verified with
the account's public key (``kid``, iss, aud = the token URI, iat/exp at most an hour apart and not
expired, scope); errors are ``{"error": "invalid_grant" | "unsupported_grant_type" | "invalid_scope",
"error_description": ...}`` with 400 as Google answers. Issued tokens expire after ``token_lifetime``
seconds, after which a send with one is 401 UNAUTHENTICATED like a missing one; ``exchanges`` counts
the grants, ``assertions`` keeps the verified claims.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.receivers.http import HttpReceiver
from tests.receivers.limits import RateLimit
from tests.receivers.recorder import Recorder

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPES = {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
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
        self.token_expiry: dict[str, float] = {}  # issued access token -> when it expires (time.time())
        self.token_lifetime = 3600  # seconds, Google's
        # (client email, key id) -> the public key and the project of the service account
        self.accounts: dict[tuple[str, str], tuple[rsa.RSAPublicKey, str]] = {}
        self.exchanges = 0
        self.assertions: list[dict[str, Any]] = []  # verified claims of every granted assertion

    def project(self, project: str, access_token: str, *registration_tokens: str) -> None:
        self.access_tokens[access_token] = project
        for t in registration_tokens:
            self.registrations[t] = project

    def service_account(self, project: str, name: str = "alertpipe") -> dict[str, Any]:
        """A new service-account key file (JSON document) of ``project`` whose token_uri is this
        receiver's; its public key is registered here, its private key only in the returned file."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"{name}@{project}.iam.gserviceaccount.com"
        kid = secrets.token_hex(20)
        self.accounts[(email, kid)] = (key.public_key(), project)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account", "project_id": project, "private_key_id": kid, "private_key": pem,
            "client_email": email, "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.url("/token"),
        }  # fmt: skip

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        app.router.add_post("/token", self._token)

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.read()
        scripted = await self._scripted(request, body)
        if scripted is not None:
            return scripted
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

        def refuse(error: str, description: str) -> web.Response:
            self._record(request, body, 400)
            return web.json_response({"error": error, "error_description": description}, status=400)

        if form.get("grant_type") != JWT_BEARER:
            return refuse("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return refuse("invalid_grant", "Invalid JWT: could not be decoded.")
        account = self.accounts.get((str(unverified.get("iss")), str(header.get("kid"))))
        if account is None:
            return refuse("invalid_grant", "Invalid grant: account not found")
        public_key, project = account
        try:
            claims = jwt.decode(
                assertion, public_key, algorithms=["RS256"], audience=self.url("/token"),
                options={"require": ["iss", "aud", "iat", "exp"]}, leeway=5,
            )  # fmt: skip
        except jwt.InvalidSignatureError:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return refuse("invalid_grant", f"Invalid JWT: {exc}")
        if not 0 < claims["exp"] - claims["iat"] <= 3600 or claims["iat"] > time.time() + 60:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)"
                          " and in a reasonable timeframe. Check your iat and exp values in the assertion.")
        if not FCM_SCOPES & set(str(claims.get("scope", "")).split()):
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = "ya29." + secrets.token_urlsafe(600)  # Google's run to about 1-2 KiB too
        self.access_tokens[token] = project
        self.token_expiry[token] = time.time() + self.token_lifetime
        self.exchanges += 1
        self.assertions.append(claims)
        self._record(request, body, 200)
        answer = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return web.json_response(answer)

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
        bearer = header[7:] if header.startswith("Bearer ") else ""
        owner = self.access_tokens.get(bearer)
        if bearer in self.token_expiry and self.token_expiry[bearer] <= time.time():
            owner = None  # expired: FCM answers as for no token
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
