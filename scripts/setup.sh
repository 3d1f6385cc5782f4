#!/usr/bin/env bash
# Installs everything Tessera's build, tests and demo need on a Debian machine:
# Debian packages by name (apt-get) and a Python virtual environment (.venv) with
# the test-only PyPI packages. Idempotent: a second run changes nothing.
#
#   scripts/setup.sh            # system packages + .venv
#   TESSERA_VENV=DIR scripts/setup.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${TESSERA_VENV:-$root/.venv}

debs=(
  build-essential cmake pkg-config git ca-certificates unzip
  libopenblas-dev          # CPU GEMM
  libpcre2-dev             # pre-tokenizer regex with Unicode classes
  libjansson-dev           # JSON (config.json, tokenizer.json, safetensors headers)
  openmpi-bin libopenmpi-dev   # ranks and host collectives
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler   # tessera.v1 messages
  libgrpc-dev              # gRPC C core
  libmicrohttpd-dev        # the Prometheus /metrics endpoint of tessera serve
  python3 python3-venv python3-dev
  openssl                  # test certificates for the TLS tests
  libyaml-dev              # tessera-launch's config files (YAML)
  zlib1g-dev               # tessera-cli train's loss.png (PNG's deflate and CRCs)
  slurm-wlm munge libpmix-dev   # sbatch scripts + the local Slurm of tests/launch (srun --mpi=pmix)
  clang-format             # tests/style: the tree's C layout (.clang-format)
  clang libclang-rt-14-dev # tests/fuzz: clang 14 and its libFuzzer (-fsanitize=fuzzer)
)

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test-only Python packages: never imported by Tessera itself.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$py" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import numpy, gguf, tokenizers, jinja2, grpc, grpc_tools, safetensors, ml_dtypes" 2>/dev/null; then
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$root/scripts/requirements-test.txt"
fi
echo "setup: ok ($venv)"
