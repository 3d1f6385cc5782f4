#!/usr/bin/env bash
# scripts/gpu-test.sh - runs Tessera's GPU tests on a GPU machine, from the
# repository root, with the .gpu/ folder that scripts/gpu-pack.sh made.
#
#   1. setup: LD_LIBRARY_PATH (packed libraries the machine lacks, CUDA's own
#      folders), Open MPI's run-as-root variables, `nvidia-smi -L`; checks that
#      every packed program finds all its libraries;
#   2. the model: when $TSR_MODEL_PARTS holds model.part* or part* files (there
#      or one folder down, e.g. .gpu-model/a/part00 .gpu-model/b/part01), joins
#      them in file-name order (decompressing when they are of an .xz or .gz of
#      the model) into the model cache and checks the sha256 that
#      scripts/fetch-model.sh expects;
#   3. ops:   .gpu/bin/test_cuda_ops (every backend op, CPU vs CUDA, f32 and bf16);
#   4. model: tests/cuda/test_cuda_model.py (greedy generation cpu vs cuda, tp/pp
#      under mpirun);
#   4b. engine: .gpu/bin/engine_probe on CUDA (one rank in f32 and bf16
#      activations, tp=2 over --comm mpi): the top-k steps' candidates against
#      the logits, and top-k steps with per-row draws (row_expsum, whole rows);
#   5. bench: scripts/gpu-bench.sh when it exists.
# Logs go to ${OUT:-/tmp/gpu-out}: gpu-test.log (setup and summary), ops.log,
# model.log, bench.log; four files, leaving four of the device tool's eight for
# gpu-bench.sh. A setup problem ends the run at once; the test steps all run and
# the exit status is 1 when any failed or skipped (a skip on a GPU machine means
# something is missing), 0 when all passed.
#
# usage: scripts/gpu-test.sh [ops] [train] [model] [engine] [lora] [bench]   (default: all)
# environment:
#   OUT               log folder (default /tmp/gpu-out)
#   TSR_MODEL_PARTS   folder with the model's parts (split to fit transfers)
#   TESSERA_MODELS    model cache (default $HOME/.cache/tessera/models)
#   TSR_OPS_TIMEOUT, TSR_TRAIN_TIMEOUT, TSR_MODEL_TIMEOUT, TSR_ENGINE_TIMEOUT,
#   TSR_LORA_TIMEOUT, TSR_BENCH_TIMEOUT   seconds per step
#                     (default 180, 240, 330, 180, 300, 240)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
main_log="$out/gpu-test.log"
: >"$main_log"

log() { echo "gpu-test: $*" | tee -a "$main_log" >&2; }
die() {
  echo "gpu-test: error: $*" | tee -a "$main_log" >&2
  exit 1
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(ops train model engine lora bench)
for s in "${steps[@]}"; do
  case "$s" in
    ops|train|model|engine|lora|bench) ;;
    *) die "unknown step '$s' (steps: ops train model engine lora bench)" ;;
  esac
done
want() { case " ${steps[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- 1. setup ----------------------------------------------------------------------
gpu=$root/.gpu
[ -d "$gpu/bin" ] || die "no $gpu/bin: run scripts/gpu-pack.sh on the build machine and carry .gpu"
if [ -f "$gpu/lib.tar.gz" ]; then
  rm -rf "${gpu:?}/lib"
  tar xzf "$gpu/lib.tar.gz" -C "$gpu" || die "cannot unpack $gpu/lib.tar.gz"
fi
log "repo $root; pack: $(sed -n 's/^commit: *//p' "$gpu/manifest.txt" 2>/dev/null || echo '?'), built $(sed -n 's/^date: *//p' "$gpu/manifest.txt" 2>/dev/null || echo '?')"

# Packed libraries are used only where this machine has no library of that
# soname: its own (newer) copy wins, and its programs (python3, mpirun) keep
# their own libraries even with LD_LIBRARY_PATH set.
uselib=${TMPDIR:-/tmp}/tsr-gpu-lib
rm -rf "$uselib"
mkdir -p "$uselib"
sys_libs=$(ldconfig -p 2>/dev/null | awk '{print $1}')
used=()
for f in "$gpu"/lib/*; do
  [ -e "$f" ] || continue
  so=$(basename "$f")
  if ! grep -qxF "$so" <<<"$sys_libs"; then
    ln -s "$f" "$uselib/$so"
    used+=("$so")
  fi
done
log "packed libraries used (absent here): ${used[*]:-none}"

cuda_dirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && cuda_dirs="$cuda_dirs:$d"
done
export LD_LIBRARY_PATH="$uselib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Open MPI as root, in a VM without ptrace-based single copy.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export PYTHONUNBUFFERED=1

unresolved() { # prints "program: soname" for every library not found
  local b
  for b in "$gpu"/bin/*; do
    ldd "$b" 2>&1 | awk -v p="$(basename "$b")" '/not found/ {print p ": " $1}'
  done
}
missing=$(unresolved)
if [ -n "$missing" ]; then
  # CUDA's libraries may live in a Python package (nvidia-*) rather than the system.
  log "not found at first: $(echo "$missing" | awk '{print $2}' | sort -u | tr '\n' ' ')"
  for so in $(echo "$missing" | awk '{print $2}' | sort -u); do
    hit=$(find /usr/local /usr/lib /opt -name "$so" \( -type f -o -type l \) 2>/dev/null | head -1)
    if [ -n "$hit" ]; then
      log "  $so -> $hit"
      LD_LIBRARY_PATH="$LD_LIBRARY_PATH:${hit%/*}"
    fi
  done
  missing=$(unresolved)
  [ -z "$missing" ] || die "libraries not found for the packed programs:
$missing
(packed: $gpu/lib; LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
fi
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: is this a GPU machine?"
nvidia-smi -L 2>&1 | tee -a "$main_log" || die "nvidia-smi -L failed"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 \
  | tee -a "$main_log"
mpirun=$(command -v mpirun || true)
[ -n "$mpirun" ] || die "mpirun not found"
log "mpirun: $mpirun ($("$mpirun" --version 2>&1 | head -1)); python3: $(command -v python3)"

# ---- 2. the model ------------------------------------------------------------------
models=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
model="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
want_sha=$(sed -n 's/^want_sha=//p' scripts/fetch-model.sh 2>/dev/null || true)
[ -n "$want_sha" ] || want_sha=$(sed -n 's/^want_sha=//p' "$gpu/scripts/fetch-model.sh" 2>/dev/null || true)
[ -n "$want_sha" ] || die "cannot read want_sha from scripts/fetch-model.sh"
if [ -n "${TSR_MODEL_PARTS:-}" ]; then
  # in order of the file name (part00 < part01 < part02), wherever they sit
  parts=$(find "$TSR_MODEL_PARTS" -maxdepth 2 \( -name 'model.part*' -o -name 'part*' \) \
            \( -type f -o -type l \) | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2-)
  [ -n "$parts" ] || die "TSR_MODEL_PARTS=$TSR_MODEL_PARTS holds no model.part* or part* files"
  if [ -f "$model" ] && [ "$(sha256sum "$model" | cut -c1-64)" = "$want_sha" ]; then
    log "model already in place: $model"
  else
    mkdir -p "$models"
    # one path per line; read into an array so that no name is split or globbed
    mapfile -t part_list <<<"$parts"
    cat "${part_list[@]}" >"$model.join" || die "cannot join the model parts into $model.join"
    # the parts may be of an xz- or gzip-compressed model
    magic=$(head -c 6 "$model.join" | od -An -tx1 | tr -d ' \n')
    case "$magic" in
      fd377a585a00)
        if command -v xz >/dev/null 2>&1; then
          xz -dc "$model.join" >"$model.tmp"
        else
          python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as f, open(sys.argv[2], "wb") as o: shutil.copyfileobj(f, o, 1 << 20)' \
            "$model.join" "$model.tmp"
        fi || die "cannot xz-decompress the joined model parts"
        rm -f "$model.join" ;;
      1f8b*)
        gzip -dc "$model.join" >"$model.tmp" || die "cannot gunzip the joined model parts"
        rm -f "$model.join" ;;
      *) mv "$model.join" "$model.tmp" ;;
    esac
    got=$(sha256sum "$model.tmp" | cut -c1-64)
    if [ "$got" != "$want_sha" ]; then
      rm -f "$model.tmp"
      die "joined model parts (${part_list[*]}) have sha256 $got, expected $want_sha"
    fi
    mv "$model.tmp" "$model"
    log "model joined from ${#part_list[@]} parts (${part_list[*]}): $model (sha256 ok)"
  fi
elif [ -f "$model" ]; then
  log "model: $model"
else
  log "WARNING: no model at $model and no TSR_MODEL_PARTS: the model test will skip"
fi
export TESSERA_MODEL=$model
export TSR_GPU_BIN=$gpu/bin

# ---- 3-5. the steps ----------------------------------------------------------------
declare -A result=()
run_step() { # name timeout log command...
  local name=$1 t=$2 file=$3
  shift 3
  log "== $name: $* (timeout ${t}s, log $file)"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$t" "$@" 2>&1 | tee "$file"
  rc=${PIPESTATUS[0]}
  local dt=$((SECONDS - t0))
  case $rc in
    0) result[$name]="PASS (${dt}s)" ;;
    77) result[$name]="SKIPPED (${dt}s): unexpected on a GPU machine" ;;
    124|137) result[$name]="TIMEOUT after ${t}s" ;;
    *) result[$name]="FAIL (exit $rc, ${dt}s)" ;;
  esac
  log "== $name: ${result[$name]}"
}

if want ops; then
  run_step ops "${TSR_OPS_TIMEOUT:-180}" "$out/ops.log" "$gpu/bin/test_cuda_ops"
fi
if want train; then
  # the training ops against float64 NumPy on the GPU: full f32 (reference
  # precision: f32 weights, 1e-5), f32 activations over bf16 weights and bf16
  # activations (1e-2: GEMM inputs are rounded to bf16)
  tdir=tests/train
  [ -f "$tdir/test_train_ops.py" ] || tdir=$gpu/tests/train
  run_step train "${TSR_TRAIN_TIMEOUT:-240}" "$out/train.log" bash -c "
    set -e
    python3 $tdir/test_train_ops.py $gpu/bin/train_ops_driver --backend cuda --act f32 --weights f32 --rtol 1e-5
    python3 $tdir/test_train_ops.py $gpu/bin/train_ops_driver --backend cuda --act f32 --rtol 1e-2
    python3 $tdir/test_train_ops.py $gpu/bin/train_ops_driver --backend cuda --act bf16 --rtol 1e-2"
fi
if want model; then
  script=tests/cuda/test_cuda_model.py
  [ -f "$script" ] || script=$gpu/tests/test_cuda_model.py
  run_step model "${TSR_MODEL_TIMEOUT:-330}" "$out/model.log" \
    python3 "$script" "$gpu/bin/tessera" "$mpirun"
fi
if want engine; then
  # engine_probe exits 1 when a top-k step's candidates are not the logits'
  # best, or a step with per-row draws brings the wrong rows whole
  ids="1 4093 198 1780 314 260 3575 282 4649 47 2 198 1 520 9531 198"
  run_step engine "${TSR_ENGINE_TIMEOUT:-180}" "$out/engine.log" bash -c "
    set -e
    for act in f32 bf16; do
      mkdir -p /tmp/probe-\$act
      $gpu/bin/engine_probe --device cuda --act-dtype \$act $model /tmp/probe-\$act 1 1 $ids
    done
    mkdir -p /tmp/probe-tp2
    $mpirun -np 2 $gpu/bin/engine_probe --device cuda --comm mpi $model /tmp/probe-tp2 2 1 $ids"
fi
if want lora; then
  run_step lora "${TSR_LORA_TIMEOUT:-300}" "$out/lora.log" \
    python3 tests/cuda/test_cuda_lora.py "$gpu/bin/tessera"
fi
if want bench; then
  if [ -f scripts/gpu-bench.sh ]; then
    run_step bench "${TSR_BENCH_TIMEOUT:-240}" "$out/bench.log" \
      env BIN="$gpu/bin" MODEL="$model" OUT="$out" bash scripts/gpu-bench.sh
  else
    result[bench]="not run (no scripts/gpu-bench.sh)"
  fi
fi

log "summary:"
status=0
for s in "${steps[@]}"; do
  log "  $s: ${result[$s]:-not run}"
  case "${result[$s]:-}" in PASS*|"not run"*) ;; *) status=1 ;; esac
done
exit $status
