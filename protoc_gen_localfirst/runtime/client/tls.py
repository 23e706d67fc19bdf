"""The client's TLS keywords: checked together, then made into one ``ClientTls``.

``ca_file``, ``certfile``/``keyfile`` or ``tls=True`` turn TLS on for both
transports; ``credentials`` (grpc's own, HTTP/2 only) is the alternative.
The rules, each an error naming the keywords involved:

* ``credentials`` goes with none of the TLS keywords, and only with ``h2``:
  HTTP/3 cannot use grpc credentials.
* ``h3`` and ``auto`` need TLS on: QUIC is always TLS, and ``auto`` must not
  fall back from TLS to plaintext HTTP/2.
* ``insecure_skip_verify`` only with ``h3`` (grpc cannot skip verification,
  so ``auto``'s HTTP/2 would verify what HTTP/3 does not), never with ``ca_file``.
* ``certfile`` and ``keyfile`` come together; ``server_name`` and
  ``tls=False`` are refused where they would mean nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from protoc_gen_localfirst.runtime.tls import ClientTls, check_tls_files, read_ca_file

__all__ = ["check_tls_options", "client_tls"]


def _tls_on(given: Mapping[str, object]) -> bool:
    return bool(
        given["tls"]
        or given["ca_file"] is not None
        or given["certfile"] is not None
        or given["insecure_skip_verify"] is True
    )


def check_tls_options(transport: str, h3_available: bool, given: Mapping[str, object]) -> None:
    """The TLS keywords of a client (see the module docstring); files are read now."""
    _check_types(given)
    credentials = given["credentials"]
    keywords = [
        name
        for name in ("ca_file", "certfile", "keyfile", "server_name", "insecure_skip_verify")
        if given[name] not in (None, False)
    ] + (["tls"] if given["tls"] is not None else [])
    if credentials is not None:
        _check_credentials(transport, credentials, keywords)
        return
    if given["tls"] is False and keywords != ["tls"]:
        raise ValueError(
            f"tls=False with {', '.join(k for k in keywords if k != 'tls')}: "
            "those keywords turn TLS on (drop tls=False, or them)"
        )
    if (given["certfile"] is None) != (given["keyfile"] is None):
        present, missing = (
            ("certfile", "keyfile") if given["certfile"] is not None else ("keyfile", "certfile")
        )
        raise ValueError(
            f"{present}={given[present]!r} needs {missing} too "
            "(the client certificate and its private key, for mTLS)"
        )
    if transport != "h2" and not _tls_on(given):
        raise ValueError(
            f"transport={transport!r} needs TLS: QUIC is always TLS"
            + (
                ", and 'auto' never falls back from TLS to plaintext HTTP/2"
                if transport == "auto"
                else ""
            )
            + ". Pass ca_file= (the CAs that sign the servers' certificates), "
            "or tls=True for the system CAs"
        )
    if given["server_name"] is not None and not _tls_on(given):
        raise ValueError(
            f"server_name={given['server_name']!r}: only used with TLS "
            "(pass ca_file= or tls=True too)"
        )
    _check_skip_verify(transport, h3_available, given)
    _check_files(given)


def _check_types(given: Mapping[str, object]) -> None:
    tls = given["tls"]
    if tls is not None and not isinstance(tls, bool):
        raise TypeError(f"tls={tls!r}: not a bool or None (True: TLS with the system CAs)")
    name = given["server_name"]
    if name is not None and (not isinstance(name, str) or not name or name != name.strip()):
        raise TypeError(
            f"server_name={name!r}: not a host name (a non-empty str such as "
            "'greeter.default.svc.cluster.local', or None for the default)"
        )


def _check_credentials(transport: str, credentials: object, keywords: list[str]) -> None:
    if keywords:
        raise ValueError(
            f"credentials={credentials!r} with {', '.join(keywords)}: pass one or the other "
            "(ca_file/certfile/keyfile/server_name/tls are one TLS setting for HTTP/2 and "
            "HTTP/3; credentials are grpc's own, HTTP/2 only)"
        )
    if transport != "h2":
        raise ValueError(
            f"credentials={credentials!r} with transport={transport!r}: grpc credentials "
            "are HTTP/2 only; use ca_file= (and certfile=/keyfile=), which both transports use"
        )


def _check_skip_verify(transport: str, h3_available: bool, given: Mapping[str, object]) -> None:
    if given["insecure_skip_verify"] is not True:
        return
    if given["ca_file"] is not None:
        raise ValueError(
            f"ca_file={given['ca_file']!r} with insecure_skip_verify=True: skipping "
            "verification would ignore ca_file (pass one or the other)"
        )
    if transport != "h3":
        how = "" if h3_available else "; this client is HTTP/2 only"
        raise ValueError(
            f"insecure_skip_verify=True with transport={transport!r}: only HTTP/3 can skip "
            f"verification (transport='h3'{how}); grpc's HTTP/2 always verifies"
        )


def _check_files(given: Mapping[str, object]) -> None:
    if given["ca_file"] is not None:
        read_ca_file(given["ca_file"])
    if given["certfile"] is not None:
        check_tls_files(given["certfile"], given["keyfile"])


def client_tls(given: Mapping[str, object], default_server_name: str | None) -> ClientTls | None:
    """The checked keywords as one ``ClientTls`` (None: TLS is off)."""
    if given["credentials"] is not None or not _tls_on(given):
        return None
    server_name = given["server_name"]
    return ClientTls(
        ca_file=_path(given["ca_file"]),
        certfile=_path(given["certfile"]),
        keyfile=_path(given["keyfile"]),
        server_name=server_name if isinstance(server_name, str) else default_server_name,
        skip_verify=given["insecure_skip_verify"] is True,
    )


def _path(value: object) -> str | None:
    if value is None:
        return None
    assert isinstance(value, str | os.PathLike)
    return os.fspath(value)
