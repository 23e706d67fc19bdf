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
    FileChanges,
    check_tls_files,
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
        self._files = FileChanges(
            (self.certfile, self.keyfile),
            log=log,
            warning="TLS: keeping the previous certificate: %s",
        )
        self._pair = self._files.first(lambda: self._read(0))
        self._checked = clock()

    def current(self) -> CertificatePair:
        """The pair new connections should use (re-read if the files changed)."""
        with self._lock:
            now = self._clock()
            if now - self._checked >= self._check_interval:
                self._checked = now
                renewed = self._files.reload(lambda: self._read(self._pair.generation + 1))
                if renewed is not None:
                    self._pair = renewed
                    log.info("TLS: reloaded %s and %s", self.certfile, self.keyfile)
            return self._pair

    def _read(self, generation: int) -> CertificatePair:
        """The pair as the files hold it now, checked to load together."""
        check_tls_files(self.certfile, self.keyfile)
        with open(self.certfile, "rb") as file:
            chain = file.read()
        with open(self.keyfile, "rb") as file:
            key = file.read()
        return CertificatePair(chain, key, generation)

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
