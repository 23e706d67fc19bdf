"""A proto importing localfirst/options.proto: its _pb2.py needs ``localfirst.options_pb2``.

The package ships that module (``shipped/localfirst``, a top-level namespace
package in the wheel); when the plugin's Python cannot import it and the
module is not being generated in the same protoc run, the plugin says so.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from protoc_gen_localfirst.codegen import plugin
from protoc_gen_localfirst.codegen.policy import DESCRIPTOR_SET, INCLUDE_DIR, OPTIONS_PROTO

from .conftest import GENERATED, REPO

SHIPPED = REPO / "shipped"
CART = """\
syntax = "proto3";
package shop;
import "localfirst/options.proto";
message Item { string id = 1; }
service Cart {
  rpc GetItem(Item) returns (Item) { option (localfirst.call_policy) = { max_attempts: 3 }; }
}
"""
WARNING = (
    "protoc-gen-localfirst: warning: shop/cart.proto imports localfirst/options.proto, so"
    " protoc's _pb2.py will run 'from localfirst import options_pb2', and this Python cannot"
    " import localfirst.options_pb2 (No module named 'localfirst'). Add localfirst/options.proto"
    " to this protoc command so --python_out writes localfirst/options_pb2.py too"
    ' (protoc -I"$(python -m protoc_gen_localfirst include-path)" ... localfirst/options.proto'
    " shop/cart.proto), or install a protoc-gen-localfirst that ships it where your code runs\n"
)
IMPORT_CART = "import shop.cart_pb2 as m; print(m.Item(id='x').id)"


def _user_tree(tmp_path: Path) -> tuple[Path, Path]:
    user, out = tmp_path / "user", tmp_path / "out"
    (user / "shop").mkdir(parents=True)
    (user / "shop/cart.proto").write_text(CART)
    out.mkdir()
    return user, out


def _protoc(
    user: Path, out: Path, pythonpath: str, *protos: str, include: Path = INCLUDE_DIR
) -> subprocess.CompletedProcess[str]:
    # -S: no site directory and no .pth files, so the plugin sees only ``pythonpath``
    # and the installed dependencies, not the editable install's shipped/ (which a
    # wheel install would have): an environment with or without the module at will.
    dependencies = sysconfig.get_paths()["purelib"]
    wrapper = out.parent / "protoc-gen-localfirst"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{pythonpath}{os.pathsep}{dependencies}"'
        f' exec "{sys.executable}" -S -m protoc_gen_localfirst "$@"\n'
    )
    wrapper.chmod(0o755)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{user}",
            f"-I{include}",
            f"--plugin=protoc-gen-localfirst={wrapper}",
            f"--python_out={out}",
            f"--localfirst_out={out}",
            *protos,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _import_cart(out: Path, *path: Path) -> subprocess.CompletedProcess[str]:
    """Import the user's module where only ``out``, ``path`` and the dependencies are (-S)."""
    dependencies = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [out, *path, dependencies]))}
    return subprocess.run(
        [sys.executable, "-S", "-c", IMPORT_CART],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plugin_warns_when_the_options_module_is_nowhere(tmp_path: Path) -> None:
    user, out = _user_tree(tmp_path)
    proc = _protoc(user, out, str(REPO), "shop/cart.proto")
    assert proc.stderr == WARNING
    # What the warning is about: the generated module does not import on its own.
    failed = _import_cart(out)
    assert failed.returncode != 0
    assert "No module named 'localfirst'" in failed.stderr


def test_generating_the_options_proto_too_is_quiet_and_imports(tmp_path: Path) -> None:
    user, out = _user_tree(tmp_path)
    proc = _protoc(user, out, str(REPO), OPTIONS_PROTO, "shop/cart.proto")
    assert proc.stderr == ""
    imported = _import_cart(out)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "x\n"


def test_the_shipped_module_makes_it_import(tmp_path: Path) -> None:
    user, out = _user_tree(tmp_path)
    proc = _protoc(user, out, f"{REPO}{os.pathsep}{SHIPPED}", "shop/cart.proto")
    assert proc.stderr == ""
    imported = _import_cart(out, SHIPPED)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "x\n"


def test_files_importing_options_only_counts_requested_files() -> None:
    request = plugin.plugin_pb2.CodeGeneratorRequest(file_to_generate=["a.proto", "b.proto"])
    request.proto_file.add(name=OPTIONS_PROTO)
    request.proto_file.add(name="a.proto", dependency=[OPTIONS_PROTO])
    request.proto_file.add(name="b.proto")
    request.proto_file.add(name="c.proto", dependency=[OPTIONS_PROTO])
    assert plugin.files_importing_options(request) == ["a.proto"]
    request.file_to_generate.append(OPTIONS_PROTO)
    assert plugin.files_importing_options(request) == []


def _serialized(path: Path) -> tuple[bytes, list[tuple[str, str, str]]]:
    text = path.read_text()
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            (arg,) = node.args
            if isinstance(arg, ast.Name):  # the shipped module names the bytes SERIALIZED
                (assign,) = [
                    n
                    for n in tree.body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == arg.id
                ]
                arg = assign.value
            data = ast.literal_eval(arg)
            assert isinstance(data, bytes)
            offsets = re.findall(
                r"_globals\[['\"](\w+)['\"]\]\._serialized_(start|end) ?= ?(\d+)", text
            )
            return data, offsets
    raise AssertionError(f"no AddSerializedFile in {path}")


def test_shipped_module_matches_protoc_output_and_the_descriptor_set() -> None:
    """Keep shipped/localfirst/options_pb2.py in step with options.proto."""
    shipped, shipped_offsets = _serialized(SHIPPED / "localfirst/options_pb2.py")
    generated, generated_offsets = _serialized(GENERATED / "localfirst/options_pb2.py")
    stale = "shipped/localfirst/options_pb2.py is stale: copy the bytes of generated/localfirst"
    assert shipped == generated, stale
    assert shipped_offsets == generated_offsets, stale
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    (options_file,) = [f for f in descriptor_set.file if f.name == OPTIONS_PROTO]
    # protoc leaves json_name out of the descriptors it embeds in Python code.
    for field in [
        *options_file.extension,
        *(f for m in options_file.message_type for f in m.field),
    ]:
        field.ClearField("json_name")
    assert descriptor_pb2.FileDescriptorProto.FromString(shipped) == options_file
    assert "runtime_version" not in (SHIPPED / "localfirst/options_pb2.py").read_text()
    assert not (SHIPPED / "localfirst/__init__.py").exists()  # a namespace package


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_ships_the_module(tmp_path: Path) -> None:
    """Build the sdist and the wheel from a copy of the project; install it alone; the user
    flow works (``python -m build`` builds the wheel from the sdist, so both must carry it)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("protoc_gen_localfirst", "templates", "protos", "shipped", "docs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(  # sdist, then the wheel from it
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        capture_output=True,
        timeout=600,
        check=True,
    )
    (wheel,) = dist.glob("protoc_gen_localfirst-*.whl")
    (sdist,) = dist.glob("protoc_gen_localfirst-*.tar.gz")
    with tarfile.open(sdist) as archive:
        assert any(n.endswith("/shipped/localfirst/options_pb2.py") for n in archive.getnames())
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "localfirst/options_pb2.py" in names
    assert "localfirst/__init__.py" not in names
    assert "protoc_gen_localfirst/codegen/plugin.py" in names

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        capture_output=True,
        timeout=300,
        check=True,
    )
    user, out = _user_tree(tmp_path)
    include = site / "protoc_gen_localfirst" / "include"
    proc = _protoc(user, out, str(site), "shop/cart.proto", include=include)
    assert proc.stderr == ""
    imported = _import_cart(out, site)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "x\n"
