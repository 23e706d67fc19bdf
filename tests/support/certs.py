"""TLS files for QUIC tests: a CA and a leaf certificate signed by it.

qh3 verifies strictly (as a browser would): the server certificate must be a
leaf (``CA:FALSE``, digitalSignature, serverAuth) with a SAN for the name or
IP the client dials, issued by a CA certificate (``CA:TRUE``, keyCertSign)
that the client trusts. A self-signed leaf is refused. So::

    files = make_tls_files(directory)          # -> TlsFiles(ca, cert, key)
    files = make_tls_files(directory, hosts=["127.0.0.5", "greeter.test"])

writes ``ca.pem``, ``cert.pem`` (leaf, then the CA: a full chain) and
``key.pem`` (leaf key, unencrypted PKCS#8). The default SANs are DNS
``localhost``, IPs ``127.0.0.1`` .. ``127.0.0.99`` and ``::1``.

Session fixture for tests: in a conftest, ``from tests.support.certs import
tls_files  # noqa: F401`` and request ``tls_files`` (a ``TlsFiles``).
EC P-256 keys keep generation fast (a few ms).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_HOSTS",
    "CertificateAuthority",
    "TlsFiles",
    "make_tls_files",
    "self_signed_leaf",
    "tls_files",
]

DEFAULT_HOSTS: tuple[str, ...] = (
    "localhost",
    *(f"127.0.0.{i}" for i in range(1, 100)),
    "::1",
)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files."""

    ca: Path
    """The CA certificate: what clients trust (``--cacert``, ``cafile``)."""
    cert: Path
    """The server's certificate chain (leaf first, then the CA)."""
    key: Path
    """The server's private key."""


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A test CA (``CA:TRUE``) that issues leaves: server certificates (serverAuth,
    SANs for ``hosts``) and client certificates (clientAuth), as PEM bytes."""

    def __init__(self, name: str = "localfirst test CA") -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.not_before = now - datetime.timedelta(hours=1)
        self.not_after = now + datetime.timedelta(days=30)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, hosts: Iterable[str] = (), *, client: bool = False, common_name: str = "localhost"
    ) -> tuple[bytes, bytes]:
        """(chain, key) PEM bytes of a new leaf; the chain is the leaf, then this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        hosts = list(hosts)
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        leaf = builder.sign(self.key, hashes.SHA256())
        return leaf.public_bytes(serialization.Encoding.PEM) + self.pem, _pem_key(key)


def self_signed_leaf(hosts: Iterable[str]) -> tuple[bytes, bytes]:
    """(certificate, key) PEM bytes of a self-signed server certificate (CA:FALSE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_tls_files(
    directory: Path | str,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    ca: CertificateAuthority | None = None,
) -> TlsFiles:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` into ``directory`` (a new CA unless given)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca = ca or CertificateAuthority()
    chain, key = ca.issue(hosts)
    files = TlsFiles(ca=out / "ca.pem", cert=out / "cert.pem", key=out / "key.pem")
    files.ca.write_bytes(ca.pem)
    files.cert.write_bytes(chain)
    files.key.write_bytes(key)
    files.key.chmod(0o600)
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a localhost/127.0.0.1-99/::1 leaf, generated once per session."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))
