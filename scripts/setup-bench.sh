#!/usr/bin/env bash
# Creates the benchmark-only Python environment (.venv-bench) with llama-cpp-python
# built from its PyPI source distribution for this machine's CPU, so that
# bench/compare_llamacpp.py can measure llama.cpp on the same GGUF file as tsr_bench.
#
# This is a benchmark dependency only: Tessera never links or imports llama.cpp, the
# test venv (.venv, scripts/setup.sh) does not contain it, and CI never runs this.
#
#   scripts/setup-bench.sh                       # .venv-bench at the repo root
#   TESSERA_BENCH_VENV=DIR scripts/setup-bench.sh
#   LLAMA_CPP_PYTHON_VERSION=0.3.16 scripts/setup-bench.sh
#
# Idempotent: when the venv already imports llama_cpp at the wanted version, nothing is
# rebuilt. The source build compiles llama.cpp (C/C++) and takes several minutes on
# two cores.
#
# The build is CPU only: GGML_NATIVE=ON tunes it for the CPU it is built on (so the
# venv is not portable to another CPU), and GGML_CUDA=OFF plus an empty CUDACXX keep
# CMake away from the CUDA toolkit installed on these machines (no GPU runs here).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${TESSERA_BENCH_VENV:-$root/.venv-bench}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}

log() { echo "setup-bench: $*" >&2; }

py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$py" -m venv "$venv"
  # Keep the venv out of git without touching the repository's .gitignore.
  echo '*' >"$venv/.gitignore"
fi

cmake_args="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
-DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=ON \
-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
# ggml's AMX matmul (picked by -march=native on Sapphire Rapids and later) crashes on
# these KVM machines in the first decode (ggml-org/llama.cpp#20824, no fix upstream).
# GCC's explicit -mno-amx-int8 wins over -march=native whatever the order, so this
# keeps every other native feature (AVX-512, VNNI, BF16) and only drops AMX.
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  cmake_args="$cmake_args -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
fi
cmake_args="$cmake_args ${TESSERA_BENCH_CMAKE_ARGS:-}"

# The stamp records what the installed build was made from; a change rebuilds.
stamp="$venv/.tessera-bench-build"
want="llama-cpp-python==$version $cmake_args"
have=$("$venv/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)
if [ "$have" = "$version" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "ok (llama-cpp-python $have already in $venv)"
  exit 0
fi

# Build tools a source build needs: a C++ compiler and cmake (Debian packages).
if ! command -v c++ >/dev/null || ! command -v cmake >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    build-essential cmake
fi

"$venv/bin/pip" install -q --upgrade pip
# numpy is a llama-cpp-python dependency; install it from a wheel first so that only
# llama-cpp-python itself is compiled.
"$venv/bin/pip" install -q numpy

export CMAKE_ARGS="$cmake_args"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export CUDACXX=""        # never let CMake probe nvcc
export CUDA_VISIBLE_DEVICES=""
export FORCE_CMAKE=1

log "building llama-cpp-python==$version from source (CMAKE_ARGS=$CMAKE_ARGS)"
rm -f "$stamp"
# --force-reinstall --no-deps: a build with other flags replaces one of the same version.
"$venv/bin/pip" install --no-cache-dir --force-reinstall --no-deps \
  --no-binary llama-cpp-python "llama-cpp-python==$version"
"$venv/bin/pip" install -q "llama-cpp-python==$version" # its dependencies, from wheels

"$venv/bin/python" - <<'EOF'
import llama_cpp
info = llama_cpp.llama_print_system_info()
print("setup-bench: llama-cpp-python", llama_cpp.__version__)
print("setup-bench: system info:", info.decode() if isinstance(info, bytes) else info)
print("setup-bench: GPU offload supported:", llama_cpp.llama_supports_gpu_offload())
EOF
echo "$want" >"$stamp"
log "ok ($venv)"
