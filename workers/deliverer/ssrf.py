"""SSRF guard: HTTP targets in loopback, private, link-local, metadata and other non-public ranges
are refused unless the pipeline allow-lists them.

The check runs where the address is known: on IP literals before a request, and inside the HTTP
client's resolver for host names (so a name that resolves to 10.0.0.1, or re-resolves there later,
is caught at connect time, not only at config time). Addresses that carry an IPv4 address inside an
IPv6 one (mapped, 6to4, NAT64) are judged by the IPv4 address. ``delivery.allowedNetworks`` (CIDRs)
lets chosen ranges through, e.g. loopback for the devstack; ``delivery.allowPrivateNetworks`` lets
every non-public range through except the cloud metadata endpoints, which only an explicit
``allowedNetworks`` entry opens.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from alertpipe.workers.errors import DeliveryError

__all__ = ["METADATA_ADDRESSES", "GuardedResolver", "SsrfPolicy", "blocked_reason", "check_url"]

logger = logging.getLogger(__name__)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Instance metadata services (AWS/GCP/Azure/OpenStack, ECS tasks, AWS IPv6, Alibaba): they hold credentials
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_v4(ip: IP) -> IP:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _parse(address: str) -> IP | None:
    try:
        return _embedded_v4(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return None


def blocked_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) is not a public destination, or None when it is."""
    ip = _parse(address)
    if ip is None:
        return None
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    for attr, what in (
        ("is_unspecified", "unspecified"),  # 0.0.0.0 reaches this host on Linux
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{ip} is a {what} address"
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), benchmarking ranges
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True)
class SsrfPolicy:
    """Which non-public targets a pipeline allows: ``networks`` always, the rest of the private
    ranges (never the metadata addresses) with ``allow_private``."""

    allow_private: bool = False
    networks: tuple[Network, ...] = ()

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def of(allow_private: bool, networks: Sequence[str] = ()) -> SsrfPolicy:
        """The policy of a pipeline's ``delivery`` settings (CIDRs as written; cached)."""
        return SsrfPolicy(allow_private, tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def allowed_by_list(self, ip: IP) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def refusal(self, address: str) -> str | None:
        """Why the policy refuses ``address`` (an IP literal), or None."""
        reason = blocked_reason(address)
        if reason is None:
            return None
        ip = _parse(address)
        assert ip is not None  # noqa: S101 - blocked_reason judged it an address
        if self.allowed_by_list(ip) or self.allowed_by_list(ipaddress.ip_address(address.split("%", 1)[0])):
            return None
        if self.allow_private and ip not in METADATA_ADDRESSES:
            return None
        return reason


def _refuse(url_host: str, reason: str) -> DeliveryError:
    return DeliveryError(
        f"target {url_host} refused: {reason}; add its network to delivery.allowedNetworks in the"
        " pipeline to allow it",
        retryable=False,
    )


def check_url(url: str, policy: SsrfPolicy) -> None:
    """Raise a permanent DeliveryError for a bad URL or an IP-literal target the policy refuses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(
            f"target URL must be http(s)://host/...; got scheme {parts.scheme!r}", retryable=False
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise DeliveryError("target URL has an invalid port", retryable=False) from None
    host = parts.hostname
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        if policy.refusal("127.0.0.1") is not None:
            raise _refuse(host, "localhost is a loopback name")
        return
    reason = policy.refusal(host)
    if reason:
        raise _refuse(host, reason)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops the addresses ``policy()`` refuses."""

    def __init__(self, policy: Callable[[], SsrfPolicy], inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        policy = self._policy()
        allowed = [r for r in results if policy.refusal(r["host"]) is None]
        if not allowed:
            reason = policy.refusal(results[0]["host"]) if results else "no address"
            raise _refuse(host, f"it resolves to {reason}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
