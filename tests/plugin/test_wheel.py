"""The built wheel works on its own: templates inside, plugin runs from a fresh venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import GENERATED, PROTOS, REPO


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_in_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], tmp_path)
    (wheel,) = dist.glob("protoc_gen_localfirst-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "protoc_gen_localfirst/templates/module.py.jinja" in names
    assert "protoc_gen_localfirst/templates/service.py.jinja" in names
    assert "protoc_gen_localfirst/codegen/plugin.py" in names
    assert "protoc_gen_localfirst/include/localfirst/options.proto" in names
    assert "protoc_gen_localfirst/include/localfirst/options.binpb" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[tools]"], tmp_path)
    assert (venv / "bin" / "protoc-gen-localfirst").exists()

    # The user flow: the options proto from the installed package's include path.
    include = _run([str(python), "-m", "protoc_gen_localfirst", "include-path"], tmp_path)
    include_dir = include.stdout.strip()
    assert "site-packages" in include_dir, include_dir
    user = tmp_path / "user"
    (user / "greeter/v1").mkdir(parents=True)
    shutil.copy(PROTOS / "greeter/v1/greeter.proto", user / "greeter/v1/greeter.proto")
    out = tmp_path / "gen"
    out.mkdir()
    _run(
        [
            str(python),
            "-m",
            "grpc_tools.protoc",
            f"-I{user}",
            f"-I{include_dir}",
            f"--plugin=protoc-gen-localfirst={venv / 'bin' / 'protoc-gen-localfirst'}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--localfirst_out={out}",
            "localfirst/options.proto",
            "greeter/v1/greeter.proto",
        ],
        tmp_path,
    )
    produced = (out / "greeter/v1/greeter_localfirst.py").read_bytes()
    assert produced == (GENERATED / "greeter/v1/greeter_localfirst.py").read_bytes()

    # Import it in the fresh venv, away from the checkout (cwd is tmp_path).
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import protoc_gen_localfirst, greeter.v1.greeter_localfirst as m;"
        "assert 'site-packages' in protoc_gen_localfirst.__file__, protoc_gen_localfirst.__file__;"
        "print(m.GreeterClient.__mro__[1].__name__, [x.name for x in m.GREETER_SERVICE.methods][0])"
    )
    result = _run([str(python), "-c", probe, str(out)], tmp_path)
    assert result.stdout.split() == ["AsyncClient", "SayHello"]
