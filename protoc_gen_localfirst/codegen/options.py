"""Plugin options: ``--localfirst_opt=key=value,key=value``.

protoc joins every ``--localfirst_opt`` with commas into
``CodeGeneratorRequest.parameter``; ``parse_options`` turns that string into a
frozen ``PluginOptions``. Unknown keys, repeated keys and bad values are
errors (a typo must not silently fall back to a default); the message names
the key and what is accepted.

====================  ===================================  ===========================================
key                   values (default first)               effect
====================  ===================================  ===========================================
``async_client``      ``true`` | ``false``                 emit ``<Service>Client`` (asyncio)
``sync_client``       ``true`` | ``false``                 emit ``<Service>SyncClient`` (blocking)
``server``            ``true`` | ``false``                 emit ``<Service>Servicer``, ``serve``,
                                                           ``start_server``
``runtime_module``    ``protoc_gen_localfirst.runtime`` |  module generated code imports as ``_lf``
                      any dotted module name               (a vendored or forked runtime)
====================  ===================================  ===========================================

A boolean key given without a value (``--localfirst_opt=server``) means ``true``.
The method table (``<SERVICE>_SERVICE``, ``SERVICES``) is always emitted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protoc_gen_localfirst.codegen.naming import is_dotted_identifier

DEFAULT_RUNTIME_MODULE = "protoc_gen_localfirst.runtime"


class PluginOptionError(ValueError):
    """A ``--localfirst_opt`` the plugin cannot accept; the message is for the user."""


@dataclass(frozen=True)
class PluginOptions:
    """Parsed plugin options; see the module docstring for the table."""

    async_client: bool = True
    sync_client: bool = True
    server: bool = True
    runtime_module: str = DEFAULT_RUNTIME_MODULE


def _parse_bool(key: str, value: str | None) -> bool:
    if value is None or value == "true":
        return True
    if value == "false":
        return False
    raise PluginOptionError(f"option {key}={value!r}: accepted values are 'true' and 'false'")


def _parse_module(key: str, value: str | None) -> str:
    if value is None or not is_dotted_identifier(value):
        shown = "no value" if value is None else repr(value)
        raise PluginOptionError(
            f"option {key}: {shown} is not a dotted Python module name "
            f"(e.g. {DEFAULT_RUNTIME_MODULE})"
        )
    return value


def _parser_for(field: dataclasses.Field[Any]) -> Callable[[str, str | None], object]:
    if field.type in (bool, "bool"):
        return _parse_bool
    return _parse_module


_FIELDS = {field.name: field for field in dataclasses.fields(PluginOptions)}


def accepted_keys() -> list[str]:
    return sorted(_FIELDS)


def parse_options(parameter: str) -> PluginOptions:
    """Parse protoc's ``parameter`` string; raise ``PluginOptionError`` on bad input.

    Empty items (``a=b,,c=d`` or an empty parameter) are ignored, because protoc
    produces them when an ``--localfirst_opt`` is empty.
    """
    values: dict[str, object] = {}
    for item in parameter.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        value = raw.strip() if sep else None
        field = _FIELDS.get(key)
        if field is None:
            raise PluginOptionError(
                f"unknown option {key!r} in {item!r}; "
                f"accepted options are: {', '.join(accepted_keys())}"
            )
        if key in values:
            raise PluginOptionError(f"option {key} is given more than once")
        values[key] = _parser_for(field)(key, value)
    return PluginOptions(**values)  # type: ignore[arg-type]
