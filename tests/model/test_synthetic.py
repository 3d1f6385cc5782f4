#!/usr/bin/env python3
"""Tiny random models written as GGUF files, against the NumPy reference.

Covers what the default model does not: an untied LM head, Qwen2 Q/K/V biases,
linear RoPE scaling, head_dim != n_embd / n_head, and weights stored as F32, F16,
BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants Q2_K to Q6_K and IQ4_NL (alone,
and as llama-quantize's fallback for K-quant rows not a multiple of 256). Each
model's logits at every position must be within 1e-4 relative of
tests/reference/llama_ref.py. Also: the same model converted to an HF directory
gives the same logits, and a GGUF whose tensor shapes contradict its metadata, or
that holds a block type Tessera does not read, is refused with a clear message.

usage: test_synthetic.py DUMP_LOGITS_TOOL
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf

from common import check, run

import llama_ref
import tiny_gguf
import gguf_to_hf

Q = gguf.GGMLQuantizationType

# The gguf package cannot quantize the K-quants or IQ4_NL: their matrices are
# random blocks with small f16 scales. type -> (offset of d, offset of dmin or
# None, d and dmin times sqrt(cols)), chosen so a weight is O(1 / sqrt(cols)).
K_QUANTS = {
    Q.Q2_K: (80, 82, 0.05, 0.05),
    Q.Q3_K: (108, None, 0.02, 0),
    Q.Q4_K: (0, 2, 0.003, 0.005),
    Q.Q5_K: (0, 2, 0.0015, 0.005),
    Q.Q6_K: (208, None, 0.001, 0),  # int8 scales up to 127 times 6-bit quants up to 32
}
RANDOM_BLOCKS = {**K_QUANTS, Q.IQ4_NL: (0, None, 0.015, 0)}  # IQ4_NL: table values up to 127


def write_model(path, arch, *, n_embd=64, n_layer=2, n_head=4, n_kv=2, head_dim=None, n_ff=96,
                vocab=128, untied=False, bias=False, rope_linear=None, wtype=Q.F32, seed=0,
                bad_shape=False, bad_type=None):
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    if head_dim:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_layer_norm_rms_eps(1e-5)
    tiny_gguf.add_byte_vocab(w, vocab)  # so the HF converter can write tokenizer.json
    w.add_rope_freq_base(10000.0)
    if rope_linear:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_linear)

    def mat(name, rows, cols, qtype=wtype, scale=None):
        if qtype in K_QUANTS and cols % 256:
            qtype = Q.IQ4_NL  # llama-quantize's fallback for rows that cut a 256-block
        a = (rng.standard_normal((rows, cols)) * (scale or 1 / np.sqrt(cols))).astype(np.float32)
        if qtype in (Q.F32,):
            w.add_tensor(name, a)
        elif qtype == Q.F16:
            w.add_tensor(name, a.astype(np.float16))
        elif qtype in RANDOM_BLOCKS:
            d_at, m_at, d, dmin = RANDOM_BLOCKS[qtype]
            qk, bb = gguf.GGML_QUANT_SIZES[qtype]
            blocks = rng.integers(0, 256, size=(rows, cols // qk, bb), dtype=np.uint8)
            for at, v in ((d_at, d), (m_at, dmin)):
                if at is not None:
                    h = np.full((rows, cols // qk), v / np.sqrt(cols), dtype=np.float16)
                    blocks[:, :, at:at + 2] = h.view(np.uint8).reshape(rows, cols // qk, 2)
            raw = blocks.reshape(rows, -1)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        else:
            qd = gguf.quants.quantize(a, qtype)
            w.add_tensor(name, qd, raw_shape=qd.shape, raw_dtype=qtype)

    def vec(name, n, base=1.0):
        w.add_tensor(name, (base + 0.1 * rng.standard_normal(n)).astype(np.float32))

    for name, kind, rows, cols in tiny_gguf.tensors(n_layer=n_layer, n_embd=n_embd,
                                                    n_head=n_head, n_kv=n_kv, n_ff=n_ff,
                                                    vocab=vocab, head_dim=hd, untied=untied,
                                                    bias=bias):
        if kind in ("norm", "bias"):
            vec(name, rows, 1.0 if kind == "norm" else 0.0)
        elif bad_shape and name == "blk.1.attn_q.weight":
            mat(name, rows + 32, cols)  # a shape the config does not imply
        elif bad_type is not None and name == "blk.1.attn_q.weight":
            qk, bb = gguf.GGML_QUANT_SIZES[bad_type]  # a block type Tessera does not read
            raw = rng.integers(0, 256, size=(rows, cols // qk * bb), dtype=np.uint8)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=bad_type)
        else:
            mat(name, rows, cols, scale=1.0 if kind == "embd" else None)
    tiny_gguf.write(w)


def logits_of(tool, model, ids, weights="f32", tile_min=None, mode="prefill"):
    """dump_logits' logits; weights="file" keeps the blocks, and tile_min sets
    TSR_QMM_TILE_MIN (1: every matmul takes the dequantized-tile SGEMM path; a large value:
    every one quantizes its activations and runs the int8 dot kernels)."""
    env = dict(os.environ)
    if tile_min is not None:
        env["TSR_QMM_TILE_MIN"] = str(tile_min)
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        run([tool, "--weights", weights, model, f.name, mode] + [str(i) for i in ids], env=env)
        return np.fromfile(f.name, dtype="<f4").reshape(len(ids), -1).astype(np.float64)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


CASES = [
    ("llama f32 untied, linear rope x4", "llama", dict(untied=True, rope_linear=4.0)),
    ("qwen2 with q/k/v biases", "qwen2", dict(bias=True, untied=True)),
    ("llama head_dim 32 != n_embd/n_head", "llama", dict(head_dim=32, n_head=4, n_kv=4)),
    ("llama MHA f16", "llama", dict(n_kv=4, wtype=Q.F16)),
    ("llama bf16", "llama", dict(wtype=Q.BF16)),
    ("llama q8_0", "llama", dict(wtype=Q.Q8_0)),
    ("llama q4_0", "llama", dict(wtype=Q.Q4_0)),
    ("llama q4_1", "llama", dict(wtype=Q.Q4_1)),
    ("llama q5_0", "llama", dict(wtype=Q.Q5_0)),
    ("llama q5_1", "llama", dict(wtype=Q.Q5_1)),
] + [
    (f"llama {t.name.lower()} (256-wide rows)", "llama",
     dict(wtype=t, n_embd=256, n_ff=512, n_head=4)) for t in K_QUANTS
] + [  # last, so the cases above keep their seeds and token ids
    ("llama iq4_nl", "llama", dict(wtype=Q.IQ4_NL)),
    ("llama q3_k, ffn_down (288-wide rows) as iq4_nl", "llama",
     dict(wtype=Q.Q3_K, n_embd=256, n_ff=288, n_head=4)),
]


def check_blocks(tool, path, ids, name):
    """The weights kept in their blocks (--weights file): the int8 path (prefill and token
    by token) against the reference that quantizes each matmul's input as the kernels do,
    and the tiled path (dequantized tiles into SGEMM, activations as they are: training's
    product, here forced with TSR_QMM_TILE_MIN=1) against the plain reference.

    A row where some activation of the reference lies within 2e-5 of a rounding tie is
    excused from the int8 comparison (f32 and f64 may round it either way, and one step
    moves a small random model's logits by up to a few 1e-2); at most 6 of 11 may be."""
    m = llama_ref.load(path)
    exact = m.logits(ids)
    margin = np.ones(len(ids))
    quant = m.logits(ids, act_quant=margin)
    tiled = rel_err(logits_of(tool, path, ids, "file", tile_min=1), exact)
    sure = margin >= 2e-5
    int8 = rel_err(logits_of(tool, path, ids, "file")[sure], quant[sure])
    step = rel_err(logits_of(tool, path, ids, "file", mode="decode")[sure], quant[sure])
    drift = rel_err(quant, exact)
    print(f"{name}: blocks kept: int8 prefill {int8:.2e}, int8 decode {step:.2e} "
          f"({len(ids) - sure.sum()} rows near a rounding tie left out), tiled {tiled:.2e} "
          f"(int8 activations move the reference by {drift:.2e})")
    check(tiled <= 1e-4, f"{name}: tiled path differs from the reference by {tiled:.2e}")
    check(sure.sum() >= len(ids) - 6, f"{name}: {len(ids) - sure.sum()} rows near a tie")
    check(int8 <= 2e-5 and step <= 2e-5,
          f"{name}: int8 path differs from the quantizing reference by {int8:.2e}/{step:.2e}")


def main():
    tool = sys.argv[1]
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        for i, (name, arch, kw) in enumerate(CASES):
            path = os.path.join(d, f"m{i}.gguf")
            write_model(path, arch, seed=i, **kw)
            ids = [int(t) for t in rng.integers(0, 128, size=11)]
            want = llama_ref.logits(path, ids)
            got = logits_of(tool, path, ids)
            e = rel_err(got, want)
            print(f"{name}: max relative error {e:.2e} (max abs {np.max(np.abs(got - want)):.2e}"
                  f" over logits up to {np.max(np.abs(want)):.3g})")
            check(e <= 1e-4, f"{name}: logits differ from the reference by {e:.2e}")
            if kw.get("wtype", Q.F32) not in (Q.F32, Q.F16, Q.BF16):
                check_blocks(tool, path, ids, name)
            if i == 0:
                hf = os.path.join(d, "hf0")
                gguf_to_hf.main([path, hf, "--dtype", "f32"])
                e2 = rel_err(logits_of(tool, hf, ids), got)
                print(f"{name}: HF directory vs GGUF {e2:.2e}")
                check(e2 <= 1e-5, f"HF directory logits differ from GGUF by {e2:.2e}")

        bad = os.path.join(d, "bad.gguf")
        write_model(bad, "llama", bad_shape=True)
        r = subprocess.run([tool, bad, os.path.join(d, "x.f32"), "prefill", "1", "2"],
                           capture_output=True, text=True)
        check(r.returncode != 0, "a model with a wrong tensor shape was accepted")
        check("blk.1.attn_q.weight" in r.stderr and "config implies" in r.stderr,
              f"unclear message for a wrong tensor shape: {r.stderr!r}")

        # A K-quant file with one tensor of a type Tessera does not read (IQ2_XXS)
        bad = os.path.join(d, "iq.gguf")
        write_model(bad, "llama", wtype=Q.Q4_K, n_embd=256, n_ff=512, bad_type=Q.IQ2_XXS)
        r = subprocess.run([tool, bad, os.path.join(d, "x.f32"), "prefill", "1", "2"],
                           capture_output=True, text=True)
        check(r.returncode != 0, "a model with an IQ2_XXS tensor was accepted")
        check("blk.1.attn_q.weight" in r.stderr and f"type id {int(Q.IQ2_XXS)} [256, 256]" in
              r.stderr, f"unclear message for an unknown block type: {r.stderr!r}")
        print(f"unknown block type refused: {r.stderr.strip()}")
    print("PASS")


if __name__ == "__main__":
    main()
