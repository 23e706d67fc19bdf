"""Request/response header building and validation."""

from __future__ import annotations

import grpc
import pytest

from protoc_gen_localfirst.runtime.wire import (
    H3Error,
    Header,
    WireError,
    build_request_headers,
    build_response_headers,
    build_trailers,
    build_trailers_only,
    parse_request_headers,
    parse_response_headers,
    parse_trailers,
)


def request(**overrides: bytes | None) -> list[Header]:
    base = {
        b":method": b"POST",
        b":scheme": b"https",
        b":path": b"/pkg.Svc/Call",
        b":authority": b"localhost:1",
        b"content-type": b"application/grpc",
        b"te": b"trailers",
    }
    for key, value in overrides.items():
        name = key.replace("_", "-").encode()
        name = b":" + name[1:] if key.startswith("P") else name
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return list(base.items())


def test_build_and_parse_request_roundtrip() -> None:
    headers = build_request_headers(
        "/pkg.Svc/Call",
        authority="127.0.0.1:50051",
        timeout=1.5,
        metadata=[("x-id", "7"), ("trace-bin", b"\xff\x00")],
        user_agent="test/1",
    )
    names = [name for name, _ in headers]
    assert names[:4] == [b":method", b":scheme", b":path", b":authority"]
    assert (b"te", b"trailers") in headers
    head = parse_request_headers(headers)
    assert head.path == "/pkg.Svc/Call"
    assert (head.service, head.method) == ("pkg.Svc", "Call")
    assert head.authority == "127.0.0.1:50051"
    assert head.timeout == pytest.approx(1.5)
    assert head.metadata == (("user-agent", "test/1"), ("x-id", "7"), ("trace-bin", b"\xff\x00"))


def test_content_type_variants_accepted() -> None:
    for ct in (b"application/grpc", b"application/grpc+proto", b"application/grpc; charset=x"):
        assert parse_request_headers(request(content_type=ct)).content_type == ct.decode()


@pytest.mark.parametrize("ct", [b"text/plain", b"application/json", b"application/grpc-web", None])
def test_non_grpc_content_type_is_415(ct: bytes | None) -> None:
    with pytest.raises(WireError) as info:
        parse_request_headers(request(content_type=ct))
    assert info.value.http_status == 415
    assert info.value.h3_error is None


def test_get_is_405() -> None:
    with pytest.raises(WireError) as info:
        parse_request_headers(request(Pmethod=b"GET", content_type=None))
    assert info.value.http_status == 405


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"POST"), (b":path", b"/a/b")],  # no :scheme
        [(b"content-type", b"application/grpc"), (b":method", b"POST")],  # pseudo after regular
        [(b":method", b"POST"), (b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b"), (b":status", b"200")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b"), (b"X-Up", b"1")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b"), (b"connection", b"x")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b"), (b"te", b"gzip")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b"), (b"k", b"a\nb")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a/b"), (b"", b"x")],
    ],
)
def test_malformed_requests_reset_the_stream(headers: list[Header]) -> None:
    with pytest.raises(WireError) as info:
        parse_request_headers(headers)
    assert info.value.h3_error == H3Error.MESSAGE_ERROR


@pytest.mark.parametrize("path", [b"nopath", b"/onlyservice", b"//m", b"/s/", b"/a/b/c"])
def test_bad_path_is_unimplemented(path: bytes) -> None:
    with pytest.raises(WireError) as info:
        parse_request_headers(request(Ppath=path))
    assert info.value.status == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.h3_error is None


def test_bad_timeout_and_metadata_are_internal() -> None:
    for extra in ([(b"grpc-timeout", b"soon")], [(b"x-bin", b"%%%")], [(b"x", b"\x01")]):
        with pytest.raises(WireError) as info:
            parse_request_headers(request() + extra)
        assert info.value.status == grpc.StatusCode.INTERNAL
        assert info.value.h3_error is None


def test_response_side_roundtrip() -> None:
    headers = build_response_headers([("a", "1"), ("b-bin", b"\x00")])
    head = parse_response_headers(headers)
    assert head.http_status == 200
    assert head.status is None
    assert head.metadata == (("a", "1"), ("b-bin", b"\x00"))

    status = parse_trailers(build_trailers(grpc.StatusCode.NOT_FOUND, "nö\n%", [("t", "x")]))
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert status.message == "nö\n%"
    assert status.metadata == (("t", "x"),)


def test_trailers_only() -> None:
    headers = build_trailers_only(grpc.StatusCode.UNAVAILABLE, "bye", [("n", "a")])
    head = parse_response_headers(headers)
    assert head.status is not None
    assert head.status.code == grpc.StatusCode.UNAVAILABLE
    assert head.status.message == "bye"
    assert head.status.metadata == (("n", "a"),)


def test_response_without_grpc_status_maps_http() -> None:
    head = parse_response_headers([(b":status", b"503"), (b"content-type", b"text/html")])
    assert head.status is not None and head.status.code == grpc.StatusCode.UNAVAILABLE
    head = parse_response_headers([(b":status", b"200"), (b"content-type", b"text/html")])
    assert head.status is not None and head.status.code == grpc.StatusCode.UNKNOWN
    head = parse_response_headers(build_trailers_only(grpc.StatusCode.INTERNAL, http_status=415))
    assert head.status is not None and head.status.code == grpc.StatusCode.INTERNAL
    with pytest.raises(WireError):
        parse_response_headers([(b"content-type", b"application/grpc")])


def test_trailers_edge_cases() -> None:
    assert parse_trailers([]).code == grpc.StatusCode.INTERNAL
    assert parse_trailers([(b"grpc-status", b"x")]).code == grpc.StatusCode.INTERNAL
    assert parse_trailers([(b"grpc-status", b"77")]).code == grpc.StatusCode.UNKNOWN
