"""``ServerCertificates``: the files are re-read when they change, at most once per
``check_interval``, and a pair that does not load is skipped with one warning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protoc_gen_localfirst.runtime.server.tls import ServerCertificates
from tests.support.certs import CertificateAuthority


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def files(tmp_path: Path) -> tuple[CertificateAuthority, Path, Path]:
    ca = CertificateAuthority()
    chain, key = ca.issue(["greeter.test"])
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    return ca, tmp_path / "cert.pem", tmp_path / "key.pem"


def replace(path: Path, data: bytes) -> None:
    staged = path.with_suffix(".new")
    staged.write_bytes(data)
    staged.replace(path)  # a new inode, as kubelet's symlink swap gives


def test_reloads_a_changed_pair_after_the_interval(
    files: tuple[CertificateAuthority, Path, Path],
) -> None:
    ca, cert, key = files
    clock = Clock()
    certificates = ServerCertificates(cert, key, check_interval=1.0, clock=clock)
    first = certificates.current()
    assert first.generation == 0 and first.chain == cert.read_bytes()
    chain, new_key = ca.issue(["greeter.test"])
    replace(cert, chain)
    replace(key, new_key)
    clock.now += 0.5
    assert certificates.current() is first  # not looked at yet
    clock.now += 0.5
    second = certificates.current()
    assert second.generation == 1 and second.chain == chain and second.key == new_key
    clock.now += 5
    assert certificates.current() is second  # unchanged files: nothing re-read


def test_a_half_rotated_pair_is_skipped_with_one_warning(
    files: tuple[CertificateAuthority, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    ca, cert, key = files
    clock = Clock()
    certificates = ServerCertificates(cert, key, clock=clock)
    first = certificates.current()
    chain, new_key = ca.issue(["greeter.test"])
    replace(cert, chain)  # the key is still the old one
    for _ in range(3):
        clock.now += 2
        assert certificates.current() is first
    warnings = [r for r in caplog.records if "keeping the previous certificate" in r.message]
    assert len(warnings) == 1
    assert "the private key is not the certificate's key" in warnings[0].message
    replace(key, new_key)
    clock.now += 2
    assert certificates.current().chain == chain


def test_files_gone_keep_the_loaded_pair(
    files: tuple[CertificateAuthority, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, cert, key = files
    clock = Clock()
    certificates = ServerCertificates(cert, key, clock=clock)
    first = certificates.current()
    os.unlink(cert)
    for _ in range(3):
        clock.now += 2
        assert certificates.current() is first
    assert caplog.text.count("cannot stat") == 1


def test_bad_files_fail_at_construction(
    files: tuple[CertificateAuthority, Path, Path], tmp_path: Path
) -> None:
    _, cert, key = files
    with pytest.raises(ValueError, match="the private key is not the certificate's key"):
        other = CertificateAuthority().issue(["x"])[1]
        (tmp_path / "other.key").write_bytes(other)
        ServerCertificates(cert, tmp_path / "other.key")
    with pytest.raises(ValueError, match="no such file"):
        ServerCertificates(tmp_path / "nope.pem", key)
