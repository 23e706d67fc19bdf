"""Names generated code must not define: what the runtime base classes and the
module template already use.

These are static lists, not looked up on the runtime classes, so that running
the plugin never imports the runtime (grpc, QUIC, asyncio). A test
(``tests/plugin/test_reserved.py``) compares them with the real
``AsyncClient``, ``SyncClient`` and ``Servicer``: a runtime change that adds a
public attribute fails it until the name is added here.

Changing a list can rename a generated method (an rpc ``Close`` is ``close_``
because the clients define ``close``), so entries are only ever added.
"""

from __future__ import annotations

_OBJECT = frozenset(dir(object))
"""``__init__``, ``__class__``, ...: every class has them (the set of the running Python)."""

CLIENT_PUBLIC = frozenset(
    {
        "close",
        "endpoint_order",
        "observers",
        "stats",
        "wait_for_endpoints",
        # set per instance in the client's __init__
        "balancer",
        "channels",
        "events",
        "node",
        "prober",
        "resolve_timeout",
        "retry_buffer_limit",
        "retry_policy",
        "source",
        "target",
        "throttle",
        "tls",
        "transport",
    }
)
"""Public attributes of the runtime's ``AsyncClient`` and ``SyncClient``, of the
classes and of their instances (an instance attribute would hide a method too).

Private ones need no list: a client method name never starts with ``_`` (an
rpc ``_Foo`` becomes ``rpc_foo``)."""

CLIENT_RESERVED = _OBJECT | CLIENT_PUBLIC

SERVICER_ATTRIBUTES = frozenset(
    {
        "__annotations__",
        "__dict__",
        "__module__",
        "__weakref__",
        # every class statement sets these on Python >= 3.13; reserved on every
        # version, since code generated on 3.11 may run on 3.13
        "__firstlineno__",
        "__static_attributes__",
    }
)
"""What the runtime's ``Servicer`` has beyond ``object``'s attributes. Handler
names are rpc names as written, so underscore names count here."""

SERVICER_ATTRIBUTES_SINCE_3_13 = frozenset({"__firstlineno__", "__static_attributes__"})

SERVICER_RESERVED = _OBJECT | SERVICER_ATTRIBUTES | {"SERVICE"}
"""``SERVICE`` is the class attribute every generated servicer sets."""

MODULE_RESERVED = frozenset(
    {
        "annotations",
        "warnings",
        "AsyncIterable",
        "AsyncIterator",
        "Iterable",
        "Iterator",
        "ClassVar",
        "Unpack",
        "_lf",
        "GENERATOR_VERSION",
        "SERVICES",
        "serve",
        "start_server",
        "__all__",
        "__doc__",
        "object",
        "float",
        "tuple",
        "DeprecationWarning",
    }
)
"""Top-level names the module template defines, imports or uses itself."""
