"""Pairing servicer objects with the services of a method table: ``bind_servicers``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from protoc_gen_localfirst.schema import ServiceInfo

__all__ = ["Binding", "Servicer", "bind_servicers"]


class Servicer:
    """Base of generated servicer classes; ``SERVICE`` names their service."""

    SERVICE: ClassVar[ServiceInfo]


@dataclass(frozen=True)
class Binding:
    """One servicer object serving one service."""

    service: ServiceInfo
    servicer: object


def _short_name(service: ServiceInfo) -> str:
    return service.name.rpartition(".")[2]


def _describe(servicer: object) -> str:
    cls = type(servicer)
    return f"{cls.__module__}.{cls.__qualname__}"


def _service_for(services: Sequence[ServiceInfo], servicer: object) -> ServiceInfo:
    names = ", ".join(s.name for s in services)
    if isinstance(servicer, type):
        raise TypeError(
            f"got the class {servicer.__qualname__}, not an instance; "
            f"pass {servicer.__qualname__}()"
        )
    declared = getattr(type(servicer), "SERVICE", None)
    if isinstance(declared, ServiceInfo):
        for service in services:
            if service.name == declared.name:
                return service
        raise TypeError(
            f"{_describe(servicer)} implements {declared.name}, which is not "
            f"among the services served here ({names})"
        )
    if len(services) == 1:
        (service,) = services
        handlers = [m.handler_name for m in service.methods]
        if handlers and not any(hasattr(servicer, h) for h in handlers):
            raise TypeError(
                f"{_describe(servicer)} has none of the methods of {service.name} "
                f"({', '.join(handlers)})"
            )
        return service
    for cls in type(servicer).__mro__:
        for service in services:
            if cls.__name__ == f"{_short_name(service)}Servicer":
                return service
    bases = ", ".join(f"{_short_name(s)}Servicer" for s in services)
    raise TypeError(
        f"cannot tell which service {_describe(servicer)} implements: it could be "
        f"any of {names}; subclass one of {bases}"
    )


def bind_servicers(services: Sequence[ServiceInfo], servicers: Sequence[object]) -> list[Binding]:
    """Pair each servicer with the one of ``services`` it implements.

    Rules, in order: a subclass of a generated servicer (class attribute
    ``SERVICE``) serves that service; with a single service in ``services``
    any servicer serves it (so a plain ``_pb2_grpc`` servicer works); else a
    class named ``<Service>Servicer`` in the servicer's MRO decides (grpc's
    naming). Anything else, or two servicers for one service, is a
    ``TypeError`` that says what was expected.
    """
    if not services:
        raise TypeError("no services to bind servicers to")
    if not servicers:
        names = ", ".join(s.name for s in services)
        raise TypeError(f"no servicers given; expected servicers for {names}")
    bindings: dict[str, Binding] = {}
    for servicer in servicers:
        service = _service_for(services, servicer)
        previous = bindings.get(service.name)
        if previous is not None:
            raise TypeError(
                f"two servicers for {service.name}: {_describe(previous.servicer)} "
                f"and {_describe(servicer)}"
            )
        bindings[service.name] = Binding(service, servicer)
    return list(bindings.values())
