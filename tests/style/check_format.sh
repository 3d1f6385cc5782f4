#!/usr/bin/env bash
# tests/style: every C, CUDA and header file of the tree is as clang-format
# leaves it (.clang-format at the root). The layout a clang-format writes
# differs between its major versions, so this runs with the version the tree
# was formatted with (Debian 12's clang-format 14) and skips (77) otherwise.
#
#   tests/style/check_format.sh [SOURCE_DIR]
#   fix: clang-format -i $(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$src"
want=14
cf=$(command -v clang-format-$want || command -v clang-format || true)
if [ -z "$cf" ]; then
  echo "skipped: clang-format is not installed (scripts/setup.sh installs it)"
  exit 77
fi
have=$("$cf" --version | sed -n 's/.*clang-format version \([0-9]*\).*/\1/p')
if [ "$have" != "$want" ]; then
  echo "skipped: $cf is version $have; the tree is formatted with clang-format $want"
  exit 77
fi
if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
else
  mapfile -t files < <(find . -path ./build\* -prune -o \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print)
fi
bad=0
for f in "${files[@]}"; do
  if ! "$cf" --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f"
    bad=$((bad + 1))
  fi
done
echo "${#files[@]} files checked, $bad not formatted"
[ "$bad" -eq 0 ]
