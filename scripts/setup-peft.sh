#!/usr/bin/env bash
# Creates the benchmark-only Python environment with PyTorch (CPU build), Hugging Face
# transformers, PEFT and gguf, so that bench/compare_peft_train.py can time a LoRA
# training step of PyTorch + PEFT next to `tessera train` on the same GGUF file.
#
# This is a benchmark dependency only: Tessera never links or imports PyTorch, the test
# venv (.venv, scripts/setup.sh) does not contain it, and CI never runs this. The venv
# lives outside the repository by default: about 1 GiB with PyTorch's CPU wheel,
# 5.6 GiB with PyPI's (which brings the CUDA libraries along).
#
#   scripts/setup-peft.sh                        # /work/venvs/peft
#   TESSERA_PEFT_VENV=DIR scripts/setup-peft.sh
#
# Idempotent: when the venv already imports torch, transformers, peft and gguf at the
# wanted versions, nothing is installed. torch comes from PyTorch's CPU-only wheel index
# (no CUDA libraries, ~200 MB instead of ~2.5 GB); when that index cannot be reached it
# falls back to the PyPI wheel.
set -euo pipefail

venv=${TESSERA_PEFT_VENV:-/work/venvs/peft}
torch_version=${TORCH_VERSION:-2.15.0}
transformers_version=${TRANSFORMERS_VERSION:-5.23.0}
peft_version=${PEFT_VERSION:-0.21.2}
gguf_version=${GGUF_VERSION:-0.19.0}

log() { echo "setup-peft: $*" >&2; }

py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
  echo '*' >"$venv/.gitignore"
fi

want="torch==$torch_version transformers==$transformers_version peft==$peft_version gguf==$gguf_version"
stamp="$venv/.tessera-peft"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
  "$venv/bin/python" -c 'import torch, transformers, peft, gguf' 2>/dev/null; then
  log "ok ($want already in $venv)"
  exit 0
fi

"$venv/bin/pip" install -q --upgrade pip
if ! "$venv/bin/pip" install -q --timeout 20 --retries 1 "torch==$torch_version" \
  --index-url https://download.pytorch.org/whl/cpu; then
  # PyPI's Linux wheel carries the CUDA libraries as dependencies (several GB); the
  # CPU runs of the benchmark never use them.
  log "PyTorch's CPU index failed; installing torch from PyPI"
  "$venv/bin/pip" install -q "torch==$torch_version"
fi
# transformers reads GGUF files through the gguf package (dequantized to f32 at load).
"$venv/bin/pip" install -q "transformers==$transformers_version" "peft==$peft_version" \
  "gguf==$gguf_version" accelerate sentencepiece

"$venv/bin/python" - <<'EOF'
import torch, transformers, peft, gguf
print("setup-peft: torch", torch.__version__, "threads", torch.get_num_threads(),
      "| transformers", transformers.__version__, "| peft", peft.__version__)
EOF
echo "$want" >"$stamp"
log "ok ($venv)"
