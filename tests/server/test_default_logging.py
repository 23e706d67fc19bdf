"""serve() shows its lines on stderr when the program configured no logging, and only then."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from protoc_gen_localfirst.runtime.server.logs import LOGGER_NAME, install_default_logging
from tests.plugin.conftest import GENERATED, REPO

SCRIPT = "tests.server.default_logging_script"
SERVING = re.compile(r"serving greeter\.v1\.Greeter on 127\.0\.0\.1:\d+ as node script-node")


def _serve_until_up_then_term(mode: str) -> str:
    """Run the script until it logs that it serves, SIGTERM it, return all it wrote."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{GENERATED}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", SCRIPT, mode],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if SERVING.search(line):
                break
        else:
            pytest.fail(f"no serving line: {lines}")
        # serve() logs the line just before it installs its signal handlers.
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    return output


def test_unconfigured_program_gets_the_lines_on_stderr() -> None:
    output = _serve_until_up_then_term("unconfigured")
    serving = [line for line in output.splitlines() if SERVING.search(line)]
    assert len(serving) == 1
    assert re.match(
        r"\d{4}-\d\d-\d\d [\d:,]+ INFO protoc_gen_localfirst\.server: serving", serving[0]
    )
    # The binding warning comes before serve() (logging's last-resort handler prints it).
    assert "Greeter.say_hello is not served" in output
    assert "INFO protoc_gen_localfirst.server: SIGTERM: draining" in output


def test_a_programs_own_logging_config_is_kept() -> None:
    output = _serve_until_up_then_term("configured")
    serving = [line for line in output.splitlines() if SERVING.search(line)]
    assert len(serving) == 1  # once, in the program's format
    assert serving[0].startswith("USER INFO protoc_gen_localfirst.server serving")
    assert (
        "USER WARNING protoc_gen_localfirst.server __main__.Greeter.say_hello is not served"
        in output
    )
    assert "protoc_gen_localfirst.server:" not in output


@contextlib.contextmanager
def bare() -> Iterator[logging.Logger]:
    """No root handlers (pytest adds its own during the test), everything restored after."""
    root, ours = logging.getLogger(), logging.getLogger(LOGGER_NAME)
    saved = root.handlers[:], ours.handlers[:], ours.level
    root.handlers.clear()
    ours.handlers.clear()
    ours.setLevel(logging.NOTSET)
    try:
        yield ours
    finally:
        root.handlers[:], ours.handlers[:] = saved[0], saved[1]
        ours.setLevel(saved[2])


def test_install_is_idempotent_and_steps_aside_for_later_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with bare() as ours:
        _install_then_configure(ours)
    err = capsys.readouterr().err
    assert "INFO protoc_gen_localfirst.server: first" in err
    assert "INFO protoc_gen_localfirst.server: second" not in err


def _install_then_configure(bare_logging: logging.Logger) -> None:
    handler = install_default_logging()
    assert handler is not None and bare_logging.handlers == [handler]
    assert install_default_logging() is None
    assert bare_logging.level == logging.INFO
    logging.getLogger(f"{LOGGER_NAME}.server").info("first")
    late = logging.StreamHandler()
    logging.getLogger().addHandler(late)  # the program configures logging now
    try:
        logging.getLogger(f"{LOGGER_NAME}.server").info("second")
    finally:
        logging.getLogger().removeHandler(late)
    assert bare_logging.handlers == []
    assert bare_logging.level == logging.NOTSET


def test_a_level_set_on_our_logger_is_kept() -> None:
    with bare() as ours:
        ours.setLevel(logging.WARNING)
        assert install_default_logging() is not None
        assert ours.level == logging.WARNING


def test_configured_root_means_no_handler() -> None:
    with bare() as ours:
        logging.getLogger().addHandler(logging.NullHandler())
        assert install_default_logging() is None
        assert ours.handlers == []
