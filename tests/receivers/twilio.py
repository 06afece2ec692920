"""A local Twilio Messages API: POST /2010-04-01/Accounts/{AccountSid}/Messages.json.

Follows Twilio's public docs: HTTP basic auth with the Account SID and auth token (401, code 20003
otherwise); a form body with To, From or MessagingServiceSid, and Body; 201 with the Message
resource (``sid`` SM..., ``status`` queued); errors as ``{"code", "message", "more_info", "status"}``
(21211 invalid To, 21602 no Body, 21606 From not the account's, 21610 unsubscribed recipient, 21617
body over 1600 characters, 20429 too many requests). Like the real API it does not deduplicate:
every accepted request is a message on a handset (``inbox``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tests.receivers.http import HttpReceiver
from tests.receivers.limits import RateLimit
from tests.receivers.recorder import Recorder

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
PREFIX = "/2010-04-01/Accounts/"


def twilio_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


class TwilioReceiver(HttpReceiver):
    def __init__(self, recorder: Recorder | None = None) -> None:
        super().__init__(recorder)
        self.accounts: dict[str, str] = {}  # Account SID -> auth token
        self.numbers: dict[str, set[str]] = defaultdict(set)  # Account SID -> its sender numbers
        self.services: dict[str, set[str]] = defaultdict(set)  # Account SID -> Messaging Service SIDs
        self.unsubscribed: set[str] = set()  # numbers that replied STOP
        self.limits: dict[str, RateLimit] = defaultdict(RateLimit)  # per account
        self.inbox: dict[str, list[str]] = defaultdict(list)  # number -> bodies received

    def account(self, sid: str, token: str, *numbers: str) -> None:
        self.accounts[sid] = token
        self.numbers[sid].update(numbers)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PREFIX + "{sid}/Messages.json", self._messages)

    def _authenticated(self, request: web.Request, sid: str) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        token = self.accounts.get(user)
        return user == sid and token is not None and secrets.compare_digest(token, password)

    def _refuse(
        self, request: web.Request, body: bytes, status: int, code: int, message: str
    ) -> web.Response:
        self._record(request, body, status)
        return twilio_error(status, code, message)

    async def _messages(self, request: web.Request) -> web.Response:
        body = await request.read()
        scripted = await self._scripted(request, body)
        if scripted is not None:
            return scripted
        sid = request.match_info["sid"]
        if not self._authenticated(request, sid):
            return self._refuse(request, body, 401, 20003, "Authenticate")
        if not self.limits[sid].take():
            return self._refuse(request, body, 429, 20429, "Too Many Requests")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._refuse(request, body, 400, 21602, "Message body is required.")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        err = self._check(sid, form)
        if err is not None:
            return self._refuse(request, body, 400, *err)
        self.inbox[form["To"]].append(form["Body"])
        self._record(request, body, 201)
        return web.json_response(self._resource(sid, form), status=201)

    def _check(self, sid: str, form: dict[str, str]) -> tuple[int, str] | None:
        to = form.get("To", "")
        if not E164.match(to):
            return 21211, f"The 'To' number {to} is not a valid phone number."
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not sender and not service:
            return 21603, "A 'From' phone number is required."
        if sender and sender not in self.numbers[sid]:
            return 21606, f"The From phone number {sender} is not a valid, SMS-capable inbound phone number"
        if service and service not in self.services[sid]:
            return 21701, f"The Messaging Service Sid {service} is invalid."
        text = form.get("Body", "")
        if not text:
            return 21602, "Message body is required."
        if len(text) > 1600:
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        if to in self.unsubscribed:
            return 21610, "Attempt to send to unsubscribed recipient"
        return None

    @staticmethod
    def _resource(sid: str, form: dict[str, str]) -> dict[str, Any]:
        text = form["Body"]
        return {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": sid,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": text,
            "status": "queued",
            "num_segments": str(max(1, -(-len(text) // 153))),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "error_code": None,
            "error_message": None,
        }


async def start_twilio_receiver(port: int = 0, recorder: Recorder | None = None) -> TwilioReceiver:
    r = TwilioReceiver(recorder)
    await r.start(port)
    return r
