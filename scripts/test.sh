#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: install what is needed,
# fetch the default model, run the parser/kernel unit tests under
# AddressSanitizer + UBSan, run every libFuzzer harness for a bounded time
# (tests/fuzz, label fuzz: TESSERA_FUZZ_SECONDS each, default 20), then build
# normally and run every test. Ends with ctest's summary. Tests that need
# something absent (a GPU) exit 77 and are reported as skipped; a build that
# finds no tests is a failure.
#
#   scripts/test.sh            # everything
#   TESSERA_SKIP_ASAN=1 scripts/test.sh
#   TESSERA_SKIP_FUZZ=1 scripts/test.sh    # or TESSERA_FUZZ_SECONDS=N for longer
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
model=$(bash scripts/fetch-model.sh | tail -1)

if [ -z "${TESSERA_SKIP_ASAN:-}" ]; then
  echo "== unit tests under AddressSanitizer + UBSan (build-asan/)"
  # CUDA off here: nvcc objects are not instrumented, and the GPU tests skip anyway
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBUILD_TESTING=ON -DTESSERA_SANITIZE=ON \
      -DTESSERA_CUDA=OFF -DTESSERA_WERROR="$werror" >/dev/null
  cmake --build build-asan -j"$jobs"
  ctest --test-dir build-asan -L "unit|comm" --output-on-failure --no-tests=error -j"$jobs"
fi

if [ -z "${TESSERA_SKIP_FUZZ:-}" ]; then
  echo "== fuzz targets under libFuzzer + ASan + UBSan, ${TESSERA_FUZZ_SECONDS:-20} s each (build-fuzz/)"
  cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_FUZZ=ON \
      -DTESSERA_SANITIZE=OFF -DTESSERA_CUDA=OFF -DTESSERA_WERROR="$werror" \
      -DTESSERA_FUZZ_SECONDS="${TESSERA_FUZZ_SECONDS:-20}" -DTESSERA_FUZZ_MODEL="$model" >/dev/null
  cmake --build build-fuzz --target tsr_fuzz -j"$jobs"
  ctest --test-dir build-fuzz -L fuzz --output-on-failure --no-tests=error -j"$jobs"
fi

echo "== all tests (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON -DTESSERA_SANITIZE=OFF \
    -DTESSERA_WERROR="$werror" >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure --no-tests=error
