"""``dns:///NAME:PORT`` and ``dns://DNS_IP[:DNS_PORT]/NAME:PORT`` targets.

:class:`DnsSource` resolves NAME (A and AAAA, with dnspython) in its own
daemon thread and pushes each new endpoint set to its listener.

When it resolves:

- at start, at once;
- when the answer's shortest TTL runs out, clamped to
  ``[DnsOptions.min_interval, DnsOptions.max_interval]``; an answer with no
  address at all (a service scaled to zero) is re-checked after
  ``min_interval``, not after its negative-caching TTL, so that the first
  replica to come up is seen quickly;
- when an endpoint failed (:meth:`DnsSource.request_refresh`): at once, but
  at most once per ``failure_refresh_interval``. Requests inside that interval
  are coalesced into one lookup at its end, never dropped: the last failure
  always gets a lookup that started after it.
- after a failed lookup: again after ``min_interval``, doubling up to
  ``max_interval`` while the failures go on.

Failures (no answer in time, NXDOMAIN, SERVFAIL/REFUSED, an unreachable
server) never empty the set: the last good set stays, ``last_error`` says
what went wrong, one warning is logged per failure streak and one info line
when lookups succeed again. Before the first good answer nothing is pushed,
so the client fails calls with ``last_error``.

NXDOMAIN after a good answer is a failure, not an empty set. In Kubernetes a
Service that exists but has no ready pods answers NOERROR with no addresses
(pushed as the empty set: a real state); NXDOMAIN means the name is unknown
to that server, which happens when a resolver is misconfigured, a search
domain is wrong, or a DNS server restarted and has not loaded its data yet.
Emptying the set then would turn a DNS hiccup into an outage, while keeping
the set at worst sends calls to replicas that are really gone, which fail
over and report the DNS error. (gRPC's own resolver keeps its addresses on
resolution failure, too.)

One family failing while the other answers (some servers refuse AAAA) is not
a failure: the answering family is fresh and the failed family keeps its last
known addresses. The exception is NXDOMAIN for one family and an empty
NOERROR for the other: the name's records changed between the two queries
(a server reloading), so neither is an empty set to act on; the lookup fails
and is retried after ``min_interval``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.resolver

from protoc_gen_localfirst.runtime.discovery.endpoints import (
    Endpoint,
    Target,
    TargetError,
    parse_host_port,
)
from protoc_gen_localfirst.runtime.discovery.source import DnsOptions, EndpointSource, Listener

log = logging.getLogger("protoc_gen_localfirst.discovery.dns")

DNS_FORMAT = "dns:///NAME:PORT or dns://DNS_IP[:DNS_PORT]/NAME:PORT (IPv6 as [::1]:5353)"
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_FAMILIES = ("A", "AAAA")


@dataclass(frozen=True)
class _Parsed:
    name: str
    port: int
    server: tuple[str, int] | None  # None: the system resolver configuration
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None


def _parse(target: Target) -> _Parsed:
    """Check a ``dns`` target; every error names the target and the expected form."""
    where = f"target {target.text!r}"
    path = target.path
    if not path or (path.startswith(":") and not path.startswith("::")):
        raise TargetError(f"{where} names no host; use {DNS_FORMAT}")
    if path.startswith("["):
        has_port = "]:" in path
    else:
        has_port = path.count(":") == 1
    if not has_port and (path.startswith("[") or ":" not in path):
        raise TargetError(
            f"{where} has no port; dns targets need one (NAME:PORT; gRPC would assume 443, "
            f"which is never a gRPC service's port here); use {DNS_FORMAT}"
        )
    host, port = parse_host_port(path, context=where)
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        if path.startswith("["):
            raise TargetError(f"{where}: {host!r} in brackets is not an IPv6 address") from None
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise TargetError(
                f"{where}: {host!r} is not a DNS name (labels of letters, digits, '-', '_', "
                f"at most 63 characters); use {DNS_FORMAT}"
            )
    server: tuple[str, int] | None = None
    if target.authority:
        server = _parse_server(target.authority, where)
    return _Parsed(name=host, port=port, server=server, literal=literal)


def _parse_server(authority: str, where: str) -> tuple[str, int]:
    """``DNS_IP``, ``DNS_IP:PORT``, ``[V6]`` or ``[V6]:PORT`` (port 53 when absent)."""
    text = authority
    bracketed = text.startswith("[")
    if (bracketed and text.endswith("]")) or (not bracketed and ":" not in text):
        text = f"{text}:53"
    elif not bracketed and text.count(":") > 1:
        raise TargetError(
            f"{where}: IPv6 DNS server {authority!r} needs brackets, e.g. [{authority}]:53"
        )
    host, port = parse_host_port(text, context=f"{where}: DNS server")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise TargetError(
            f"{where}: DNS server {host!r} must be an IP address (DNS_IP[:DNS_PORT]); "
            f"use {DNS_FORMAT}"
        ) from None
    return host, port


def _ip_key(host: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(host)
    return ip.version, int(ip)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _LookupError(Exception):
    """One lookup failed; the message says why, without the target."""


class DnsSource(EndpointSource):
    """Resolves a ``dns`` target in a daemon thread; see the module docstring.

    ``lookups`` counts the lookups started so far (instrumentation for tests
    and debugging). The listener is called from the source's thread; do not
    call :meth:`close` while holding a lock that the listener takes.
    """

    def __init__(self, target: Target, options: DnsOptions) -> None:
        super().__init__(target)
        if target.scheme != "dns":
            raise TargetError(f"target {target.text!r} is not a dns target; use {DNS_FORMAT}")
        self.options = options
        self._parsed = _parse(target)
        if self._parsed.literal is None:  # a name, not an IP literal: certificates carry it
            self.server_name = self._parsed.name.rstrip(".")
        self.lookups = 0
        self._cond = threading.Condition()  # guards the scheduling state below
        self._closed = False
        self._refresh_requested = False
        self._last_failure_refresh: float | None = None
        self._deliver = threading.RLock()  # held while the listener runs
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._pushed: list[Endpoint] | None = None
        self._family_hosts: dict[str, list[str]] = {}
        self._failing = 0  # failed lookups in a row (the thread's own state)
        self._backoff = options.min_interval

    # -- EndpointSource ------------------------------------------------------------------

    def start(self, listener: Listener) -> None:
        if self._listener is not None:
            raise RuntimeError(f"{self.target.text}: DnsSource.start called twice")
        self._listener = listener
        literal = self._parsed.literal
        if literal is not None:
            self._push([Endpoint(host=str(literal), port=self._parsed.port)])
            return
        self._thread = threading.Thread(
            target=self._run, name=f"localfirst-dns {self.target.text}", daemon=True
        )
        self._thread.start()

    def request_refresh(self, *, force: bool = False) -> None:
        with self._cond:
            self._refresh_requested = True
            if force:  # past the rate limit: the next lookup starts now
                self._last_failure_refresh = None
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        # Wait for a listener call in progress; none starts after this.
        with self._deliver:
            pass

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_due = time.monotonic()
        while self._wait_until_due(next_due):
            try:
                endpoints, ttl = self._lookup()
            except _LookupError as exc:
                next_due = self._lookup_failed(f"{self.target.text}: {exc}", None)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug or surprise: keep the thread alive
                message = f"{self.target.text}: DNS lookup failed: {exc!r}"
                next_due = self._lookup_failed(message, exc)
                continue
            next_due = self._lookup_succeeded(endpoints, ttl)

    def _wait_until_due(self, next_due: float) -> bool:
        """Wait for the next lookup (``next_due``, or sooner for a refresh request).

        Returns False once closed. Counts the lookup about to start, which
        answers every refresh request made so far.
        """
        with self._cond:
            while True:
                if self._closed:
                    return False
                now = time.monotonic()
                due = next_due
                failure_refresh = False
                if self._refresh_requested:
                    allowed = (
                        now
                        if self._last_failure_refresh is None
                        else self._last_failure_refresh + self.options.failure_refresh_interval
                    )
                    if allowed < due:
                        due, failure_refresh = allowed, True
                if now >= due:
                    break
                self._cond.wait(due - now)
            if failure_refresh:
                self._last_failure_refresh = now
            # This lookup starts after every request so far: it answers them all.
            self._refresh_requested = False
            self.lookups += 1
            return True

    def _lookup_failed(self, message: str, unexpected: Exception | None) -> float:
        """Record a failed lookup (one warning per streak); when to look up next."""
        self.last_error = message
        if self._failing == 0:
            if unexpected is not None:
                log.warning("%s", message, exc_info=unexpected)
            else:
                kept = (
                    f"keeping the last {len(self._pushed)} endpoint(s)"
                    if self._pushed is not None
                    else "no endpoints known yet"
                )
                log.warning(
                    "%s; %s; retrying every %.1f-%.1f s",
                    message,
                    kept,
                    self.options.min_interval,
                    self.options.max_interval,
                )
        elif unexpected is None:
            log.debug("%s (failure %d in a row)", message, self._failing + 1)
        self._failing += 1
        next_due = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.options.max_interval)
        return next_due

    def _lookup_succeeded(self, endpoints: list[Endpoint], ttl: float | None) -> float:
        """Push a changed set, end a failure streak; when to look up next (the TTL, clamped)."""
        if self._failing:
            log.info(
                "%s: DNS answers again after %d failed lookup(s): %d endpoint(s)",
                self.target.text,
                self._failing,
                len(endpoints),
            )
        self._failing = 0
        self._backoff = self.options.min_interval
        self.last_error = None
        interval = self.options.min_interval if ttl is None else ttl
        interval = min(max(interval, self.options.min_interval), self.options.max_interval)
        next_due = time.monotonic() + interval
        if endpoints != self._pushed:
            self._push(endpoints)
        return next_due

    def _push(self, endpoints: list[Endpoint]) -> None:
        with self._deliver:
            with self._cond:
                if self._closed:
                    return
            self._pushed = endpoints
            assert self._listener is not None
            try:
                self._listener(list(endpoints))
            except Exception:
                log.exception("%s: endpoint listener failed", self.target.text)

    # -- one lookup ----------------------------------------------------------------------

    def _resolver(self) -> tuple[dns.resolver.Resolver, str]:
        """A fresh resolver (re-reads /etc/resolv.conf for ``dns:///``) and its description."""
        timeout = self.options.timeout
        server = self._parsed.server
        if server is not None:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(server[0], server[1])]
            described = f"DNS server {_address(*server)}"
        else:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                raise _LookupError(f"no DNS server configured in /etc/resolv.conf ({exc})") from exc
            servers = [
                _address(ns.address, ns.port)
                if isinstance(ns, dns.nameserver.AddressAndPortNameserver)
                else str(ns)
                for ns in resolver.nameservers
            ]
            plural = "s" if len(servers) > 1 else ""
            described = f"DNS server{plural} {', '.join(servers)} (from /etc/resolv.conf)"
        resolver.cache = None
        # Retry a lost UDP packet within the lookup's time budget.
        resolver.timeout = min(timeout, 1.0)
        resolver.lifetime = timeout
        return resolver, described

    def _lookup(self) -> tuple[list[Endpoint], float | None]:
        """Endpoints and the shortest TTL of the address records (None if there are none)."""
        resolver, server = self._resolver()
        use_search = self._parsed.server is None
        deadline = time.monotonic() + self.options.timeout
        fresh: dict[str, list[str]] = {}
        errors: list[str] = []
        nxdomain: str | None = None
        ttls: list[float] = []
        for family in _FAMILIES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors.append(f"{server} did not answer within {self.options.timeout} s")
                continue
            try:
                answer = resolver.resolve(
                    self._parsed.name,
                    family,
                    raise_on_no_answer=False,
                    lifetime=remaining,
                    search=use_search,
                )
            except dns.exception.DNSException as exc:
                errors.append(self._describe(exc, family, server))
                if isinstance(exc, dns.resolver.NXDOMAIN):
                    nxdomain = errors[-1]
                continue
            hosts = [rdata.address for rdata in answer] if answer.rrset is not None else []
            fresh[family] = hosts
            if hosts:
                ttls.append(max(0.0, answer.expiration - time.time()))
        if not fresh:
            # Both failed; usually the same reason twice.
            unique = list(dict.fromkeys(errors))
            raise _LookupError("; ".join(unique))
        if nxdomain is not None and not any(fresh.values()):
            # The name does not exist for one family and exists without addresses for
            # the other: its records changed between the two queries (a server reloading).
            # Neither answer is an empty set the server stands behind; ask again.
            raise _LookupError(nxdomain)
        for family in _FAMILIES:
            if family in fresh:
                self._family_hosts[family] = fresh[family]
            elif errors:
                log.debug(
                    "%s: %s; keeping the last %s records",
                    self.target.text,
                    "; ".join(errors),
                    family,
                )
        hosts = sorted(
            {h for family in _FAMILIES for h in self._family_hosts.get(family, [])}, key=_ip_key
        )
        endpoints = [Endpoint(host=h, port=self._parsed.port) for h in hosts]
        return endpoints, (min(ttls) if ttls else None)

    def _describe(self, exc: dns.exception.DNSException, family: str, server: str) -> str:
        name = self._parsed.name
        if isinstance(exc, dns.resolver.NXDOMAIN):
            return f"{server} says {name} does not exist (NXDOMAIN)"
        if isinstance(exc, dns.exception.Timeout):
            return f"{server} did not answer within {self.options.timeout} s"
        if isinstance(exc, dns.resolver.NoNameservers):
            reasons = [str(err[3]) for err in exc.kwargs.get("errors", [])]
            why = ", ".join(dict.fromkeys(reasons)) or "no usable server"
            return f"{server} failed to answer {name} {family}: {why}"
        if isinstance(exc, dns.resolver.YXDOMAIN):
            return f"{server}: {name} is too long after DNAME substitution (YXDOMAIN)"
        return f"{server}: {name} {family}: {exc}"


__all__ = ["DNS_FORMAT", "DnsSource"]
