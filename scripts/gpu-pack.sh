#!/usr/bin/env bash
# scripts/gpu-pack.sh - builds Tessera with the CUDA backend and packs what a GPU
# machine needs to run it into .gpu/ (git-ignored), for scripts/gpu-test.sh there.
#
# Runs on the development machine (which has nvcc, cuBLAS and NCCL but no GPU):
#   1. configures and builds build-gpu/ with -DTESSERA_CUDA=ON and
#      -DCMAKE_CUDA_ARCHITECTURES=90 (sm_90 only: H100/H200, and a faster build);
#   2. copies into .gpu/bin the programs (tessera, tsr_bench, tsr_bench_dist,
#      cuda_roofline when it exists, test_cuda_ops, test_nccl, tessera-cli,
#      tessera-launch), with their debug info stripped (symbols stay);
#   3. copies into .gpu/lib every shared library they need that the GPU machine
#      lacks: the closure of DT_NEEDED from the programs, not descending into
#      the libraries that machine has (libc family, libstdc++, libgcc_s, libgomp,
#      OpenBLAS, PCRE2, Jansson, OpenSSL 3, Open MPI, CUDA runtime, cuBLAS, NCCL);
#   4. copies the GPU test scripts into .gpu/tests and .gpu/scripts and writes
#      .gpu/manifest.txt (commit, build, every file with size and sha256);
#   5. stores lib/ as .gpu/lib.tar.gz (16 MB -> 6 MB; gpu-test.sh unpacks it
#      there), unless TSR_PACK_PLAIN=1.
# Prints the total size, which must stay under 40 MiB (the device transfer limit
# is 64 MiB with a model part beside it). The model is not packed (docs/gpu.md).
# Other files in .gpu/ (.gpu/py from gpu-bench-prep.sh, .gpu/models) are kept
# and counted.
#
# What it is not: an installer. The libraries come from this machine (Debian 12,
# glibc 2.36) and run on the GPU machine (Ubuntu 24.04, glibc 2.39) because glibc
# is backward compatible; gpu-test.sh uses a packed library only when that
# machine has no library of the same soname.
#
# usage: scripts/gpu-pack.sh [--no-build]
# environment:
#   TSR_GPU_BUILD     build folder (default build-gpu)
#   TSR_CUDA_ARCH     CMAKE_CUDA_ARCHITECTURES (default 90)
#   TSR_KEEP_DEBUG=1  keep debug info in the packed programs (bigger)
#   TSR_PACK_PLAIN=1  leave .gpu/lib as a folder (no lib.tar.gz)
#   JOBS              parallel build jobs (default: nproc)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

build=${TSR_GPU_BUILD:-build-gpu}
arch=${TSR_CUDA_ARCH:-90}
jobs=${JOBS:-$(nproc)}
out=.gpu
limit_mib=40
do_build=1

log() { echo "gpu-pack: $*" >&2; }
die() { echo "gpu-pack: error: $*" >&2; exit 1; }

for a in "$@"; do
  case "$a" in
    --no-build) do_build=0 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument '$a' (usage: scripts/gpu-pack.sh [--no-build])" ;;
  esac
done

for t in cmake readelf ldd strip sha256sum; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found"
done

# ---- 1. build ----------------------------------------------------------------------
if [ "$do_build" = 1 ]; then
  log "configuring $build (TESSERA_CUDA=ON, CUDA architectures $arch)"
  cmake -S . -B "$build" -DTESSERA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" >&2 \
    || die "cmake configure failed"
  log "building with $jobs jobs (nvcc is slow: minutes)"
  cmake --build "$build" -j "$jobs" >&2 || die "build failed"
fi
[ -d "$build" ] || die "no build folder $build (run without --no-build)"
grep -q '^TESSERA_CUDA:STRING=ON' "$build/CMakeCache.txt" \
  || die "$build was not configured with -DTESSERA_CUDA=ON"

# ---- 2. programs -------------------------------------------------------------------
# name|path in the build|required
progs="tessera|runtime/tessera|1
tsr_bench|bench/tsr_bench|1
tsr_bench_dist|bench/tsr_bench_dist|1
test_cuda_ops|tests/cuda/test_cuda_ops|1
train_ops_driver|tests/train/train_ops_driver|1
engine_probe|tests/dist/engine_probe|1
tessera-cli|launcher/tessera-cli|1
tessera-launch|launcher/tessera-launch|1
test_nccl|tests/comm/test_nccl|0
cuda_roofline||0"

rm -rf "${out:?}/bin" "${out:?}/lib" "$out/lib.tar.gz" "$out/tests" "$out/scripts" "$out/manifest.txt"
mkdir -p "$out/bin" "$out/lib" "$out/tests" "$out/scripts"
bins=()
while IFS='|' read -r name rel required; do
  src=""
  if [ -n "$rel" ] && [ -x "$build/$rel" ]; then
    src="$build/$rel"
  else
    # not at the expected place (or no expected place): any executable of that name
    src=$(find "$build" -type f -name "$name" -perm -u+x 2>/dev/null | head -1)
  fi
  if [ -z "$src" ]; then
    [ "$required" = 1 ] && die "$name not built (looked for $build/$rel)"
    log "($name not built: not packed)"
    continue
  fi
  if [ "${TSR_KEEP_DEBUG:-0}" = 1 ]; then
    cp "$src" "$out/bin/$name"
  else
    strip --strip-debug -o "$out/bin/$name" "$src"
  fi
  bins+=("$out/bin/$name")
done <<<"$progs"

# ---- 3. libraries ------------------------------------------------------------------
# Sonames the GPU machine has (with everything they need): not packed, not followed.
has_re='^(ld-linux.*|linux-vdso.*|libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil|'
has_re+='libstdc\+\+|libgcc_s|libgomp|libopenblas|libpcre2-8|libjansson|libssl|libcrypto|'
has_re+='libmpi.*|libopen-.*|libpmix|libhwloc|libevent.*|libcuda|libcudart|libcublas|libcublasLt|'
has_re+='libnccl|libnvidia-.*)\.so(\..*)?$'

needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'; }

# soname -> path, from ldd of every program (ldd lists the whole closure)
declare -A where=()
missing=()
for b in "${bins[@]}"; do
  while read -r line; do
    case "$line" in
      *"=> not found"*) missing+=("$(basename "$b"): ${line%% *}") ;;
      *"=> /"*)
        so=${line%% *}
        path=${line#*=> }
        where[$so]=${path%% (*}
        ;;
    esac
  done < <(ldd "$b")
done
[ ${#missing[@]} -eq 0 ] || die "libraries not found here: ${missing[*]}"

declare -A packed=()
queue=()
for b in "${bins[@]}"; do
  mapfile -t -O "${#queue[@]}" queue < <(needed "$b")
done
while [ ${#queue[@]} -gt 0 ]; do
  so=${queue[0]}
  queue=("${queue[@]:1}")
  [ -n "${packed[$so]:-}" ] && continue
  [[ "$so" =~ $has_re ]] && continue
  path=${where[$so]:-}
  [ -n "$path" ] || die "cannot resolve $so (needed by a packed program or library)"
  packed[$so]=$path
  cp -L "$path" "$out/lib/$so"
  mapfile -t -O "${#queue[@]}" queue < <(needed "$path")
done

# ---- 4. scripts, manifest ----------------------------------------------------------
cp tests/cuda/test_cuda_model.py "$out/tests/"
mkdir -p "$out/tests/train"
cp tests/train/test_train_ops.py tests/train/train_io.py tests/reference/train_ref.py "$out/tests/train/"
cp scripts/gpu-test.sh "$out/scripts/"
[ -f scripts/gpu-bench.sh ] && cp scripts/gpu-bench.sh "$out/scripts/"
[ -f scripts/fetch-model.sh ] && cp scripts/fetch-model.sh "$out/scripts/"

{
  echo "# .gpu/manifest.txt - written by scripts/gpu-pack.sh; run scripts/gpu-test.sh there"
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:  $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "build:   $build, TESSERA_CUDA=ON, CMAKE_CUDA_ARCHITECTURES=$arch, $(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")"
  echo "host:    $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"'), $(ldd --version | head -1)"
  echo "nvcc:    $(command -v nvcc >/dev/null && nvcc --version | sed -n 's/.*release //p' || echo '?')"
  echo
  echo "# libraries packed (soname <- source); the GPU machine must provide the rest:"
  for so in $(printf '%s\n' "${!packed[@]}" | sort); do
    echo "lib     $so <- ${packed[$so]}"
  done
  echo
  echo "# files: bytes sha256 path"
  (cd "$out" && find . -type f ! -name manifest.txt | sort | while read -r f; do
     printf '%10d %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-64)" "${f#./}"
   done)
} >"$out/manifest.txt"

# ---- 5. compress the libraries -----------------------------------------------------
if [ "${TSR_PACK_PLAIN:-0}" != 1 ]; then
  tar czf "$out/lib.tar.gz" -C "$out" lib || die "cannot write $out/lib.tar.gz"
  rm -rf "${out:?}/lib"
  echo "# lib/ is stored as lib.tar.gz ($(stat -c %s "$out/lib.tar.gz") bytes); gpu-test.sh unpacks it" \
    >>"$out/manifest.txt"
fi

bytes=$(du -sb "$out" | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
log "packed ${#bins[@]} programs and ${#packed[@]} libraries into $out: $bytes bytes (~$mib MiB)"
ls -la "$out/bin" >&2
if [ "$bytes" -gt $((limit_mib * 1048576)) ]; then
  die "$out is $mib MiB, over the $limit_mib MiB budget (see $out/manifest.txt for the largest files)"
fi
echo "$out ${bytes}"
