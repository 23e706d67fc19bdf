"""Length-prefixed messages (PROTOCOL-HTTP2 "Length-Prefixed-Message").

``encode_message(data, compressed=False)`` frames one message (flag byte +
4-byte big-endian length + data); ``MessageDecoder`` turns DATA payloads of
any size back into messages, enforcing a maximum message size on the prefix
(the body is never buffered) and decompressing ``gzip``/``deflate``.
``MessageTooLarge`` (RESOURCE_EXHAUSTED) and ``TruncatedMessage`` (INTERNAL)
are the framing errors; ``check_send_size`` is the sender's limit check.
Size errors are worded as grpc words them (``SERVER: Received message larger
than max (N vs. M)``), with N the message's length without its prefix.
"""

from __future__ import annotations

import collections
import zlib

import grpc

from protoc_gen_localfirst.runtime.wire.status import WireError

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
"""gRPC's default limit on a received (and, on our server, a sent) message."""
PREFIX_LENGTH = 5
"""1-byte compressed flag + 4-byte big-endian length."""


class MessageTooLarge(WireError):
    """A message over the maximum size: RESOURCE_EXHAUSTED.

    ``side`` (``"SERVER"``/``"CLIENT"``, or None) says who refused it and
    ``sent`` whether it was to be sent (else received), as in grpc's
    ``CLIENT: Sent message larger than max (N vs. M)``.
    """

    def __init__(
        self, length: int, limit: int, *, side: str | None = None, sent: bool = False
    ) -> None:
        prefix = f"{side}: " if side else ""
        verb = "Sent" if sent else "Received"
        super().__init__(
            f"{prefix}{verb} message larger than max ({length} vs. {limit})",
            status=grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        self.length = length
        self.limit = limit
        self.sent = sent


class TruncatedMessage(WireError):
    """The stream ended inside a length-prefixed message: INTERNAL."""

    def __init__(self, buffered: int, expected: int | None) -> None:
        wanted = f"{expected}-byte message" if expected is not None else "5-byte prefix"
        super().__init__(
            f"stream ended with a truncated message ({buffered} bytes of a {wanted})",
            status=grpc.StatusCode.INTERNAL,
        )


def encode_message(data: bytes, *, compressed: bool = False) -> bytes:
    """``data`` as one length-prefixed message (flag byte + 4-byte length)."""
    if len(data) > 0xFFFFFFFF:
        raise ValueError(f"message of {len(data)} bytes does not fit a gRPC length prefix")
    return (b"\x01" if compressed else b"\x00") + len(data).to_bytes(4, "big") + data


def check_send_size(length: int, limit: int | None, *, side: str | None = None) -> None:
    """Raise ``MessageTooLarge`` (sent) if a ``length``-byte message is over ``limit``."""
    if limit is not None and length > limit:
        raise MessageTooLarge(length, limit, side=side, sent=True)


def _decompress(encoding: str, data: bytes, limit: int | None, side: str | None) -> bytes:
    if encoding == "gzip":
        wbits = 31
    elif encoding == "deflate":
        wbits = 15
    else:
        raise WireError(
            f"message compressed with unsupported grpc-encoding {encoding!r}",
            status=grpc.StatusCode.UNIMPLEMENTED,
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(data, (limit + 1) if limit is not None else 0)
    except zlib.error as error:
        raise WireError(f"cannot decompress {encoding} message: {error}") from None
    if limit is not None and len(out) > limit:
        raise MessageTooLarge(len(out), limit, side=side)
    return out


class MessageDecoder:
    """Incremental decoder of length-prefixed gRPC messages.

    Feed DATA payloads of any size with ``feed``; it returns the messages
    completed so far. Call ``end()`` when the stream ends: it raises
    ``TruncatedMessage`` if a partial message is buffered. A length prefix
    over ``max_message_size`` raises ``MessageTooLarge`` as soon as the
    prefix arrives (the body is never buffered). A compressed flag without a
    ``grpc-encoding`` (``encoding`` None or ``"identity"``) raises
    ``WireError`` INTERNAL; ``gzip`` and ``deflate`` are decompressed, other
    encodings raise UNIMPLEMENTED. After an error the decoder is poisoned:
    every later ``feed``/``end`` raises the same error. ``side`` names the
    receiver in size errors (``"SERVER"``/``"CLIENT"``).
    """

    def __init__(
        self,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        encoding: str | None = None,
        *,
        side: str | None = None,
    ) -> None:
        self.max_message_size = max_message_size
        self.side = side
        self.encoding = None if encoding in (None, "identity") else encoding
        # Received payloads are kept as they came (no copy into one buffer); a
        # message is cut out once whole: a payload holding exactly one message
        # is returned as is, one spread over several is joined once.
        self._chunks: collections.deque[bytes | memoryview] = collections.deque()
        self._offset = 0
        """Bytes of ``_chunks[0]`` already consumed."""
        self._size = 0
        """Bytes held (prefix included) for messages not yet complete."""
        self._need: int | None = None
        """The current message's length once its prefix was read (prefix consumed)."""
        self._flag = 0
        self._error: WireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return self._size + (PREFIX_LENGTH if self._need is not None else 0)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        messages: list[bytes] = []
        if not data:
            return messages
        self._chunks.append(data)
        self._size += len(data)
        try:
            while True:
                if self._need is None:
                    if self._size < PREFIX_LENGTH:
                        break
                    prefix = self._take(PREFIX_LENGTH)
                    flag = prefix[0]
                    length = int.from_bytes(prefix[1:PREFIX_LENGTH], "big")
                    if flag > 1:
                        raise WireError(f"invalid compressed flag {flag} in message prefix")
                    if flag == 1 and self.encoding is None:
                        raise WireError("compressed message without grpc-encoding")
                    if self.max_message_size is not None and length > self.max_message_size:
                        raise MessageTooLarge(length, self.max_message_size, side=self.side)
                    self._need, self._flag = length, flag
                if self._size < self._need:
                    break
                body = self._take(self._need)
                self._need = None
                if self._flag == 1:
                    assert self.encoding is not None
                    body = _decompress(self.encoding, body, self.max_message_size, self.side)
                messages.append(body)
        except WireError as error:
            self._error = error
            self._clear()
            raise
        return messages

    def _take(self, count: int) -> bytes:
        """The next ``count`` bytes held (``count <= _size``), consumed."""
        chunks = self._chunks
        self._size -= count
        if count == 0:
            return b""
        first, offset = chunks[0], self._offset
        available = len(first) - offset
        if available > count:
            self._offset = offset + count
            return bytes(first[offset : offset + count])
        chunks.popleft()
        self._offset = 0
        if available == count:
            return first if offset == 0 and isinstance(first, bytes) else bytes(first[offset:])
        parts: list[bytes | memoryview] = [memoryview(first)[offset:] if offset else first]
        missing = count - available
        while missing:
            chunk = chunks[0]
            if len(chunk) <= missing:
                parts.append(chunks.popleft())
                missing -= len(chunk)
            else:
                parts.append(memoryview(chunk)[:missing])
                self._offset = missing
                missing = 0
        return b"".join(parts)

    def _clear(self) -> None:
        self._chunks.clear()
        self._offset = self._size = 0
        self._need = None

    def end(self) -> None:
        if self._error is not None:
            raise self._error
        held = self.buffered
        if held:
            expected = self._need
            if expected is None and self._size >= PREFIX_LENGTH:
                expected = int.from_bytes(self._take(PREFIX_LENGTH)[1:], "big")
            self._error = TruncatedMessage(held, expected)
            self._clear()
            raise self._error
