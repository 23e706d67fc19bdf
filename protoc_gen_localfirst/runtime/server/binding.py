"""Pairing servicer objects with the services of a method table: ``bind_servicers``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from protoc_gen_localfirst.schema import ServiceInfo

__all__ = ["Binding", "Servicer", "bind_servicers", "misnamed_handlers"]

_LOG = logging.getLogger("protoc_gen_localfirst.server")


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
            misnamed = misnamed_handlers(service, servicer)
            hint = "".join(f"; rename {attr} to {handler}" for attr, handler in misnamed)
            raise TypeError(
                f"{_describe(servicer)} has none of the methods of {service.name} "
                f"({', '.join(handlers)}){hint}"
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


def _loose(name: str) -> str:
    return name.replace("_", "").lower()


def _implements(servicer: object, handler: str) -> bool:
    """Whether ``servicer`` has its own ``handler``, not a generated UNIMPLEMENTED default.

    Defaults are those of a generated servicer base (a class that sets
    ``SERVICE``) and those of a grpc ``_pb2_grpc`` servicer base.
    """
    if not hasattr(servicer, handler):
        return False
    for cls in type(servicer).__mro__:
        if handler in vars(cls):
            generated = "SERVICE" in vars(cls) and issubclass(cls, Servicer)
            return not (generated or cls.__module__.endswith("_pb2_grpc"))
    return True  # set on the instance


def misnamed_handlers(service: ServiceInfo, servicer: object) -> list[tuple[str, str]]:
    """``(attribute, handler name)`` for servicer methods named like an rpc it lacks.

    ``get_item``, ``getItem`` or ``Getitem`` for rpc ``GetItem`` (same letters
    once case and underscores are ignored): grpc looks up the rpc's exact name,
    so while ``GetItem`` is missing (or the generated default) the rpc answers
    UNIMPLEMENTED. Names starting with ``_`` are private helpers, not candidates.
    """
    wanted = {_loose(m.handler_name): m.handler_name for m in service.methods}
    found = []
    for attr in dir(servicer):
        handler = wanted.get(_loose(attr))
        if handler is None or attr == handler or attr.startswith("_"):
            continue
        if callable(getattr(servicer, attr, None)) and not _implements(servicer, handler):
            found.append((attr, handler))
    return found


def _warn_misnamed(binding: Binding) -> None:
    for attr, handler in misnamed_handlers(binding.service, binding.servicer):
        _LOG.warning(
            "%s.%s is not served: servicer methods are named exactly like the rpc, "
            "so rename it to %s (rpc %s/%s answers UNIMPLEMENTED until then)",
            _describe(binding.servicer),
            attr,
            handler,
            binding.service.name,
            handler,
        )


def bind_servicers(services: Sequence[ServiceInfo], servicers: Sequence[object]) -> list[Binding]:
    """Pair each servicer with the one of ``services`` it implements.

    Rules, in order: a subclass of a generated servicer (class attribute
    ``SERVICE``) serves that service; with a single service in ``services``
    any servicer serves it (so a plain ``_pb2_grpc`` servicer works); else a
    class named ``<Service>Servicer`` in the servicer's MRO decides (grpc's
    naming). Anything else, or two servicers for one service, is a
    ``TypeError`` that says what was expected.

    A servicer method named like an rpc but not exactly (``get_item`` for
    ``GetItem``) while the rpc itself is not implemented is logged as a
    warning (``misnamed_handlers``), not refused: it may be a helper.
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
    for binding in bindings.values():
        _warn_misnamed(binding)
    return list(bindings.values())
