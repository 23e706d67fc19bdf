"""docs/typed-messages.md: a user's project passes mypy --strict with either message
stub generator, and the types are real (misuse is reported).

The project is examples/inventory/ (map fields, a nested message, an enum,
proto3 optional, a servicer and both clients written as a user would). Its
code is generated twice, with protoc's ``--pyi_out`` and with mypy-protobuf's
``--mypy_out``; mypy runs in the Python version of the interpreter running
the tests, so scripts/test.sh checks 3.11, 3.12 and 3.13.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .example import APP_OUTPUT, copy_example, mypy, protoc, run_app, tool_bin

MISUSE = """
from inventory.v1.inventory_localfirst import InventoryServiceClient
from inventory.v1.inventory_pb2 import GetItemRequest, Item, WatchRequest


async def misuse(client: InventoryServiceClient) -> None:
    Item(count="many")
    Item().labels["supplier"] = 1
    await client.get_item(WatchRequest())
    reply: Item = await client.get_item(GetItemRequest())
"""
MISUSE_LINES = [7, 8, 9, 10]

STRICT = ("--config-file=", "--strict", "--explicit-package-bases")
"""mypy --strict alone: no config file (the project's mypy.ini is for --pyi_out stubs)."""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("typed")
    project = copy_example(root)
    (project / "misuse.py").write_text(MISUSE)
    bin_dir = tool_bin(root / "bin")
    for stubs in ("pyi", "mypy"):
        protoc(project, project / f"gen-{stubs}", stubs, bin_dir)
    return project


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_mypy_protobuf_stubs_pass_strict(project: Path, cache: Path) -> None:
    result = mypy(project, project / "gen-mypy", cache, *STRICT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyi_stubs_pass_strict_with_the_override(project: Path, cache: Path) -> None:
    result = mypy(project, project / "gen-pyi", cache, "--config-file", "mypy.ini")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyi_stubs_fail_strict_without_it(project: Path, cache: Path) -> None:
    """Why the override exists: the errors are in protoc's stubs, none in the user's code.
    (If a protoc release fixes its stubs, this fails: drop the override from the docs.)"""
    result = mypy(project, project / "gen-pyi", cache, *STRICT)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert errors
    files = {line.split(":")[0].split("/", 1)[1] for line in errors}
    assert files == {"inventory/v1/inventory_pb2.pyi", "localfirst/options_pb2.pyi"}
    codes = {line.rsplit("[", 1)[1].rstrip("]") for line in errors}
    assert codes == {"type-arg", "misc"}, result.stdout
    assert 'Missing type arguments for generic type "Mapping"' in result.stdout
    assert "ClassVar can only be used for assignments in class body" in result.stdout


@pytest.mark.parametrize(
    ("stubs", "args"),
    [("pyi", ("--config-file", "mypy.ini")), ("mypy", STRICT)],
)
def test_misuse_is_reported(project: Path, cache: Path, stubs: str, args: tuple[str, ...]) -> None:
    result = mypy(project, project / f"gen-{stubs}", cache, *args, files=("misuse.py",))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert sorted({int(line.split(":")[1]) for line in errors}) == MISUSE_LINES, result.stdout
    assert '"get_item" of "InventoryServiceClient" has incompatible type "WatchRequest"' in (
        result.stdout
    )


@pytest.mark.parametrize("stubs", ["pyi", "mypy"])
def test_the_project_runs(project: Path, stubs: str) -> None:
    assert run_app(project, project / f"gen-{stubs}") == APP_OUTPUT
