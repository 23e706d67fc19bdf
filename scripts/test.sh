#!/usr/bin/env bash
# The whole test suite: set up, then lint, type-check and run every test.
# System packages (Debian's protoc, dnsmasq as the real DNS server of the DNS
# tests) are installed when running as root; without root and without them,
# the tests that need them fail and say what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v gtlsclient >/dev/null || need+=(ngtcp2-client)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} (apt-get install ${need[*]}); tests that need them will fail" >&2
  fi
fi
scripts/setup.sh
# buf (a Go binary shipped in an npm package) is the independent gRPC-over-HTTP/3 peer.
npm ci --silent --no-audit --no-fund >/dev/null
.venv/bin/ruff check .
.venv/bin/lint-imports
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
MYPYPATH=generated .venv/bin/mypy --strict protoc_gen_localfirst demo
exec .venv/bin/python -m pytest "$@"
