"""``static:///`` targets: a fixed endpoint set."""

from __future__ import annotations

from protoc_gen_localfirst.runtime.discovery.endpoints import Target, parse_static
from protoc_gen_localfirst.runtime.discovery.source import EndpointSource, Listener


class StaticSource(EndpointSource):
    """``static:///IP:PORT@NODE[/ZONE],...``: a fixed set, pushed once."""

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.endpoints = parse_static(target)

    def start(self, listener: Listener) -> None:
        listener(self.endpoints)

    def close(self) -> None:
        pass
