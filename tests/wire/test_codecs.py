"""grpc-timeout, grpc-message and metadata codecs; status mappings."""

from __future__ import annotations

import base64

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_localfirst.runtime.wire import (
    H3Error,
    WireError,
    decode_grpc_message,
    decode_metadata,
    decode_timeout,
    encode_grpc_message,
    encode_metadata,
    encode_timeout,
    status_from_h3_error,
    status_from_http,
    status_from_int,
)

# --- grpc-timeout -----------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "encoded"),
    [
        (1.0, b"1000000u"),
        (0.1, b"100000u"),
        (100.0, b"100000m"),
        (1e-9, b"1n"),
        (1.5e-9, b"2n"),
        (0.0, b"0n"),
        (-3.0, b"0n"),
        (3600 * 1e8, b"99999999H"),
        (float("inf"), b"99999999H"),
    ],
)
def test_encode_timeout(seconds: float, encoded: bytes) -> None:
    assert encode_timeout(seconds) == encoded


@pytest.mark.parametrize(
    ("encoded", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"4m", 0.004), ("5u", 5e-6), (b"6n", 6e-9)],
)
def test_decode_timeout(encoded: bytes | str, seconds: float) -> None:
    assert decode_timeout(encoded) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [b"", b"1", b"S", b"123456789S", b"-1S", b"1s", b"1.5S", b" 1S"])
def test_decode_timeout_rejects(bad: bytes) -> None:
    with pytest.raises(WireError) as info:
        decode_timeout(bad)
    assert info.value.status == grpc.StatusCode.INTERNAL


@given(st.floats(min_value=1e-9, max_value=3.5e11, allow_nan=False))
def test_timeout_roundtrip_never_shortens(seconds: float) -> None:
    encoded = encode_timeout(seconds)
    digits = encoded[:-1]
    assert 1 <= len(digits) <= 8
    decoded = decode_timeout(encoded)
    assert decoded >= seconds * (1 - 1e-12)
    # the finest unit that fits 8 digits keeps at least 5 significant digits: error below 1e-5 relative
    # (or 1 ns absolute for tiny values)
    assert decoded - seconds <= max(seconds * 1e-5, 1.1e-9)


# --- grpc-message -----------------------------------------------------------


def test_encode_grpc_message() -> None:
    assert encode_grpc_message("plain text") == b"plain text"
    assert encode_grpc_message("50% off") == b"50%25 off"
    assert encode_grpc_message("a\nb\tc") == b"a%0Ab%09c"
    assert encode_grpc_message("ü") == b"%C3%BC"


def test_decode_grpc_message_is_lenient() -> None:
    assert decode_grpc_message(b"%C3%BCber %zz 100%") == "über %zz 100%"
    assert decode_grpc_message(b"%FF") == "\ufffd"
    assert decode_grpc_message("a%2") == "a%2"


@given(st.text())
def test_grpc_message_roundtrip(message: str) -> None:
    encoded = encode_grpc_message(message)
    assert all(0x20 <= b <= 0x7E for b in encoded)
    expected = message.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert decode_grpc_message(encoded) == expected


# --- metadata ---------------------------------------------------------------


def test_encode_metadata_bin_is_unpadded() -> None:
    headers = encode_metadata([("Key", "value"), ("blob-bin", b"\x00\x01"), ("t-bin", "é")])
    assert headers == [
        (b"key", b"value"),
        (b"blob-bin", b"AAE"),
        (b"t-bin", base64.b64encode("é".encode()).rstrip(b"=")),
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("grpc-status", "0"),
        (":path", "/x"),
        ("content-type", "x"),
        ("bad key", "x"),
        ("ke\u00ff", "x"),
        ("", "x"),
        ("k", "line\nbreak"),
        ("k", "ü"),
    ],
)
def test_encode_metadata_rejects(key: str, value: str) -> None:
    with pytest.raises(ValueError):
        encode_metadata([(key, value)])


def test_decode_metadata_filters_reserved_and_decodes_bin() -> None:
    metadata = decode_metadata(
        [
            (b":path", b"/a/b"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"grpc-timeout", b"1S"),
            (b"user-agent", b"x/1"),
            (b"a-bin", b"AAE"),
            (b"b-bin", b"AAE="),
            (b"x", b"y"),
            (b"x", b"z"),
        ]
    )
    assert metadata == (
        ("user-agent", "x/1"),
        ("a-bin", b"\x00\x01"),
        ("b-bin", b"\x00\x01"),
        ("x", "y"),
        ("x", "z"),
    )


def test_decode_metadata_rejects_bad_base64() -> None:
    with pytest.raises(WireError):
        decode_metadata([(b"a-bin", b"!!!")])


@given(st.binary(max_size=200))
def test_bin_metadata_roundtrip(value: bytes) -> None:
    headers = encode_metadata([("k-bin", value)])
    assert not headers[0][1].endswith(b"=")
    assert decode_metadata(headers) == (("k-bin", value),)
    padded = [(b"k-bin", base64.b64encode(value))]
    assert decode_metadata(padded) == (("k-bin", value),)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=50))
def test_ascii_metadata_roundtrip(value: str) -> None:
    assert decode_metadata(encode_metadata([("k", value)])) == (("k", value.strip(" \t")),)


# --- status mappings --------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "code"),
    [
        (400, grpc.StatusCode.INTERNAL),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.UNIMPLEMENTED),
        (429, grpc.StatusCode.UNAVAILABLE),
        (502, grpc.StatusCode.UNAVAILABLE),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.UNAVAILABLE),
        (500, grpc.StatusCode.UNKNOWN),
        (415, grpc.StatusCode.UNKNOWN),
    ],
)
def test_status_from_http(http: int, code: grpc.StatusCode) -> None:
    assert status_from_http(http) == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (H3Error.REQUEST_CANCELLED, grpc.StatusCode.CANCELLED),
        (H3Error.REQUEST_REJECTED, grpc.StatusCode.UNAVAILABLE),
        (H3Error.EXCESSIVE_LOAD, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (H3Error.NO_ERROR, grpc.StatusCode.INTERNAL),
        (H3Error.MESSAGE_ERROR, grpc.StatusCode.INTERNAL),
        (H3Error.VERSION_FALLBACK, grpc.StatusCode.INTERNAL),
        (0x0A, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_from_h3_error(error: int, code: grpc.StatusCode) -> None:
    assert status_from_h3_error(error) == code


def test_status_from_int() -> None:
    assert status_from_int(5) == grpc.StatusCode.NOT_FOUND
    assert status_from_int(99) == grpc.StatusCode.UNKNOWN
