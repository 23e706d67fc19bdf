"""The dnsmasq harness itself (others build on it)."""

from __future__ import annotations

import shutil

import pytest

from tests.discovery.dns.conftest import DnsmasqFactory
from tests.support.dnsmasq import Dnsmasq, DnsmasqError, find_dnsmasq


def test_records_reload_and_restart_on_the_same_port(dnsmasq: DnsmasqFactory) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41", "::1"]}, exists=["empty.test"])
    assert (
        server.target("greeter.test", 50051) == f"dns://127.0.0.1:{server.port}/greeter.test:50051"
    )
    assert server.answer("greeter.test") == {"127.0.0.41", "::1"}
    assert server.answer("empty.test") == set()
    server.set_records({"greeter.test": ["127.0.0.42"], "other.test": ["127.0.0.43"]})
    assert server.answer("greeter.test") == {"127.0.0.42"}  # set_records waited for it
    assert server.answer("other.test") == {"127.0.0.43"}
    port = server.port
    server.stop()
    assert not server.running
    server.start()
    assert server.port == port
    assert server.answer("other.test") == {"127.0.0.43"}
    assert server.query_count("other.test") >= 2


def test_bad_address_is_rejected(dnsmasq: DnsmasqFactory) -> None:
    server = dnsmasq({})
    with pytest.raises(ValueError):
        server.set_records({"greeter.test": ["127.0.0.300"]})


def test_missing_dnsmasq_fails_loudly_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(DnsmasqError, match="apt-get install -y dnsmasq-base"):
        find_dnsmasq()
    with pytest.raises(DnsmasqError, match="apt-get install -y dnsmasq-base"):
        Dnsmasq({})
