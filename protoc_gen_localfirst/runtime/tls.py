"""TLS settings both transports share: PEM files read with clear errors, and the
client's one TLS setting (``ClientTls``) that HTTP/2 and HTTP/3 both apply.

One setting, two stacks: grpc (BoringSSL) takes PEM bytes through
``grpc.ssl_channel_credentials`` and a name override; QUIC (qh3) takes the
CA file and the server name in its ``QuicConfiguration``. ``ClientTls``
holds what both need, read once, so a client never trusts one set of CAs on
one transport and another set on the other.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc

__all__ = [
    "CA_FILE_ACCEPTED",
    "CERTFILE_ACCEPTED",
    "KEYFILE_ACCEPTED",
    "CertificatePair",
    "ClientTls",
    "FileChanges",
    "PemKind",
    "check_tls_files",
    "read_ca_file",
    "read_pem_file",
    "system_ca_bundle",
]

CA_FILE_ACCEPTED = "a PEM file of CA certificates"
CERTFILE_ACCEPTED = "a PEM certificate chain, leaf first"
KEYFILE_ACCEPTED = "a PEM file with the certificate's unencrypted private key"

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


def check_tls_files(certfile: object, keyfile: object) -> None:
    """``certfile`` holds certificates, ``keyfile`` a private key, and they match."""
    read_pem_file("certfile", certfile, "certificate", CERTFILE_ACCEPTED)
    read_pem_file("keyfile", keyfile, "private key", KEYFILE_ACCEPTED)
    assert isinstance(certfile, str | os.PathLike) and isinstance(keyfile, str | os.PathLike)
    where = f"certfile={os.fspath(certfile)!r}, keyfile={os.fspath(keyfile)!r}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            certfile, keyfile, password=lambda: b""
        )
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"{where}: the private key is not the certificate's key "
                f"({CERTFILE_ACCEPTED}, and {KEYFILE_ACCEPTED})"
            ) from None
        raise ValueError(
            f"{where}: cannot be loaded: {error.reason or error} "
            f"({CERTFILE_ACCEPTED}, and {KEYFILE_ACCEPTED})"
        ) from None


def read_ca_file(ca_file: object, name: str = "ca_file") -> bytes:
    """The PEM bytes of a CA file, checked to hold certificates that parse."""
    data = read_pem_file(name, ca_file, "certificate", CA_FILE_ACCEPTED)
    assert isinstance(ca_file, str | os.PathLike)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=data.decode("ascii", errors="replace")
        )
    except ssl.SSLError as error:
        raise ValueError(
            f"{name}={os.fspath(ca_file)!r}: its certificates do not parse: "
            f"{error.reason or error} ({CA_FILE_ACCEPTED})"
        ) from None
    return data


def system_ca_bundle() -> str | None:
    """The system's CA bundle file (what OpenSSL and qh3 trust by default), if any."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class CertificatePair:
    """A server's certificate chain and key, PEM bytes; ``generation`` counts reloads."""

    chain: bytes
    key: bytes
    generation: int


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS setting, applied the same way by HTTP/2 and HTTP/3.

    ``ca_file`` None means the system CAs (``system_ca_bundle``). ``certfile``
    and ``keyfile`` are the client certificate (mTLS). Server certificates are
    verified against ``server_name``, or the endpoint's address when it is
    None. ``skip_verify`` (HTTP/3 only) verifies nothing.
    """

    ca_file: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name: str | None = None
    skip_verify: bool = False

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        """HTTP/2 credentials: the same CAs and client certificate as HTTP/3."""
        ca_file = self.ca_file or system_ca_bundle()
        roots = None if ca_file is None else _read(ca_file)  # None: grpc's own roots
        key = None if self.keyfile is None else _read(self.keyfile)
        chain = None if self.certfile is None else _read(self.certfile)
        return grpc.ssl_channel_credentials(roots, key, chain)

    def grpc_channel_options(self) -> tuple[tuple[str, Any], ...]:
        """The name grpc verifies certificates against, when it is not the address."""
        if self.server_name is None:
            return ()
        return (("grpc.ssl_target_name_override", self.server_name),)


_Signature = tuple[tuple[int, int, int], ...]
"""Inode, modification time and size of each file."""

_T = TypeVar("_T")


class FileChanges:
    """Certificate files that may be renewed: when they changed, and reading them anew.

    A state of the files is their ``stat`` (inode, modification time, size): it
    changes when a file is rewritten, or replaced the way kubelet updates a
    mounted Secret (an atomic swap of the ``..data`` symlink: a new inode).
    ``reload`` reads a new state only; a state that does not load is skipped
    with one warning (``warning % why`` on ``log``) and the caller keeps what it
    has until the files change again. Not thread-safe: one caller at a time.
    """

    def __init__(self, paths: Sequence[str], *, log: logging.Logger, warning: str) -> None:
        self.paths = tuple(paths)
        self._log = log
        self._warning = warning
        self._loaded: _Signature | None = None
        self._skipped: _Signature | None = None

    def first(self, load: Callable[[], _T]) -> _T:
        """``load()`` now, its errors raised; read again once if the files changed
        meanwhile."""
        for _ in range(2):
            before = self._state()
            result = load()
            if self._state() == before:
                self._loaded = before
                return result
        raise ValueError(f"{self.paths[0]!r}: kept changing while it was read")

    def reload(self, load: Callable[[], _T]) -> _T | None:
        """``load()`` if the files changed since the last load and load together, else
        None: unchanged, skipped (see the class), or changed while read (the next
        call reads them again)."""
        try:
            state = self._state()
        except OSError as error:
            self._skip((), f"cannot stat: {error}")  # () stands for "a file is missing"
            return None
        if state in (self._loaded, self._skipped):
            return None
        try:
            result = load()
            unchanged = self._state() == state
        except (OSError, ValueError) as error:
            self._skip(state, str(error))
            return None
        if not unchanged:
            return None
        self._loaded, self._skipped = state, None
        return result

    def _skip(self, state: _Signature, why: str) -> None:
        if state != self._skipped:  # once per state of the files
            self._log.warning(self._warning, why)
        self._skipped = state

    def _state(self) -> _Signature:
        stats = [os.stat(path) for path in self.paths]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
