#!/usr/bin/env bash
# Regenerate generated/ from protos/ with grpc_tools' protoc and this plugin.
#
#   scripts/generate.sh            # writes generated/
#   scripts/generate.sh OUT_DIR    # writes OUT_DIR instead (the freshness test uses this)
#
# Uses the repository's .venv if there is one, else python3 on PATH; the
# plugin runs from this checkout (python -m protoc_gen_localfirst), so no
# install step is needed between editing the plugin and regenerating.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/generated}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# protoc needs an executable; this wrapper runs the plugin from this checkout.
cat >"$tmp/protoc-gen-localfirst" <<WRAPPER
#!/bin/sh
PYTHONPATH="$root\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" -m protoc_gen_localfirst "\$@"
WRAPPER
chmod +x "$tmp/protoc-gen-localfirst"

cd "$root/protos"
mapfile -t protos < <(find . -name '*.proto' -printf '%P\n' | LC_ALL=C sort)
rm -rf "$tmp/out" && mkdir -p "$tmp/out"
"$python" -m grpc_tools.protoc -I. \
  --plugin=protoc-gen-localfirst="$tmp/protoc-gen-localfirst" \
  --python_out="$tmp/out" --pyi_out="$tmp/out" --localfirst_out="$tmp/out" \
  "${protos[@]}"

# Replace the output directory only after protoc succeeded.
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -r "$tmp/out" "$out"
echo "generated ${#protos[@]} protos into $out"
