"""Outbound requests to addresses tenants and users choose, without SSRF.

Every URL a tenant or user can set (webhook endpoints, credentials' base URLs, and the
knowledge sources, OIDC issuers and storage endpoints to come) goes through this one
module; operator-set URLs (settings, the gateway's own sandboxes) do not need to.

The decision is made on the address that will really be dialled, not on the text:

- the URL is parsed by yarl, the parser aiohttp (and through it the OpenAI SDK's
  transport) dials with, so its IDNA / UTS 46 mapping applies first: circled,
  superscript and full-width digits and the ideographic full stop become the ASCII
  the client will use (`①②⑦.⓪.⓪.①` *is* 127.0.0.1 to the client, so it is to us);
- the host that results is then read the way a C resolver would (`2130706433`,
  `0177.0.0.1`, `0x7f.1`, `127.1` are 127.0.0.1), IPv6 literals including IPv4-mapped,
  -compatible, NAT64 and 6to4 forms are unwrapped to the IPv4 inside, zone ids dropped;
  an IP literal written in anything but its plain form is refused outright (parsers
  disagree about such forms, and no honest endpoint needs one);
- user-info (`http://evil.com@127.0.0.1`), backslashes, control characters and
  percent-escapes in the host are refused: they are where parsers disagree;
- names that mean "this machine" or "the cloud's metadata service" (`localhost`,
  `*.localhost`, `*.internal`, `metadata.google.internal`…) are refused by name;
- a host name is resolved and *every* address must be public (not loopback, private,
  link-local, multicast, reserved, unspecified, shared/CGNAT or otherwise non-global,
  nor 169.254.169.254 / fd00:ec2::254 / 100.100.100.200);
- the connection goes to exactly the addresses that were checked: `GuardedResolver`
  is aiohttp's resolver, so the check and the connect use one lookup and a DNS
  rebinding between them is impossible (no second lookup, no DNS cache), and every
  request a `guarded_session` makes (a redirect followed by a caller too) passes
  `check_url` on the URL aiohttp is about to dial.

`Policy.build(allowed)` (settings `OUTBOUND_ALLOWED_HOSTS`, alias
`WEBHOOK_ALLOWED_HOSTS`) lists host names and CIDRs that are let through anyway (tests,
self-hosting on a private network); `Policy.require_https` (on in production) refuses
plain http. Callers never follow redirects (`allow_redirects=False`), and proxies from
the environment are ignored.

`check_url` is the static check (no DNS) for every request; `check_destination` adds the
lookup, for the moment a URL is saved. Both raise `UnsafeDestination`, a
BAD_USER_INPUT whose details name the `url` field.

Part of kit/: imports nothing of the project but `kit.errors`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from kit.errors import BadUserInput

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
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
MAX_URL_LENGTH = 2000


class UnsafeDestination(BadUserInput):
    """The URL points somewhere an outbound call must not go (BAD_USER_INPUT on `field`)."""

    def __init__(self, reason: str, *, field: str = "url") -> None:
        super().__init__(f"URL refused: {reason}.", details={field: reason})
        self.reason = reason

    def for_field(self, name: str) -> UnsafeDestination:
        """The same refusal, its details naming the input field `name`."""
        return UnsafeDestination(self.reason, field=name)


def refusal_in(exc: BaseException | None) -> UnsafeDestination | None:
    """The guard's refusal behind `exc`, when a client library wrapped it (the OpenAI
    SDK turns whatever its transport raised into APIConnectionError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, UnsafeDestination):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def system_resolver() -> AbstractResolver:
    """The resolver that answers names (the tests put a table of their own here)."""
    return ThreadedResolver()


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
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)

    def allows_name(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.allowed_hosts


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """`inet_aton` forms: 1 to 4 parts, each decimal, octal (0…) or hex (0x…)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        return None
    values: list[int] = []
    for part in parts:
        p = part.lower()
        if not p.isascii():
            return None
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
    h = host.strip("[]").rstrip(".")
    if "%" in h:  # IPv6 with a zone id (raw or percent-encoded as %25)
        h = h.split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    return parse_legacy_ipv4(h)


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be contacted, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip in IPV4_COMPATIBLE and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # ::127.0.0.1 (deprecated)
        if embedded is None and ip.teredo:
            return "a Teredo tunnel address"
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"{inner} (inside {ip})" if inner is not None else None
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
    host: str  # as dialled: IDNA-encoded, lower-case, no trailing dot, no brackets
    port: int
    address: IPAddress | None = None  # set when the host is an IP literal
    name_allowed: bool = field(default=False)  # host is on the allow-list by name
    url: str = ""  # the URL as the client will send it (yarl's normal form)
    addresses: tuple[str, ...] = ()  # what the name resolved to (check_destination)


def normalise(url: str) -> URL:
    """The URL exactly as aiohttp will see it (yarl applies IDNA / UTS 46 to the host),
    or UnsafeDestination for anything parsers could read two ways."""
    text = url.strip() if isinstance(url, str) else ""
    if not text or len(text) > MAX_URL_LENGTH:
        raise UnsafeDestination("not a valid URL")
    if "\\" in text:
        raise UnsafeDestination("backslashes are not allowed in a URL")
    if any(ord(c) < 33 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise UnsafeDestination("spaces and control characters are not allowed in a URL")
    try:
        parsed = URL(text)
        parsed.port  # noqa: B018 - a bad port raises here, not at dial time
    except (ValueError, TypeError, UnicodeError):
        raise UnsafeDestination("not a valid URL") from None
    return parsed


def check_url(url: str, policy: Policy) -> Target:
    """Static checks (no DNS): scheme, credentials, host syntax, blocked names, literals,
    all on the URL as the client will dial it."""
    parsed = normalise(url)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise UnsafeDestination("only http and https URLs are allowed")
    if policy.require_https and scheme != "https":
        raise UnsafeDestination("https is required")
    if (
        parsed.raw_user is not None
        or parsed.raw_password is not None
        or "@" in (parsed.raw_authority or "")
    ):
        raise UnsafeDestination("credentials in the URL are not allowed")
    raw_host = parsed.raw_host or ""
    host = raw_host.rstrip(".").lower()
    if not host:
        raise UnsafeDestination("the URL has no host")
    port = parsed.port or (443 if scheme == "https" else 80)
    canonical = str(parsed)
    if host in policy.allowed_hosts:
        return Target(scheme, host, port, literal_address(host), True, canonical)
    address = literal_address(host)
    if address is not None:
        check_address(address, policy)
        if raw_host != str(address) or _original_host(url) not in (raw_host, f"[{raw_host}]"):
            # Trailing dots, legacy numeric forms, non-ASCII digits, zone ids: parsers
            # differ on what they dial, so even a public address must be written plainly.
            raise UnsafeDestination("write IP addresses in their plain form")
        return Target(scheme, host, port, address, url=canonical)
    if host in BLOCKED_NAMES or host.endswith(BLOCKED_SUFFIXES):
        raise UnsafeDestination(f"{host} is a local or metadata host name")
    if any(not (c.isascii() and (c.isalnum() or c in "-._")) for c in host):
        raise UnsafeDestination("the host name has invalid characters")
    return Target(scheme, host, port, url=canonical)


def _original_host(url: str) -> str:
    """The host as written, before any mapping (lower-case), for the plain-form rule."""
    rest = url.strip().split("://", 1)[-1]
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if ":" in host else host.lower()


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a host unless every address it resolves to is allowed.

    The connector connects to the addresses returned here, so the addresses checked
    are the addresses used (pinned for the connection)."""

    def __init__(self, policy: Policy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or system_resolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        allowed_name = name in self.policy.allowed_hosts
        if not allowed_name and (name in BLOCKED_NAMES or name.endswith(BLOCKED_SUFFIXES)):
            raise UnsafeDestination(f"{name} is a local or metadata host name")
        literal = literal_address(name)
        if literal is not None and not allowed_name:
            check_address(literal, self.policy)  # a numeric form the resolver would map
        # A name that does not resolve is a failed connection (OSError, which aiohttp
        # reports as a DNS error), not a refusal: nothing is dialled either way.
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"{name} does not resolve")
        if not allowed_name:
            for result in results:
                check_address(ipaddress.ip_address(result["host"].split("%", 1)[0]), self.policy)
        return results

    async def close(self) -> None:
        await self._inner.close()


async def resolve_checked(
    host: str, port: int, policy: Policy, *, resolver: AbstractResolver | None = None
) -> list[str]:
    """The addresses `host` resolves to, all checked (for callers outside aiohttp)."""
    guard = GuardedResolver(policy, resolver)
    try:
        results = await guard.resolve(host, port, socket.AF_UNSPEC)
    finally:
        await guard.close()
    return [r["host"] for r in results]


async def check_destination(
    url: str,
    policy: Policy,
    *,
    resolver: AbstractResolver | None = None,
    require_resolvable: bool = False,
) -> Target:
    """`check_url`, then the lookup: a name must not resolve to a refused address. A
    name that does not resolve at all passes unless `require_resolvable` (a URL may be
    saved before its DNS exists; every send checks again)."""
    target = check_url(url, policy)
    if target.address is not None or target.name_allowed:
        return target
    try:
        addresses = await resolve_checked(target.host, target.port, policy, resolver=resolver)
    except OSError:
        if require_resolvable:
            raise UnsafeDestination(f"{target.host} does not resolve") from None
        return target
    return Target(
        target.scheme, target.host, target.port, url=target.url, addresses=tuple(addresses)
    )


def _request_check(policy: Policy) -> Any:
    """A client middleware: every request the session makes, each redirect hop included
    (aiohttp runs middlewares per hop), passes `check_url` on the URL about to be dialled
    (IP literals never reach the resolver)."""

    async def check(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        check_url(str(request.url), policy)
        return await handler(request)

    return check


def guarded_connector(policy: Policy, *, limit: int = 100) -> aiohttp.TCPConnector:
    """A connector that resolves through the guard, without a DNS cache (pinning)."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        use_dns_cache=False,
        family=socket.AF_UNSPEC,
        limit=limit,
    )


def guarded_session(
    policy: Policy,
    *,
    connect_timeout: float = 2.0,
    total_timeout: float | None = 15.0,
    limit: int = 100,
    timeout: aiohttp.ClientTimeout | None = None,
    **kwargs: Any,
) -> aiohttp.ClientSession:
    """An aiohttp session whose every request and connection passes the guard."""
    if timeout is None:
        timeout = aiohttp.ClientTimeout(
            total=total_timeout, connect=connect_timeout, sock_connect=connect_timeout
        )
    return aiohttp.ClientSession(
        connector=guarded_connector(policy, limit=limit),
        timeout=timeout,
        trust_env=False,
        middlewares=(_request_check(policy),),
        **kwargs,
    )


async def check_host(
    host: str,
    port: int,
    policy: Policy,
    *,
    resolver: AbstractResolver | None = None,
) -> list[str]:
    """A tenant- or user-set host for a protocol other than HTTP (IMAP): the static rules
    of a URL's host (`check_url`), then the lookup. Returns what to dial: the checked
    addresses (connect to these, never to the name again, so a rebinding between the
    check and the connection cannot happen), or the name itself when the allow-list
    names it. A name that does not resolve is refused (there is nothing to dial)."""
    text = host.strip() if isinstance(host, str) else ""
    if not text or any(c in text for c in "/@?#\\%") or any(ord(c) < 33 for c in text):
        raise UnsafeDestination("not a valid host name")
    if ":" in text and not text.startswith("["):  # an IPv6 literal, bracketed as in a URL
        text = f"[{text}]"
    scheme_free = Policy(policy.allowed_hosts, policy.allowed_networks, require_https=False)
    target = check_url(f"https://{text}:{port}/", scheme_free)
    if target.address is not None:
        return [str(target.address)]
    if target.name_allowed:
        return [target.host]
    try:
        return await resolve_checked(target.host, port, policy, resolver=resolver)
    except OSError:
        raise UnsafeDestination(f"{target.host} does not resolve") from None
