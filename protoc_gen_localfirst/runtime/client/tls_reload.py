"""A client's TLS files, re-read when they change, for its HTTP/2 channels.

grpc Python bakes a channel's credentials in when the channel is made and has
no reloading channel credentials, so a long-lived client would keep
presenting a client certificate cert-manager has since renewed (until it
expires and every server refuses it), or keep trusting a CA that was
replaced. ``TlsFileWatcher`` looks at the files' ``stat`` every
``check_interval`` seconds in a thread of its own (nothing on the call path);
when they changed and load together, it hands new credentials to the client,
which replaces its channels: new calls use new connections, calls in flight
finish on the old ones (``ChannelPool.renew``). HTTP/3 reads the files at
every new connection by itself.

Files that do not load (half-written by a tool that does not write
atomically, a key that is not the certificate's) are skipped with one
warning; the channels keep the last good credentials.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from protoc_gen_localfirst.runtime.tls import (
    ClientTls,
    FileChanges,
    check_tls_files,
    read_ca_file,
)

__all__ = ["CHECK_INTERVAL", "FILES_SKIPPED_WARNING", "TlsFileWatcher"]

log = logging.getLogger("protoc_gen_localfirst.client")

CHECK_INTERVAL = 5.0
"""Seconds between two looks at the files (kubelet itself updates a mounted Secret
about once a minute; cert-manager renews well before expiry)."""


FILES_SKIPPED_WARNING = "TLS: keeping the client's previous certificates: %s"
"""Logged once per state of the files that do not load (``%s``: why)."""


class TlsFileWatcher:
    """Watches ``tls``'s files; ``on_change(credentials)`` when they changed and load."""

    def __init__(
        self,
        tls: ClientTls,
        on_change: Callable[[grpc.ChannelCredentials], None],
        *,
        check_interval: float | None = None,
    ) -> None:
        self.tls = tls
        paths = [p for p in (tls.ca_file, tls.certfile, tls.keyfile) if p is not None]
        self._files = FileChanges(paths, log=log, warning=FILES_SKIPPED_WARNING)
        self._files.first(lambda: None)  # the state the client's credentials were read in
        self._on_change = on_change
        self._check_interval = CHECK_INTERVAL if check_interval is None else check_interval
        self.reloads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="localfirst-tls-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._check_interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the channels keep what they have
                log.exception("TLS: looking at %s failed", ", ".join(self._files.paths))

    def check(self) -> bool:
        """Reload if the files changed and load together; whether it did."""
        credentials = self._files.reload(self._credentials)
        if credentials is None:
            return False
        self._on_change(credentials)
        self.reloads += 1
        log.info("TLS: reloaded %s; new HTTP/2 connections use them", ", ".join(self._files.paths))
        return True

    def _credentials(self) -> grpc.ChannelCredentials:
        """The files checked (errors that name the file and what is wrong), then read."""
        if self.tls.ca_file is not None:
            read_ca_file(self.tls.ca_file)
        if self.tls.certfile is not None:
            check_tls_files(self.tls.certfile, self.tls.keyfile)
        return self.tls.grpc_credentials()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
