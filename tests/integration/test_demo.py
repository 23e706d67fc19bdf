"""The README's first command runs the demo; it must keep working.

Run as a user runs it (a subprocess): the test does not import demo.run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from demo.cluster import REPO

pytestmark = pytest.mark.integration


def test_demo_shows_local_first_failover_return_redeploy_and_spill() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo.run"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "  local first: a1 (node-a) x12" in out
    assert "  failover: " in out and "FAILED" not in out
    assert "  after restart: a1 (node-a) x12" in out
    assert "failed; after the old replicas stopped: a2 (node-a) x" in out
    assert (
        "DEADLINE_EXCEEDED: /greeter.v1.Greeter/SayHello: deadline of 2.0s exceeded after " in out
    )
    busy = re.search(r"SayHello calls in .* 1 s deadline: (\d+) failed\n", out)
    assert busy and busy.group(1) == "0", out
    share = re.search(r"answered by node-a's replica a3: (\d+)%; spills to node-b: (.*)\n", out)
    assert share, out
    assert 40 <= int(share.group(1)) < 100, share.group(0)
    spills = sum(int(n) for n in re.findall(r" x(\d+)", share.group(2)))
    assert spills > 0, share.group(0)
    assert out.rstrip().endswith("failed calls while replicas were up: 0")
