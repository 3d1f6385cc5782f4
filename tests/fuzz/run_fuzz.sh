#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh - one fuzz test: replays the target's regression
# inputs (tests/fuzz/regress/<target>/, each an input that once crashed it),
# then fuzzes for a bounded time from the generated seeds.
#
#   run_fuzz.sh BINARY TARGET SOURCE_DIR BUILD_DIR SECONDS
#
# The working corpus (BUILD_DIR/corpus/TARGET) grows across runs; a crash's
# input is written to BUILD_DIR/artifacts/TARGET/ and the test fails.
# Extra libFuzzer options can be given in TESSERA_FUZZ_ARGS.
set -euo pipefail
bin=$1 target=$2 src=$3 out=$4 secs=$5
regress=$src/regress/$target
seeds=$out/seeds/$target
corpus=$out/corpus/$target
art=$out/artifacts/$target
mkdir -p "$corpus" "$art" "$seeds"
opts=(-rss_limit_mb=2560 -timeout=10 -artifact_prefix="$art/" -print_final_stats=1)
if [ -f "$src/dict/$target.dict" ]; then opts+=(-dict="$src/dict/$target.dict"); fi
# shellcheck disable=SC2206
opts+=(${TESSERA_FUZZ_ARGS:-})

shopt -s nullglob
kept=("$regress"/*)
if [ ${#kept[@]} -gt 0 ]; then
  echo "== $target: ${#kept[@]} regression input(s) from $regress"
  "$bin" "${opts[@]}" "${kept[@]}"
fi
echo "== $target: fuzzing for ${secs} s (corpus $corpus, seeds $seeds)"
exec "$bin" "${opts[@]}" -max_total_time="$secs" "$corpus" "$seeds"
