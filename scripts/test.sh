#!/usr/bin/env bash
# The whole test suite: set up, then lint, type-check and run every test.
# System packages (Debian's protoc, dnsmasq as the real DNS server of the DNS
# tests) are installed when running as root; without root and without them,
# the tests that need them fail and say what to install.
#
# Python versions: the full suite runs in .venv on Python 3.11 (PYTHON=...
# picks another interpreter for a new .venv); then the fast part of the suite
# (FAST_TESTS below: plugin, wire, codecs, client state machine and
# validation, typed messages, extras) runs on each other supported version in
# its own .venv-3.X. A version whose interpreter is not found is reported and
# its part is not run; with CI=true that is an error. Arguments go to the
# full run's pytest only.
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

SUPPORTED=(3.11 3.12 3.13) # pyproject's classifiers
FAST_TESTS=(
  tests/plugin tests/wire
  tests/client/test_call_state.py tests/client/test_validation.py tests/client/test_balancer.py
  tests/client/test_load.py tests/client/test_replay.py
  tests/packaging/test_typed_messages.py tests/packaging/test_extras.py
)

# find_python 3.12: an interpreter of that version on PATH, from pyenv or /usr/bin.
find_python() {
  local version=$1 candidate
  for candidate in "$(command -v "python$version" || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version" \
    "/usr/bin/python$version" "/usr/local/bin/python$version"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
      [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$version" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

status=0
missing() { # missing VERSION WHAT
  echo "!! Python $1 not found (python$1 on PATH, pyenv, /usr/bin): $2 was NOT run" >&2
  if [ "${CI:-}" = true ]; then
    echo "!! CI=true: a missing interpreter is an error" >&2
    status=1
  fi
}

if [ -z "${PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  PYTHON="$(find_python 3.11)" || { missing 3.11 "the full suite on 3.11 (using python3)"; PYTHON=python3; }
fi
PYTHON="${PYTHON:-python3}" scripts/setup.sh
main_version="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
# buf (a Go binary shipped in an npm package) is the independent gRPC-over-HTTP/3 peer.
npm ci --silent --no-audit --no-fund >/dev/null
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
MYPYPATH=generated .venv/bin/mypy --strict protoc_gen_localfirst demo

echo "== full suite on Python $main_version (.venv)"
.venv/bin/python -m pytest "$@" || status=$?

# fast_suite VERSION PYTHON: set up .venv-VERSION (idempotent) and run FAST_TESTS in it.
fast_suite() {
  local version=$1 python=$2 venv=".venv-$1" start=$SECONDS
  echo "== fast suite on Python $version ($venv, $python)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".[dev]"
  local rc=0
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" "${FAST_TESTS[@]}" || rc=$?
  echo "== Python $version: $((SECONDS - start)) s (setup included)"
  return "$rc"
}

# The other versions side by side (each is mostly one busy process), output kept
# per version and printed when both are done.
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
pids=()
versions=()
for version in "${SUPPORTED[@]}"; do
  [ "$version" = "$main_version" ] && continue
  if ! python="$(find_python "$version")"; then
    missing "$version" "the fast suite on $version"
    continue
  fi
  fast_suite "$version" "$python" >"$logs/$version" 2>&1 &
  pids+=("$!")
  versions+=("$version")
done
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then result=passed; else result=FAILED; status=1; fi
  cat "$logs/${versions[$i]}"
  echo "== fast suite on Python ${versions[$i]}: $result"
done
exit "$status"
