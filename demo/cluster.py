"""Replica processes on loopback addresses, standing in for pods on nodes.

Used by the demo, the benchmarks and the tests (``tests.support.cluster``
builds its pods on it): each replica is a real ``python -m demo.replica``
process serving the generated bootstrap on its own 127.0.0.x address,
labelled with a simulated node name. The replica imports the generated code
from ``generated``: by default the committed ``generated/``, the demo passes
the code it has just generated.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


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
    generated: Path = REPO / "generated"
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
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.generated), str(REPO), env.get("PYTHONPATH", "")]
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "demo.replica",
                    "--host", self.host, "--port", str(self.port),
                    "--node", self.node, "--name", self.name,
                    "--drain-delay", "0.5", "--grace", "2",
                    *self.extra_args,
                ],
                env=env,
                # -m puts the working directory first on sys.path: this repository's
                # demo package must be the one that runs, wherever the caller is.
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = 20.0) -> None:
        """Block until the standard health service says SERVING."""
        deadline = time.monotonic() + timeout
        target = f"ipv4:{self.address}"
        if self.ca_file is None:
            channel = grpc.insecure_channel(target)
        else:
            credentials = grpc.ssl_channel_credentials(self.ca_file.read_bytes())
            channel = grpc.secure_channel(target, credentials)
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    log = self.log_path.read_text(errors="replace")
                    raise RuntimeError(f"replica {self.name} exited at start:\n{log}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"replica {self.name} at {self.address} did not become SERVING")

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
