"""Length-prefixed message framing."""

from __future__ import annotations

import gzip
import itertools

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_localfirst.runtime.wire import (
    MessageDecoder,
    MessageTooLarge,
    TruncatedMessage,
    WireError,
    check_send_size,
    encode_message,
)


def test_encode_prefix() -> None:
    assert encode_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"
    assert encode_message(b"x", compressed=True)[:1] == b"\x01"


def test_decode_whole_and_empty_messages() -> None:
    decoder = MessageDecoder()
    data = encode_message(b"one") + encode_message(b"") + encode_message(b"three")
    assert decoder.feed(data) == [b"one", b"", b"three"]
    assert decoder.buffered == 0
    decoder.end()


@given(
    messages=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
)
def test_any_chunking_gives_the_same_messages(messages: list[bytes], cuts: list[int]) -> None:
    data = b"".join(encode_message(m) for m in messages)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder = MessageDecoder()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out.extend(decoder.feed(data[start:end]))
    decoder.end()
    assert out == messages


def test_oversized_prefix_fails_before_the_body() -> None:
    decoder = MessageDecoder(max_message_size=10)
    with pytest.raises(MessageTooLarge) as info:
        decoder.feed(b"\x00\x00\x00\x00\x0b")  # 11 bytes announced, none sent
    assert info.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert decoder.buffered == 0
    with pytest.raises(MessageTooLarge):  # poisoned
        decoder.feed(b"")


def test_size_errors_are_worded_as_grpc_words_them() -> None:
    with pytest.raises(MessageTooLarge) as received:
        MessageDecoder(max_message_size=10, side="SERVER").feed(b"\x00\x00\x00\x00\x0b")
    assert received.value.message == "SERVER: Received message larger than max (11 vs. 10)"
    assert (received.value.length, received.value.limit, received.value.sent) == (11, 10, False)
    with pytest.raises(MessageTooLarge) as sent:
        check_send_size(11, 10, side="CLIENT")
    assert sent.value.message == "CLIENT: Sent message larger than max (11 vs. 10)"
    assert sent.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED and sent.value.sent
    assert str(MessageTooLarge(11, 10)) == "Received message larger than max (11 vs. 10)"


def test_send_size_check_allows_the_limit_and_no_limit() -> None:
    check_send_size(10, 10)
    check_send_size(10**9, None)


def test_decompressed_size_error_names_the_side() -> None:
    data = gzip.compress(b"x" * 1000)
    decoder = MessageDecoder(max_message_size=500, encoding="gzip", side="CLIENT")
    with pytest.raises(MessageTooLarge) as info:
        decoder.feed(encode_message(data, compressed=True))
    assert info.value.message.startswith("CLIENT: Received message larger than max (")


def test_exact_max_size_is_fine() -> None:
    decoder = MessageDecoder(max_message_size=3)
    assert decoder.feed(encode_message(b"abc")) == [b"abc"]
    assert MessageDecoder(max_message_size=None).feed(encode_message(b"x" * 100)) == [b"x" * 100]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"\x00\x00", None), (encode_message(b"abcdef")[:-1], 6)],
)
def test_truncated_at_end(data: bytes, expected: int | None) -> None:
    decoder = MessageDecoder()
    assert decoder.feed(data) == []
    with pytest.raises(TruncatedMessage) as info:
        decoder.end()
    assert info.value.status == grpc.StatusCode.INTERNAL
    assert ("prefix" in str(info.value)) == (expected is None)


def test_compressed_flag_without_encoding_is_internal() -> None:
    for encoding in (None, "identity"):
        with pytest.raises(WireError) as info:
            MessageDecoder(encoding=encoding).feed(encode_message(b"x", compressed=True))
        assert info.value.status == grpc.StatusCode.INTERNAL
        assert not isinstance(info.value, MessageTooLarge)


def test_invalid_flag() -> None:
    with pytest.raises(WireError, match="compressed flag 2"):
        MessageDecoder().feed(b"\x02\x00\x00\x00\x00")


def test_gzip_is_decompressed_within_the_limit() -> None:
    body = gzip.compress(b"a" * 1000)
    assert MessageDecoder(encoding="gzip").feed(encode_message(body, compressed=True)) == [
        b"a" * 1000
    ]
    with pytest.raises(MessageTooLarge):  # a small message that inflates past the limit
        MessageDecoder(max_message_size=500, encoding="gzip").feed(
            encode_message(body, compressed=True)
        )


def test_unknown_encoding_is_unimplemented() -> None:
    with pytest.raises(WireError) as info:
        MessageDecoder(encoding="snappy").feed(encode_message(b"x", compressed=True))
    assert info.value.status == grpc.StatusCode.UNIMPLEMENTED
    # uncompressed messages are fine whatever the encoding header says
    assert MessageDecoder(encoding="snappy").feed(encode_message(b"x")) == [b"x"]
