"""The server's TLS files: checked before anything listens, re-read when they change.

``serve(certfile=, keyfile=, client_ca_file=)`` gives both listeners the same
certificate. ``ServerCertificates`` reads the files and re-reads them when
they change: cert-manager renews a certificate by rewriting its Secret, and
kubelet swaps the mounted files atomically (the ``..data`` symlink), so a
changed file is noticed by its ``stat``, checked at most once per
``check_interval`` when a new connection arrives. Each transport asks for the
current pair at every new connection (grpc through
``dynamic_ssl_server_credentials``' fetcher, HTTP/3 when it creates a QUIC
connection): connections already open keep their certificate, calls in
flight are never dropped.

A pair that does not load (a key that is not the certificate's, a file
half-written by a tool that does not write atomically) is ignored with one
warning; the previous pair stays in use until the files load together.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import grpc

from protoc_gen_localfirst.runtime.tls import (
    CertificatePair,
    FileSignature,
    check_tls_files,
    files_signature,
    read_ca_file,
)

__all__ = ["ServerCertificates", "check_client_ca_file", "check_tls_files"]

log = logging.getLogger("protoc_gen_localfirst.server")


DEFAULT_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the files' ``stat`` (only when connections arrive)."""


def check_client_ca_file(client_ca_file: object) -> bytes:
    """The PEM bytes of ``client_ca_file``, checked to hold certificates that parse."""
    return read_ca_file(client_ca_file, "client_ca_file")


class ServerCertificates:
    """``certfile``/``keyfile`` (and ``client_ca_file``), re-read when they change.

    Thread-safe: grpc asks from its own threads, HTTP/3 from the event loop.
    The files must load at construction (``ValueError`` naming the file and
    what is wrong); later changes that do not load are logged and skipped.
    """

    def __init__(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str],
        *,
        client_ca_file: str | os.PathLike[str] | None = None,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_tls_files(certfile, keyfile)
        self.certfile = os.fspath(certfile)
        self.keyfile = os.fspath(keyfile)
        self.client_ca = None if client_ca_file is None else check_client_ca_file(client_ca_file)
        self._check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        loaded = self._load()
        if loaded is None:  # changed while we read it: read again once
            loaded = self._load()
        if loaded is None:
            raise ValueError(f"certfile={self.certfile!r}: kept changing while it was read")
        self._signature, chain, key = loaded
        self._pair = CertificatePair(chain, key, 0)
        self._checked = clock()
        self._skipped: FileSignature | None = None

    def current(self) -> CertificatePair:
        """The pair new connections should use (re-read if the files changed)."""
        with self._lock:
            now = self._clock()
            if now - self._checked >= self._check_interval:
                self._checked = now
                self._reload_if_changed()
            return self._pair

    def _reload_if_changed(self) -> None:
        try:
            signature = self._stat()
        except OSError as error:
            self._skip((), f"cannot stat: {error}")  # () stands for "files missing"
            return
        if signature in (self._signature, self._skipped):
            return
        try:
            loaded = self._load()
        except (OSError, ValueError) as error:
            self._skip(signature, str(error))
            return
        if loaded is None:
            return  # changed while we read it: the next look reads it again
        self._signature, chain, key = loaded
        self._pair = CertificatePair(chain, key, self._pair.generation + 1)
        self._skipped = None
        log.info("TLS: reloaded %s and %s", self.certfile, self.keyfile)

    def _skip(self, signature: FileSignature, why: str) -> None:
        if signature != self._skipped:  # once per state of the files
            log.warning("TLS: keeping the previous certificate: %s", why)
        self._skipped = signature

    def _stat(self) -> FileSignature:
        return files_signature(self.certfile, self.keyfile)

    def _load(self) -> tuple[FileSignature, bytes, bytes] | None:
        """Checked files and their bytes, or None if they changed while being read."""
        before = self._stat()
        check_tls_files(self.certfile, self.keyfile)
        with open(self.certfile, "rb") as file:
            chain = file.read()
        with open(self.keyfile, "rb") as file:
            key = file.read()
        return (before, chain, key) if self._stat() == before else None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """HTTP/2 credentials that take the current pair at every new connection;
        with ``client_ca_file``, clients must present a certificate it signed."""
        served = [self.current()]

        def configuration(pair: CertificatePair) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(pair.key, pair.chain)], root_certificates=self.client_ca
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            pair = self.current()
            if pair.generation == served[0].generation:
                return None  # keep the configuration grpc has
            served[0] = pair
            return configuration(pair)

        return grpc.dynamic_ssl_server_credentials(
            configuration(served[0]),
            fetch,  # type: ignore[arg-type]  # grpc documents None as "no change"; its stubs do not
            require_client_authentication=self.client_ca is not None,
        )
