"""``python -m protoc_gen_localfirst endpoints`` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, node: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("NODE_NAME", None)
    if node:
        env["NODE_NAME"] = node
    return subprocess.run(
        [sys.executable, "-m", "protoc_gen_localfirst", "endpoints", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_prints_endpoints_and_the_order_a_call_would_take() -> None:
    target = "static:///127.0.0.1:1@node-a/z1,127.0.0.2:1@node-b/z1,127.0.0.3:1@node-c/z2"
    result = run(target, "--no-probe", node="node-b")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "caller  node node-b, zone z1" in lines
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  127.")}
    # address, node, zone, ready, in flight, limit, CPU (unknown: --no-probe asks no server),
    # share of first attempts (all to the caller's own node while it has room)
    assert rows["127.0.0.3:1"] == ["127.0.0.3:1", "node-c", "z2", "yes", "?", "-", "?", "0%"]
    assert rows["127.0.0.2:1"][-1] == "100%"
    order = lines[lines.index("a call from node-b tries, in order:") + 1 :]
    assert order == [
        "  1. 127.0.0.2:1 (node-b, z1)  same node",
        "  2. 127.0.0.1:1 (node-a, z1)  same zone",
        "  3. 127.0.0.3:1 (node-c, z2)  elsewhere",
    ]


def test_bad_target_exits_2_with_the_reason() -> None:
    result = run("greeter:50051")
    assert result.returncode == 2
    assert "error: target 'greeter:50051' has no scheme" in result.stderr
