"""Plugin options: parsing rules, and what a user sees from protoc on a bad option."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protoc_gen_localfirst.codegen.options import PluginOptionError, PluginOptions, parse_options

from .conftest import ProtocResult

GREETER = "greeter/v1/greeter.proto"


def test_empty_parameter_gives_defaults() -> None:
    assert parse_options("") == PluginOptions()
    assert parse_options(",, ,") == PluginOptions()
    defaults = PluginOptions()
    assert (defaults.async_client, defaults.sync_client, defaults.server) == (True, True, True)
    assert defaults.runtime_module == "protoc_gen_localfirst.runtime"


def test_values_are_parsed() -> None:
    options = parse_options("sync_client=false, server=true,runtime_module=vendored.lf.runtime")
    assert options == PluginOptions(
        sync_client=False, server=True, runtime_module="vendored.lf.runtime"
    )
    assert parse_options("async_client").async_client is True


@pytest.mark.parametrize(
    ("parameter", "fragments"),
    [
        ("bogus=1", ["unknown option 'bogus'", "async_client", "runtime_module", "server"]),
        ("sync_client=maybe", ["sync_client='maybe'", "'true' and 'false'"]),
        ("sync_client=True", ["sync_client='True'", "'true' and 'false'"]),
        ("server=", ["server=''", "'true' and 'false'"]),
        ("server=true,server=false", ["server is given more than once"]),
        ("runtime_module=not a module", ["runtime_module", "'not a module'", "dotted"]),
        ("runtime_module=a.class.b", ["runtime_module", "'a.class.b'"]),
        ("runtime_module", ["runtime_module: no value"]),
    ],
)
def test_bad_options_name_the_key(parameter: str, fragments: list[str]) -> None:
    with pytest.raises(PluginOptionError) as info:
        parse_options(parameter)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("opts", "fragment"),
    [
        (["bogus=1"], "unknown option 'bogus'"),
        (["sync_client=maybe"], "accepted values are 'true' and 'false'"),
        (["server=true", "server=false"], "option server is given more than once"),
    ],
)
def test_protoc_shows_option_errors(
    run_protoc: Callable[..., ProtocResult], opts: list[str], fragment: str
) -> None:
    result = run_protoc([GREETER], opts=opts, python_out=False)
    assert result.returncode != 0
    # protoc prefixes the plugin's error with the flag that produced it.
    assert "--localfirst_out: protoc-gen-localfirst: invalid --localfirst_opt:" in result.stderr
    assert fragment in result.stderr
    assert result.files() == {}


def test_empty_opt_is_accepted(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc([GREETER], opts=[""], python_out=False)
    assert result.returncode == 0, result.stderr
    assert list(result.files()) == ["greeter/v1/greeter_localfirst.py"]


def test_options_change_the_output(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc(
        [GREETER],
        opts=["sync_client=false,server=false", "runtime_module=vendored.lf"],
        python_out=False,
    )
    assert result.returncode == 0, result.stderr
    source = result.files()["greeter/v1/greeter_localfirst.py"].decode()
    assert "from vendored import lf as _lf\n" in source
    assert "class GreeterClient(_lf.AsyncClient):" in source
    assert "SyncClient" not in source
    assert "Servicer" not in source
    assert "async def serve" not in source
    assert "GREETER_SERVICE = _lf.ServiceInfo(" in source


def test_only_server(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc(
        [GREETER], opts=["async_client=false", "sync_client=false"], python_out=False
    )
    assert result.returncode == 0, result.stderr
    source = result.files()["greeter/v1/greeter_localfirst.py"].decode()
    assert "Client" not in source
    assert "import warnings" not in source  # only clients warn about deprecated rpcs
    assert "class GreeterServicer(_lf.Servicer):" in source
