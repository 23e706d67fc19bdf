"""A minimal authoritative DNS server for the demo (dnspython, UDP, one thread).

The demo must run without root and with pip alone, so it cannot start
dnsmasq; this answers A queries for the names it is given (TTL ``ttl``),
an empty NOERROR for their AAAA, and NXDOMAIN for anything else. It speaks
the real protocol on a real socket, so the client's DNS discovery does
exactly what it does against a cluster's DNS. The test suite uses Debian's
dnsmasq instead.
"""

from __future__ import annotations

import logging
import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

log = logging.getLogger("demo.dns")


class DemoDnsServer:
    """``records`` maps a name to its IPv4 addresses; ``set`` replaces them."""

    def __init__(self, records: dict[str, list[str]], *, ttl: int = 1) -> None:
        self.ttl = ttl
        self._records = {self._key(n): list(ips) for n, ips in records.items()}
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _key(name: str) -> str:
        return name.rstrip(".").lower()

    def target(self, name: str, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    def set(self, name: str, ips: list[str]) -> None:
        with self._lock:
            self._records[self._key(name)] = list(ips)

    def close(self) -> None:
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                wire, peer = self._socket.recvfrom(4096)
            except OSError:
                return  # closed
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException as error:
                log.debug("ignoring a malformed query from %s: %s", peer, error)
                continue  # no answer, as from any server
            self._socket.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        with self._lock:
            ips = self._records.get(self._key(question.name.to_text()))
        if ips is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A and ips:
            response.answer.append(
                dns.rrset.from_text_list(question.name, self.ttl, "IN", "A", ips)
            )
        return response
