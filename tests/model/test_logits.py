#!/usr/bin/env python3
"""Logits of the default model against the independent NumPy reference.

  * GGUF path: Tessera's logits for several prompts (every position) are within
    1e-4 relative of tests/reference/llama_ref.py, which reads the same GGUF with
    the `gguf` package and computes in float64.
  * Prefill in one batch, token-by-token decode and chunked prefill give the same
    logits (the KV cache and positions are right).
  * The f16 KV cache (--kv-dtype f16, the CPU engine's default; dump_logits
    defaults to f32): within 3e-3 of the reference (K and V rounded to 11
    significant bits move the logits by ~7e-4 of the largest here), and decode
    and chunked prefill within 3e-3 of its one-batch prefill (last-bit
    differences of K and V can round to the other f16 neighbour).
  * The same weights written as a Hugging Face directory (f32 safetensors, sharded,
    Q/K rows un-permuted to rotate-half) give the same logits through the
    safetensors path.

usage: test_logits.py DUMP_LOGITS_TOOL
"""

import os
import sys
import tempfile

import numpy as np

from common import check, default_model, run

import llama_ref
import gguf_to_hf

# Token ids: a ChatML question, plain English, and code/digits/unicode text.
PROMPTS = [
    [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198],
    [504, 2365, 6354, 16424, 18, 2131, 5629, 260, 23790, 2767, 30, 378, 253, 1446, 28, 29],
    [1106, 19, 20, 21, 22, 216, 5249, 30, 215, 2090, 6734, 28, 17, 28, 18, 29, 42, 1090, 29462, 3113],
]


def rel_err(a, b):
    """Largest absolute difference relative to the largest reference logit."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def tessera_logits(tool, model, ids, mode="prefill", kv="f32"):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        run([tool, "--kv-dtype", kv, model, f.name, mode] + [str(i) for i in ids])
        out = np.fromfile(f.name, dtype="<f4")
    return out.reshape(len(ids), -1).astype(np.float64)


def main():
    tool = sys.argv[1]
    model = default_model()
    ref = llama_ref.load(model)
    worst = 0.0
    for ids in PROMPTS:
        want = ref.logits(ids)
        got = tessera_logits(tool, model, ids)
        e = rel_err(got, want)
        worst = max(worst, e)
        print(f"prompt of {len(ids)} tokens: max relative error {e:.3e}")
        check(e <= 1e-4, f"logits differ from the reference by {e:.3e} (> 1e-4)")
        check(np.array_equal(got.argmax(-1), want.argmax(-1)),
              "argmax tokens differ from the reference")
    ids = PROMPTS[0]
    pre = tessera_logits(tool, model, ids)
    for mode in ("decode", "chunk:5"):
        e = rel_err(tessera_logits(tool, model, ids, mode), pre)
        print(f"{mode} vs prefill: {e:.3e}")
        check(e <= 1e-5, f"{mode} logits differ from one-batch prefill by {e:.3e}")

    for ids in PROMPTS:
        e = rel_err(tessera_logits(tool, model, ids, kv="f16"), ref.logits(ids))
        print(f"f16 KV cache, prompt of {len(ids)} tokens: max relative error {e:.3e}")
        check(e <= 3e-3, f"f16 KV cache: logits differ from the reference by {e:.3e} (> 3e-3)")
    pre16 = tessera_logits(tool, model, PROMPTS[0], kv="f16")
    for mode in ("decode", "chunk:5"):
        e = rel_err(tessera_logits(tool, model, PROMPTS[0], mode, kv="f16"), pre16)
        print(f"f16 KV cache, {mode} vs prefill: {e:.3e}")
        check(e <= 3e-3, f"f16 KV cache: {mode} logits differ from one-batch prefill by {e:.3e}")

    with tempfile.TemporaryDirectory() as d:
        gguf_to_hf.main([model, d, "--dtype", "f32", "--shards", "2"])
        check(os.path.exists(os.path.join(d, "model.safetensors.index.json")),
              "the converter did not write a sharded checkpoint")
        for ids in PROMPTS[:2]:
            e = rel_err(tessera_logits(tool, d, ids), tessera_logits(tool, model, ids))
            print(f"safetensors vs GGUF ({len(ids)} tokens): {e:.3e}")
            check(e <= 1e-5, f"HF-directory logits differ from GGUF logits by {e:.3e}")
    print(f"PASS (worst relative error vs reference {worst:.3e})")


if __name__ == "__main__":
    main()
