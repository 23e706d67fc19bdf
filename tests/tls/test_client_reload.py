"""A long-lived client follows its own renewed TLS files over HTTP/2.

cert-manager renews a client certificate (and may replace a CA) by rewriting
the mounted Secret; kubelet swaps the files. grpc Python bakes credentials
into a channel, so the client watches the files and replaces its channels:
after the change, a server that only accepts the new material is served,
which the old channel (reconnecting with the old files) could not do. The
server here restarts at the same address with the new material, as a pod
whose Secret was renewed would.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime import Server
from protoc_gen_localfirst.runtime.client import tls_reload
from protoc_gen_localfirst.runtime.client.tls_reload import TlsFileWatcher
from tests.support.certs import CertificateAuthority
from tests.support.waiting import wait_until_async
from tests.tls.conftest import NODE, StartServer, write


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls_reload, "CHECK_INTERVAL", 0.05)


def watcher(client: GreeterClient) -> TlsFileWatcher:
    assert client._tls_watcher is not None
    return client._tls_watcher


async def say_hello(client: GreeterClient) -> str:
    return (await client.say_hello(HelloRequest(name="x"), timeout=10)).message


async def test_a_replaced_ca_file_is_trusted_by_new_connections(
    start: StartServer, tmp_path: Path, host: str
) -> None:
    old_ca, new_ca = CertificateAuthority("old CA"), CertificateAuthority("new CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(old_ca.pem)
    cert, key = write(tmp_path, "server-old", old_ca.issue([host]))
    server = await start(certfile=cert, keyfile=key)
    async with GreeterClient(
        f"static:///{server.address}@{NODE}", node=NODE, ca_file=ca_file
    ) as client:
        assert await say_hello(client) == "Hello, x!"
        staged = tmp_path / "ca.new"
        staged.write_bytes(new_ca.pem)
        staged.replace(ca_file)
        await wait_until_async(lambda: watcher(client).reloads == 1, what="the CA reloaded")
        await server.stop(0)
        cert, key = write(tmp_path, "server-new", new_ca.issue([host]))
        server = await start(certfile=cert, keyfile=key, port=server.port)
        assert await say_hello(client) == "Hello, x!"


async def test_a_renewed_client_certificate_is_presented_by_new_connections(
    start: StartServer, tmp_path: Path, host: str, ca: CertificateAuthority
) -> None:
    old_issuer, new_issuer = CertificateAuthority("old clients"), CertificateAuthority("new")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "old-clients.pem").write_bytes(old_issuer.pem)
    (tmp_path / "new-clients.pem").write_bytes(new_issuer.pem)
    server_cert, server_key = write(tmp_path, "server", ca.issue([host]))
    client_cert, client_key = write(tmp_path, "client", old_issuer.issue(client=True))

    async def serve(client_ca: str, port: int = 0) -> Server:
        return await start(
            certfile=server_cert,
            keyfile=server_key,
            client_ca_file=tmp_path / client_ca,
            port=port,
        )

    server = await serve("old-clients.pem")
    async with GreeterClient(
        f"static:///{server.address}@{NODE}",
        node=NODE,
        ca_file=tmp_path / "ca.pem",
        certfile=client_cert,
        keyfile=client_key,
    ) as client:
        assert await say_hello(client) == "Hello, x!"
        write(tmp_path, "client", new_issuer.issue(client=True))
        await wait_until_async(lambda: watcher(client).reloads >= 1, what="the new certificate")
        assert server.address not in client.channels.active  # replaced, made again on use
        # The same address now accepts only certificates of the new issuer.
        await server.stop(0)
        server = await serve("new-clients.pem", port=server.port)
        assert await say_hello(client) == "Hello, x!"


async def test_files_that_do_not_load_are_skipped_once_and_calls_go_on(
    start: StartServer,
    tmp_path: Path,
    host: str,
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="protoc_gen_localfirst.client")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    cert, key = write(tmp_path, "server", ca.issue([host]))
    server = await start(certfile=cert, keyfile=key)
    async with GreeterClient(
        f"static:///{server.address}@{NODE}", node=NODE, ca_file=tmp_path / "ca.pem"
    ) as client:
        assert await say_hello(client) == "Hello, x!"
        channel = client.channels.active[server.address]
        (tmp_path / "ca.pem").write_bytes(b"half a file")
        await wait_until_async(
            lambda: any("keeping the client's previous" in r.message for r in caplog.records),
            what="the warning",
        )
        assert await say_hello(client) == "Hello, x!"
        assert client.channels.active[server.address] is channel  # not replaced
        (tmp_path / "ca.pem").write_bytes(ca.pem)
        await wait_until_async(lambda: watcher(client).reloads == 1, what="the good file")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(tmp_path / "ca.pem") in warnings[0].getMessage()
    assert any("TLS: reloaded" in r.getMessage() for r in caplog.records)


async def test_only_clients_with_http2_and_files_of_their_own_watch_them(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    target = f"static:///127.0.0.1:1@{NODE}"
    watched = {
        "system CAs": GreeterClient(target, node=NODE, tls=True),
        "HTTP/3 (reads the files per connection)": GreeterClient(
            target, node=NODE, transport="h3", ca_file=tmp_path / "ca.pem"
        ),
        "HTTP/2 with a ca_file": GreeterClient(target, node=NODE, ca_file=tmp_path / "ca.pem"),
    }
    try:
        assert {name: c._tls_watcher is not None for name, c in watched.items()} == {
            "system CAs": False,
            "HTTP/3 (reads the files per connection)": False,
            "HTTP/2 with a ca_file": True,
        }
    finally:
        for client in watched.values():
            await client.close()
