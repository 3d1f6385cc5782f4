#!/usr/bin/env python3
"""LoRA training of whole models: runtime/model/lora.c and runtime/train/train.c against the
float64 NumPy reference tests/reference/lora_ref.py, and between TP layouts.

(a) The reference's LoRA gradients (every target, both factors) equal central
    finite differences (h = 1e-5) of its own loss on tiny random models, within
    1e-6 (err = max|fd - analytic| / max|analytic| over each matrix, on sampled
    elements).
(b) Tessera's loss and gradients at tp = 1 equal the reference's: loss within
    1e-5 relative, every dA and dB within 1e-4 (the same err) on a tiny random
    llama (untied head, all seven targets, B random so dA is not zero; two
    ForwardBackward calls accumulated), a tiny Qwen2 with Q/K/V biases
    (rsLoRA, all targets) and the default model (2 sequences of 12 tokens,
    targets q,v,o,down, zero-weight prompt tokens). The adapter Tessera
    creates is PEFT's: A within 1/sqrt(d_in), B = 0 (then dA = 0).
(c) tp = 2 and 3 on the default model, tp = 2 and 4 on the tiny llama (tp = 4
    replicates its 2 KV heads), give the same loss (1e-5 relative), the same
    gradients and the same adapter after the optimizer step (1e-5) as tp = 1,
    and the initial adapter is identical whatever the layout.
(d) AdamW: the adapter after two optimizer steps equals the NumPy formula
    applied to Tessera's own gradients divided by the accumulated weight sum,
    with the global norm clipped (torch's clip_grad_norm_ factor), within 1e-5;
    the reported norm equals the NumPy norm (1e-6).
(e) A NaN in B makes the loss NaN: the step is refused (TSR_ERR_RANGE), the
    adapter keeps its state (bit for bit), the step count stays 0 and the
    accumulators are zeroed.
(f) Bad input is refused with a message naming the problem: a token id
    outside the vocabulary, a negative loss weight, an empty sequence, a
    sequence longer than the context, LoRA dropout 1 (must be in [0, 1)), an
    unknown target.
(g) LoRA dropout p = 0.3 (runtime/model/lora.h's masks; lora_ref.py applies the
    same ones, bit for bit, from train_ref.dropout_keep):
      - the reference's gradients with the masks held fixed equal central
        finite differences (as (a), tiny llama and tiny qwen2);
      - Tessera's loss and every dA, dB at tp = 1 equal the reference's
        (1e-5 / 1e-4) on the tiny llama (all targets, the batch in two
        ForwardBackward calls: the second's token_offset makes its masks the
        whole batch's) and the default model (q,v,o,down), and step 2 (key
        + 1, new masks) equals the reference from Tessera's adapter after
        step 1; the dropped loss and gradients differ from the undropped ones;
      - Forward (evaluation) does not drop: its loss with dropout 0.3 is bit
        for bit the one with dropout 0, and equals the reference's undropped
        loss;
      - the same steps under tp = 2, 3 (a tiny 6-head MHA llama and the
        default model) and tp = 2, 4 (the tiny llama, tp = 4 replicating its
        KV heads) give the same loss, gradients and updated adapter as tp = 1
        (the (c) tolerances).

usage: test_lora.py LORA_DRIVER MPIEXEC
"""

import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import lora_ref  # noqa: E402
import llama_ref  # noqa: E402
import tiny_gguf  # noqa: E402

SKIP = 77
TSR_ERR_RANGE = 6
FD_TOL, C_TOL, TP_TOL, TP_MAT_TOL = 1e-6, 1e-4, 1e-5, 5e-5
DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common"))
from check import Checks  # noqa: E402

CHECKS = Checks()
check, failures = CHECKS.check, CHECKS.failures


def err(got, want):
    """max |got - want| / max |want| (want not all zero), else max |got|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want))
    return float(np.max(np.abs(got - want)) / (scale if scale > 0 else 1.0))


# ---- files -----------------------------------------------------------------------------

def write_records(path, recs):
    """recs: list of (name, kind, array) with kind 'f' (f32), 'd' (f64), 'i' (int32)."""
    dt = {"f": "<f4", "d": "<f8", "i": "<i4"}
    parts = [b"TSRL", struct.pack("<II", 1, len(recs))]
    for name, kind, a in recs:
        a = np.ascontiguousarray(np.asarray(a, dtype=dt[kind]))
        nb = name.encode()
        parts += [struct.pack("<I", len(nb)), nb, kind.encode(), struct.pack("<I", a.ndim),
                  struct.pack(f"<{a.ndim}Q", *a.shape), a.tobytes()]
    with open(path, "wb") as f:
        f.write(b"".join(parts))


def read_records(path):
    dt = {"f": "<f4", "d": "<f8", "i": "<i4"}
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:4] == b"TSRL", path
    _, n = struct.unpack_from("<II", buf, 4)
    off, out = 12, {}
    for _ in range(n):
        (ln,) = struct.unpack_from("<I", buf, off)
        name = buf[off + 4:off + 4 + ln].decode()
        off += 4 + ln
        kind = chr(buf[off])
        (nd,) = struct.unpack_from("<I", buf, off + 1)
        shape = struct.unpack_from(f"<{nd}Q", buf, off + 5)
        off += 5 + 8 * nd
        d = np.dtype(dt[kind])
        cnt = int(np.prod(shape, dtype=np.int64))
        a = np.frombuffer(buf, d, cnt, off).reshape(shape).astype(np.float64)
        off += cnt * d.itemsize
        out[name] = a[0] if kind == "d" and a.size == 1 else a
    return out


def write_tiny(path, arch, *, n_embd=32, n_layer=2, n_head=4, n_kv=2, n_ff=64, vocab=96,
               untied=False, bias=False, seed=0):
    """A tiny random GGUF model with f32 weights (after tests/model/test_synthetic.py)."""
    import gguf
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch)
    tiny_gguf.add_header(w, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_kv=n_kv, n_ff=n_ff)
    tiny_gguf.add_byte_vocab(w, vocab)

    def mat(name, rows, cols, scale=None):
        w.add_tensor(name, (rng.standard_normal((rows, cols)) *
                            (scale or 1 / np.sqrt(cols))).astype(np.float32))

    def vec(name, n, base=1.0):
        w.add_tensor(name, (base + 0.1 * rng.standard_normal(n)).astype(np.float32))

    for name, kind, rows, cols in tiny_gguf.tensors(n_layer=n_layer, n_embd=n_embd,
                                                    n_head=n_head, n_kv=n_kv, n_ff=n_ff,
                                                    vocab=vocab, untied=untied, bias=bias):
        if kind in ("norm", "bias"):
            vec(name, rows, 1.0 if kind == "norm" else 0.0)
        else:
            mat(name, rows, cols, scale=1.0 if kind == "embd" else None)
    tiny_gguf.write(w)


# ---- running the driver ---------------------------------------------------------------

class Runner:
    def __init__(self, driver, mpiexec, tmp):
        self.driver, self.mpiexec, self.tmp, self.n = driver, mpiexec, tmp, 0

    def _run(self, model, seqs, weights, tp, flags, seq_start=None):
        self.n += 1
        inp = os.path.join(self.tmp, f"in{self.n}.tsrl")
        out = os.path.join(self.tmp, f"out{self.n}.tsrl")
        if seq_start is None:
            seq_start = np.cumsum([0] + [len(s) for s in seqs])
        write_records(inp, [("seq_start", "i", seq_start), ("tokens", "i", np.concatenate(seqs)),
                            ("weights", "f", np.concatenate(weights))])
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [self.mpiexec, "-np", str(tp), "--oversubscribe", "--bind-to", "none",
               self.driver, *flags, model, inp, out]
        return subprocess.run(cmd, capture_output=True, text=True, env=env), cmd, out, seq_start

    def run(self, model, seqs, weights, tp=1, flags=()):
        t0 = time.time()
        r, cmd, out, seq_start = self._run(model, seqs, weights, tp, flags)
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            raise SystemExit(f"FAIL: {' '.join(cmd)} exited {r.returncode}")
        print(f"     ran tp={tp} {os.path.basename(model)} in {time.time() - t0:.1f}s")
        return read_records(out), seq_start

    def refused(self, label, want, model, seqs, weights, flags=(), seq_start=None):
        """(f): the driver must fail with a message containing `want`."""
        r, _, _, _ = self._run(model, seqs, weights, 1, flags, seq_start)
        check(r.returncode != 0 and want in r.stderr,
              f"(f) {label} refused: {r.stderr.strip().splitlines()[0] if r.stderr else '?'}")


def adapter_from(rec, prefix, scale):
    """lora_ref.Adapter from the driver's PREFIX.L.T.A / .B records."""
    ad = lora_ref.Adapter(scale)
    for k, v in rec.items():
        parts = k.split(".")
        if len(parts) == 4 and parts[0] == prefix and parts[3] in ("A", "B"):
            key = (int(parts[1]), parts[2])
            (ad.A if parts[3] == "A" else ad.B)[key] = v
    return ad


def grads_of(rec, prefix):
    dA, dB = {}, {}
    for k, v in rec.items():
        parts = k.split(".")
        if len(parts) == 4 and parts[0] == prefix and parts[3] in ("dA", "dB"):
            (dA if parts[3] == "dA" else dB)[int(parts[1]), parts[2]] = v
    return dA, dB


# ---- (a) the reference against finite differences -------------------------------------

def fd_check(path, label, rslora=False, dropout=0.0, key=None):
    rng = np.random.default_rng(3)
    model = lora_ref.hf_layout(llama_ref.load(path))
    c = model.cfg
    r = 2
    ad = lora_ref.Adapter(16.0 / (np.sqrt(r) if rslora else r), dropout=dropout, seed=17)
    dims = {"q": (c.n_embd, c.n_head * c.head_dim), "k": (c.n_embd, c.n_head_kv * c.head_dim),
            "v": (c.n_embd, c.n_head_kv * c.head_dim), "o": (c.n_head * c.head_dim, c.n_embd),
            "gate": (c.n_embd, c.n_ff), "up": (c.n_embd, c.n_ff), "down": (c.n_ff, c.n_embd)}
    for l in range(c.n_layer):
        for t in lora_ref.TARGETS:
            din, dout = dims[t]
            ad.A[l, t] = rng.uniform(-1, 1, (r, din)) / np.sqrt(din)
            ad.B[l, t] = rng.uniform(-0.1, 0.1, (dout, r))
    seqs = [rng.integers(0, c.n_vocab, 6), rng.integers(0, c.n_vocab, 4)]
    tokens = np.concatenate(seqs)
    seq_start = [0, 6, 10]
    weights = rng.uniform(0.2, 1.0, len(tokens))
    weights[2] = 0.0
    kw = dict(dropout_key=key)
    _, dA, dB = lora_ref.loss_and_grads(model, ad, tokens, seq_start, weights, **kw)
    h, worst = 1e-5, 0.0
    for (l, t), A in ad.A.items():
        for name, P, G in (("A", A, dA[l, t]), ("B", ad.B[l, t], dB[l, t])):
            flat = P.reshape(-1)
            idx = rng.choice(flat.size, size=min(6, flat.size), replace=False)
            fd = np.empty(len(idx))
            for j, i in enumerate(idx):
                old = flat[i]
                flat[i] = old + h
                lp = lora_ref.loss_and_grads(model, ad, tokens, seq_start, weights, grads=False,
                                             **kw)[0]
                flat[i] = old - h
                lm = lora_ref.loss_and_grads(model, ad, tokens, seq_start, weights, grads=False,
                                             **kw)[0]
                flat[i] = old
                fd[j] = (lp - lm) / (2 * h)
            e = float(np.max(np.abs(fd - G.reshape(-1)[idx])) / np.max(np.abs(G)))
            worst = max(worst, e)
    tag = f"(g) {label}, dropout {dropout:g} (masks fixed)" if dropout else f"(a) {label}"
    check(worst <= FD_TOL, f"{tag}: reference LoRA gradients vs finite differences, "
                           f"worst err {worst:.2e} (<= {FD_TOL:g})")


# ---- (b), (d), (e): Tessera against the reference --------------------------------------

def compare_ref(rec, seq_start, tokens, weights, model, label, accum_parts=1, step=0):
    """Loss and gradients of step `step` (from the adapter before it) against the
    reference, with the driver's dropout and that step's key (cfg.dropout_key + step);
    Forward against the undropped reference loss. Returns the reference's (dA, dB)."""
    before = "init" if step == 0 else f"s{step - 1}"
    ad = adapter_from(rec, before, rec["cfg.scale"])
    ad.dropout, ad.seed = float(np.float32(rec["cfg.dropout"])), int(rec["cfg.seed"])
    key = int(rec["cfg.dropout_key"]) + step
    tag = "(g)" if ad.dropout > 0 else "(b)"
    loss, dA, dB = lora_ref.loss_and_grads(model, ad, tokens, seq_start, weights,
                                           dropout_key=key)
    eval_loss = (lora_ref.loss_and_grads(model, ad, tokens, seq_start, weights, grads=False)[0]
                 if ad.dropout > 0 else loss)
    sk = f"s{step}"
    e_loss = abs(rec[sk + ".loss"] - loss) / abs(loss)
    e_fwd = abs(rec[sk + ".fwd_loss"] - eval_loss) / abs(eval_loss)
    check(e_loss <= 1e-5 and e_fwd <= 1e-5,
          f"{tag} {label}: loss {rec[sk + '.loss']:.6f} vs reference {loss:.6f}, Forward "
          f"{rec[sk + '.fwd_loss']:.6f} vs {eval_loss:.6f}: rel err {max(e_loss, e_fwd):.2e}")
    cA, cB = grads_of(rec, sk)
    check(set(cA) == set(dA), f"{tag} {label}: the same adapted matrices ({len(dA)})")
    worst, where = 0.0, None
    for key in dA:
        for name, got, want in (("dA", cA[key], dA[key]), ("dB", cB[key], dB[key])):
            e = err(got, want)
            if e > worst:
                worst, where = e, f"layer {key[0]} {key[1]} {name}"
    check(worst <= C_TOL, f"{tag} {label}{' (2 calls accumulated)' if accum_parts > 1 else ''}"
                          f"{f' step {step + 1}' if step else ''}: every dA, dB vs reference, "
                          f"worst err {worst:.2e} at {where} (<= {C_TOL:g})")
    return dA, dB


def check_adamw(rec, label, lr, b1, b2, eps, wd, max_norm, steps):
    """The adapter after each step from Tessera's own gradients and the formula."""
    ad = adapter_from(rec, "init", rec["cfg.scale"])
    P = {**{(k, "A"): v for k, v in ad.A.items()}, **{(k, "B"): v for k, v in ad.B.items()}}
    M = {k: np.zeros_like(v) for k, v in P.items()}
    V = {k: np.zeros_like(v) for k, v in P.items()}
    worst_p, worst_n = 0.0, 0.0
    for s in range(steps):
        dA, dB = grads_of(rec, f"s{s}")
        G = {**{(k, "A"): v for k, v in dA.items()}, **{(k, "B"): v for k, v in dB.items()}}
        W = rec[f"s{s}.weight_sum"]
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in G.values())) / W
        worst_n = max(worst_n, abs(rec[f"s{s}.norm"] - norm) / norm)
        coef = lora_ref.clip_coef(norm, max_norm)
        after = adapter_from(rec, f"s{s}", 0)
        for k in P:
            # the C side stores p, m, v in f32 between steps
            p, m, v = lora_ref.adamw(P[k], G[k] * np.float32(coef / W), M[k], V[k], s + 1, lr, b1,
                                     b2, eps, wd)
            P[k], M[k], V[k] = p, m.astype(np.float32), v.astype(np.float32)
            got = (after.A if k[1] == "A" else after.B)[k[0]]
            worst_p = max(worst_p, err(got, P[k]))
            P[k] = got  # continue from Tessera's f32 parameters
        check(int(rec[f"s{s}.step"]) == s + 1 and rec[f"s{s}.status"] == 0,
              f"(d) {label}: step {s + 1} ran")
    check(worst_n <= 1e-6, f"(d) {label}: gradient norm vs NumPy, worst rel err {worst_n:.2e}")
    check(worst_p <= TP_TOL, f"(d) {label}: adapter after {steps} AdamW steps "
                             f"(clip {max_norm:g}) vs formula, worst err {worst_p:.2e}")


def compare_layouts(base, other, label, steps):
    """Loss, gradients, norm and updated adapter of every step against tp=1's.
    Gradients: relative L2 error of the whole gradient <= TP_TOL, and each matrix's
    err <= TP_MAT_TOL (on the default model the worst matrix sits at the f32 noise
    floor: tp=1 itself is 2e-5 from float64 there). The updated adapter: each matrix
    within TP_MAT_TOL too: AdamW's first step maps g to about g / (|g| + eps), so a
    gradient element near 0 moves its update by lr * dg / eps, and dg at the f32 floor
    (1e-13 here, set by the BLAS kernel OpenBLAS picks for the CPU) is 1e-5 of lr."""
    e = abs(other["s0.loss"] - base["s0.loss"]) / abs(base["s0.loss"])
    check(e <= TP_TOL, f"(c) {label}: loss rel err {e:.2e} vs tp=1")
    same_init = all(np.array_equal(other[k], v) for k, v in base.items() if k.startswith("init."))
    check(same_init, f"(c) {label}: the created adapter is identical to tp=1's")
    for prefix in [f"s{s}" for s in range(steps)]:
        keys = [k for k in base if k.startswith(prefix + ".") and k.split(".")[-1] in ("dA", "dB")]
        d2 = sum(float(np.sum((other[k] - base[k]) ** 2)) for k in keys)
        n2 = sum(float(np.sum(base[k] ** 2)) for k in keys)
        worst, where = max((err(other[k], base[k]), k) for k in keys)
        g = np.sqrt(d2 / n2)
        check(g <= TP_TOL and worst <= TP_MAT_TOL,
              f"(c) {label}: gradients of {prefix}: relative L2 error {g:.2e} (<= {TP_TOL:g}), "
              f"worst matrix err {worst:.2e} at {where} (<= {TP_MAT_TOL:g})")
        keys = [k for k in base if k.startswith(prefix + ".") and k.split(".")[-1] in ("A", "B")]
        worst, where = max((err(other[k], base[k]), k) for k in keys)
        check(worst <= TP_MAT_TOL, f"(c) {label}: adapter after step {prefix}, worst matrix "
                                   f"err {worst:.2e} at {where} (<= {TP_MAT_TOL:g})")
        e = abs(other[prefix + ".norm"] - base[prefix + ".norm"]) / base[prefix + ".norm"]
        check(e <= TP_TOL, f"(c) {label}: gradient norm of {prefix} rel err {e:.2e}")


def main():
    if len(sys.argv) != 3:
        print("usage: test_lora.py LORA_DRIVER MPIEXEC")
        return 2
    driver, mpiexec = sys.argv[1], sys.argv[2]
    if not mpiexec or not os.path.exists(mpiexec):
        print(f"SKIP: no mpiexec ({mpiexec!r})")
        return SKIP
    rng = np.random.default_rng(11)
    opt = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, wd=0.01)
    oflags = ["--lr", "1e-2", "--beta1", "0.9", "--beta2", "0.999", "--eps", "1e-8",
              "--wd", "0.01"]
    with tempfile.TemporaryDirectory() as tmp:
        R = Runner(driver, mpiexec, tmp)
        tiny = os.path.join(tmp, "tiny_llama.gguf")
        write_tiny(tiny, "llama", untied=True, seed=1)
        qwen = os.path.join(tmp, "tiny_qwen2.gguf")
        write_tiny(qwen, "qwen2", bias=True, seed=2)

        # (a)
        t0 = time.time()
        fd_check(tiny, "tiny llama, untied head")
        fd_check(qwen, "tiny qwen2 with biases, rsLoRA", rslora=True)
        print(f"     finite differences in {time.time() - t0:.1f}s")

        # (b) tiny llama, all targets, two calls accumulated; (d) AdamW with clipping
        seqs = [rng.integers(0, 96, 9), rng.integers(0, 96, 6), rng.integers(0, 96, 4)]
        weights = [rng.uniform(0.2, 1.0, len(s)).astype(np.float32) for s in seqs]
        weights[0][:3] = 0.0
        tokens, wcat = np.concatenate(seqs), np.concatenate(weights).astype(np.float64)
        model = lora_ref.hf_layout(llama_ref.load(tiny))
        flags = ["--rank", "4", "--alpha", "8", "--targets", "q,k,v,o,gate,up,down",
                 "--b-scale", "0.1", "--steps", "2", "--accum", "--max-norm", "1e-4"] + oflags
        base, ss = R.run(tiny, seqs, weights, 1, flags)
        compare_ref(base, ss, tokens, wcat, model, "tiny llama", accum_parts=2)
        check_adamw(base, "tiny llama", **opt, max_norm=1e-4, steps=2)
        for tp in (2, 4):
            rec, _ = R.run(tiny, seqs, weights, tp, flags)
            compare_layouts(base, rec, f"tiny llama tp={tp}" +
                            (" (KV heads replicated)" if tp == 4 else ""), 2)

        # (g) dropout 0.3 on the tiny llama: the reference with the masks fixed against
        # finite differences, Tessera against it (steps 1 and 2, two calls accumulated),
        # Forward undropped, tp = 2 and 4 against tp = 1
        t0 = time.time()
        fd_check(tiny, "tiny llama, untied head", dropout=0.3, key=5)
        fd_check(qwen, "tiny qwen2 with biases, rsLoRA", rslora=True, dropout=0.3, key=6)
        print(f"     finite differences with dropout in {time.time() - t0:.1f}s")
        drop = ["--dropout", "0.3", "--dropout-key", "11"]
        dbase, ss = R.run(tiny, seqs, weights, 1, flags + drop)
        compare_ref(dbase, ss, tokens, wcat, model, "tiny llama dropout 0.3", accum_parts=2)
        compare_ref(dbase, ss, tokens, wcat, model, "tiny llama dropout 0.3", accum_parts=2,
                    step=1)
        check(dbase["s0.fwd_loss"] == base["s0.fwd_loss"],
              f"(g) tiny llama: Forward with dropout 0.3 is Forward with dropout 0, bit for bit "
              f"({dbase['s0.fwd_loss']!r} vs {base['s0.fwd_loss']!r})")
        dg = err(dbase["s0.0.q.dA"], base["s0.0.q.dA"])
        check(abs(dbase["s0.loss"] - base["s0.loss"]) > 1e-3 * abs(base["s0.loss"]) and dg > 1e-2,
              f"(g) tiny llama: dropout changes the training loss ({dbase['s0.loss']:.6f} vs "
              f"{base['s0.loss']:.6f}) and the gradients (layer 0 q dA err {dg:.2e})")
        for tp in (2, 4):
            rec, _ = R.run(tiny, seqs, weights, tp, flags + drop)
            compare_layouts(dbase, rec, f"tiny llama dropout 0.3 tp={tp}" +
                            (" (KV heads replicated)" if tp == 4 else ""), 2)
        # a 6-head MHA llama splits over tp = 2 and 3. Its gradients hold elements near
        # f32 noise that AdamW with eps = 1e-8 turns into +-lr steps (with or without
        # dropout; see the default model below): eps = 1e-3, lr = 1e-4 here too
        mha = os.path.join(tmp, "tiny_mha.gguf")
        write_tiny(mha, "llama", n_embd=48, n_head=6, n_kv=6, n_ff=96, untied=True, seed=4)
        mflags = ["--rank", "4", "--alpha", "8", "--targets", "all", "--b-scale", "0.1",
                  "--steps", "2", "--accum", "--lr", "1e-4", "--eps", "1e-3"] + drop
        mbase, ss = R.run(mha, seqs, weights, 1, mflags)
        compare_ref(mbase, ss, tokens, wcat, lora_ref.hf_layout(llama_ref.load(mha)),
                    "tiny MHA llama dropout 0.3", accum_parts=2)
        for tp in (2, 3):
            rec, _ = R.run(mha, seqs, weights, tp, mflags)
            compare_layouts(mbase, rec, f"tiny MHA llama dropout 0.3 tp={tp}", 2)

        # PEFT's initialisation: B = 0, A within 1/sqrt(d_in), so dA = 0
        rec, _ = R.run(tiny, seqs, weights, 1, ["--rank", "4", "--b-scale", "0", "--targets",
                                                "q,o,down"])
        ok_b = all(np.all(v == 0) for k, v in rec.items() if k.startswith("init.") and
                   k.endswith(".B"))
        bounds = {"q": 32, "o": 32, "down": 64}
        ok_a = all(np.max(np.abs(v)) <= 1 / np.sqrt(bounds[k.split(".")[2]]) and
                   np.max(np.abs(v)) > 0.5 / np.sqrt(bounds[k.split(".")[2]])
                   for k, v in rec.items() if k.startswith("init.") and k.endswith(".A"))
        ok_g = all(np.all(v == 0) for k, v in rec.items() if k.startswith("s0.") and
                   k.endswith(".dA"))
        ok_gb = all(np.any(v != 0) for k, v in rec.items() if k.startswith("s0.") and
                    k.endswith(".dB"))
        check(ok_b and ok_a and ok_g and ok_gb,
              "(b) PEFT init: B = 0, |A| <= 1/sqrt(d_in) (and close to it), dA = 0, dB != 0")

        # (b) tiny qwen2 with biases, rsLoRA
        qmodel = lora_ref.hf_layout(llama_ref.load(qwen))
        qflags = ["--rank", "3", "--alpha", "6", "--rslora", "--targets", "all", "--b-scale",
                  "0.1"]
        rec, ss = R.run(qwen, seqs, weights, 1, qflags)
        check(abs(rec["cfg.scale"] - 6 / np.sqrt(3)) < 1e-6, "(b) rsLoRA scale alpha/sqrt(r)")
        compare_ref(rec, ss, tokens, wcat, qmodel, "tiny qwen2 (biases, rsLoRA)")

        # (e) a NaN in B: the step is refused and nothing changes
        nflags = ["--rank", "4", "--alpha", "8", "--targets", "all", "--b-scale", "0.1", "--nan"]
        rec, _ = R.run(tiny, seqs, weights, 1, nflags + oflags)
        same = all(np.array_equal(rec["s0." + k[5:]], v, equal_nan=True)
                   for k, v in rec.items() if k.startswith("init."))
        check(not np.isfinite(rec["s0.loss"]) and rec["s0.status"] == TSR_ERR_RANGE and
              rec["s0.step"] == 0 and rec["s0.acc_weight"] == 0 and same,
              f"(e) non-finite loss ({rec['s0.loss']}): step refused (status "
              f"{int(rec['s0.status'])}), adapter unchanged, step 0, accumulators zeroed")

        # (f) bad input is refused with a clear message
        short = [np.array([1, 2, 3]), np.array([4, 5])]
        sw = [np.ones(3, np.float32), np.ones(2, np.float32)]
        R.refused("token id outside the vocabulary", "outside the vocabulary (0..95)", tiny,
                  [np.array([1, 96, 3]), short[1]], sw)
        R.refused("negative loss weight", "must be finite and >= 0", tiny, short,
                  [np.array([1, -1, 1], np.float32), sw[1]])
        R.refused("an empty sequence", "sequence 1 is empty", tiny, short, sw,
                  seq_start=np.array([0, 3, 3, 5]))
        R.refused("a sequence longer than the context", "longer than the model's context (256)",
                  tiny, [np.arange(257) % 96], [np.ones(257, np.float32)])
        R.refused("LoRA dropout 1", "LoRA dropout 1 (must be in [0, 1))", tiny, short, sw,
                  ["--dropout", "1"])
        R.refused("an unknown target", "unknown module 'foo'", tiny, short, sw,
                  ["--targets", "q,foo"])

        # the default model: (b) tp=1 vs reference, (c) tp=2, 3 vs tp=1, (d) AdamW
        root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
        path = os.path.join(root, DEFAULT_MODEL)
        if not os.path.isfile(path):
            print(f"SKIP (default model): not found at {path}")
        else:
            seqs = [np.array([1, 4093, 198, 504, 3575, 282, 4649, 314, 7042, 30, 2, 198]),
                    np.array([1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198])]
            weights = [np.ones(12, np.float32), np.full(12, 0.5, np.float32)]
            weights[0][:4] = 0.0
            tokens = np.concatenate(seqs)
            wcat = np.concatenate(weights).astype(np.float64)
            # AdamW's m / sqrt(v) has slope 1/eps at g = 0: with eps = 1e-8 a gradient
            # element within f32 noise of zero moves by +-lr in one layout and not in
            # another. eps = 1e-3 and lr = 1e-4 keep the step Lipschitz at the noise
            # scale (the update still changes A and B by ~1e-3 relative).
            dflags = ["--rank", "4", "--alpha", "8", "--targets", "q,v,o,down", "--b-scale",
                      "0.02", "--steps", "2", "--lr", "1e-4", "--beta1", "0.9", "--beta2",
                      "0.999", "--eps", "1e-3", "--wd", "0.01"]
            base, ss = R.run(path, seqs, weights, 1, dflags)
            t0 = time.time()
            dmodel = lora_ref.hf_layout(llama_ref.load(path))
            compare_ref(base, ss, tokens, wcat, dmodel, "SmolLM2-135M Q4_1")
            print(f"     reference in {time.time() - t0:.1f}s")
            check_adamw(base, "SmolLM2-135M Q4_1", lr=1e-4, b1=0.9, b2=0.999, eps=1e-3, wd=0.01,
                        max_norm=0, steps=2)
            for tp in (2, 3):
                rec, _ = R.run(path, seqs, weights, tp, dflags)
                compare_layouts(base, rec, f"SmolLM2 tp={tp}", 2)
            # (g) the same with dropout 0.3
            ddflags = dflags + ["--dropout", "0.3", "--dropout-key", "3"]
            dbase, ss = R.run(path, seqs, weights, 1, ddflags)
            compare_ref(dbase, ss, tokens, wcat, dmodel, "SmolLM2-135M Q4_1 dropout 0.3")
            check(dbase["s0.fwd_loss"] == base["s0.fwd_loss"],
                  "(g) SmolLM2: Forward with dropout 0.3 is Forward with dropout 0, bit for bit")
            for tp in (2, 3):
                rec, _ = R.run(path, seqs, weights, tp, ddflags)
                compare_layouts(dbase, rec, f"SmolLM2 dropout 0.3 tp={tp}", 2)

    if failures:
        print(f"FAIL: {len(failures)} check(s) failed")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
