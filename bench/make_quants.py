#!/usr/bin/env python3
"""bench/make_quants.py - other quantizations of the default model, for the benchmarks.

llama.cpp's quantizer (llama_model_quantize, through llama-cpp-python's bindings:
the same code as the llama-quantize tool) requantizes the default Q4_1 GGUF into
the types named, next to it in the model cache:

  .venv-bench/bin/python bench/make_quants.py                 # Q8_0 Q4_K_M Q5_K_M
  .venv-bench/bin/python bench/make_quants.py Q3_K_M Q6_K

Requantizing from Q4_1 (allow_requantize) is what the brief allows: the values are
those of the Q4_1 file, rounded again, so these files test Tessera's kernels and
compare speed with llama.cpp on the same bytes; their perplexity is not that of a
quantization made from the original bf16 weights. A file already there is kept.
"""
import os
import sys

import llama_cpp

MODELS = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
SRC = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")


def main():
    names = sys.argv[1:] or ["Q8_0", "Q4_K_M", "Q5_K_M"]
    if not os.path.exists(SRC):
        sys.exit(f"make_quants: {SRC} is missing: run scripts/fetch-model.sh first")
    for name in names:
        ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}", None)
        if ftype is None:
            sys.exit(f"make_quants: llama.cpp has no file type {name}")
        dst = os.path.join(MODELS, f"SmolLM2-135M-Instruct.{name}.gguf")
        if os.path.exists(dst):
            print(f"make_quants: {dst} (kept)")
            continue
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 1
        tmp = dst + ".part"
        rc = llama_cpp.llama_model_quantize(SRC.encode(), tmp.encode(), params)
        if rc != 0:
            sys.exit(f"make_quants: llama_model_quantize({name}) returned {rc}")
        os.replace(tmp, dst)
        print(f"make_quants: {dst}")


if __name__ == "__main__":
    main()
