#!/usr/bin/env bash
# Regenerate generated/ from protos/ with grpc_tools' protoc and this plugin.
#
#   scripts/generate.sh            # writes generated/
#   scripts/generate.sh OUT_DIR [INCLUDE_DIR]
#                                  # writes OUT_DIR instead (the freshness test uses this)
#
# It also refreshes the copy of localfirst/options.proto the package ships
# (protoc_gen_localfirst/include/localfirst/: the .proto for users' -I, and
# options.binpb, the descriptor set the plugin reads the options with): in
# protoc_gen_localfirst/include by default, in INCLUDE_DIR when given, not at
# all when only OUT_DIR is given.
#
# Uses the repository's .venv if there is one, else python3 on PATH; the
# plugin runs from this checkout (python -m protoc_gen_localfirst), so no
# install step is needed between editing the plugin and regenerating.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/generated}"
if [[ $# -eq 0 ]]; then include="$root/protoc_gen_localfirst/include"; else include="${2:-}"; fi
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
# The options schema first: the plugin reads the package's copy while generating.
"$python" -m grpc_tools.protoc -I. --descriptor_set_out="$tmp/options.binpb" localfirst/options.proto
if [[ -n "$include" ]]; then
  mkdir -p "$include/localfirst"
  cp localfirst/options.proto "$include/localfirst/options.proto"
  cp "$tmp/options.binpb" "$include/localfirst/options.binpb"
  echo "refreshed localfirst/options.proto and options.binpb in $include"
fi
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
