#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install what is needed, build,
# fetch the default model and answer a chat question with it.
#
#   scripts/demo.sh ["your question"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
question=${1:-"What is the capital of France?"}

bash scripts/setup.sh
model=$(bash scripts/fetch-model.sh | tail -1)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build -j"$(nproc)" --target tessera >/dev/null

echo "Q: $question"
printf 'A: '
./build/runtime/tessera generate --model "$model" --chat "$question" --max-tokens 128
