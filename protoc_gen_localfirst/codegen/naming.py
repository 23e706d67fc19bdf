"""Python names for proto things: snake_case, keyword escaping, module aliases.

Every name the generator emits comes from here, so the rules live in one
place:

* ``snake_case`` turns rpc names into client method names
  (``SayHello`` -> ``say_hello``, ``GetHTTPStatus`` -> ``get_http_status``).
* ``Namespace`` hands out names inside one scope (a class body, the module's
  top level). A wanted name that is a Python keyword, is reserved in the scope
  (an attribute of the runtime base class, a fixed top-level name) or was
  already handed out gets ``_`` appended until it is free. Names are handed out
  in proto order, so the mapping is injective and deterministic: ``From`` ->
  ``from_``, and a later rpc ``From_`` -> ``from__``.
* ``module_name``/``module_alias`` copy grpc's python plugin
  (``src/compiler/python_generator_helpers.h``) exactly, so generated modules
  import ``_pb2`` modules under the same aliases as ``_pb2_grpc`` files do.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_UNDERSCORES = re.compile(r"_{2,}")


def snake_case(name: str) -> str:
    """``SayHello`` -> ``say_hello``; ``GetHTTPStatus`` -> ``get_http_status``.

    Runs of capitals are one word (``HTTPStatus`` -> ``http_status``); a digit
    ends a word only when a capital follows (``Get2FA`` -> ``get2_fa``). Existing
    underscores are kept but never doubled by the conversion, so ``Get_Foo``
    becomes ``get_foo`` and collides with ``GetFoo``: ``Namespace`` resolves that.
    Leading underscores are preserved.
    """
    stripped = name.lstrip("_")
    prefix = name[: len(name) - len(stripped)]
    words = _ACRONYM_BOUNDARY.sub(r"\1_\2", stripped)
    words = _WORD_BOUNDARY.sub(r"\1_\2", words)
    return prefix + _UNDERSCORES.sub("_", words).lower()


def upper_snake_case(name: str) -> str:
    """``SayHello`` -> ``SAY_HELLO`` (for module-level constants)."""
    return snake_case(name).upper()


def is_reserved_word(name: str) -> bool:
    """True for hard keywords (``from``, ``None``); soft keywords are fine names."""
    return keyword.iskeyword(name)


class Namespace:
    """Hands out unique, keyword-safe identifiers within one Python scope."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._taken: set[str] = set(reserved)

    def reserve(self, name: str) -> None:
        """Mark ``name`` as used without handing it out (fixed names, imports)."""
        self._taken.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self._taken

    def claim(self, wanted: str) -> str:
        """Return ``wanted``, or ``wanted`` + ``_``... if it is taken or a keyword."""
        if not wanted.isidentifier():
            raise ValueError(f"not a Python identifier: {wanted!r}")
        name = wanted
        while is_reserved_word(name) or name in self._taken:
            name += "_"
        self._taken.add(name)
        return name


def strip_proto(filename: str) -> str:
    """``foo/bar.proto`` -> ``foo/bar`` (grpc's ``StripProto``)."""
    for suffix in (".protodevel", ".proto"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def module_name(proto_file: str, suffix: str = "_pb2") -> str:
    """Dotted module of a proto file: ``foo/bar-baz.proto`` -> ``foo.bar_baz_pb2``."""
    base = strip_proto(proto_file).replace("-", "_").replace("/", ".")
    return base + suffix


def module_alias(proto_file: str) -> str:
    """grpc's alias: ``foo/bar.proto`` -> ``foo_dot_bar__pb2``.

    Dots cannot appear in a name, so each becomes ``_dot_``; underscores are
    doubled first so that ``a.b`` and ``a_dot_b`` cannot collide.
    """
    return module_name(proto_file).replace("_", "__").replace(".", "_dot_")


def import_statement(dotted: str, alias: str) -> str:
    """``import x as y`` or ``from a.b import x as y``, as grpc writes it."""
    package, _, leaf = dotted.rpartition(".")
    if not package:
        return f"import {dotted} as {alias}"
    return f"from {package} import {leaf} as {alias}"


def output_filename(proto_file: str, suffix: str = "_localfirst") -> str:
    """Where the generated module goes: next to ``_pb2.py`` (``foo/bar_localfirst.py``)."""
    return module_name(proto_file, suffix).replace(".", "/") + ".py"


def is_dotted_identifier(value: str) -> bool:
    """``a.b.c`` where every part is an identifier and not a keyword."""
    parts = value.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)
