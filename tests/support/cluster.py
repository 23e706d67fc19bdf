"""Replica processes on loopback addresses, standing in for pods on nodes.

:class:`ReplicaProcess` is one ``python -m tests.support.replica`` process
serving the example Greeter (generated bootstrap) on its own 127.0.0.x
address, labelled with a simulated node name. :class:`Pods` is a set of them
on one shared port, like the pods of a headless Service, optionally published
in DNS (dnsmasq) or through any other ``publish`` hook (EndpointSlices).
Every process a test started is killed at ``close``; one it froze (SIGSTOP,
recorded in ``stopped_pids``) is continued first, by its PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.dnsmasq import Dnsmasq
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "generated"


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ReplicaProcess:
    """One replica process; ``start`` again after ``kill`` reuses its address."""

    name: str
    node: str
    host: str
    port: int = 0
    extra_args: Sequence[str] = ()
    log_dir: Path | None = None
    ca_file: Path | None = None
    """The CA that signed the replica's certificate when it serves TLS (``--certfile``)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host)

    @property
    def log_path(self) -> Path:
        """Where the replica's stderr goes (a file, so a chatty replica never blocks on a pipe)."""
        assert self.log_dir is not None, f"replica {self.name} has no log_dir"
        return self.log_dir / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def static(self) -> str:
        """This replica as an entry of a ``static:///`` target."""
        return f"{self.address}@{self.node}"

    def start(self, *, wait: bool = True) -> ReplicaProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(GENERATED), str(REPO), env.get("PYTHONPATH", "")])
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "tests.support.replica",
                    "--host", self.host, "--port", str(self.port),
                    "--node", self.node, "--name", self.name,
                    "--drain-delay", "0.5", "--grace", "2",
                    *self.extra_args,
                ],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = 20.0) -> None:
        """Block until the standard health service says SERVING."""
        target = f"ipv4:{self.address}"
        if self.ca_file is None:
            channel = grpc.insecure_channel(target)
        else:
            roots = self.ca_file.read_bytes()
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(roots))
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                if self.process is not None and self.process.poll() is not None:
                    log = self.log_path.read_text(errors="replace")
                    raise RuntimeError(f"replica {self.name} exited at start:\n{log}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                except grpc.RpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            wait_until(
                serving, what=f"replica {self.name} at {self.address} SERVING", timeout=timeout,
                interval=0.05,
            )  # fmt: skip

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the process to exit; returns its exit code."""
        assert self.process is not None, f"replica {self.name} is not running"
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGKILL)


def static_target(replicas: Sequence[ReplicaProcess]) -> str:
    return "static:///" + ",".join(r.static for r in replicas)


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
        args = list(self.extra_args)
        if self.count_executions:
            self.executions[name] = self.log_dir / f"{name}.executions"
            args += ["--executions-file", str(self.executions[name])]
        replica = ReplicaProcess(
            name, node, host, port=self.port, extra_args=args, log_dir=self.log_dir
        )
        self.running[name] = replica.start()
        return replica

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
