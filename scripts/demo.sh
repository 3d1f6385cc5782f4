#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install what is needed, build,
# fetch the default model, start a two-rank tensor-parallel server, wait until
# it is SERVING, ask a question through tessera-cli (the answer streams to
# stdout), then shut the server down.
#
#   scripts/demo.sh ["your question"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
question=${1:-"Name the capital of France."}
port=${TESSERA_DEMO_PORT:-50051}

bash scripts/setup.sh
model=$(bash scripts/fetch-model.sh | tail -1)
# its own build folder, so the test command's build/ keeps its tests
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-demo -j"$(nproc)" --target tessera tessera-cli >/dev/null

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
log=$(mktemp /tmp/tessera-demo.XXXXXX.log)
echo "== starting: mpirun -np 2 tessera serve --tp 2 --port $port (log: $log)"
mpirun -np 2 --oversubscribe --bind-to none ./build-demo/runtime/tessera serve \
    --model "$model" --tp 2 --port "$port" >"$log" 2>&1 &
server=$!
stop() {
    # SIGTERM to the ranks: rank 0 drains in-flight calls, then every rank exits
    pkill -TERM -P "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}
trap stop EXIT

cli=./build-demo/launcher/tessera-cli
if ! "$cli" --addr "127.0.0.1:$port" health --wait 120 >/dev/null; then
    echo "the server did not become SERVING; its log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "== SERVING; asking through tessera-cli"
echo "Q: $question"
printf 'A: '
"$cli" --addr "127.0.0.1:$port" generate --chat "$question" --max-tokens 128
echo "== shutting down"
