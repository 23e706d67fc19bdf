"""HTTP/3 vocabulary both sides share, importable without loading QUIC or asyncio.

``Transport`` and ``H3Options`` are the client's choices, ``QuicLibrary`` the
server's; ``SEND_HIGH_WATER``/``SEND_LOW_WATER`` the send backpressure both
apply per stream. The runtime re-exports ``H3Options`` from here, so
``import protoc_gen_localfirst.runtime`` never imports qh3.

qh3 is an optional dependency (the ``http3`` extra): ``require_quic_library``
is called where HTTP/3 is chosen (a client's ``transport``, a server's
``http3=True``) and names the extra when the library is not installed.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "QUIC_LIBRARIES",
    "SEND_HIGH_WATER",
    "SEND_LOW_WATER",
    "H3Options",
    "QuicLibrary",
    "Transport",
    "require_quic_library",
]

Transport = Literal["h2", "h3", "auto"]
"""``h2``: grpc.aio over TCP; ``h3``: HTTP/3 only; ``auto``: HTTP/3, else HTTP/2."""

QuicLibrary = Literal["qh3", "aioquic"]
"""The QUIC stack under the HTTP/3 server (same API; benchmarks compare them)."""
QUIC_LIBRARIES: tuple[QuicLibrary, ...] = ("qh3", "aioquic")

_INSTALL = {
    "qh3": "pip install 'protoc-gen-localfirst[http3]'",
    "aioquic": "pip install aioquic",
}


def require_quic_library(library: str, why: str) -> None:
    """Raise ``ModuleNotFoundError`` naming what to install if ``library`` is missing.

    ``why`` is the option that asked for HTTP/3 (``"transport='h3'"``,
    ``"http3=True"``); the library itself is not imported here.
    """
    try:
        found = importlib.util.find_spec(library) is not None
    except (ImportError, ValueError):  # a broken install or a blocked import
        found = False
    if not found:
        raise ModuleNotFoundError(
            f"{why} needs the QUIC library {library}, which is not installed: "
            f"{_INSTALL.get(library, f'pip install {library}')}",
            name=library,
        )


SEND_HIGH_WATER = 256 * 1024
"""Bytes a stream may have queued but not yet transmitted before writers wait
(QUIC flow control and congestion control drain it as the peer acknowledges)."""
SEND_LOW_WATER = 64 * 1024
"""Client: a waiting writer resumes once its stream's queue is below this."""


@dataclass(frozen=True)
class H3Options:
    """Tuning of the HTTP/3 transport (``AsyncClient(h3_options=...)``)."""

    connect_timeout: float = 1.0
    """Longest wait for a QUIC handshake; a call's own deadline may cut it shorter."""
    idle_timeout: float = 30.0
    """QUIC idle timeout; an idle connection closes and the next call reopens it."""
    fallback_ttl: float = 60.0
    """``auto``: after HTTP/3 failed for an endpoint, how long to use HTTP/2
    for it before trying HTTP/3 again (a server that enables HTTP/3 later is
    picked up within this time)."""

    def __post_init__(self) -> None:
        _check_seconds("H3Options.connect_timeout", self.connect_timeout, zero=False)
        _check_seconds("H3Options.idle_timeout", self.idle_timeout, zero=False)
        _check_seconds("H3Options.fallback_ttl", self.fallback_ttl, zero=True)


def _check_seconds(name: str, value: object, *, zero: bool) -> None:
    accepted = f"seconds, a finite number {'>=' if zero else '>'} 0"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}={value!r}: not a number ({accepted})")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: not a finite number ({accepted})")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name}={value!r}: {'negative' if value < 0 else 'zero'} ({accepted})")
