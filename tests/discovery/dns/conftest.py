"""Fixtures: a real dnsmasq per test, DnsSource factory, a recording listener."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from protoc_gen_localfirst.runtime.discovery import DnsOptions, make_source
from protoc_gen_localfirst.runtime.discovery.dns import DnsSource
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from tests.support.dnsmasq import Dnsmasq, Records
from tests.support.waiting import wait_until

PORT = 50051


def eps(*hosts: str, port: int = PORT) -> list[Endpoint]:
    return [Endpoint(host=h, port=port) for h in hosts]


class Recorder:
    """A listener that keeps every pushed set with its arrival time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[float, list[Endpoint]]] = []

    def __call__(self, endpoints: Sequence[Endpoint]) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), list(endpoints)))

    @property
    def sets(self) -> list[list[Endpoint]]:
        with self._lock:
            return [s for _, s in self.calls]

    @property
    def latest(self) -> list[Endpoint] | None:
        sets = self.sets
        return sets[-1] if sets else None

    def wait_for(self, expected: list[Endpoint], timeout: float = 5.0) -> float:
        """Wait until the latest set is ``expected``; return when it arrived."""
        wait_until(
            lambda: self.latest == expected, what=f"set {expected}", timeout=timeout, interval=0.01
        )
        with self._lock:
            return self.calls[-1][0]


DnsmasqFactory = Callable[..., Dnsmasq]
SourceFactory = Callable[..., tuple[DnsSource, Recorder]]


@pytest.fixture
def dnsmasq() -> Iterator[DnsmasqFactory]:
    """``dnsmasq(records, ttl=1, exists=[...])`` -> a started server, stopped at teardown."""
    servers: list[Dnsmasq] = []

    def make(records: Records | None = None, **kwargs: Any) -> Dnsmasq:
        server = Dnsmasq(records, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def source() -> Iterator[SourceFactory]:
    """``source(target, **DnsOptions fields)`` -> (started DnsSource, its Recorder)."""
    sources: list[DnsSource] = []

    def make(target: str, *, start: bool = True, **options: Any) -> tuple[DnsSource, Recorder]:
        src = make_source(target, dns=DnsOptions(**options))
        assert isinstance(src, DnsSource)
        sources.append(src)
        recorder = Recorder()
        if start:
            src.start(recorder)
        return src, recorder

    yield make
    for src in sources:
        src.close()


def dns_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "protoc_gen_localfirst.discovery.dns" and r.levelno == level
    ]
