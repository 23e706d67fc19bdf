#!/usr/bin/env bash
# The main job: set up, generate from protos/, and run the local-first demo.
# No root needed: pip only, replicas on 127.0.0.x.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m demo.run
