#!/usr/bin/env python3
"""A tiny Llama GGUF with the default model's tokenizer, for measuring the serving
path without the model: one layer, n_embd 16, random f32 weights, and every
tokenizer.* field of the source GGUF (vocabulary, merges, special ids, chat
template), so `tessera serve` tokenizes, detokenizes and streams exactly as it
does for the real model while a forward costs almost nothing. Its answers are
noise; only the serving layer's rate means anything (docs/benchmarks.md).

usage: bench/tiny_serving_model.py SOURCE.gguf OUT.gguf
then:  .venv/bin/python bench/loadgen.py --model OUT.gguf --no-mpirun --max-seqs 64 \\
           --ctx 512 --levels 64 --duration 10 -P 64 -G 64 --threads 1
"""

import os
import sys

import gguf
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "reference"))
import tiny_gguf  # noqa: E402

C, L, H, KV, HD, FF = 16, 1, 2, 1, 8, 32


def copy_tokenizer(src, w):
    vt = gguf.GGUFValueType
    scalar = {vt.UINT32: w.add_uint32, vt.INT32: w.add_int32, vt.BOOL: w.add_bool,
              vt.FLOAT32: w.add_float32}
    for name, f in src.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == vt.ARRAY:
            vals = [f.parts[i] for i in f.data]
            if f.types[1] == vt.STRING:
                vals = [bytes(v).decode("utf-8", "surrogateescape") for v in vals]
            else:
                vals = [v.tolist()[0] for v in vals]
            w.add_array(name, vals)
        elif t == vt.STRING:
            w.add_string(name, bytes(f.parts[f.data[0]]).decode())
        elif t in scalar:
            scalar[t](name, f.parts[f.data[0]].tolist()[0])
        else:
            raise SystemExit(f"tiny_serving_model: {name}: value type {t} not copied")
    return len(src.fields["tokenizer.ggml.tokens"].data)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    src = gguf.GGUFReader(sys.argv[1])
    w = gguf.GGUFWriter(sys.argv[2], "llama")
    tiny_gguf.add_header(w, n_layer=L, n_embd=C, n_head=H, n_kv=KV, n_ff=FF, ctx=2048)
    V = copy_tokenizer(src, w)
    rng = np.random.default_rng(0)

    for name, kind, rows, cols in tiny_gguf.tensors(n_layer=L, n_embd=C, n_head=H, n_kv=KV,
                                                    n_ff=FF, vocab=V, head_dim=HD):
        if kind in ("norm", "bias"):
            a = 1 + 0.1 * rng.standard_normal(rows)
        else:
            a = rng.standard_normal((rows, cols)) * (1.0 if kind == "embd" else 1 / np.sqrt(cols))
        w.add_tensor(name, a.astype(np.float32))
    tiny_gguf.write(w)
    print(f"tiny_serving_model: wrote {sys.argv[2]} ({V} tokens, {L} layer, n_embd {C})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
