"""docs/buf.md: the example project's buf.yaml and buf.gen.yaml, with the real buf.

examples/inventory/ keeps a copy of ``localfirst/options.proto`` in
``third_party/`` as a second module of its buf workspace (buf resolves
imports only inside the workspace and its dependencies; the package's copy
lives in site-packages). ``buf generate`` runs protoc's python and pyi
generators through ``python -m grpc_tools.protoc`` and our plugin from PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from .example import APP_OUTPUT, BUF, EXAMPLE, REPO, copy_example, mypy, protoc, run_app, tool_bin

OPTIONS = "localfirst/options.proto"
IGNORE = "// buf:lint:ignore PACKAGE_VERSION_SUFFIX\n"


def _buf(project: Path, *args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run `npm ci` in {REPO} (scripts/test.sh does)")
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = os.pathsep.join([str(path), env["PATH"]])
    env["BUF_CACHE_DIR"] = str(project.parent / "buf-cache")
    return subprocess.run(
        [str(BUF), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_vendored_options_proto_is_the_packages() -> None:
    vendored = (EXAMPLE / "third_party" / OPTIONS).read_bytes()
    assert vendored == (REPO / "protos" / OPTIONS).read_bytes()
    assert vendored == (REPO / "protoc_gen_localfirst/include" / OPTIONS).read_bytes()


def test_buf_lint_passes(tmp_path: Path) -> None:
    project = copy_example(tmp_path)
    result = _buf(project, "lint")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_options_proto_breaks_only_the_version_suffix_rule(tmp_path: Path) -> None:
    """Without its ignore comment, options.proto fails buf's default lint on the
    package name alone; with it, the default lint passes."""
    module = tmp_path / "module"
    (module / "localfirst").mkdir(parents=True)
    (module / "buf.yaml").write_text("version: v2\n")
    text = (REPO / "protos" / OPTIONS).read_text()
    assert text.count(IGNORE) == 1
    (module / OPTIONS).write_text(text)
    passed = _buf(module, "lint")
    assert (passed.returncode, passed.stdout) == (0, ""), passed.stdout + passed.stderr
    (module / OPTIONS).write_text(text.replace(IGNORE, ""))
    failed = _buf(module, "lint", "--error-format=json")
    assert failed.returncode == 100, failed.stdout + failed.stderr
    rules = [line.split('"type":"')[1].split('"')[0] for line in failed.stdout.splitlines()]
    assert rules == ["PACKAGE_VERSION_SUFFIX"], failed.stdout


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project after ``buf generate``, with PATH as an activated venv has it."""
    root = tmp_path_factory.mktemp("buf")
    project = copy_example(root)
    result = _buf(project, "generate", path=tool_bin(root / "bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    return project


def test_buf_generate_writes_what_protoc_writes(generated: Path, tmp_path: Path) -> None:
    """Every module; ours the same as from protoc. (The ``_pb2`` modules embed the
    serialized file descriptor, which buf builds itself: not byte-equal.)"""
    files = sorted(
        p.relative_to(generated / "gen").as_posix() for p in (generated / "gen").rglob("*")
    )
    assert files == [
        "inventory",
        "inventory/v1",
        "inventory/v1/inventory_localfirst.py",
        "inventory/v1/inventory_pb2.py",
        "inventory/v1/inventory_pb2.pyi",
        "localfirst",
        "localfirst/options_pb2.py",
        "localfirst/options_pb2.pyi",
    ]
    out = tmp_path / "protoc"
    protoc(generated, out, "pyi", tool_bin(tmp_path / "bin"))
    for name in files:
        if name.endswith("_localfirst.py"):
            assert (generated / "gen" / name).read_bytes() == (out / name).read_bytes(), name


def test_buf_output_type_checks_and_runs(generated: Path, tmp_path: Path) -> None:
    result = mypy(generated, generated / "gen", tmp_path, "--config-file", "mypy.ini")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_app(generated, generated / "gen") == APP_OUTPUT


def _doc_blocks() -> dict[str, str]:
    text = (REPO / "docs" / "buf.md").read_text()
    return dict(re.findall(r"<!-- buf-test: (\S+) -->\n```yaml\n(.*?)```", text, re.DOTALL))


def test_the_doc_shows_the_example_files() -> None:
    blocks = _doc_blocks()
    assert blocks["buf.yaml"] == (EXAMPLE / "buf.yaml").read_text()
    assert blocks["buf.gen.yaml"] == (EXAMPLE / "buf.gen.yaml").read_text()


def test_without_the_options_module_the_import_fails_as_the_doc_says(tmp_path: Path) -> None:
    project = copy_example(tmp_path)
    (project / "buf.yaml").write_text("version: v2\nmodules:\n  - path: proto\n")
    result = _buf(project, "build")
    assert result.returncode != 0
    quoted = (REPO / "docs" / "buf.md").read_text().split("user's protos alone, fails:\n\n```\n")[1]
    assert result.stderr.strip() == quoted.split("```")[0].strip()


def test_the_ignore_only_alternative_passes(tmp_path: Path) -> None:
    project = copy_example(tmp_path)
    lint = _doc_blocks()["ignore_only"]
    (project / "buf.yaml").write_text(
        "version: v2\nmodules:\n  - path: proto\n  - path: third_party\n" + lint
    )
    vendored = project / "third_party" / OPTIONS
    vendored.write_text(vendored.read_text().replace(IGNORE, ""))
    result = _buf(project, "lint")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
