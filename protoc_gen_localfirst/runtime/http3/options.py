"""HTTP/3 vocabulary both sides share, importable without loading QUIC or asyncio.

``Transport`` and ``H3Options`` are the client's choices, ``QuicLibrary`` the
server's; ``SEND_HIGH_WATER``/``SEND_LOW_WATER`` the send backpressure both
apply per stream. The runtime re-exports ``H3Options`` from here, so
``import protoc_gen_localfirst.runtime`` never imports qh3.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "QUIC_LIBRARIES",
    "SEND_HIGH_WATER",
    "SEND_LOW_WATER",
    "H3Options",
    "PemKind",
    "QuicLibrary",
    "Transport",
    "read_pem_file",
]

Transport = Literal["h2", "h3", "auto"]
"""``h2``: grpc.aio over TCP; ``h3``: HTTP/3 only; ``auto``: HTTP/3, else HTTP/2."""

QuicLibrary = Literal["qh3", "aioquic"]
"""The QUIC stack under the HTTP/3 server (same API; benchmarks compare them)."""
QUIC_LIBRARIES: tuple[QuicLibrary, ...] = ("qh3", "aioquic")

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


PemKind = Literal["certificate", "private key"]
"""What a PEM file must hold: ``certificate`` (CA file, certificate chain) or ``private key``."""

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def read_pem_file(name: str, path: object, kind: PemKind, accepted: str) -> bytes:
    """The bytes of PEM file ``path`` (option ``name``), checked to hold a ``kind``.

    Errors name the option, the path and ``accepted`` (what the option takes):
    ``ca_file='/nope.pem': no such file (a PEM file of CA certificates)``.
    ``TypeError`` unless ``path`` is a ``str`` or ``os.PathLike``; else ``ValueError``.
    Only the PEM framing is checked here; callers parse the contents (``ssl``).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name}={path!r}: not a path ({accepted})")
    where = f"{name}={os.fspath(path)!r}"
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file ({accepted})") from None
    except IsADirectoryError:
        raise ValueError(f"{where}: is a directory ({accepted})") from None
    except OSError as error:
        raise ValueError(
            f"{where}: cannot be read: {error.strerror or error} ({accepted})"
        ) from None
    labels = {m.group(1).decode() for m in _PEM_BLOCK.finditer(data)}
    if not labels:
        raise ValueError(f"{where}: not a PEM file, no -----BEGIN ...----- block ({accepted})")
    keys = {label for label in labels if label.endswith("PRIVATE KEY")}
    if kind == "certificate" and "CERTIFICATE" not in labels:
        holds = "a private key" if keys else ", ".join(sorted(labels))
        raise ValueError(f"{where}: holds {holds}, no CERTIFICATE ({accepted})")
    if kind == "private key":
        if "ENCRYPTED PRIVATE KEY" in keys or b"Proc-Type: 4,ENCRYPTED" in data:
            raise ValueError(f"{where}: the private key is encrypted ({accepted})")
        if not keys:
            holds = "certificates" if "CERTIFICATE" in labels else ", ".join(sorted(labels))
            raise ValueError(f"{where}: holds {holds}, no PRIVATE KEY ({accepted})")
    return data
