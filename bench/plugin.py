"""Plugin speed: protoc with protoc-gen-localfirst vs mypy-protobuf's two plugins.

    python -m bench.plugin                  # 200 services, 7 rounds
    python -m bench.plugin --services 50 --rounds 3

Writes a synthetic corpus to a temporary directory: one .proto file per
service, each service with 5 unary rpcs and 1 bidi-streaming rpc. Then, in the
same run and interleaved over ``--rounds`` rounds, times two whole protoc runs
over the corpus (wall clock, process start included, as a build would see it):

* ``localfirst``: ``python -m grpc_tools.protoc --localfirst_out``
* ``mypy-protobuf``: ``python -m grpc_tools.protoc --mypy_out --mypy_grpc_out``
  (mypy-protobuf's ``protoc-gen-mypy`` and ``protoc-gen-mypy_grpc``: two
  plugin processes, typed stubs for the messages and for grpc)

Both use the console scripts installed next to this interpreter and the same
protoc (grpc_tools'); neither writes ``_pb2.py``. The table reports the median
and the ratio localfirst / mypy-protobuf.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

PROTO = """\
syntax = "proto3";

package bench.s{n};

// Request of service {n}.
message Req{n} {{
  string name = 1;
  int32 count = 2;
  repeated string tags = 3;
}}

// Reply of service {n}.
message Rep{n} {{
  string message = 1;
  string node = 2;
}}

// Service {n} of the synthetic corpus.
service Service{n} {{
  // Reads one thing.
  rpc Get(Req{n}) returns (Rep{n}) {{
    option idempotency_level = NO_SIDE_EFFECTS;
  }}
  // Lists things.
  rpc List(Req{n}) returns (Rep{n});
  // Creates a thing.
  rpc Create(Req{n}) returns (Rep{n});
  // Updates a thing; doing it twice is harmless.
  rpc Update(Req{n}) returns (Rep{n}) {{
    option idempotency_level = IDEMPOTENT;
  }}
  // Deletes a thing.
  rpc Delete(Req{n}) returns (Rep{n}) {{
    option deprecated = true;
  }}
  // Talks both ways.
  rpc Chat(stream Req{n}) returns (stream Rep{n});
}}
"""


def write_corpus(root: Path, services: int) -> list[str]:
    """One ``bench/sN.proto`` per service; returns their names relative to ``root``."""
    names = []
    for n in range(services):
        name = f"bench/s{n}.proto"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(PROTO.format(n=n))
        names.append(name)
    return names


def _plugin(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        sys.exit(f"{path} is missing: pip install -e '.[dev]' (it brings mypy-protobuf)")
    return path


def commands(root: Path, out: Path, protos: list[str]) -> dict[str, list[str]]:
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}"]
    return {
        "localfirst": [
            *protoc,
            f"--plugin=protoc-gen-localfirst={_plugin('protoc-gen-localfirst')}",
            f"--localfirst_out={out / 'localfirst'}",
            *protos,
        ],
        "mypy-protobuf": [
            *protoc,
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--mypy_out={out / 'mypy-protobuf'}",
            f"--mypy_grpc_out={out / 'mypy-protobuf'}",
            *protos,
        ],
    }


def run_once(argv: list[str], out: Path, cwd: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])} ... failed:\n{proc.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plugin", description=__doc__)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        root, out = Path(tmp) / "protos", Path(tmp) / "out"
        protos = write_corpus(root, args.services)
        variants = commands(root, out, protos)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, command in variants.items():  # warm-up: file cache, .pyc
            run_once(command, out / name, root)
        for i in range(args.rounds):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(run_once(variants[name], out / name, root))
        files = {name: sum(1 for p in (out / name).rglob("*") if p.is_file()) for name in variants}

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["localfirst"] / medians["mypy-protobuf"]
    print(
        f"{args.services} services (5 unary + 1 bidi rpc each, one .proto per service),"
        f" {args.rounds} rounds, median wall time of one protoc run:"
    )
    for name, median in medians.items():
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"  {name:<14} {median:6.2f} s   (range {spread} s, {files[name]} files written)")
    print(f"  ratio localfirst / mypy-protobuf: {ratio:.2f}x")
    if args.json:
        print(json.dumps({"services": args.services, "times": times, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
