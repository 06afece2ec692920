"""The webhook SSRF guard: loopback, link-local, metadata and private targets are refused (as IP
literals, behind IPv6 disguises, and as names that resolve there) unless the pipeline allow-lists
their network; the metadata endpoints stay closed even with allowPrivateNetworks."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.workers.config.models import DeliverySettings
from alertpipe.workers.deliverer.ssrf import GuardedResolver, SsrfPolicy, blocked_reason, check_url
from alertpipe.workers.errors import DeliveryError

pytestmark = pytest.mark.unit

CLOSED = SsrfPolicy()
DEVSTACK = SsrfPolicy.of(False, ("127.0.0.0/8", "::1/128"))

REFUSED = [
    ("http://127.0.0.1:8080/h", "loopback"),
    ("http://127.8.9.10/h", "loopback"),
    ("http://[::1]/h", "loopback"),
    ("http://localhost/h", "loopback"),
    ("http://api.localhost/h", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.170.2/v2/credentials", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://100.64.0.1/", "not a public address"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),  # IPv4-mapped
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),  # NAT64 of 169.254.169.254
    ("http://[2002:a9fe:a9fe::1]/", "metadata"),  # 6to4 of 169.254.169.254
    ("http://[::ffff:127.0.0.1]/", "loopback"),
]


@pytest.mark.parametrize(("url", "what"), REFUSED)
def test_non_public_literals_are_refused_with_the_way_out(url: str, what: str) -> None:
    with pytest.raises(DeliveryError) as exc:
        check_url(url, CLOSED)
    msg = str(exc.value)
    assert what in msg and "delivery.allowedNetworks" in msg and "\n" not in msg
    assert exc.value.retryable is False


def test_the_allow_list_opens_exactly_its_networks() -> None:
    check_url("http://127.0.0.1:8080/h", DEVSTACK)
    check_url("http://localhost:8080/h", DEVSTACK)
    check_url("http://[::1]:8080/h", DEVSTACK)
    for url in ("http://10.0.0.1/", "http://169.254.169.254/", "http://192.168.1.1/"):
        with pytest.raises(DeliveryError):
            check_url(url, DEVSTACK)
    check_url("http://169.254.169.254/", SsrfPolicy.of(False, ("169.254.169.254/32",)))  # named: opened


def test_allow_private_never_opens_the_metadata_endpoints() -> None:
    broad = SsrfPolicy(allow_private=True)
    check_url("http://10.0.0.1/", broad)
    check_url("http://localhost/", broad)
    for url in ("http://169.254.169.254/", "http://[::ffff:169.254.169.254]/", "http://[fd00:ec2::254]/"):
        with pytest.raises(DeliveryError, match="metadata"):
            check_url(url, broad)


def test_bad_urls_are_permanent_errors_without_the_url() -> None:
    for url in ("ftp://example.com/x", "http:///x", "http://example.com:notaport/x?token=s3cr3t"):
        with pytest.raises(DeliveryError) as exc:
            check_url(url, CLOSED)
        assert "s3cr3t" not in str(exc.value) and exc.value.retryable is False


def test_the_setting_takes_cidrs_and_says_how_to_write_one() -> None:
    assert DeliverySettings.model_validate({"allowedNetworks": ["127.0.0.0/8", "::1"]}).allowed_networks
    with pytest.raises(ValueError, match="is not a network; write e.g. 127.0.0.0/8"):
        DeliverySettings.model_validate({"allowedNetworks": ["localhost"]})


class _Fixed(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
                for a in self.addresses]

    async def close(self) -> None:
        return None


async def test_names_are_judged_by_what_they_resolve_to() -> None:
    guard = GuardedResolver(lambda: CLOSED, _Fixed(["169.254.169.254"]))
    with pytest.raises(DeliveryError, match="resolves to 169.254.169.254 is a cloud metadata address"):
        await guard.resolve("rebind.example.com", 80)
    mixed = GuardedResolver(lambda: CLOSED, _Fixed(["10.0.0.1", "93.184.216.34"]))
    assert [r["host"] for r in await mixed.resolve("mixed.example.com", 80)] == ["93.184.216.34"]
    local = GuardedResolver(lambda: DEVSTACK, _Fixed(["127.0.0.1"]))
    assert [r["host"] for r in await local.resolve("receiver.local", 80)] == ["127.0.0.1"]


async def test_numeric_host_spellings_resolve_into_the_guard() -> None:
    # 2852039166 and 0xa9fea9fe are 169.254.169.254 to getaddrinfo (inet_aton): not IP literals to
    # check_url, so the resolver must catch them (no network: numeric forms never leave libc)
    for host in ("2852039166", "0xa9fea9fe", "0251.0376.0251.0376"):
        check_url(f"http://{host}/", CLOSED)  # not a literal: left to the resolver
        with pytest.raises(DeliveryError, match="metadata"):
            await GuardedResolver(lambda: CLOSED).resolve(host, 80)


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 2**32 - 1))
def test_every_ipv4_address_is_judged_the_same_in_any_ipv6_disguise(a: int) -> None:
    import ipaddress

    v4 = ipaddress.IPv4Address(a)
    mapped = str(ipaddress.IPv6Address((0xFFFF << 32) | a))
    nat64 = str(ipaddress.IPv6Address((0x64FF9B << 96) | a))
    want = blocked_reason(str(v4)) is None
    assert (blocked_reason(mapped) is None) == want and (blocked_reason(nat64) is None) == want
