"""Server TLS: ``ServerCertificates`` re-reads the files when they change, at most once per
``check_interval``, and a pair that does not load is skipped with one warning;
``health_port`` serves health checks in plaintext beside a TLS port."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterServicer, start_server
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoc_gen_localfirst.runtime.server.options import check_options
from protoc_gen_localfirst.runtime.server.tls import ServerCertificates
from tests.support.certs import CertificateAuthority
from tests.support.waiting import wait_until_async


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def files(tmp_path: Path) -> tuple[CertificateAuthority, Path, Path]:
    ca = CertificateAuthority()
    chain, key = ca.issue(["greeter.test"])
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    return ca, tmp_path / "cert.pem", tmp_path / "key.pem"


def replace(path: Path, data: bytes) -> None:
    staged = path.with_suffix(".new")
    staged.write_bytes(data)
    staged.replace(path)  # a new inode, as kubelet's symlink swap gives


def test_reloads_a_changed_pair_after_the_interval(
    files: tuple[CertificateAuthority, Path, Path],
) -> None:
    ca, cert, key = files
    clock = Clock()
    certificates = ServerCertificates(cert, key, check_interval=1.0, clock=clock)
    first = certificates.current()
    assert first.generation == 0 and first.chain == cert.read_bytes()
    chain, new_key = ca.issue(["greeter.test"])
    replace(cert, chain)
    replace(key, new_key)
    clock.now += 0.5
    assert certificates.current() is first  # not looked at yet
    clock.now += 0.5
    second = certificates.current()
    assert second.generation == 1 and second.chain == chain and second.key == new_key
    clock.now += 5
    assert certificates.current() is second  # unchanged files: nothing re-read


def test_a_half_rotated_pair_is_skipped_with_one_warning(
    files: tuple[CertificateAuthority, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    ca, cert, key = files
    clock = Clock()
    certificates = ServerCertificates(cert, key, clock=clock)
    first = certificates.current()
    chain, new_key = ca.issue(["greeter.test"])
    replace(cert, chain)  # the key is still the old one
    for _ in range(3):
        clock.now += 2
        assert certificates.current() is first
    warnings = [r for r in caplog.records if "keeping the previous certificate" in r.message]
    assert len(warnings) == 1
    assert "the private key is not the certificate's key" in warnings[0].message
    replace(key, new_key)
    clock.now += 2
    assert certificates.current().chain == chain


def test_files_gone_keep_the_loaded_pair(
    files: tuple[CertificateAuthority, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, cert, key = files
    clock = Clock()
    certificates = ServerCertificates(cert, key, clock=clock)
    first = certificates.current()
    os.unlink(cert)
    for _ in range(3):
        clock.now += 2
        assert certificates.current() is first
    assert caplog.text.count("cannot stat") == 1


def test_bad_files_fail_at_construction(
    files: tuple[CertificateAuthority, Path, Path], tmp_path: Path
) -> None:
    _, cert, key = files
    with pytest.raises(ValueError, match="the private key is not the certificate's key"):
        other = CertificateAuthority().issue(["x"])[1]
        (tmp_path / "other.key").write_bytes(other)
        ServerCertificates(cert, tmp_path / "other.key")
    with pytest.raises(ValueError, match="no such file"):
        ServerCertificates(tmp_path / "nope.pem", key)


async def test_a_plaintext_health_port_beside_a_tls_port(tmp_path: Path) -> None:
    """kubelet's grpc probe speaks plaintext: ``health_port`` serves only health, in plaintext."""
    ca = CertificateAuthority()
    chain, key = ca.issue(["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    server = await start_server(
        GreeterServicer(),
        host="127.0.0.1",
        port=0,
        health_port=0,
        certfile=tmp_path / "cert.pem",
        keyfile=tmp_path / "key.pem",
        drain_delay=0,
    )
    assert server.health_port is not None and server.health_port != server.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status() -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            return int(reply.status)

        assert await status() == health_pb2.HealthCheckResponse.SERVING
        say_hello = channel.unary_unary("/greeter.v1.Greeter/SayHello")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await say_hello(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # only health is served here
        stopping = asyncio.ensure_future(server.stop(1.0))

        async def not_serving() -> bool:
            return await status() == health_pb2.HealthCheckResponse.NOT_SERVING

        await wait_until_async(not_serving, what="NOT_SERVING on the health port while stopping")
        await stopping


def test_health_port_checks() -> None:
    with pytest.raises(ValueError, match="health_port=50051: the same as port"):
        check_options({"health_port": 50051})
    with pytest.raises(ValueError, match="health_port=70000: out of range"):
        check_options({"health_port": 70000})
    with pytest.raises(TypeError, match="health_port='8081': not an int"):
        check_options({"health_port": "8081"})  # type: ignore[typeddict-item]
