"""SSRF guard: HTTP targets in loopback, private, link-local and other non-public ranges are refused.

The check runs where the address is known: on IP literals before a request, and inside the HTTP
client's resolver for host names (so a name that resolves to 10.0.0.1, or re-resolves there later,
is caught at connect time, not only at config time). ``delivery.allowPrivateNetworks`` lifts it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from alertpipe.workers.errors import DeliveryError

__all__ = ["GuardedResolver", "blocked_reason", "check_url"]

logger = logging.getLogger(__name__)


def blocked_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) is not a public destination, or None when it is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attr, what in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{ip} is a {what} address"
    return None


def _refuse(url_host: str, reason: str) -> DeliveryError:
    return DeliveryError(
        f"target {url_host} refused: {reason}; set delivery.allowPrivateNetworks: true in the"
        " pipeline to allow it",
        retryable=False,
    )


def check_url(url: str, allow_private: bool) -> None:
    """Raise a permanent DeliveryError for a bad URL or an IP-literal target in a blocked range."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(
            f"target URL must be http(s)://host/...; got scheme {parts.scheme!r}", retryable=False
        )
    if allow_private:
        return
    host = parts.hostname
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        raise _refuse(host, "localhost is a loopback name")
    reason = blocked_reason(host)
    if reason:
        raise _refuse(host, reason)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops blocked addresses unless ``allow_private()`` says otherwise."""

    def __init__(self, allow_private: Callable[[], bool], inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private():
            return results
        allowed = [r for r in results if blocked_reason(r["host"]) is None]
        if not allowed:
            reason = blocked_reason(results[0]["host"]) if results else "no address"
            raise _refuse(host, f"it resolves to {reason}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
