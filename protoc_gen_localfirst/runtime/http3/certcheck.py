"""Why qh3 refused a server's certificate, in words a user can act on.

qh3 refuses every bad certificate with the same phrase ("the server
certificate is unacceptable"). After a refusal the client still holds the
certificate the server sent, so ``explain_refusal`` looks at it against what
the client was told (``server_name``, ``ca_file``) and says which check it
fails: expired, a name it does not carry, an issuer that is not trusted, a
self-signed certificate (which HTTP/3, verifying like a browser, never
accepts as its own CA).
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import time
from typing import Any

__all__ = ["explain_refusal", "names_of"]

_SAN = re.compile(rb"^(DNSName|IPAddress)\((.*)\)$")
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def names_of(certificate: Any) -> list[str]:
    """The DNS names and IP addresses in a qh3 certificate's SANs."""
    names: list[str] = []
    for san in certificate.get_subject_alt_names():
        match = _SAN.match(san)
        if match is None:
            continue
        kind, value = match.group(1), match.group(2).decode(errors="replace")
        if kind == b"IPAddress":
            try:
                value = str(ipaddress.ip_address(bytes.fromhex(value.replace(":", ""))))
            except ValueError:
                continue
        names.append(value)
    return names


def _matches(name: str, pattern: str) -> bool:
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(pattern)
    except ValueError:
        return name == pattern


def _subject(parts: list[tuple[str, str, bytes]]) -> str:
    return ", ".join(f"{short}={value.decode(errors='replace')}" for _, short, value in parts)


def _trusted(ca_file: str, certificate_class: Any) -> list[Any]:
    with open(ca_file, encoding="ascii", errors="replace") as file:
        blocks = _PEM_CERTIFICATE.findall(file.read())
    return [certificate_class(ssl.PEM_cert_to_DER_cert(block)) for block in blocks]


def explain_refusal(certificate: Any, *, server_name: str, ca_file: str | None) -> str:
    """Which check the server's ``certificate`` (qh3) fails; '' if none we can see."""
    now = time.time()
    subject = _subject(certificate.subject)
    if certificate.not_valid_after < now:
        return f"the server's certificate ({subject}) has expired"
    if certificate.not_valid_before > now:
        return f"the server's certificate ({subject}) is not valid yet"
    names = names_of(certificate)
    if not any(_matches(server_name, name) for name in names):
        carried = ", ".join(names) or "no DNS name or IP address"
        return (
            f"the server's certificate names {carried}, not {server_name!r}: pass "
            "server_name= with a name it carries (e.g. the Service's DNS name), or add "
            f"{server_name!r} to its SANs"
        )
    if ca_file is None:
        return ""
    trusted = _trusted(ca_file, type(certificate))
    if certificate.self_signed:
        inside = any(ca.public_bytes() == certificate.public_bytes() for ca in trusted)
        return (
            f"the server's certificate ({subject}) is self-signed"
            + (" (it is in ca_file)" if inside else ", and not in ca_file")
            + ": HTTP/3 verifies like a browser and never trusts a server certificate as "
            "its own CA. Make a CA, sign the server's certificate with it (CA:FALSE, "
            "serverAuth) and pass the CA as ca_file"
        )
    if not any(ca.subject == certificate.issuer for ca in trusted):
        return (
            f"the server's certificate is signed by {_subject(certificate.issuer)}, which "
            f"is not in ca_file={ca_file!r}"
        )
    return (
        "the server's certificate is signed by a CA in ca_file and names "
        f"{server_name!r}; HTTP/3 also needs it to be a leaf (CA:FALSE) for server "
        "use (extended key usage serverAuth, if it lists usages)"
    )
