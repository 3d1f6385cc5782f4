#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: install what is needed,
# fetch the default model, run the parser/kernel unit tests under
# AddressSanitizer + UBSan, then build normally and run every test. Ends with
# ctest's summary. Tests that need something absent (a GPU) exit 77 and are
# reported as skipped; a build that finds no tests is a failure.
#
#   scripts/test.sh            # everything
#   TESSERA_SKIP_ASAN=1 scripts/test.sh
#   TESSERA_WERROR=1 scripts/test.sh   # warnings as errors (CI sets it)
#
# Every configure line names every option it relies on, so the demo's or a
# user's earlier build with other options cannot turn the tests off.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)
werror=OFF
if [ "${TESSERA_WERROR:-}" = 1 ] || [ -n "${CI:-}" ]; then werror=ON; fi

bash scripts/setup.sh
bash scripts/fetch-model.sh >/dev/null

if [ -z "${TESSERA_SKIP_ASAN:-}" ]; then
  echo "== unit tests under AddressSanitizer + UBSan (build-asan/)"
  # CUDA off here: nvcc objects are not instrumented, and the GPU tests skip anyway
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBUILD_TESTING=ON -DTESSERA_SANITIZE=ON \
      -DTESSERA_CUDA=OFF -DTESSERA_WERROR="$werror" >/dev/null
  cmake --build build-asan -j"$jobs"
  ctest --test-dir build-asan -L "unit|comm" --output-on-failure --no-tests=error -j"$jobs"
fi

echo "== all tests (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON -DTESSERA_SANITIZE=OFF \
    -DTESSERA_WERROR="$werror" >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure --no-tests=error
