"""Outbound requests to addresses users choose (tenants' webhook endpoints) without SSRF.

A URL is refused unless every address its host stands for is public:

- the host is parsed the way a C resolver would (so `2130706433`, `0177.0.0.1`,
  `0x7f.1`, `127.1` are recognised as 127.0.0.1), IPv6 literals including IPv4-mapped,
  NAT64 and 6to4 forms are unwrapped to the IPv4 inside;
- names that mean "this machine" or "the cloud's metadata service" (`localhost`,
  `*.localhost`, `metadata.google.internal`, `metadata.goog`, `instance-data`…) are
  refused by name;
- a hostname is resolved and *every* address must be public (not loopback, private,
  link-local, multicast, reserved, unspecified, shared/CGNAT or otherwise non-global,
  nor 169.254.169.254 / fd00:ec2::254 / 100.100.100.200);
- the connection goes to exactly the addresses that were checked: `GuardedResolver`
  is aiohttp's resolver, so the check and the connect use one lookup and a DNS
  rebinding between them is impossible (no second lookup, no DNS cache).

`Policy.allowed` (setting `WEBHOOK_ALLOWED_HOSTS`) lists host names and CIDRs that are
let through anyway (tests, self-hosting on a private network); `Policy.require_https`
(on in production) refuses plain http. Redirects are never followed by `guarded_session`
callers (pass `allow_redirects=False`), and proxies from the environment are ignored.

Leaf module: imports nothing above `gateway/`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway.errors import BadUserInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
BLOCKED_SUFFIXES = (".localhost", ".internal", ".local")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeDestination(BadUserInput):
    """The URL points somewhere a webhook must not go (BAD_USER_INPUT on `url`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"URL refused: {reason}.", details={"url": reason})
        self.reason = reason


@dataclass(frozen=True)
class Policy:
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    require_https: bool = False

    @classmethod
    def build(cls, allowed: Iterable[str] = (), *, require_https: bool = False) -> Policy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allowed:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks), require_https)

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """`inet_aton` forms: 1 to 4 parts, each decimal, octal (0…) or hex (0x…)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        return None
    values: list[int] = []
    for part in parts:
        p = part.lower()
        try:
            if p.startswith("0x"):
                value = int(p[2:] or "0", 16)
            elif len(p) > 1 and p.startswith("0"):
                value = int(p, 8)
            elif p.isdigit():
                value = int(p, 10)
            else:
                return None
        except ValueError:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number | last)


def literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes by itself (no DNS), or None for a name."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if "%" in h:  # IPv6 with a zone id
        try:
            return ipaddress.ip_address(h.split("%", 1)[0])
        except ValueError:
            return None
    return parse_legacy_ipv4(h)


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be contacted, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo:
            return "a Teredo tunnel address"
        if embedded is not None:
            inner = blocked_reason(embedded)
            return None if inner is None else f"{inner} (inside {ip})"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def check_address(ip: IPAddress, policy: Policy) -> None:
    if policy.allows_address(ip):
        return
    reason = blocked_reason(ip)
    if reason is not None:
        raise UnsafeDestination(f"{ip} is {reason}")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower-case, no trailing dot, no brackets
    port: int
    address: IPAddress | None = None  # set when the host is an IP literal
    name_allowed: bool = field(default=False)  # host is on the allow-list by name


def check_url(url: str, policy: Policy) -> Target:
    """Static checks (no DNS): scheme, credentials, host syntax, blocked names, literals."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UnsafeDestination("not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeDestination("only http and https URLs are allowed")
    if policy.require_https and scheme != "https":
        raise UnsafeDestination("https is required")
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeDestination("the URL has no host")
    port = port or (443 if scheme == "https" else 80)
    if host in policy.allowed_hosts:
        return Target(scheme, host, port, literal_address(host), name_allowed=True)
    address = literal_address(host)
    if address is not None:
        check_address(address, policy)
        if isinstance(address, ipaddress.IPv4Address) and host != str(address):
            # Legacy numeric forms are refused even when public: ambiguous between parsers.
            raise UnsafeDestination("write IPv4 addresses in dotted-decimal form")
        return Target(scheme, host, port, address)
    if host in BLOCKED_NAMES or host.endswith(BLOCKED_SUFFIXES):
        raise UnsafeDestination(f"{host} is a local or metadata host name")
    if any(c for c in host if not (c.isalnum() or c in "-._")):
        raise UnsafeDestination("the host name has invalid characters")
    return Target(scheme, host, port)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a host unless every address it resolves to is allowed.

    The connector connects to the addresses returned here, so the addresses checked
    are the addresses used (pinned for the connection)."""

    def __init__(self, policy: Policy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        if name not in self.policy.allowed_hosts and (
            name in BLOCKED_NAMES or name.endswith(BLOCKED_SUFFIXES)
        ):
            raise UnsafeDestination(f"{name} is a local or metadata host name")
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise UnsafeDestination(f"{name} does not resolve")
        if name not in self.policy.allowed_hosts:
            for result in results:
                check_address(ipaddress.ip_address(result["host"].split("%", 1)[0]), self.policy)
        return results

    async def close(self) -> None:
        await self._inner.close()


async def resolve_checked(host: str, port: int, policy: Policy) -> list[str]:
    """The addresses `host` resolves to, all checked (for callers outside aiohttp)."""
    resolver = GuardedResolver(policy)
    try:
        results = await resolver.resolve(host, port, socket.AF_UNSPEC)
    finally:
        await resolver.close()
    return [r["host"] for r in results]


def guarded_session(
    policy: Policy, *, connect_timeout: float = 2.0, total_timeout: float = 15.0, **kwargs: Any
) -> aiohttp.ClientSession:
    """An aiohttp session whose every connection passes the guard.

    IP-literal URLs bypass aiohttp's resolver, so callers run `check_url` first on every
    request (`guarded_request` does)."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        use_dns_cache=False,
        family=socket.AF_UNSPEC,
        limit=100,
    )
    timeout = aiohttp.ClientTimeout(
        total=total_timeout, connect=connect_timeout, sock_connect=connect_timeout
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False, auto_decompress=True, **kwargs
    )
