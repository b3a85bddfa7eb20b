"""The SSRF guard: every way of writing a local or metadata address is refused.

The corpus below is what an attacker tries from outside: numeric forms, Unicode digits
and dots that the client's IDNA mapping turns into an IPv4 literal, IPv6 wrappings, zone
ids, user-info and backslash tricks, names that resolve inside (an injected resolver
stands in for the attacker's DNS zone; no network), and redirects. Each is refused with a
coded error by the static check, by the lookup, and by a real guarded aiohttp request.
"""

from __future__ import annotations

import ipaddress

import aiohttp
import httpx
import pytest
import yarl
from aiohttp.abc import AbstractResolver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kit import ssrf
from kit.ssrf import (
    GuardedResolver,
    Policy,
    UnsafeDestination,
    blocked_reason,
    check_destination,
    check_url,
    guarded_session,
    literal_address,
    parse_legacy_ipv4,
)
from tests.conftest import error_codes, gql, register, running_server

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
    for host in ("rebind.example", "meta.example", "v6.example"):
        with pytest.raises(UnsafeDestination):
            await guard.resolve(host, 80)
    with pytest.raises(OSError):
        await guard.resolve("nothing.example", 80)
    with pytest.raises(UnsafeDestination):
        await guard.resolve("metadata.google.internal", 80)
    ok = await guard.resolve("ok.example", 443)
    assert [r["host"] for r in ok] == ["93.184.216.34"]


async def test_session_connects_only_through_the_guard():
    """A real aiohttp request to a name that resolves to loopback never leaves the guard."""
    async with guarded_session(OPEN) as session:
        with pytest.raises(UnsafeDestination):
            await session.get("http://localhost:9/")


# The attacker's corpus --------------------------------------------------------------------

# What the injected resolver answers: names an attacker points inside.
ATTACKER_DNS = {
    "rebind.attacker.example": ["93.184.216.34", "127.0.0.1"],
    "meta.attacker.example": ["169.254.169.254"],
    "ten.attacker.example": ["10.0.0.7"],
    "home.attacker.example": ["192.168.0.1"],
    "cgnat.attacker.example": ["100.64.1.1"],
    "v6loop.attacker.example": ["::1"],
    "v6ula.attacker.example": ["fd12:3456::1"],
    "v6mapped.attacker.example": ["::ffff:10.1.2.3"],
    "v6link.attacker.example": ["fe80::1"],
    "zero.attacker.example": ["0.0.0.0"],
    "127.0.0.1.nip.example": ["127.0.0.1"],
    "public.example": ["93.184.216.34"],
}

CORPUS = [
    # IPv4 in every numeric form the C resolver accepts
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0X7F000001/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0177.0000.0000.0001/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://0x7f.1/",
    "http://127.000.000.001/",
    "http://0/",
    "http://0.0.0.0/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://169.16689662/",
    "http://10.1/",
    "http://012.0.0.1/",
    "http://0xc0.0xa8.0x1.0x1/",
    "http://3232235777/",
    # trailing dots
    "http://127.0.0.1./",
    "http://0.0.0.0./",
    "http://localhost./",
    "http://169.254.169.254./latest/",
    # Unicode digits and dots that IDNA maps to ASCII (what yarl dials)
    "http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460/",  # circled 127.0.0.1
    "http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460:8080/x",
    # 169.254.169.254 in circled digits
    "http://\u246f\u2468.\u2461\u2464\u2463.\u246f\u2468.\u2461\u2464\u2463/latest",
    "http://\u2460\u24ea.\u24ea.\u24ea.\u2460/",  # circled 10.0.0.1
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # full-width digits
    "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",  # full-width stops
    "http://127\u30020\u30020\u30021/",  # ideographic full stop
    "http://127\uff610\uff610\uff611/",  # half-width ideographic full stop
    "http://\u2460\u2461\u2466\u3002\u24ea\u3002\u24ea\u3002\u2460/",
    "http://\u00b9\u00b2\u2077.\u2070.\u2070.\u00b9/",  # superscript
    "http://\U0001d7cf\U0001d7d0\U0001d7d5.\U0001d7ce.\U0001d7ce.\U0001d7cf/",  # bold math
    "http://\u00b2\u00b9\u00b3\u2070\u2077\u2070\u2076\u2074\u00b3\u00b3/",  # 2130706433
    "http://\u2070\u02e3\u2077\u1da0.1/",  # 0x7f.1 in modifier letters
    "http://\u2460\u2461\u2466.\u2460/",  # 127.1
    "http://\uff10\uff58\uff17\uff46\uff10\uff10\uff10\uff10\uff10\uff11/",  # 0x7f000001
    "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/",  # circled localhost
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",  # full-width localhost
    "http://LOCALHOST/",
    "http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460./",
    # IPv6 literals and IPv4 wrapped in IPv6
    "http://[::1]/",
    "http://[::1]:8080/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:0:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[::7f00:1]/",
    "http://[::169.254.169.254]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fe80::1%eth0]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    # user-info, fragments, backslashes, percent-escapes, control characters
    "http://evil.com@127.0.0.1/",
    "http://evil.com:80@127.0.0.1/",
    "http://user:pass@example.com/",
    "http://127.0.0.1:80@evil.com/",
    "http://evil.com%40127.0.0.1/",
    "http://127.0.0.1#@evil.com/",
    "http://127.0.0.1?@evil.com/",
    "http://evil.com\\@127.0.0.1/",
    "http://127.0.0.1\\.evil.com/",
    "http:\\\\127.0.0.1/",
    "http://%31%32%37.0.0.1/",
    "http://127.0.0.1%2f.evil.com/",
    "http://127.0.0.1\t/",
    "http://127.0.0.1\n.evil.com/",
    "http://exa mple.com/",
    # local and metadata names
    "http://localhost/",
    "http://api.localhost/",
    "http://localhost.localdomain/",
    "http://ip6-localhost/",
    "http://metadata/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://metadata.goog/",
    "http://instance-data/",
    "http://printer.local/",
    "http://db.internal/",
    # names the attacker's DNS points inside
    "http://rebind.attacker.example/",
    "http://meta.attacker.example/latest/meta-data/",
    "http://ten.attacker.example/",
    "http://home.attacker.example/",
    "http://cgnat.attacker.example/",
    "http://v6loop.attacker.example/",
    "http://v6ula.attacker.example/",
    "http://v6mapped.attacker.example/",
    "http://v6link.attacker.example/",
    "http://zero.attacker.example/",
    "http://127.0.0.1.nip.example:8080/",
    "http://nothing.attacker.example/",  # does not resolve: refused when sending
    # schemes
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:6379/",
    "http:///nohost",
]


def test_corpus_is_large():
    assert len(CORPUS) >= 100
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.fixture
def attacker_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Every guarded lookup answers from ATTACKER_DNS (no network)."""
    dns = FakeDNS(dict(ATTACKER_DNS))
    monkeypatch.setattr(ssrf, "system_resolver", lambda: dns)
    return dns


def _assert_coded(error: UnsafeDestination) -> None:
    assert error.code == "BAD_USER_INPUT"
    assert error.details.get("url")


@pytest.mark.parametrize("url", CORPUS)
async def test_corpus_refused_when_saved(url: str, attacker_dns: FakeDNS) -> None:
    """At creation: the static check plus the lookup (a name that does not resolve yet
    may be saved; it is refused when sent, below)."""
    if url == "http://nothing.attacker.example/":
        with pytest.raises(UnsafeDestination) as info:
            await check_destination(url, OPEN, require_resolvable=True)
    else:
        with pytest.raises(UnsafeDestination) as info:
            await check_destination(url, OPEN)
    _assert_coded(info.value)


@pytest.mark.parametrize("url", CORPUS)
async def test_corpus_refused_when_dialled(url: str, attacker_dns: FakeDNS) -> None:
    """At send time, a real aiohttp request through the guarded session never connects,
    even without a prior check_url by the caller."""
    async with guarded_session(OPEN, connect_timeout=1, total_timeout=2) as session:
        try:
            async with session.get(url, allow_redirects=False) as response:
                raise AssertionError(f"{url} was dialled: {response.status}")
        except UnsafeDestination as exc:
            _assert_coded(exc)
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError):
            pass  # the client itself cannot parse it: nothing is dialled either
        except aiohttp.ClientConnectorDNSError:
            # a name with no address (aiohttp drops user-info before the guard sees the
            # URL; check_url refuses those first in every caller): nothing dialled
            assert yarl.URL(url).host not in ATTACKER_DNS


async def test_allow_list_and_public_names_still_work(attacker_dns: FakeDNS) -> None:
    target = await check_destination("https://public.example/hook", OPEN)
    assert target.addresses == ("93.184.216.34",)
    allowed = Policy.build(["ten.attacker.example", "127.0.0.1/32"])
    assert (await check_destination("http://ten.attacker.example/", allowed)).name_allowed
    assert (await check_destination("http://127.0.0.1:9/", allowed)).port == 9
    with pytest.raises(UnsafeDestination):  # the allow-list is the plain form only
        await check_destination("http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460:9/", allowed)
    # a public address in Unicode digits is what the client dials, but still not plain
    with pytest.raises(UnsafeDestination):
        check_url("http://\uff19\uff13.184.216.34/", OPEN)
    assert check_url("http://b\u00fccher.example/", OPEN).host == "xn--bcher-kva.example"


async def test_a_followed_redirect_to_loopback_is_refused(attacker_dns: FakeDNS) -> None:
    """A public-looking target answering 302 to 127.0.0.1: callers never follow
    redirects, and even a session that did would refuse the second request."""
    hits: list[str] = []

    async def jump(request: Request) -> Response:
        hits.append("jump")
        return Response(status_code=302, headers={"location": f"{base}/secret"})

    async def secret(request: Request) -> Response:
        hits.append("secret")
        return Response("internal data")

    app = Starlette(routes=[Route("/jump", jump), Route("/secret", secret)])
    async with running_server(app) as base:
        port = base.rsplit(":", 1)[1]
        attacker_dns.table["jump.attacker.example"] = ["127.0.0.1"]
        # the operator trusts this name (as if it were public); loopback is not trusted
        policy = Policy.build(["jump.attacker.example"])
        async with guarded_session(policy) as session:
            url = f"http://jump.attacker.example:{port}/jump"
            async with session.get(url, allow_redirects=False) as response:
                assert response.status == 302
            with pytest.raises(UnsafeDestination):
                async with session.get(url, allow_redirects=True):
                    pass
    assert hits == ["jump", "jump"]


CREATE = """
mutation($i: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $i) { endpoint { id url } }
}"""


async def test_webhook_endpoint_with_unicode_host_refused_through_graphql(
    client: httpx.AsyncClient, attacker_dns: FakeDNS
) -> None:
    from models.webhooks import WebhookEndpoint

    acct = await register(client)
    for url in (
        "http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460:8080/hook",
        "https://\u246f\u2468.\u2461\u2464\u2463.\u246f\u2468.\u2461\u2464\u2463/latest",
        "http://127\u30020\u30020\u30021/",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
        "http://evil.com@127.0.0.1/",
        "http://meta.attacker.example/",
        "http://rebind.attacker.example/",
    ):
        body = await gql(client, CREATE, {"i": {"url": url}}, token=acct.token)
        assert error_codes(body) == ["BAD_USER_INPUT"], url
        assert "url" in body["errors"][0]["extensions"]["details"], url
    from tests.credentials.test_credentials import tenant_id_of

    # This organization's (the store is shared by the session's tests).
    assert await WebhookEndpoint.filter(tenant_id=tenant_id_of(acct)).count() == 0
    ok = await gql(client, CREATE, {"i": {"url": "https://public.example/hook"}}, token=acct.token)
    assert "errors" not in ok, ok
