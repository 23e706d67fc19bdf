"""deploy/: the probes of greeter.yaml against a real demo.replica with the manifest's args.

kubelet's grpc probe is a plaintext ``grpc.health.v1.Health/Check`` with
service "" to the pod IP and the probe's port; SERVING passes, anything else
(or no answer) fails. This starts ``python -m demo.replica`` with the
container's args as written in greeter.yaml (and as the mTLS Component renders
them), changing only what a test machine must: loopback host, free ports (the
same one for ``--health-port`` and the probes' ``grpc.port``), the
Secret's files from a test CA, ``$(VAR)`` expanded. Then it probes as kubelet
would: SERVING on the health port, while the same plaintext probe on the TLS
port fails; only health is served there; after SIGTERM the probe sees
NOT_SERVING until the process exits, within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.test_manifests import REPO, flag, greeter_container, one
from tests.deploy.test_tls import SECRET_KEYS, deploy_copy, kustomize
from tests.support.certs import CertificateAuthority
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    """A TCP port free on 127.0.0.1 and, for --http3, on UDP too."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def kubelet_probe(port: int) -> int | str:
    """What kubelet's grpc probe does: plaintext Check(service="") with a 1 s timeout."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        except grpc.RpcError as error:
            return str(error.code())
        return int(reply.status)


def local_args(container: dict[str, Any], tls_dir: Path) -> tuple[list[str], int, int]:
    """The container's args for a loopback run: (args, --port, --health-port)."""
    port, health = free_port(), free_port()
    env = {"NODE_NAME": "node-a", "POD_NAME": "greeter-0", "POD_IP": "127.0.0.1"}
    mount = str(PurePosixPath(flag(container["args"], "--certfile")).parent)
    args = []
    for arg in container["args"]:
        name = arg.split("=", 1)[0]
        if name == "--host":
            arg = "--host=127.0.0.1"
        elif name == "--port":
            arg = f"--port={port}"
        elif name == "--health-port":
            arg = f"--health-port={health}"
        arg = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
        args.append(arg.replace(mount, str(tls_dir)))
    return args, port, health


def write_secret(directory: Path, ca: CertificateAuthority) -> None:
    """The three keys cert-manager writes into the Secret greeter-tls."""
    directory.mkdir()
    chain, key = ca.issue(["127.0.0.1"])
    files = {"tls.crt": chain, "tls.key": key, "ca.crt": ca.pem}
    assert set(files) == set(SECRET_KEYS.values())
    for name, data in files.items():
        (directory / name).write_bytes(data)


def start_replica(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "generated"), str(REPO)]))
    return subprocess.Popen(
        [sys.executable, "-m", "demo.replica", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def rendered_container(tmp_path: Path, variant: str) -> dict[str, Any]:
    if variant == "base":
        return greeter_container()
    copy = deploy_copy(tmp_path, "components:\n  - mtls\n")
    (deployment,) = [d for d in kustomize(copy) if d["kind"] == "Deployment"]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("variant", ["base", "mtls"])
def test_kubelets_grpc_probe_against_the_manifests_args(tmp_path: Path, variant: str) -> None:
    container = rendered_container(tmp_path, variant)
    mtls = any(a.startswith("--client-ca-file") for a in container["args"])
    assert mtls == (variant == "mtls")
    ca = CertificateAuthority()
    write_secret(tmp_path / "greeter-tls", ca)
    args, port, health = local_args(container, tmp_path / "greeter-tls")
    # What the probes name is what the flag names (checked statically too).
    assert container["readinessProbe"]["grpc"]["port"] == int(
        flag(container["args"], "--health-port")
    )
    pod = one("Deployment", "greeter")["spec"]["template"]["spec"]
    kill_after = (
        pod["terminationGracePeriodSeconds"] - container["lifecycle"]["preStop"]["sleep"]["seconds"]
    )
    replica = start_replica(args)
    try:
        wait_until(
            lambda: kubelet_probe(health) == SERVING,
            what=f"SERVING from the plaintext health port ({' '.join(args)})",
            timeout=30,
        )
        # The same probe on the served port fails: that port is TLS only
        # (this is why the probes cannot go there).
        assert kubelet_probe(port) == str(grpc.StatusCode.UNAVAILABLE)
        # Over TLS (and with a client certificate under mTLS) the served port answers.
        client_chain, client_key = ca.issue(client=True) if mtls else (None, None)
        credentials = grpc.ssl_channel_credentials(ca.pem, client_key, client_chain)
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == SERVING
        # Only health is served on the plaintext port: no Greeter methods.
        with grpc.insecure_channel(f"127.0.0.1:{health}") as channel:
            say_hello: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/greeter.v1.Greeter/SayHello"
            )
            with pytest.raises(grpc.RpcError) as info:
                say_hello(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # Deletion: kubelet's preStop sleep is not simulated; SIGTERM at once.
        replica.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        wait_until(
            lambda: kubelet_probe(health) == NOT_SERVING,
            what="NOT_SERVING on the health port after SIGTERM",
            timeout=2,
        )
        seen = [kubelet_probe(health)]
        while replica.poll() is None:
            seen.append(kubelet_probe(health))
            assert time.monotonic() - sent < kill_after, "still running at SIGKILL time"
            time.sleep(0.2)
        exited = time.monotonic() - sent
        # NOT_SERVING through the drain, never SERVING again; the probe fails
        # (no listener) only at the very end: the health listener stops last.
        answered = [s for s in seen if s == NOT_SERVING]
        assert seen[: len(answered)] == answered and len(answered) >= 5, seen
        assert set(seen[len(answered) :]) <= {str(grpc.StatusCode.UNAVAILABLE)}, seen
        assert len(seen) - len(answered) <= 2, seen
        print(f"{variant}: exited {exited:.1f} s after SIGTERM; probe answers {seen}")
        assert replica.returncode == 0, replica.returncode
    finally:
        if replica.poll() is None:
            replica.kill()
        output, _ = replica.communicate(timeout=10)
        print(output)
