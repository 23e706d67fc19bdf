"""A real DNS server for tests: Debian's dnsmasq on 127.0.0.1:<free port>.

    with Dnsmasq({"greeter.test": ["127.0.0.41", "::1"]}, ttl=1) as dns_server:
        target = dns_server.target("greeter.test", 50051)  # dns://127.0.0.1:PORT/greeter.test:50051
        dns_server.set_records({"greeter.test": ["127.0.0.42"]})  # returns once dnsmasq answers it
        dns_server.stop(); dns_server.start()                      # server gone, back on the same port

Names under ``domain`` (default ``test``) that have no record answer NXDOMAIN,
a known name's missing family answers NOERROR with no records (``--local``),
and names outside ``domain`` answer REFUSED (no upstream servers). Addresses
come from an ``--addn-hosts`` file that :meth:`Dnsmasq.set_records` rewrites
before sending SIGHUP. ``exists=[...]`` names get a TXT record, so they exist
even with no address at all (an empty NOERROR answer: a service scaled to zero).

Every query is logged (``--log-queries``); :meth:`Dnsmasq.query_count` counts them.
Only the process this object started is ever signalled, by its PID.
If dnsmasq is not installed this raises (tests fail, they do not skip).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

INSTALL_HINT = "apt-get install -y dnsmasq-base  (Debian/Ubuntu; provides /usr/sbin/dnsmasq)"

Records = Mapping[str, Iterable[str]]


class DnsmasqError(RuntimeError):
    """dnsmasq is missing, did not start, or did not pick up records in time."""


def find_dnsmasq() -> str:
    """Path of the dnsmasq binary (also looked up in /usr/sbin for non-root PATHs)."""
    found = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if not found:
        raise DnsmasqError(f"dnsmasq is not installed; these tests need it: {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A port that is free on 127.0.0.1 for both UDP and TCP (as dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise DnsmasqError("no port free for both UDP and TCP on 127.0.0.1")


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class Dnsmasq:
    """One dnsmasq process serving ``records`` for ``domain`` with TTL ``ttl``."""

    def __init__(
        self,
        records: Records | None = None,
        *,
        domain: str = "test",
        ttl: int = 1,
        exists: Iterable[str] = (),
        port: int | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.binary = find_dnsmasq()
        self.domain = domain
        self.ttl = ttl
        self.exists = list(exists)
        self.extra_args = list(extra_args)
        self._fixed_port = port
        self.port = port or 0
        self.records: dict[str, list[str]] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="localfirst-dnsmasq-"))
        # dnsmasq drops privileges to user nobody: its files must be world-readable.
        self._dir.chmod(0o755)
        self.hosts_file = self._dir / "hosts"
        self.log_file = self._dir / "dnsmasq.log"
        self.pid_file = self._dir / "dnsmasq.pid"
        self._write_hosts(records or {})
        self.records = {name: list(ips) for name, ips in (records or {}).items()}
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], Dnsmasq] | None = None
        self._log_offset_at_start = 0

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start dnsmasq (again, on the same port after :meth:`stop`); return once it answers."""
        if self.running:
            return
        attempts = 1 if (self._fixed_port or self.port) else 5
        last = ""
        for _ in range(attempts):
            if not self.port:
                self.port = free_port()
            try:
                self._spawn()
                return
            except DnsmasqError as exc:
                last = str(exc)
                if self._fixed_port or "in use" not in last:
                    raise
                self.port = 0  # raced with someone for the port: pick another
        raise DnsmasqError(last)

    def _spawn(self) -> None:
        args = [
            self.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",  # ignore /etc/dnsmasq.conf of a full dnsmasq install
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={self.hosts_file}",
            f"--local=/{self.domain}/",
            f"--local-ttl={self.ttl}",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--pid-file={self.pid_file}",
            "--log-facility=-",
            "--log-queries",
            *(f"--txt-record={name},localfirst-test" for name in self.exists),
            *self.extra_args,
        ]
        self._log_offset_at_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        log = self.log_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        self._finalizer = weakref.finalize(self, _stop_process, self._proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DnsmasqError(
                    f"dnsmasq exited with status {self._proc.returncode}: {' '.join(args)}\n"
                    f"{self.log_since_start()}"
                )
            try:
                # Until dnsmasq binds, a query just goes unanswered: keep the timeout short.
                self._query("localfirst-probe." + self.domain, "A", timeout=0.05)
                return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.01)
        self.stop()
        raise DnsmasqError(f"dnsmasq did not answer on {self.server} within 10 s\n{self.log()}")

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM to our PID); the port stays reserved in ``self.port``."""
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- addresses -----------------------------------------------------------------------

    @property
    def server(self) -> str:
        """``127.0.0.1:PORT``, as a ``dns://`` target authority."""
        return f"127.0.0.1:{self.port}"

    def target(self, name: str, port: int) -> str:
        """``dns://127.0.0.1:PORT/name:port``."""
        return f"dns://{self.server}/{name}:{port}"

    # -- records -------------------------------------------------------------------------

    def _write_hosts(self, records: Records) -> None:
        lines = []
        for name, ips in records.items():
            for ip in ips:
                ipaddress.ip_address(ip)  # fail early on typos
                lines.append(f"{ip} {name}\n")
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)
        tmp.replace(self.hosts_file)

    def set_records(self, records: Records, *, timeout: float = 5.0) -> None:
        """Replace all address records, reload (SIGHUP), return once dnsmasq answers them.

        Names left out answer NXDOMAIN (or an empty NOERROR if in ``exists``).
        """
        new = {name: list(ips) for name, ips in records.items()}
        names = set(new) | set(self.records)
        self._write_hosts(new)
        self.records = new
        if not self.running:
            return  # picked up at the next start
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            wrong = {n: got for n in names if (got := self.answer(n)) != set(new.get(n, []))}
            if not wrong:
                return
            if time.monotonic() > deadline:
                raise DnsmasqError(
                    f"dnsmasq still answers {wrong} {timeout} s after SIGHUP; expected {new}"
                )
            time.sleep(0.02)

    def answer(self, name: str) -> set[str]:
        """The addresses dnsmasq answers for ``name`` now (A and AAAA; NXDOMAIN = none)."""
        found: set[str] = set()
        for rdtype in ("A", "AAAA"):
            response = self._query(name, rdtype, timeout=1.0)
            for rrset in response.answer:
                found.update(rdata.address for rdata in rrset)
        return found

    def _query(self, name: str, rdtype: str, *, timeout: float) -> dns.message.Message:
        request = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        return dns.query.udp(request, "127.0.0.1", port=self.port, timeout=timeout)

    # -- logs ----------------------------------------------------------------------------

    def log(self) -> str:
        """Everything dnsmasq logged (all starts)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        return self.log()[self._log_offset_at_start :]

    def query_count(self, name: str, rdtype: str = "A") -> int:
        """How many ``rdtype`` queries for ``name`` dnsmasq logged (includes the harness's own)."""
        needle = f"query[{rdtype}] {name} from "
        return sum(1 for line in self.log().splitlines() if needle in line)
