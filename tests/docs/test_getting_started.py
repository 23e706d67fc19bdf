"""The getting-started page, followed as a new user would: from an empty directory
with a proto of their own to replicas, a client, metrics and traces.

Every step comes from docs/getting-started.md itself, so the page and this test
cannot drift apart:

- a fenced ``python``/``proto`` block whose paragraph names a file and ends with
  ``:`` is that file, written as shown;
- ``sh`` blocks run line by line in bash (``cd`` moves the walk-through along;
  a line ending in ``&`` starts a server in the background, waited for on the
  port it names, and stopped by its process group at the end);
- ``console`` blocks are a ``$ command`` and its output: the command runs and
  its output must match line for line, a ``trace`` id standing for any id.

The commands run with the test's virtual environment first on PATH, as an
activated venv would be (``python``, ``protoc-gen-localfirst``). Then the
user's code is type-checked with ``mypy --strict``, as the page promises, and
the server's printed span must carry the client's trace id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "getting-started.md"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
FILE_NAME = re.compile(r"`([\w./-]+\.(?:py|proto))`")
TRACE_ID = re.compile(r"trace [0-9a-f]{32}")

pytestmark = pytest.mark.integration


@dataclass
class Step:
    kind: str  # "file", "sh" or "console"
    body: str
    path: str = ""


def steps(page: str) -> list[Step]:
    """The page's steps, in order (see the module docstring)."""
    found: list[Step] = []
    for match in FENCE.finditer(page):
        language, body = match.group(1), match.group(2)
        paragraph = page[: match.start()].rstrip("\n").split("\n\n")[-1]
        names = FILE_NAME.findall(paragraph)
        if language in ("python", "proto") and names and paragraph.endswith(":"):
            found.append(Step("file", body, names[-1]))
        elif language in ("sh", "console"):
            found.append(Step(language, body))
    return found


@dataclass
class Shell:
    """Where the walk-through is, and the servers it started."""

    cwd: Path
    env: dict[str, str]
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"$ {line}\n{done.stdout}\n{done.stderr}"
        moved = re.search(r"\bcd (\S+)", line)
        if moved:
            self.cwd = self.cwd / moved.group(1)
        return done

    def start(self, line: str) -> None:
        server = subprocess.Popen(
            ["bash", "-c", line], cwd=self.cwd, env=self.env, start_new_session=True
        )
        self.servers.append(server)
        port = int(re.findall(r" (\d{4,5})\b", line)[-1])
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"$ {line}: exited with {server.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"$ {line}: nothing listens on {port}"
                time.sleep(0.05)

    def stop(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)  # our own group, by its PID
            server.wait(10)


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the user's shell has none: the page sets what it needs
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    walk = Shell(tmp_path, env)
    yield walk
    walk.stop()


def expect(output: str, console: str, command: str) -> None:
    wanted = console.splitlines()[1:]
    got = output.splitlines()
    normalised = [TRACE_ID.sub("trace <id>", line) for line in got]
    assert normalised == [TRACE_ID.sub("trace <id>", line) for line in wanted], (
        f"$ {command}\nthe page says:\n" + "\n".join(wanted) + "\ngot:\n" + output
    )


def test_the_getting_started_page_works_as_written(shell: Shell) -> None:
    walk = steps(PAGE.read_text())
    kinds = [step.kind for step in walk]
    assert kinds.count("file") >= 5 and kinds.count("console") >= 2, kinds
    written: list[str] = []
    last_output = ""
    for step in walk:
        if step.kind == "file":
            target = shell.cwd / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.body)
            written.append(step.path)
        elif step.kind == "sh":
            for line in step.body.replace("\\\n", " ").splitlines():
                if line.strip().endswith("&"):
                    shell.start(line.strip()[:-1])
                elif line.strip():
                    shell.run(line)
        else:
            command = step.body.splitlines()[0].removeprefix("$ ")
            last_output = shell.run(command).stdout
            expect(last_output, step.body, command)

    # The replica's span joined the client's trace (the last console printed its id).
    client_trace = TRACE_ID.findall(last_output)[-1].split()[-1]
    shell.stop()
    printed = (shell.cwd / "server-spans.json").read_text()
    spans = json.loads("[" + re.sub(r"}\s*{", "},{", printed) + "]")
    server = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert server, printed
    assert [s["context"]["trace_id"] for s in server] == [f"0x{client_trace}"]

    # "The code on this page passes mypy --strict (with MYPYPATH=gen)."
    python_files = [name for name in written if name.endswith(".py")]
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *python_files],
        cwd=shell.cwd,
        env={**shell.env, "MYPYPATH": "gen"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
