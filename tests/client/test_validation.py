"""Client options are checked when the client is built, call timeouts when the call starts.

Each test shows the message a user sees: it names the option, the value and
what the option accepts. No server is needed: a static target resolves at once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient

from protoc_gen_localfirst.runtime import AsyncClient, H3Options, SyncClient
from protoc_gen_localfirst.runtime.client.balancer import EjectionPolicy
from protoc_gen_localfirst.runtime.client.errors import CallFailedError
from protoc_gen_localfirst.runtime.client.policy import NO_RETRY
from tests.client.echo import UNARY
from tests.support.certs import TlsFiles, tls_files  # noqa: F401

TARGET = "static:///127.0.0.1:1@node-a"
"""Nothing listens there; these tests never get as far as connecting."""


def build_error(kind: type[Exception], **options: Any) -> str:
    """The message of the error building an AsyncClient with ``options`` raises."""
    with pytest.raises(kind) as info:
        AsyncClient(TARGET, **options)
    return str(info.value)


# -- files ---------------------------------------------------------------------------------


def test_missing_ca_file_fails_at_construction_for_every_http3_transport() -> None:
    for transport in ("h3", "auto"):
        message = build_error(ValueError, transport=transport, ca_file="/nope.pem")
        assert message == "ca_file='/nope.pem': no such file (a PEM file of CA certificates)"


def test_ca_file_that_is_a_directory_or_not_pem(tmp_path: Path) -> None:
    message = build_error(ValueError, transport="h3", ca_file=str(tmp_path))
    assert message == f"ca_file={str(tmp_path)!r}: is a directory (a PEM file of CA certificates)"
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    message = build_error(ValueError, transport="h3", ca_file=str(text))
    assert message == (
        f"ca_file={str(text)!r}: not a PEM file, no -----BEGIN ...----- block "
        "(a PEM file of CA certificates)"
    )


def test_ca_file_holding_a_key_or_a_broken_certificate(
    tmp_path: Path,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    message = build_error(ValueError, transport="h3", ca_file=str(tls_files.key))
    assert message == (
        f"ca_file={str(tls_files.key)!r}: holds a private key, no CERTIFICATE "
        "(a PEM file of CA certificates)"
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    message = build_error(ValueError, transport="h3", ca_file=str(broken))
    assert message.startswith(f"ca_file={str(broken)!r}: its certificates do not parse: ")
    assert message.endswith("(a PEM file of CA certificates)")


def test_ca_file_type() -> None:
    message = build_error(TypeError, transport="h3", ca_file=42)
    assert message == "ca_file=42: not a path (a PEM file of CA certificates)"


async def test_a_good_ca_file_as_str_or_path_is_accepted(tls_files: TlsFiles) -> None:  # noqa: F811
    for ca_file in (str(tls_files.ca), tls_files.ca):
        client = AsyncClient(TARGET, transport="auto", ca_file=ca_file)
        assert client.tls is not None and client.tls.ca_file == str(tls_files.ca)
        await client.close()


def test_ca_file_and_insecure_skip_verify_contradict(tls_files: TlsFiles) -> None:  # noqa: F811
    ca = str(tls_files.ca)
    message = build_error(ValueError, transport="h3", ca_file=ca, insecure_skip_verify=True)
    assert message == (
        f"ca_file={ca!r} with insecure_skip_verify=True: skipping verification would "
        "ignore ca_file (pass one or the other)"
    )


# -- TLS: one setting for both transports ------------------------------------------------------


def test_h3_options_on_http2_are_an_error() -> None:
    message = build_error(ValueError, transport="h2", h3_options=H3Options())
    assert message == (
        f"h3_options={H3Options()!r}: only used by HTTP/3 (transport='h3' or 'auto'; "
        "this client's transport is 'h2')"
    )


@pytest.mark.parametrize("transport", ["h3", "auto"])
def test_http3_without_tls_is_an_error(transport: str) -> None:
    message = build_error(ValueError, transport=transport)
    assert message.startswith(f"transport={transport!r} needs TLS: QUIC is always TLS")
    assert message.endswith(
        "Pass ca_file= (the CAs that sign the servers' certificates), or tls=True for the "
        "system CAs"
    )
    if transport == "auto":
        assert "never falls back from TLS to plaintext HTTP/2" in message


async def test_tls_applies_to_http2_and_the_blocking_client(
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    async_client = AsyncClient(TARGET, ca_file=tls_files.ca, server_name="greeter.test")
    sync_client = SyncClient(TARGET, tls=True)
    try:
        assert async_client.tls is not None and sync_client.tls is not None
        assert async_client.tls.server_name == "greeter.test"
        assert sync_client.tls.ca_file is None  # the system CAs
        assert ("grpc.ssl_target_name_override", "greeter.test") in async_client._channel_options
    finally:
        await async_client.close()
        sync_client.close()


def test_credentials_and_tls_keywords_contradict(tls_files: TlsFiles) -> None:  # noqa: F811
    credentials = grpc.ssl_channel_credentials()
    message = build_error(ValueError, credentials=credentials, ca_file=str(tls_files.ca))
    assert message == (
        f"credentials={credentials!r} with ca_file: pass one or the other (ca_file/certfile/"
        "keyfile/server_name/tls are one TLS setting for HTTP/2 and HTTP/3; credentials are "
        "grpc's own, HTTP/2 only)"
    )


@pytest.mark.parametrize("transport", ["h3", "auto"])
def test_grpc_credentials_are_http2_only(transport: str) -> None:
    credentials = grpc.ssl_channel_credentials()
    message = build_error(ValueError, transport=transport, credentials=credentials)
    assert message == (
        f"credentials={credentials!r} with transport={transport!r}: grpc credentials are "
        "HTTP/2 only; use ca_file= (and certfile=/keyfile=), which both transports use"
    )


def test_client_certificate_needs_both_files(tls_files: TlsFiles) -> None:  # noqa: F811
    message = build_error(ValueError, certfile=str(tls_files.cert))
    assert message == (
        f"certfile={str(tls_files.cert)!r} needs keyfile too "
        "(the client certificate and its private key, for mTLS)"
    )
    message = build_error(ValueError, keyfile=str(tls_files.key))
    assert message.startswith(f"keyfile={str(tls_files.key)!r} needs certfile too")


def test_client_certificate_files_are_checked(tls_files: TlsFiles) -> None:  # noqa: F811
    message = build_error(ValueError, certfile="/nope.pem", keyfile=str(tls_files.key))
    assert message == "certfile='/nope.pem': no such file (a PEM certificate chain, leaf first)"
    message = build_error(ValueError, certfile=str(tls_files.ca), keyfile=str(tls_files.key))
    assert "the private key is not the certificate's key" in message


def test_server_name_and_tls_flag_where_they_mean_nothing(tls_files: TlsFiles) -> None:  # noqa: F811
    message = build_error(ValueError, server_name="greeter.test")
    assert message == (
        "server_name='greeter.test': only used with TLS (pass ca_file= or tls=True too)"
    )
    message = build_error(ValueError, tls=False, ca_file=str(tls_files.ca))
    assert message == (
        "tls=False with ca_file: those keywords turn TLS on (drop tls=False, or them)"
    )
    message = build_error(TypeError, tls="yes")
    assert message == "tls='yes': not a bool or None (True: TLS with the system CAs)"
    message = build_error(TypeError, tls=True, server_name="")
    assert message.startswith("server_name='': not a host name")


@pytest.mark.parametrize("transport", ["h2", "auto"])
def test_skipping_verification_is_http3_only(transport: str) -> None:
    message = build_error(ValueError, transport=transport, insecure_skip_verify=True)
    assert message == (
        f"insecure_skip_verify=True with transport={transport!r}: only HTTP/3 can skip "
        "verification (transport='h3'); grpc's HTTP/2 always verifies"
    )


def test_the_blocking_client_cannot_skip_verification() -> None:
    with pytest.raises(ValueError) as info:
        SyncClient(TARGET, insecure_skip_verify=True)
    assert str(info.value) == (
        "insecure_skip_verify=True with transport='h2': only HTTP/3 can skip verification "
        "(transport='h3'; this client is HTTP/2 only); grpc's HTTP/2 always verifies"
    )


# -- numbers and types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "kind", "message"),
    [
        (
            {"resolve_timeout": -1},
            ValueError,
            "resolve_timeout=-1: negative (seconds, a finite number > 0)",
        ),
        (
            {"resolve_timeout": math.nan},
            ValueError,
            "resolve_timeout=nan: not a finite number (seconds, a finite number > 0)",
        ),
        (
            {"resolve_timeout": "5"},
            TypeError,
            "resolve_timeout='5': not a number (seconds, a finite number > 0)",
        ),
        (
            {"retry_buffer_limit": -1},
            ValueError,
            "retry_buffer_limit=-1: negative (bytes, an int >= 0)",
        ),
        (
            {"retry_buffer_limit": 1.5},
            TypeError,
            "retry_buffer_limit=1.5: not an int (bytes, an int >= 0)",
        ),
        (
            {"channel_options": [("grpc.max_receive_message_length", "8388608")]},
            TypeError,
            (
                "channel_options['grpc.max_receive_message_length']='8388608': not an int "
                "(an int >= -1, -1 = unlimited)"
            ),
        ),
        (
            {"channel_options": [("grpc.max_send_message_length", 1e6)]},
            TypeError,
            (
                "channel_options['grpc.max_send_message_length']=1000000.0: not an int "
                "(an int >= -1, -1 = unlimited)"
            ),
        ),
        (
            {"channel_options": [("grpc.max_receive_message_length", -2)]},
            ValueError,
            (
                "channel_options['grpc.max_receive_message_length']=-2: less than -1 "
                "(an int >= -1, -1 = unlimited)"
            ),
        ),
        (
            {"channel_options": [("grpc.keepalive_time_ms", -5)]},
            ValueError,
            "channel_options['grpc.keepalive_time_ms']=-5: less than 0 (an int >= 0)",
        ),
        (
            {"channel_options": [("grpc.primary_user_agent", 3)]},
            TypeError,
            (
                "channel_options['grpc.primary_user_agent']=3: not a str "
                "(grpc reads this argument as a string)"
            ),
        ),
        (
            {"channel_options": ["grpc.enable_retries"]},
            TypeError,
            (
                "channel_options[0]='grpc.enable_retries': not a (name, value) pair ((name, value) "
                "pairs of grpc channel arguments, e.g. [('grpc.max_receive_message_length', "
                "8388608)])"
            ),
        ),
        (
            {"transport": ["h3"]},
            TypeError,
            "transport=['h3']: not a str ('h2', 'h3' or 'auto')",
        ),
        (
            {"probe_nodes": "no"},
            TypeError,
            "probe_nodes='no': not a bool (True or False)",
        ),
        (
            {"insecure_skip_verify": 1},
            TypeError,
            "insecure_skip_verify=1: not a bool (True or False)",
        ),
        (
            {"node": 7},
            TypeError,
            "node=7: not a str (a name, or None for the default)",
        ),
        (
            {"throttling": 0.5},
            TypeError,
            (
                "throttling=0.5: not a RetryThrottling or bool (True: the default bucket, "
                "False: off, or RetryThrottling(...))"
            ),
        ),
        (
            {"ejection": EjectionPolicy(base_time=-1)},
            ValueError,
            "EjectionPolicy.base_time=-1: negative (seconds, a finite number >= 0)",
        ),
        (
            {"retry": 3},
            TypeError,
            "retry=3: not a RetryPolicy (RetryPolicy(...) or None)",
        ),
        (
            {"observers": None},
            TypeError,
            "observers=None: not a list of CallObserver (e.g. [LoggingObserver()])",
        ),
    ],
)
def test_bad_values_name_option_value_and_what_is_accepted(
    options: dict[str, Any], kind: type[Exception], message: str
) -> None:
    assert build_error(kind, **options) == message


def test_the_blocking_client_checks_the_same() -> None:
    with pytest.raises(ValueError, match=r"^resolve_timeout=0: zero \("):
        SyncClient(TARGET, resolve_timeout=0)


def test_target_type() -> None:
    with pytest.raises(TypeError) as info:
        AsyncClient(b"static:///127.0.0.1:1")  # type: ignore[arg-type]
    assert str(info.value) == "target=b'static:///127.0.0.1:1': not a str (e.g. 'dns:///NAME:PORT')"


async def test_good_values_are_accepted() -> None:
    client = AsyncClient(
        TARGET,
        resolve_timeout=0.5,
        retry_buffer_limit=0,
        channel_options=[
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", False),
            ("grpc.primary_user_agent", "me"),
            ("grpc.some_future_option", 1.5),
        ],
        ejection=EjectionPolicy(base_time=0.1, max_time=1),
        throttling=False,
    )
    await client.close()


# -- H3Options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "kind", "message"),
    [
        (
            {"connect_timeout": -1},
            ValueError,
            "H3Options.connect_timeout=-1: negative (seconds, a finite number > 0)",
        ),
        (
            {"connect_timeout": 0},
            ValueError,
            "H3Options.connect_timeout=0: zero (seconds, a finite number > 0)",
        ),
        (
            {"idle_timeout": -1},
            ValueError,
            "H3Options.idle_timeout=-1: negative (seconds, a finite number > 0)",
        ),
        (
            {"idle_timeout": math.inf},
            ValueError,
            "H3Options.idle_timeout=inf: not a finite number (seconds, a finite number > 0)",
        ),
        (
            {"fallback_ttl": "60"},
            TypeError,
            "H3Options.fallback_ttl='60': not a number (seconds, a finite number >= 0)",
        ),
    ],
)
def test_h3_options_are_checked_when_built(
    options: dict[str, Any], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as info:
        H3Options(**options)
    assert str(info.value) == message


def test_h3_options_accept_zero_fallback_ttl() -> None:
    assert H3Options(fallback_ttl=0).fallback_ttl == 0


# -- call timeouts ---------------------------------------------------------------------------


TIMEOUT_ACCEPTED = "(seconds, a finite number > 0, or None for no deadline)"
BAD_TIMEOUTS = [
    (-1, ValueError, f"timeout=-1: negative {TIMEOUT_ACCEPTED}"),
    (0, ValueError, f"timeout=0: zero {TIMEOUT_ACCEPTED}"),
    (math.nan, ValueError, f"timeout=nan: not a finite number {TIMEOUT_ACCEPTED}"),
    (math.inf, ValueError, f"timeout=inf: not a finite number {TIMEOUT_ACCEPTED}"),
    ("2", TypeError, f"timeout='2': not a number {TIMEOUT_ACCEPTED}"),
    (True, TypeError, f"timeout=True: not a number {TIMEOUT_ACCEPTED}"),
]


@pytest.mark.parametrize(("timeout", "kind", "message"), BAD_TIMEOUTS)
async def test_generated_async_client_checks_call_timeouts(
    timeout: Any, kind: type[Exception], message: str
) -> None:
    from greeter.v1.greeter_pb2 import HelloRequest

    async with GreeterClient(TARGET) as client:
        with pytest.raises(kind) as info:
            await client.say_hello(HelloRequest(name="x"), timeout=timeout)
    assert str(info.value) == message
    assert client.stats.calls == 0


@pytest.mark.parametrize(("timeout", "kind", "message"), BAD_TIMEOUTS)
def test_generated_sync_client_checks_call_timeouts(
    timeout: Any, kind: type[Exception], message: str
) -> None:
    from greeter.v1.greeter_pb2 import HelloRequest

    with GreeterSyncClient(TARGET) as client, pytest.raises(kind) as info:
        client.say_hello(HelloRequest(name="x"), timeout=timeout)
    assert str(info.value) == message


async def test_a_call_retry_of_the_wrong_type_is_named() -> None:
    async with AsyncClient(TARGET) as client:
        with pytest.raises(TypeError) as info:
            await client._unary_unary(
                UNARY,
                StringValue(value="x"),
                timeout=1.0,
                metadata=None,
                retry="no",  # type: ignore[typeddict-item]
            )
    assert str(info.value) == "retry='no': not a RetryPolicy (RetryPolicy(...) or None)"


# -- the error of a call that found no endpoint ---------------------------------------------


def test_a_call_that_tried_no_endpoint_says_so() -> None:
    error = CallFailedError(
        method="/greeter.v1.Greeter/SayHello",
        code=grpc.StatusCode.UNAVAILABLE,
        summary="no endpoints resolved yet for dns:///x.test:1: NXDOMAIN",
        attempts=[],
    )
    assert error.details() == (
        "/greeter.v1.Greeter/SayHello: no endpoints resolved yet for dns:///x.test:1: NXDOMAIN; "
        "no endpoint was tried"
    )


async def test_a_call_with_a_valid_timeout_still_runs() -> None:
    async with AsyncClient(TARGET, retry=NO_RETRY) as client:
        with pytest.raises(grpc.RpcError):
            await client._unary_unary(
                UNARY, StringValue(value="x"), timeout=0.5, metadata=None, retry=None
            )
