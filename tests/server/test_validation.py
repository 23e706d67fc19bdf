"""``serve``/``start_server`` options are checked before anything listens.

Each test shows the message a user sees: it names the option, the value and
what the option accepts.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest

from protoc_gen_localfirst.runtime.server.options import check_options
from tests.server.conftest import Echo, StartServer
from tests.support.certs import TlsFiles, make_tls_files, tls_files  # noqa: F401

CERT = "(a PEM certificate chain, leaf first)"
KEY = "(a PEM file with the certificate's unencrypted private key)"


def free_tcp_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_key_file_as_certfile_fails_before_listening(
    start: StartServer,
    loopback_host: str,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    port = free_tcp_port(loopback_host)
    with pytest.raises(ValueError) as info:
        await start(
            Echo(), port=port, http3=True, certfile=str(tls_files.key), keyfile=str(tls_files.key)
        )
    assert str(info.value) == (
        f"certfile={str(tls_files.key)!r}: holds a private key, no CERTIFICATE {CERT}"
    )
    with socket.socket() as again:  # nothing was bound
        again.bind((loopback_host, port))


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("cert-as-key", "keyfile={key!r}: holds certificates, no PRIVATE KEY " + KEY),
        ("missing-cert", "certfile='/nonexistent.pem': no such file " + CERT),
        ("directory-key", "keyfile={dir!r}: is a directory " + KEY),
        ("text-cert", "certfile={text!r}: not a PEM file, no -----BEGIN ...----- block " + CERT),
    ],
)
def test_tls_files_are_read_and_named(
    which: str,
    message: str,
    tmp_path: Path,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    certfile, keyfile = str(tls_files.cert), str(tls_files.key)
    if which == "cert-as-key":
        keyfile = certfile
    elif which == "missing-cert":
        certfile = "/nonexistent.pem"
    elif which == "directory-key":
        keyfile = str(tmp_path)
    else:
        certfile = str(text)
    with pytest.raises(ValueError) as info:
        check_options({"http3": True, "certfile": certfile, "keyfile": keyfile})
    assert str(info.value) == message.format(key=keyfile, dir=str(tmp_path), text=str(text))


def test_a_key_of_another_certificate_is_refused(
    tmp_path: Path,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    other = make_tls_files(tmp_path / "other")
    with pytest.raises(ValueError) as info:
        check_options({"http3": True, "certfile": str(tls_files.cert), "keyfile": str(other.key)})
    assert str(info.value) == (
        f"certfile={str(tls_files.cert)!r}, keyfile={str(other.key)!r}: the private key is "
        f"not the certificate's key ({CERT[1:-1]}, and {KEY[1:-1]})"
    )


def test_an_encrypted_key_is_refused(tmp_path: Path, tls_files: TlsFiles) -> None:  # noqa: F811
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError) as info:
        check_options({"http3": True, "certfile": str(tls_files.cert), "keyfile": str(encrypted)})
    assert str(info.value) == f"keyfile={str(encrypted)!r}: the private key is encrypted {KEY}"


def test_good_tls_files_as_str_or_path_pass(tls_files: TlsFiles) -> None:  # noqa: F811
    check_options({"http3": True, "certfile": str(tls_files.cert), "keyfile": str(tls_files.key)})
    check_options({"http3": True, "certfile": tls_files.cert, "keyfile": tls_files.key})


def test_tls_files_without_http3_serve_http2_over_tls(tls_files: TlsFiles) -> None:  # noqa: F811
    check_options({"certfile": str(tls_files.cert), "keyfile": str(tls_files.key)})


def test_a_certificate_needs_its_key(tls_files: TlsFiles) -> None:  # noqa: F811
    with pytest.raises(ValueError) as info:
        check_options({"keyfile": str(tls_files.key)})
    assert str(info.value) == (
        f"keyfile={str(tls_files.key)!r} needs certfile too (a certificate chain and its "
        "private key turn TLS on, for both transports)"
    )


def test_server_credentials_go_with_no_tls_file_and_not_with_http3(
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    credentials = grpc.ssl_server_credentials(
        [(tls_files.key.read_bytes(), tls_files.cert.read_bytes())]
    )
    with pytest.raises(ValueError) as info:
        check_options({"server_credentials": credentials, "certfile": str(tls_files.cert)})
    assert str(info.value) == (
        f"certfile={str(tls_files.cert)!r} with server_credentials: pass one or the other "
        "(certfile/keyfile put HTTP/2 and HTTP/3 on TLS; server_credentials is your own "
        "HTTP/2-only setting)"
    )
    with pytest.raises(ValueError) as info:
        check_options({"server_credentials": credentials, "http3": True})
    assert str(info.value) == (
        "server_credentials with http3=True: HTTP/3 cannot use grpc credentials; pass "
        "certfile= and keyfile= instead (they serve both transports)"
    )


def test_client_ca_file_needs_tls_and_is_refused_with_http3(
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    ca = str(tls_files.ca)
    with pytest.raises(ValueError) as info:
        check_options({"client_ca_file": ca})
    assert str(info.value) == (
        f"client_ca_file={ca!r} needs certfile and keyfile: client certificates are "
        "verified only over TLS"
    )
    tls = {"certfile": str(tls_files.cert), "keyfile": str(tls_files.key)}
    with pytest.raises(ValueError) as info:
        check_options({**tls, "client_ca_file": ca, "http3": True})  # type: ignore[typeddict-item]
    assert str(info.value) == (
        f"client_ca_file={ca!r} with http3=True: HTTP/3 cannot require client certificates "
        "(qh3 never asks for one; aioquic asks only through a test hook and does not verify "
        "it), so it would serve clients without a certificate. Serve mTLS over HTTP/2 "
        "(http3=False)"
    )
    with pytest.raises(ValueError) as info:
        check_options({**tls, "client_ca_file": str(tls_files.key)})  # type: ignore[typeddict-item]
    assert str(info.value) == (
        f"client_ca_file={str(tls_files.key)!r}: holds a private key, no CERTIFICATE "
        "(a PEM file of CA certificates)"
    )
    check_options({**tls, "client_ca_file": ca})  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("options", "kind", "message"),
    [
        ({"port": True}, TypeError, "port=True: not an int (0..65535; 0 picks a free port)"),
        ({"port": "50051"}, TypeError, "port='50051': not an int (0..65535; 0 picks a free port)"),
        (
            {"port": 70000},
            ValueError,
            "port=70000: out of range (an int in 0..65535; 0 picks a free port)",
        ),
        (
            {"drain_delay": -1},
            ValueError,
            "drain_delay=-1: negative (seconds, a finite number >= 0)",
        ),
        (
            {"grace": math.nan},
            ValueError,
            "grace=nan: not a finite number (seconds, a finite number >= 0)",
        ),
        (
            {"max_connection_age_grace": "30"},
            TypeError,
            "max_connection_age_grace='30': not a number (seconds, a finite number >= 0)",
        ),
        (
            {"max_connection_age": 0},
            ValueError,
            "max_connection_age=0: zero (seconds, a finite number > 0, or None for never)",
        ),
        (
            {"max_connection_age": math.inf},
            ValueError,
            (
                "max_connection_age=inf: not a finite number "
                "(seconds, a finite number > 0, or None for never)"
            ),
        ),
        (
            {"max_message_size": 4.5e6},
            TypeError,
            "max_message_size=4500000.0: not an int (bytes, > 0)",
        ),
        (
            {"max_message_size": 0},
            ValueError,
            "max_message_size=0: not > 0 (bytes, an int > 0)",
        ),
        ({"host": None}, TypeError, "host=None: not a str (e.g. '[::]' or '127.0.0.1')"),
        ({"http3": "yes"}, TypeError, "http3='yes': not a bool (True or False)"),
        ({"handle_signals": 0}, TypeError, "handle_signals=0: not a bool (True or False)"),
        (
            {"quic_library": "quiche"},
            ValueError,
            "quic_library='quiche': not supported (one of qh3, aioquic)",
        ),
        (
            {"server_credentials": "tls"},
            TypeError,
            (
                "server_credentials='tls': not grpc.ServerCredentials or None "
                "(grpc.ssl_server_credentials(...))"
            ),
        ),
        (
            {"interceptors": [object]},
            TypeError,
            f"interceptors[0]={object!r}: not a grpc.aio.ServerInterceptor",
        ),
        (
            {"load_metrics": {"queue": 1.0}},
            TypeError,
            (
                "load_metrics={'queue': 1.0}: not callable (a function returning "
                "{'name': number, ...}, or None)"
            ),
        ),
    ],
)
def test_bad_values_name_option_value_and_what_is_accepted(
    options: dict[str, Any], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as info:
        check_options(options)  # type: ignore[arg-type]
    assert str(info.value) == message


async def test_start_server_checks_them(start: StartServer) -> None:
    with pytest.raises(ValueError, match=r"^grace=-1: negative"):
        await start(Echo(), grace=-1)


def test_good_values_pass() -> None:
    check_options(
        {
            "host": "127.0.0.1",
            "port": 0,
            "node": None,
            "drain_delay": 0,
            "grace": 2.5,
            "max_connection_age": None,
            "max_connection_age_grace": 0,
            "max_message_size": 1024,
            "server_credentials": None,
            "handle_signals": False,
            "interceptors": [],
            "http3": False,
            "quic_library": "aioquic",
            "load_metrics": dict,
        }
    )
    assert grpc.aio.ServerInterceptor  # the type interceptors are checked against
