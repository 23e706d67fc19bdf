"""Pods: replica processes on one shared port, like the pods of a headless Service.

Each pod is a :class:`demo.cluster.ReplicaProcess` (one ``python -m
demo.replica`` process serving the example Greeter from the committed
``generated/`` on its own 127.0.0.x address, labelled with a simulated node
name). :class:`Pods` is a set of them, optionally published in DNS (dnsmasq)
or through any other ``publish`` hook (EndpointSlices). Every process a test
started is killed at ``close``; one it froze (SIGSTOP, recorded in
``stopped_pids``) is continued first, by its PID. :func:`start_all` starts a
list of replicas in parallel.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from demo.cluster import ReplicaProcess, free_port, static_target
from tests.support.dnsmasq import Dnsmasq


def start_all(replicas: Sequence[ReplicaProcess]) -> None:
    """Start every replica, then wait until each is SERVING (they start in parallel)."""
    for replica in replicas:
        replica.start(wait=False)
    for replica in replicas:
        replica.wait_serving()


Publish = Callable[["Pods", Sequence[str]], None]
"""Makes the named pods the published endpoint set (e.g. EndpointSlices)."""


class Pods:
    """Replica processes on one shared port, like the pods of a headless Service.

    With ``dns`` (a running dnsmasq), ``publish`` sets the A records of
    ``name`` to the named pods' addresses and ``dns_target`` is the client
    target; else ``publish`` calls the ``publish`` hook. With
    ``count_executions``, each pod appends its executed SayHellos to
    ``executions[name]`` (see ``tests.support.load.count_executions``).
    ``terminating`` names pods a publisher should mark as terminating.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        dns: Dnsmasq | None = None,
        name: str = "greeter.test",
        publish: Publish | None = None,
        extra_args: Sequence[str] = (),
        count_executions: bool = False,
    ) -> None:
        self.log_dir = log_dir
        self.dns = dns
        self.name = name
        self._publish = publish
        self.extra_args = list(extra_args)
        self.count_executions = count_executions
        self.port = free_port("127.0.0.1")
        self.running: dict[str, ReplicaProcess] = {}
        self.executions: dict[str, Path] = {}
        self.terminating: set[str] = set()
        self.stopped_pids: set[int] = set()

    def start(self, name: str, node: str, host: str) -> ReplicaProcess:
        """Start one pod; return once it is SERVING."""
        return self.start_many((name, node, host))[0]

    def start_many(self, *pods: tuple[str, str, str]) -> list[ReplicaProcess]:
        """Start several pods ``(name, node, host)`` at once; return once each is SERVING."""
        replicas = []
        for name, node, host in pods:
            args = list(self.extra_args)
            if self.count_executions:
                self.executions[name] = self.log_dir / f"{name}.executions"
                args += ["--executions-file", str(self.executions[name])]
            replica = ReplicaProcess(
                name, node, host, port=self.port, extra_args=args, log_dir=self.log_dir
            )
            self.running[name] = replica.start(wait=False)
            replicas.append(replica)
        for replica in replicas:
            replica.wait_serving()
        return replicas

    def kill_at_once(
        self, *names: str, sig: signal.Signals = signal.SIGKILL
    ) -> tuple[float, float]:
        """Send ``sig`` to every named pod, then wait for each to exit (like ``stop``).

        Returns ``time.monotonic()`` read just before the first signal was sent
        and once the last process was reaped: each died in between, so a call
        that was in flight on one of them started before the second and ended
        after the first.
        """
        replicas = [self.running.pop(name) for name in names]
        processes = [r.process for r in replicas]
        assert all(p is not None for p in processes), f"not all of {names} are running"
        sent = time.monotonic()
        for process in processes:
            assert process is not None
            process.send_signal(sig)
        for replica, process in zip(replicas, processes, strict=True):
            assert process is not None
            process.wait(20.0)
            replica.process = None
        return sent, time.monotonic()

    def publish(self, *names: str) -> None:
        if self._publish is not None:
            self._publish(self, names)
            return
        assert self.dns is not None, "Pods without dns or publish hook cannot publish"
        self.dns.set_records({self.name: [self.running[n].host for n in names]})

    @property
    def dns_server(self) -> Dnsmasq:
        """The DNS server publishing these pods (for pods made with ``dns``)."""
        assert self.dns is not None, "these pods are not published in DNS"
        return self.dns

    @property
    def dns_target(self) -> str:
        return self.dns_server.target(self.name, self.port)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        self.running.pop(name).kill(sig)

    def pid(self, name: str) -> int:
        process = self.running[name].process
        assert process is not None
        return process.pid

    def static_target(self, *names: str) -> str:
        return static_target([self.running[n] for n in names])

    def close(self) -> None:
        for replica in self.running.values():
            if replica.process is not None and replica.process.pid in self.stopped_pids:
                replica.process.send_signal(signal.SIGCONT)  # by PID, the one we stopped
            replica.stop()
