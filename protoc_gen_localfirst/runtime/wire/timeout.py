"""``grpc-timeout``: encoded in the finest unit whose value fits 8 digits,
rounding up, so the peer never sees a shorter deadline than ours."""

from __future__ import annotations

import math
import re

from protoc_gen_localfirst.runtime.wire.status import WireError

MAX_TIMEOUT_DIGITS = 8

_TIMEOUT_UNITS: tuple[tuple[bytes, int], ...] = (
    (b"n", 1),
    (b"u", 1_000),
    (b"m", 1_000_000),
    (b"S", 1_000_000_000),
    (b"M", 60 * 1_000_000_000),
    (b"H", 3600 * 1_000_000_000),
)
_NANOS_PER_UNIT = {unit[0]: nanos for unit, nanos in _TIMEOUT_UNITS}
_MAX_TIMEOUT_VALUE = 10**MAX_TIMEOUT_DIGITS - 1
_TIMEOUT_RE = re.compile(rb"([0-9]{1,8})([HMSmun])")


def encode_timeout(seconds: float) -> bytes:
    """``seconds`` as a ``grpc-timeout`` value: at most 8 digits, rounded up.

    Negative values encode as ``0n`` (already expired); values beyond
    99999999 hours are capped there.
    """
    if math.isnan(seconds):
        raise ValueError("timeout is NaN")
    if seconds <= 0:
        return b"0n"
    if math.isinf(seconds):
        return b"%dH" % _MAX_TIMEOUT_VALUE
    nanos = math.ceil(seconds * 1e9)
    for unit, per in _TIMEOUT_UNITS:
        value = -(-nanos // per)
        if value <= _MAX_TIMEOUT_VALUE:
            return b"%d%s" % (value, unit)
    return b"%dH" % _MAX_TIMEOUT_VALUE


def decode_timeout(value: bytes | str) -> float:
    """A ``grpc-timeout`` value in seconds; ``WireError`` INTERNAL if malformed."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    match = _TIMEOUT_RE.fullmatch(raw)
    if match is None:
        raise WireError(f"malformed grpc-timeout {raw!r}")
    return int(match[1]) * _NANOS_PER_UNIT[match[2][0]] / 1e9
