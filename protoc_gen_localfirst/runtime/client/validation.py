"""Checks of the client's options, run when a client is built and when a call starts.

Every error names the option, the value given and what the option accepts,
e.g. ``ca_file='/nope.pem': no such file (a PEM file of CA certificates)``:
``TypeError`` for a value of the wrong type, ``ValueError`` for one out of
range, a file that cannot be used, or an option that the chosen transport
would ignore. ``RetryPolicy``, ``RetryThrottling``, ``LocalityPolicy`` and
``H3Options`` check their own fields when they are built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import grpc

from protoc_gen_localfirst.runtime.client.balancer import EjectionPolicy
from protoc_gen_localfirst.runtime.client.load import LocalityPolicy
from protoc_gen_localfirst.runtime.client.policy import RetryPolicy
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottling
from protoc_gen_localfirst.runtime.client.tls import check_tls_options
from protoc_gen_localfirst.runtime.discovery import DnsOptions, EndpointSource, KubernetesOptions
from protoc_gen_localfirst.runtime.http3.options import H3Options, require_quic_library

__all__ = [
    "check_call_options",
    "check_channel_options",
    "check_client_options",
    "check_interceptors",
    "check_timeout",
    "check_transport_type",
]

_T = TypeVar("_T")

_TIMEOUT_ACCEPTED = "seconds, a finite number > 0, or None for no deadline"

_FLAG_OPTIONS = frozenset(
    {
        "grpc.enable_retries",
        "grpc.enable_channelz",
        "grpc.enable_http_proxy",
        "grpc.http2.bdp_probe",
        "grpc.keepalive_permit_without_calls",
        "grpc.service_config_disable_resolution",
        "grpc.so_reuseport",
        "grpc.use_local_subchannel_pool",
    }
)
"""grpc channel arguments that are integers used as flags: an int or a bool."""

_INT_OPTIONS = frozenset(
    {
        "grpc.http2.max_pings_without_data",
        "grpc.http2.max_ping_strikes",
        "grpc.max_concurrent_streams",
        "grpc.max_channel_trace_event_memory_per_node",
    }
)
_INT_SUFFIXES = ("_ms", "_length", "_size", "_bytes")
"""grpc channel arguments grpc core reads as integers: these names, and names with these endings."""

_UNLIMITED_OPTIONS = frozenset({"grpc.max_receive_message_length", "grpc.max_send_message_length"})
"""Integer channel arguments where -1 means no limit."""

_STR_OPTIONS = frozenset(
    {
        "grpc.default_authority",
        "grpc.http_proxy",
        "grpc.lb_policy_name",
        "grpc.optimization_target",
        "grpc.primary_user_agent",
        "grpc.secondary_user_agent",
        "grpc.service_config",
        "grpc.ssl_target_name_override",
    }
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_type(name: str, value: object, types: tuple[type, ...], accepted: str) -> None:
    if not isinstance(value, types):
        raise TypeError(f"{name}={value!r}: not {accepted}")


def _check_optional(name: str, value: object, cls: type, accepted: str = "") -> None:
    if value is not None and not isinstance(value, cls):
        raise TypeError(
            f"{name}={value!r}: not a {cls.__name__} ({accepted or cls.__name__}(...) or None)"
        )


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r}: not a bool (True or False)")


def _range_problem(value: float, *, zero: bool) -> str | None:
    """What is wrong with a number of seconds (None: nothing)."""
    if not math.isfinite(value):
        return "not a finite number"
    if value < 0 or (value == 0 and not zero):
        return "negative" if value < 0 else "zero"
    return None


def _check_seconds(name: str, value: object, accepted: str, *, zero: bool = False) -> None:
    """A finite number of seconds > 0 (>= 0 with ``zero``); bools and strings are refused."""
    if not _is_number(value):
        raise TypeError(f"{name}={value!r}: not a number ({accepted})")
    assert isinstance(value, int | float)
    problem = _range_problem(value, zero=zero)
    if problem:
        raise ValueError(f"{name}={value!r}: {problem} ({accepted})")


def check_timeout(timeout: object) -> None:
    """A call's ``timeout``: None, or a finite number of seconds > 0."""
    if timeout is not None:
        _check_seconds("timeout", timeout, _TIMEOUT_ACCEPTED)


def check_call_options(options: Mapping[str, Any]) -> None:
    """What a call was given: ``timeout`` and ``retry`` (``core.CallOptions``)."""
    timeout = options.get("timeout")
    if options.get("retry") is None and (
        timeout is None or (type(timeout) in (float, int) and 0 < timeout < math.inf)
    ):
        return  # the common case, checked at once (every call comes here)
    check_timeout(timeout)
    _check_optional("retry", options.get("retry"), RetryPolicy)


def check_transport_type(transport: _T) -> _T:
    """``transport`` must be a string before it is looked up among the supported ones."""
    if not isinstance(transport, str):
        raise TypeError(f"transport={transport!r}: not a str ('h2', 'h3' or 'auto')")
    return transport


def check_channel_options(channel_options: object) -> None:
    """grpc channel arguments: ``(name, value)`` pairs (or a mapping), values of grpc's types.

    grpc core reads most arguments as integers and silently ignores (or, on
    HTTP/3, we would fail on) a value of another type, so integer arguments
    must be ints: message lengths >= -1 (-1 = unlimited), the others >= 0.
    """
    accepted = "(name, value) pairs of grpc channel arguments, e.g. [('grpc.max_receive_message_length', 8388608)]"
    if isinstance(channel_options, str | bytes) or not isinstance(
        channel_options, Iterable | Mapping
    ):
        raise TypeError(f"channel_options={channel_options!r}: not {accepted}")
    items = (
        list(channel_options.items())
        if isinstance(channel_options, Mapping)
        else list(channel_options)
    )
    for index, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError(
                f"channel_options[{index}]={item!r}: not a (name, value) pair ({accepted})"
            )
        _check_channel_option(*item)


def _check_channel_option(name: str, value: object) -> None:
    where = f"channel_options[{name!r}]={value!r}"
    if name in _STR_OPTIONS:
        if not isinstance(value, str):
            raise TypeError(f"{where}: not a str (grpc reads this argument as a string)")
        return
    flag = name in _FLAG_OPTIONS
    integer = name in _INT_OPTIONS or name in _UNLIMITED_OPTIONS or name.endswith(_INT_SUFFIXES)
    if not (flag or integer):
        if value is None:
            raise TypeError(f"{where}: not a value (an int, a str or bytes)")
        return
    if flag:
        if not isinstance(value, int):
            raise TypeError(f"{where}: not an int or bool (a flag: 0 or 1)")
        return
    minimum = -1 if name in _UNLIMITED_OPTIONS else 0
    accepted = f"an int >= {minimum}" + (", -1 = unlimited" if minimum < 0 else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: not an int ({accepted})")
    if value < minimum:
        raise ValueError(f"{where}: less than {minimum} ({accepted})")


def check_interceptors(
    interceptors: object, types: tuple[type, ...], accepted: str
) -> tuple[Any, ...]:
    """``interceptors``: a list of client interceptors of ``types`` (the client's kind)."""
    if isinstance(interceptors, str | bytes) or not isinstance(interceptors, Iterable):
        raise TypeError(f"interceptors={interceptors!r}: not a list ({accepted})")
    checked = tuple(interceptors)
    for index, interceptor in enumerate(checked):
        if not isinstance(interceptor, types):
            raise TypeError(f"interceptors[{index}]={interceptor!r}: not one of {accepted}")
    return checked


def check_client_options(*, transport: str, h3_available: bool, **given: object) -> None:
    """Every constructor option of ``AsyncClient``/``SyncClient`` (``transport`` already valid).

    ``given`` holds the constructor's keywords by name; ``h3_available`` is
    False for the blocking client (HTTP/2 only).
    """
    _check_objects(given)
    _check_values(given)
    check_channel_options(given["channel_options"])
    if transport == "h2" and given["h3_options"] is not None:
        how = (
            "transport='h3' or 'auto'; this client's transport is 'h2'"
            if h3_available
            else "AsyncClient with transport='h3' or 'auto'; this client is HTTP/2 only"
        )
        raise ValueError(f"h3_options={given['h3_options']!r}: only used by HTTP/3 ({how})")
    check_tls_options(transport, h3_available, given)
    if transport != "h2":
        require_quic_library("qh3", f"transport={transport!r}")


def _check_objects(given: dict[str, object]) -> None:
    """Options that must be objects of one type (or None)."""
    if given["source"] is None:
        _check_type("target", given["target"], (str,), "a str (e.g. 'dns:///NAME:PORT')")
    _check_optional("source", given["source"], EndpointSource, "an EndpointSource")
    for name in ("node", "zone"):
        value = given[name]
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name}={value!r}: not a str (a name, or None for the default)")
    _check_optional("retry", given["retry"], RetryPolicy)
    _check_optional("ejection", given["ejection"], EjectionPolicy)
    _check_optional("dns", given["dns"], DnsOptions)
    _check_optional("kubernetes", given["kubernetes"], KubernetesOptions)
    _check_optional("locality", given["locality"], LocalityPolicy)
    _check_optional("h3_options", given["h3_options"], H3Options)
    _check_optional(
        "credentials", given["credentials"], grpc.ChannelCredentials, "grpc.ssl_channel_credentials"
    )
    throttling = given["throttling"]
    if not isinstance(throttling, bool | RetryThrottling):
        raise TypeError(
            f"throttling={throttling!r}: not a RetryThrottling or bool "
            "(True: the default bucket, False: off, or RetryThrottling(...))"
        )
    observers = given["observers"]
    if isinstance(observers, str | bytes) or not isinstance(observers, Iterable):
        raise TypeError(
            f"observers={observers!r}: not a list of CallObserver (e.g. [LoggingObserver()])"
        )


def _check_values(given: dict[str, object]) -> None:
    """Flags, numbers and durations."""
    ejection = given["ejection"]
    if isinstance(ejection, EjectionPolicy):
        for field in ("base_time", "max_time"):
            _check_seconds(
                f"EjectionPolicy.{field}",
                getattr(ejection, field),
                "seconds, a finite number >= 0",
                zero=True,
            )
    _check_bool("probe_nodes", given["probe_nodes"])
    _check_bool("insecure_skip_verify", given["insecure_skip_verify"])
    limit = given["retry_buffer_limit"]
    limit_accepted = "bytes, an int >= 0"
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"retry_buffer_limit={limit!r}: not an int ({limit_accepted})")
    if limit < 0:
        raise ValueError(f"retry_buffer_limit={limit!r}: negative ({limit_accepted})")
    _check_seconds("resolve_timeout", given["resolve_timeout"], "seconds, a finite number > 0")
