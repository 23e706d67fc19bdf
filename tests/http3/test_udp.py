"""QUIC sockets ask the kernel for big buffers, and say so when they get less."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from protoc_gen_localfirst.runtime.http3 import udp


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


def _kernel_max(direction: str) -> int:
    return int(Path(f"/proc/sys/net/core/{direction}mem_max").read_text())


def test_a_socket_gets_the_buffers_it_asks_for_within_the_kernel_limit(
    udp_socket: socket.socket,
) -> None:
    wanted = min(_kernel_max("r"), _kernel_max("w"), 1 << 20)
    default = udp_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    received, sent = udp.size_buffers(udp_socket, wanted)
    # Linux grants what was asked and reports twice that (its bookkeeping).
    assert received >= wanted and sent >= wanted
    assert received == udp_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert wanted <= default or received > default


def test_a_buffer_capped_by_the_kernel_is_logged_once_with_the_sysctl_to_raise(
    udp_socket: socket.socket, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(udp, "_warned", False)
    over = 4 * _kernel_max("r")
    with caplog.at_level(logging.INFO, logger="protoc_gen_localfirst.http3"):
        received, _ = udp.size_buffers(udp_socket, over)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
            udp.size_buffers(second, over)
    assert received < over
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, messages
    assert f"UDP receive buffer is {received} bytes, {over} asked" in messages[0]
    assert "raise net.core.rmem_max" in messages[0]
