"""The SSRF guard: every way of writing a local or metadata address is refused."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp.abc import AbstractResolver

from gateway.ssrf import (
    GuardedResolver,
    Policy,
    UnsafeDestination,
    blocked_reason,
    check_url,
    guarded_session,
    literal_address,
    parse_legacy_ipv4,
)

OPEN = Policy.build()

REFUSED_URLS = [
    # IPv4 loopback, private, link-local, CGNAT, multicast, reserved, unspecified, broadcast
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/x",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://0.0.0.0/",
    "http://255.255.255.255/",
    "http://192.0.2.10/",
    # legacy numeric forms of 127.0.0.1 and 169.254.169.254
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2852039166/",
    "http://0xA9FEA9FE/",
    "http://0251.0376.0251.0376/",
    # IPv6
    "http://[::1]/",
    "http://[::]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:db8::1]/",
    # names
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://localhost.localdomain/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.goog/",
    "http://metadata/",
    "http://instance-data/",
    "http://printer.local/",
    "http://anything.internal/",
    # not http(s), credentials, junk
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:pass@example.com/",
    "http:///nohost",
    "http://exa mple.com/",
    "http://[::1/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_refused(url):
    with pytest.raises(UnsafeDestination) as info:
        check_url(url, OPEN)
    assert info.value.code == "BAD_USER_INPUT"
    assert "url" in info.value.details


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://hooks.example.org:8443/a?b=c",
        "http://93.184.216.34/",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/",
        "https://xn--bcher-kva.example/",
    ],
)
def test_public_allowed(url):
    assert check_url(url, OPEN).host


def test_legacy_public_forms_are_refused_as_ambiguous():
    with pytest.raises(UnsafeDestination):
        check_url("http://1572395042/", OPEN)  # 93.184.216.34 written as one number


@pytest.mark.parametrize(
    "host,expected",
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
    ],
)
def test_legacy_parse(host, expected):
    assert parse_legacy_ipv4(host) == ipaddress.IPv4Address(expected)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "12a", "1..2", "09"])
def test_legacy_parse_rejects_non_addresses(host):
    assert parse_legacy_ipv4(host) is None


def test_zone_ids_and_brackets():
    assert "link-local" in (blocked_reason(literal_address("[fe80::1%eth0]")) or "")
    assert blocked_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert "loopback" in (blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1")) or "")
    assert "metadata" in (blocked_reason(ipaddress.ip_address("169.254.169.254")) or "")


def test_https_required_in_production_policy():
    strict = Policy.build(require_https=True)
    with pytest.raises(UnsafeDestination):
        check_url("http://example.com/", strict)
    assert check_url("https://example.com/", strict).port == 443


def test_allow_list_by_cidr_and_name():
    policy = Policy.build(["127.0.0.1/32", "intranet.example", " ", "::1"])
    assert check_url("http://127.0.0.1:9000/", policy).port == 9000
    assert check_url("http://[::1]:9000/", policy).port == 9000
    assert check_url("http://intranet.example/", policy).host == "intranet.example"
    with pytest.raises(UnsafeDestination):
        check_url("http://127.0.0.2/", policy)
    with pytest.raises(UnsafeDestination):
        check_url("http://localhost/", policy)  # the allow-list is exact


class FakeDNS(AbstractResolver):
    """A resolver answering from a table: stands in for an attacker-controlled DNS zone."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls = 0

    async def resolve(self, host, port=0, family=0):
        self.calls += 1
        return [
            {"hostname": host, "host": ip, "port": port, "family": 0, "proto": 0, "flags": 0}
            for ip in self.table.get(host, [])
        ]

    async def close(self):
        return None


async def test_resolver_refuses_names_pointing_inside():
    dns = FakeDNS(
        {
            "rebind.example": ["93.184.216.34", "127.0.0.1"],  # one bad answer taints all
            "meta.example": ["169.254.169.254"],
            "v6.example": ["::ffff:10.1.2.3"],
            "ok.example": ["93.184.216.34"],
        }
    )
    guard = GuardedResolver(OPEN, inner=dns)
    for host in ("rebind.example", "meta.example", "v6.example", "nothing.example"):
        with pytest.raises(UnsafeDestination):
            await guard.resolve(host, 80)
    with pytest.raises(UnsafeDestination):
        await guard.resolve("metadata.google.internal", 80)
    ok = await guard.resolve("ok.example", 443)
    assert [r["host"] for r in ok] == ["93.184.216.34"]


async def test_session_connects_only_through_the_guard():
    """A real aiohttp request to a name that resolves to loopback never leaves the guard."""
    async with guarded_session(OPEN) as session:
        with pytest.raises(UnsafeDestination):
            await session.get("http://localhost:9/")
