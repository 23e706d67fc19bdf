"""gRPC metadata as HTTP/3 header pairs, both ways.

Header lists are HTTP/3 header lists as aioquic/qh3 use them:
``list[tuple[bytes, bytes]]`` (``Headers``), names lower case.

* ``-bin`` metadata is emitted as **unpadded** base64 (standard alphabet), as
  PROTOCOL-HTTP2 recommends; padded and unpadded values are both accepted.
* Received metadata (``decode_metadata``) leaves out pseudo-headers, every
  ``grpc-*`` key, ``content-type`` and ``te``; ``user-agent`` and anything
  else stay, as grpc's ``invocation_metadata()`` shows them. Values of
  ``-bin`` keys are ``bytes``, others ``str``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from protoc_gen_localfirst.runtime.wire.status import WireError

Header = tuple[bytes, bytes]
Headers = list[Header]
Metadata = tuple[tuple[str, str | bytes], ...]
"""Metadata as grpc shows it: (key, value) pairs, ``bytes`` values for ``-bin`` keys."""
MetadataInput = Iterable[tuple[str, str | bytes]]
"""What the builders accept: pairs, a ``grpc.aio.Metadata``, a ``Metadata``."""

_KEY_RE = re.compile(r"[0-9a-z_.\-]+")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_NOT_METADATA = frozenset({"content-type", "te", "host"})


def _is_reserved(key: str) -> bool:
    return key.startswith((":", "grpc-")) or key in _NOT_METADATA


def _b64decode(value: bytes) -> bytes:
    stripped = value.strip().rstrip(b"=")
    try:
        return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"invalid base64 in binary metadata value {value[:40]!r}") from None


def encode_metadata(metadata: MetadataInput) -> Headers:
    """User metadata as header pairs; ``ValueError`` for what gRPC forbids.

    Keys are lower-cased gRPC keys (``[0-9a-z_.-]``), not reserved
    (``grpc-*``, pseudo-headers, ``content-type``, ``te``). ``-bin`` values
    (``bytes``, or ``str`` taken as UTF-8) become unpadded base64; other values
    must be printable ASCII ``str`` (or such ``bytes``).
    """
    headers: Headers = []
    for key, value in metadata:
        name = key.lower()
        if not _KEY_RE.fullmatch(name):
            raise ValueError(f"invalid metadata key {key!r}")
        if _is_reserved(name):
            raise ValueError(f"metadata key {key!r} is reserved")
        if name.endswith("-bin"):
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            headers.append((name.encode(), base64.b64encode(raw).rstrip(b"=")))
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not _PRINTABLE_RE.fullmatch(text):
            raise ValueError(
                f"metadata value for {key!r} must be printable ASCII; use a -bin key for bytes"
            )
        headers.append((name.encode(), text.encode("ascii")))
    return headers


_DECODED: dict[Header, tuple[str, str | bytes] | None] = {}
"""Header pairs already decoded (None: not metadata). Most pairs repeat from
call to call (user-agent, node announcements, static metadata); a bounded
memo saves their validation and decoding."""
_DECODED_MAX = 4096
_DECODED_VALUE_MAX = 256


def _decode_pair(raw_name: bytes, raw_value: bytes) -> tuple[str, str | bytes] | None:
    try:
        name = raw_name.decode("ascii")
    except UnicodeDecodeError:
        return None
    if _is_reserved(name) or not _KEY_RE.fullmatch(name):
        return None
    if name.endswith("-bin"):
        return (name, _b64decode(raw_value))
    text = raw_value.decode("latin-1").strip(" \t")
    if not _PRINTABLE_RE.fullmatch(text):
        raise WireError(f"metadata value for {name!r} is not printable ASCII")
    return (name, text)


def decode_metadata(headers: Iterable[Header]) -> Metadata:
    """User metadata from received headers or trailers; ``WireError`` if invalid.

    Pseudo-headers, ``grpc-*``, ``content-type`` and ``te`` are left out;
    ``-bin`` values are base64-decoded (padded or not) to ``bytes``; other
    values must be printable ASCII. Names that are not gRPC keys are skipped.
    """
    pairs: list[tuple[str, str | bytes]] = []
    decoded = _DECODED
    for raw_name, raw_value in headers:
        header = (raw_name, raw_value)
        try:
            pair = decoded[header]
        except KeyError:
            pair = _decode_pair(raw_name, raw_value)
            if len(raw_value) <= _DECODED_VALUE_MAX:
                if len(decoded) >= _DECODED_MAX:
                    decoded.clear()
                decoded[header] = pair
        if pair is not None:
            pairs.append(pair)
    return tuple(pairs)
