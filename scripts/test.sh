#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: install what is needed,
# fetch the default model, run the parser/kernel unit tests under
# AddressSanitizer + UBSan, then build normally and run every test. Ends with
# ctest's summary. Tests that need something absent (a GPU) exit 77 and are
# reported as skipped.
#
#   scripts/test.sh            # everything
#   TESSERA_SKIP_ASAN=1 scripts/test.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)

bash scripts/setup.sh
bash scripts/fetch-model.sh >/dev/null

if [ -z "${TESSERA_SKIP_ASAN:-}" ]; then
  echo "== unit tests under AddressSanitizer + UBSan (build-asan/)"
  # CUDA off here: nvcc objects are not instrumented, and the GPU tests skip anyway
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTESSERA_SANITIZE=ON -DTESSERA_CUDA=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  ctest --test-dir build-asan -L "unit|comm" --output-on-failure -j"$jobs"
fi

echo "== all tests (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure
