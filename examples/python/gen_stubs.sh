#!/usr/bin/env bash
# Generates the Python gRPC stubs for Tessera's API from the same .proto files
# the server is built from (proto/tessera/v1/tessera.proto and the standard
# proto/grpc/health/v1/health.proto), with grpcio-tools' bundled protoc.
#
#   examples/python/gen_stubs.sh [OUT_DIR]     # default: examples/python/gen
#
# PYTHON picks the interpreter (default: the repo's .venv, else python3); it
# needs grpcio-tools (pip install grpcio grpcio-tools, or scripts/setup.sh).
# The modules are flat (tessera_pb2.py, tessera_pb2_grpc.py, health_pb2.py,
# health_pb2_grpc.py): a 'grpc/health/v1' package directory would shadow the
# grpcio package, which is also called 'grpc'.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py=$root/.venv/bin/python; else py=python3; fi
fi

if ! "$py" -c "import grpc_tools.protoc" 2>/dev/null; then
  echo "gen_stubs: $py has no grpcio-tools; run: $py -m pip install grpcio grpcio-tools" >&2
  exit 1
fi

mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$root/proto/tessera/v1" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" tessera.proto
"$py" -m grpc_tools.protoc -I "$root/proto/grpc/health/v1" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" health.proto
echo "gen_stubs: wrote the stubs to $out"
