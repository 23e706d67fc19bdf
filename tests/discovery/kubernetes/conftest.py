"""Fixtures: the API stand-in, a kubeconfig for it, and a recording listener."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from protoc_gen_localfirst.runtime.discovery import make_source
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, parse_target
from protoc_gen_localfirst.runtime.discovery.kubernetes import KubernetesSource
from protoc_gen_localfirst.runtime.discovery.source import DnsOptions, KubernetesOptions
from tests.discovery.kubernetes.apiserver import ApiServer

WAIT = 10.0
"""Generous: how long a test waits for something that should happen quickly."""


class Recorder:
    """Listener that keeps every pushed set and lets tests wait for one."""

    def __init__(self) -> None:
        self.sets: list[list[Endpoint]] = []
        self._cond = threading.Condition()

    def __call__(self, endpoints: Sequence[Endpoint]) -> None:
        with self._cond:
            self.sets.append(list(endpoints))
            self._cond.notify_all()

    @property
    def latest(self) -> list[Endpoint] | None:
        with self._cond:
            return self.sets[-1] if self.sets else None

    def wait_for(
        self, predicate: Callable[[list[Endpoint]], bool], timeout: float = WAIT
    ) -> list[Endpoint]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.sets and predicate(self.sets[-1])):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching set within {timeout}s; last: {self.latest}")
                self._cond.wait(left)
            return self.sets[-1]


def addresses(endpoints: Sequence[Endpoint]) -> set[str]:
    return {e.address for e in endpoints}


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.3).start()
    yield server
    server.close()


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


SourceFactory = Callable[..., KubernetesSource]


@pytest.fixture
def make_kube_source(kubeconfig: Path) -> Iterator[SourceFactory]:
    """Builds sources on the stand-in with short timeouts; closes them after the test."""
    made: list[KubernetesSource] = []

    def make(
        target: str = "kubernetes:///greeter.default:50051",
        *,
        watch_timeout: int = 30,
        idle_timeout: float = 30.0,
        **options: object,
    ) -> KubernetesSource:
        opts = KubernetesOptions(
            kubeconfig=str(kubeconfig),
            reconnect_initial=0.05,
            reconnect_max=0.3,
            **options,  # type: ignore[arg-type]
        )
        source = KubernetesSource(
            parse_target(target),
            opts,
            dns=DnsOptions(),
            watch_timeout=watch_timeout,
            idle_timeout=idle_timeout,
            request_timeout=5.0,
            make_fallback=make_source,
        )
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()
