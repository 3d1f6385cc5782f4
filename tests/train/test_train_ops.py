#!/usr/bin/env python3
"""Every training op of a kernel backend against the float64 NumPy reference
(tests/reference/train_ref.py), and that reference against finite differences.

(a) Backend vs reference. Random inputs (never zeros; f32-exact values so both
    sides start from the same numbers), several shapes with odd sizes, run by
    train_ops_driver on the chosen backend; each output must be within RTOL
    (1e-4; --rtol) of the float64 reference, measured as
        err = max|got - want| / max|want|.
    Ops: matmul and matmul_dx (n = 1 and larger, plain and accumulate), the
    forwards rmsnorm/rope/swiglu the backwards belong to, lora_fwd (y +=, xa),
    lora_bwd (dA, dB, dx accumulate; scratch t; dx = NULL), rmsnorm_bwd (+=),
    rope_bwd (positions up to 5000), swiglu_bwd (also dgate = gate, dup = up),
    attn_train_fwd/bwd (GQA 6/2, 9/3, 2/1 with odd head_dim 3, MHA 4/4; 1-3
    sequences of different lengths including length 1), ce_rowmax, ce_sums,
    ce_grad (also dlogits = logits), adamw (3 steps from t = 1 and from t = 5),
    sumsq (double accumulation: 1e-12), scale_f32 (exact), fill_zero (exact),
    lora_dropout (LoRA dropout's inverted mask, runtime/model/lora.h's hash against
    train_ref.py's NumPy copy: the keep/drop decision of every element
    bit-exact (a dropped element is exactly 0, a kept one is not), kept values
    x * f32(1/(1-p)) exact with f32 activations; p from 0.05 to 0.9 and 0
    (the identity), seeds and keys up to 2^64-1, every target, offsets
    row0/col0 != 0 (a block at an offset is exactly that block of the
    unshifted call: the mask does not depend on how the matrix is split),
    accumulate (1e-6) and in place).
    Outputs start as NaN so an element the op leaves unwritten fails, the
    driver checks a guard tail after every array, and every array that is not
    an output must come back bit-identical (inputs are not modified).
    Vocabulary-parallel CE: the logits are cut into 3 slices (row0 = 0, 17, 35
    and 0, 1000, 2001; targets inside and outside each slice, -1, a zero
    weight); the slices' rowmax combined with max, then their sumexp and
    tlogit combined with sums, give the full NumPy CE loss, and the slices'
    ce_grad concatenated give the full gradient.
(b) Reference vs finite differences. For each op, the analytic gradient in
    train_ref.py equals central differences (h = 1e-5) of the float64 forward
    of L = sum(forward * R) with random R, within 1e-6 (the same err): matmul
    (dx, dW), lora (dx, dA, dB), rmsnorm (dx, dw; small and large eps), rope,
    swiglu, attention (dq, dk, dv; GQA 6/2 over 3 sequences and 2/1 with
    head_dim 3), CE (d loss / d logits with -1 targets and a zero weight).
    Also: the NumPy CE pieces over 3 slices equal the full loss (1e-12), and
    the backend.h AdamW formula equals the algorithm of the PyTorch AdamW
    documentation (decay, then Adam; 1e-12 over 3 steps).

usage: test_train_ops.py DRIVER [--backend cpu|cuda] [--act f32|bf16] [--rtol X]
Exits 0 when all pass, 1 on any failure, 77 when the backend is unavailable.
On the CPU the driver runs twice (default threads and 3 threads, so OpenMP
bands split unevenly).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "reference"))
sys.path.insert(0, HERE)

import train_ref as ref  # noqa: E402
from train_io import Case, read_cases, write_cases  # noqa: E402

SKIP = 77
FD_TOL = 1e-6
rng = np.random.default_rng(20240611)


def rnd(*shape, lo=0.1, hi=1.0):
    """Random values with magnitude in [lo, hi) and random sign (never zero), rounded
    to f32 and returned as float64, so the C side and the reference see the same
    numbers."""
    x = rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return x.astype(np.float32).astype(np.float64)


def bf16(x):
    """x rounded to the nearest bf16 (ties to even), as float64: weights are made of
    such values so a backend that stores weights in bf16 (CUDA) stores them exactly."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def f32(x):
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def nan(*shape):
    return np.full(shape, np.nan)


def rel_err(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return np.inf
    d = float(np.max(np.abs(got - want))) if got.size else 0.0
    s = float(np.max(np.abs(want))) if want.size else 0.0
    e = d / s if s > 0 else d
    return e if np.isfinite(e) else np.inf


class Report:
    def __init__(self):
        self.failed = 0
        self.worst = {}  # group -> (err, label)
        self.count = 0

    def check(self, group, label, err, tol):
        self.count += 1
        ok = err <= tol
        if not ok:
            self.failed += 1
            print(f"FAIL {label}: err {err:.3e} > {tol:.0e}")
        w = self.worst.get(group)
        if w is None or err > w[0] or not ok:
            self.worst[group] = (err, label, tol)

    def summary(self):
        for g in sorted(self.worst):
            e, label, tol = self.worst[g]
            print(f"  {g:32s} worst err {e:.2e} (limit {tol:.0e})  [{label}]")


# ---- (a) backend cases -------------------------------------------------------------------
#
# A case carries its expected outputs: c.want[name] = (array, tol). After the run
# c.out is the driver's output case. Combination checks over several cases are
# closures in `combos`.


def new_case(op, label, ints=None, floats=None):
    c = Case(op, ints, floats)
    c.label = f"{op} {label}"
    c.want = {}
    return c


def expect(c, name, want, tol=None):
    c.want[name] = (np.asarray(want, np.float64), tol)


def matmul_cases(cases):
    for n, rows, cols in [(1, 5, 7), (2, 1, 1), (3, 33, 17), (17, 64, 96), (40, 130, 300),
                          (1, 1000, 97)]:
        x, W = rnd(n, cols), bf16(rnd(rows, cols))
        for acc in (0, 1):
            lab = f"n={n} rows={rows} cols={cols} acc={acc}"
            c = new_case("matmul", lab, dict(n=n, accumulate=acc))
            y0 = rnd(n, rows) if acc else nan(n, rows)
            c.add("x", "a", x), c.add("W", "w", W), c.add("y", "a", y0)
            expect(c, "y", (y0 if acc else 0) + ref.matmul(x, W))
            cases.append(c)

            c = new_case("matmul_dx", lab, dict(n=n, accumulate=acc))
            dy = rnd(n, rows)
            dx0 = rnd(n, cols) if acc else nan(n, cols)
            c.add("dy", "a", dy), c.add("W", "w", W), c.add("dx", "a", dx0)
            expect(c, "dx", (dx0 if acc else 0) + ref.matmul_bwd(dy, x, W)[0])
            cases.append(c)


def lora_cases(cases):
    for n, d_in, d_out, r, s in [(1, 7, 5, 2, 0.5), (5, 33, 17, 4, 2.0), (37, 64, 96, 8, 1.0),
                                 (64, 300, 130, 16, 0.25)]:
        x, A, B = rnd(n, d_in), rnd(r, d_in), rnd(d_out, r)
        dims = dict(n=n, d_in=d_in, d_out=d_out, r=r)
        lab = f"n={n} d_in={d_in} d_out={d_out} r={r}"
        c = new_case("lora_fwd", lab, dims, dict(scale=s))
        y0 = rnd(n, d_out)
        c.add("x", "a", x), c.add("A", "f", A), c.add("B", "f", B)
        c.add("y", "a", y0), c.add("xa", "f", nan(n, r))
        delta, xa = ref.lora(x, A, B, s)
        expect(c, "y", y0 + delta)
        expect(c, "xa", xa)
        cases.append(c)

        for with_dx in (1, 0) if n == 5 else (1,):
            c = new_case("lora_bwd", lab + f" dx={'yes' if with_dx else 'NULL'}", dims,
                         dict(scale=s))
            dy, dA0, dB0, dx0 = rnd(n, d_out), rnd(r, d_in), rnd(d_out, r), rnd(n, d_in)
            c.add("dy", "a", dy), c.add("x", "a", x), c.add("xa", "f", f32(xa))
            c.add("A", "f", A), c.add("B", "f", B)
            c.add("dA", "f", dA0), c.add("dB", "f", dB0), c.add("t", "f", nan(n, r))
            if with_dx:
                c.add("dx", "a", dx0)
            dx, dA, dB, t = ref.lora_bwd(dy, x, A, B, s)
            expect(c, "dA", dA0 + dA)
            expect(c, "dB", dB0 + dB)
            expect(c, "t", t)
            if with_dx:
                expect(c, "dx", dx0 + dx)
            cases.append(c)


def rmsnorm_cases(cases):
    for n, dim, eps in [(1, 7, 1e-5), (5, 33, 1e-6), (17, 576, 1e-5), (3, 64, 0.5)]:
        x, w = rnd(n, dim), rnd(dim)
        lab = f"n={n} dim={dim} eps={eps:g}"
        c = new_case("rmsnorm", lab, dict(n=n, dim=dim), dict(eps=eps))
        c.add("x", "a", x), c.add("w", "a", w), c.add("y", "a", nan(n, dim))
        expect(c, "y", ref.rmsnorm(x, w, float(np.float32(eps))))
        cases.append(c)

        c = new_case("rmsnorm_bwd", lab, dict(n=n, dim=dim), dict(eps=eps))
        dy, dx0 = rnd(n, dim), rnd(n, dim)
        c.add("dy", "a", dy), c.add("x", "a", x), c.add("w", "a", w), c.add("dx", "a", dx0)
        expect(c, "dx", dx0 + ref.rmsnorm_bwd(dy, x, w, float(np.float32(eps)))[0])
        cases.append(c)


def rope_inputs(n, hd):
    pos = rng.integers(0, 5000, size=n).astype(np.int32)
    pos[0] = 0
    inv = f32(10000.0 ** (-np.arange(hd // 2) * 2.0 / hd))
    return pos, inv


def rope_cases(cases):
    for n, nh, hd in [(1, 1, 2), (5, 3, 8), (7, 6, 64), (33, 2, 128)]:
        pos, inv = rope_inputs(n, hd)
        dims = dict(n=n, n_heads=nh, head_dim=hd)
        lab = f"n={n} heads={nh} hd={hd}"
        for op, fn in (("rope", ref.rope), ("rope_bwd", ref.rope_bwd)):
            c = new_case(op, lab, dims)
            x = rnd(n, nh * hd)
            c.add("x", "a", x), c.add("pos", "i", pos), c.add("inv_freq", "f", inv)
            expect(c, "x", fn(x, pos, inv, nh, hd))
            cases.append(c)


def swiglu_cases(cases):
    for n, dim in [(1, 7), (13, 33), (64, 1536)]:
        gate, up = rnd(n, dim, hi=8.0), rnd(n, dim)
        lab = f"n={n} dim={dim}"
        c = new_case("swiglu", lab, dict(n=n, dim=dim))
        c.add("gate", "a", gate), c.add("up", "a", up), c.add("out", "a", nan(n, dim))
        expect(c, "out", ref.swiglu(gate, up))
        cases.append(c)
        for alias in (0, 1) if n == 13 else (0,):
            c = new_case("swiglu_bwd", lab + f" alias={alias}", dict(n=n, dim=dim, alias=alias))
            dout = rnd(n, dim)
            c.add("dout", "a", dout), c.add("gate", "a", gate), c.add("up", "a", up)
            c.add("dgate", "a", nan(n, dim)), c.add("dup", "a", nan(n, dim))
            dg, du = ref.swiglu_bwd(dout, gate, up)
            expect(c, "gate" if alias else "dgate", dg)
            expect(c, "up" if alias else "dup", du)
            if alias:  # dgate/dup are passed to the driver but not to the op
                c.untouched_ok = {"dgate", "dup"}
            cases.append(c)


ATTN_CONFIGS = [  # n_head, n_kv_head, head_dim, sequence lengths
    (6, 2, 8, [5, 1, 9]),
    (4, 4, 16, [17, 3]),
    (9, 3, 64, [40, 25, 7]),
    (2, 1, 3, [6]),
]


def attn_setup(nh, nkv, hd, lens):
    seq_start = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    tok_seq = np.repeat(np.arange(len(lens)), lens).astype(np.int32)
    n = int(seq_start[-1])
    ints = dict(n_tokens=n, n_seqs=len(lens), n_head=nh, n_kv_head=nkv, head_dim=hd)
    return seq_start, tok_seq, n, ints


def attention_cases(cases):
    for nh, nkv, hd, lens in ATTN_CONFIGS:
        seq_start, tok_seq, n, ints = attn_setup(nh, nkv, hd, lens)
        scale = float(np.float32(1.0 / np.sqrt(hd)))
        q, k, v = rnd(n, nh * hd, hi=2.0), rnd(n, nkv * hd, hi=2.0), rnd(n, nkv * hd)
        lab = f"heads={nh}/{nkv} hd={hd} lens={lens}"
        out, lse = ref.attention(q, k, v, seq_start, nh, nkv, hd, scale)

        c = new_case("attn_train_fwd", lab, ints, dict(scale=scale))
        for name, a in (("q", q), ("k", k), ("v", v)):
            c.add(name, "a", a)
        c.add("seq_start", "i", seq_start), c.add("tok_seq", "i", tok_seq)
        c.add("out", "a", nan(n, nh * hd)), c.add("lse", "f", nan(n, nh))
        expect(c, "out", out)
        expect(c, "lse", lse)
        cases.append(c)

        c = new_case("attn_train_bwd", lab, ints, dict(scale=scale))
        dout = rnd(n, nh * hd)
        for name, a in (("q", q), ("k", k), ("v", v), ("dout", dout)):
            c.add(name, "a", a)
        c.add("out", "a", f32(out)), c.add("lse", "f", f32(lse))
        c.add("seq_start", "i", seq_start), c.add("tok_seq", "i", tok_seq)
        c.add("dq", "a", nan(n, nh * hd))
        c.add("dk", "a", nan(n, nkv * hd)), c.add("dv", "a", nan(n, nkv * hd))
        dq, dk, dv = ref.attention_bwd(dout, q, k, v, seq_start, nh, nkv, hd, scale)
        expect(c, "dq", dq)
        expect(c, "dk", dk)
        expect(c, "dv", dv)
        cases.append(c)


CE_CONFIGS = [  # slice widths, logit magnitude, targets (global ids, -1: none), zero-weight row
    ([17, 18, 15], 3.0, [3, 20, -1, 49, 35, 16, 17], 5),
    ([1000, 1001, 999], 10.0, None, 2),
]


def ce_cases(cases, combos, rep, rtol, bf16=False):
    # With bf16 activations the backend sees the logits rounded to bf16 (2^-9
    # relative) while the reference uses them unrounded; at logit magnitudes
    # near 10 that moves softmax probabilities by a few percent. The limits
    # widen to 5e-2 there and rowmax need not be exact; the training path
    # computes its loss from f32 logits for this reason.
    ce_tol = 5e-2 if bf16 else None
    max_tol = rtol if bf16 else 0.0
    for widths, mag, targets, zero_row in CE_CONFIGS:
        Vt = sum(widths)
        n = len(targets) if targets else 5
        logits = rnd(n, Vt, hi=mag)
        if targets is None:
            targets = list(rng.integers(0, Vt, size=n))
            targets[1] = -1
        target = np.array(targets, np.int32)
        weight = rng.uniform(0.1, 1.0, size=n).astype(np.float32).astype(np.float64)
        weight[zero_row] = 0.0
        rowmax = ref.ce_rowmax(logits)
        sumexp = np.exp(logits - rowmax[:, None]).sum(axis=1)
        full_grad = ref.ce_grad(logits, target, weight)
        full_loss = ref.ce_loss(logits, target, weight)
        row0s = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)
        parts = []
        for si, (row0, V) in enumerate(zip(row0s, widths)):
            sl = logits[:, row0:row0 + V]
            lab = f"n={n} V={V} row0={row0}"
            c1 = new_case("ce_rowmax", lab, dict(n=n, V=V))
            c1.add("logits", "a", sl), c1.add("rowmax", "f", nan(n))
            expect(c1, "rowmax", ref.ce_rowmax(sl), ce_tol)
            c2 = new_case("ce_sums", lab, dict(n=n, V=V, row0=row0))
            c2.add("logits", "a", sl), c2.add("rowmax", "f", rowmax), c2.add("target", "i", target)
            c2.add("sumexp", "f", nan(n)), c2.add("tlogit", "f", nan(n))
            se, tl = ref.ce_sums(sl, rowmax, target, row0)
            expect(c2, "sumexp", se, ce_tol)
            expect(c2, "tlogit", tl, ce_tol)
            cases += [c1, c2]
            grads = []
            for alias in (0, 1) if si == 1 else (0,):
                c3 = new_case("ce_grad", lab + f" alias={alias}", dict(n=n, V=V, row0=row0,
                                                                      alias=alias))
                c3.add("logits", "a", sl), c3.add("rowmax", "f", rowmax)
                c3.add("sumexp", "f", f32(sumexp)), c3.add("target", "i", target)
                c3.add("weight", "f", weight), c3.add("dlogits", "a", nan(n, V))
                want = ref.ce_grad(sl, target, weight, row0, rowmax, f32(sumexp))
                expect(c3, "logits" if alias else "dlogits", want, ce_tol)
                if alias:
                    c3.untouched_ok = {"dlogits"}
                cases.append(c3)
                grads.append(c3)
            parts.append((c1, c2, grads[0]))

        def combo(parts=parts, n=n, Vt=Vt, target=target, weight=weight, rowmax=rowmax,
                  full_loss=full_loss, full_grad=full_grad, lab=f"n={n} V={Vt} in 3 slices"):
            gmax = np.max([p[0].out["rowmax"] for p in parts], axis=0).astype(np.float64)
            rep.check("ce combined rowmax", f"ce combined rowmax {lab}", rel_err(gmax, rowmax),
                      max_tol)
            se = np.sum([p[1].out["sumexp"].astype(np.float64) for p in parts], axis=0)
            tl = np.sum([p[1].out["tlogit"].astype(np.float64) for p in parts], axis=0)
            loss = ref.ce_loss_from_pieces(gmax, se, tl, target, weight)
            rep.check("ce combined loss", f"ce combined loss {lab}",
                      rel_err(loss, full_loss), ce_tol or rtol)
            g = np.concatenate([p[2].out["dlogits"].astype(np.float64) for p in parts], axis=1)
            rep.check("ce combined grad", f"ce combined grad {lab}", rel_err(g, full_grad),
                      ce_tol or rtol)

        combos.append(combo)


ADAMW_H = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)


def adamw_ref(p, gs, m, v, t0, h, step=ref.adamw_step):
    for k, g in enumerate(gs):
        p, m, v = step(p, g, m, v, t0 + k, h["lr"], h["beta1"], h["beta2"], h["eps"],
                       h["weight_decay"])
    return p, m, v


def adamw_cases(cases, combos, rep, rtol):
    h = {k: float(np.float32(x)) for k, x in ADAMW_H.items()}  # what the C side receives
    for n, t0, fresh in [(37, 1, True), (70001, 1, True), (129, 5, False)]:
        steps = 3
        p, g = rnd(n), rnd(steps, n, lo=0.01, hi=0.5)
        m = np.zeros(n) if fresh else rnd(n, hi=0.1)
        v = np.zeros(n) if fresh else f32(rng.uniform(1e-4, 1e-2, size=n))
        c = new_case("adamw", f"n={n} t0={t0} steps={steps}", dict(n=n, t0=t0, steps=steps),
                     ADAMW_H)
        c.add("p", "f", p), c.add("m", "f", m), c.add("v", "f", v), c.add("g", "f", g)
        pw, mw, vw = adamw_ref(p, g, m, v, t0, h)
        expect(c, "m", mw)
        expect(c, "v", vw)
        c.untouched_ok = {"p"}  # checked by the combo below
        cases.append(c)

        def combo(c=c, p=p, pw=pw):
            # compare the update, not p itself (p is O(1), the update O(lr))
            rep.check("adamw update", f"{c.label}: p - p0",
                      rel_err(c.out["p"].astype(np.float64) - p, pw - p), rtol)

        combos.append(combo)


def misc_cases(cases):
    for n in (1, 1001, 100003):
        c = new_case("sumsq", f"n={n}", dict(n=n))
        x = rnd(n, hi=3.0)
        c.add("x", "f", x), c.add("out", "d", nan(1))
        expect(c, "out", [np.sum(x * x)], 1e-12)
        cases.append(c)
    for n in (5, 100003):
        s = 0.37
        c = new_case("scale_f32", f"n={n}", dict(n=n), dict(s=s))
        x = rnd(n)
        c.add("x", "f", x)
        expect(c, "x", (x.astype(np.float32) * np.float32(s)).astype(np.float64), 0.0)
        cases.append(c)


def _i64(u):
    """A u64 bit pattern as the i64 the case file carries."""
    u &= (1 << 64) - 1
    return u - (1 << 64) if u >= 1 << 63 else u


DROPOUT_CONFIGS = [  # n, d, p, seed, key, layer, target, row0, col0
    (1, 7, 0.3, 1, 0, 0, 0, 0, 0),
    (13, 33, 0.1, 42, 7, 3, 6, 0, 0),
    (64, 576, 0.5, (1 << 64) - 1, 0x123456789ABCDEF0, 29, 4, 1000, 0),
    (37, 1536, 0.05, 5, 1 << 63, 1, 3, 17, 768),
    (9, 100, 0.9, 0, 12345, 0, 5, 3, 2),
    (5, 40, 0.0, 3, 3, 2, 1, 0, 0),
]


def dropout_cases(cases, combos, rep, act):
    exact = act == "f32"
    for n, d, p, seed, key, layer, target, row0, col0 in DROPOUT_CONFIGS:
        x = rnd(n, d, hi=4.0)
        keep = ref.dropout_keep(p, seed, key, layer, target, row0 + np.arange(n),
                                col0 + np.arange(d))
        x32 = x.astype(np.float32)
        inv = np.float32(1.0) / (np.float32(1.0) - np.float32(p))
        kept = np.where(keep, x32 * inv, np.float32(0)).astype(np.float64)
        ints = dict(n=n, d=d, layer=layer, target=target, row0=row0, col0=col0, seed=_i64(seed),
                    key=_i64(key))
        lab = f"n={n} d={d} p={p:g} L={layer} t={target} row0={row0} col0={col0}"
        made = []
        for acc, inplace in ((0, 0), (1, 0), (0, 1)):
            c = new_case("lora_dropout", lab + f" acc={acc} inplace={inplace}",
                         dict(ints, accumulate=acc, inplace=inplace), dict(p=p))
            y0 = rnd(n, d) if acc else nan(n, d)
            c.add("x", "a", x), c.add("out", "a", y0)
            if inplace:
                expect(c, "x", kept, 0.0 if exact else None)
                c.untouched_ok = {"out"}
            elif acc:
                expect(c, "out", y0 + kept, 1e-6 if exact else None)
            else:
                expect(c, "out", kept, 0.0 if exact else None)
            cases.append(c)
            made.append(c)

        def mask_check(c=made[0], keep=keep, lab=lab):
            got = c.out["out"].astype(np.float64)
            same = np.array_equal(got != 0.0, keep)
            rep.check("lora_dropout mask", f"lora_dropout mask bit-exact {lab}: "
                      f"{int(np.sum((got != 0.0) != keep))} decisions differ",
                      0.0 if same else np.inf, 0.0)

        combos.append(mask_check)
    # a block at an offset is that block of the whole matrix
    n, d, p, seed, key, layer, target = 20, 300, 0.3, 9, 4, 2, 6
    x = rnd(n, d)
    whole = new_case("lora_dropout", "whole 20x300", dict(
        n=n, d=d, layer=layer, target=target, row0=0, col0=0, seed=seed, key=key, accumulate=0,
        inplace=0), dict(p=p))
    whole.add("x", "a", x), whole.add("out", "a", nan(n, d))
    r0, c0, n2, d2 = 7, 150, 9, 100
    part = new_case("lora_dropout", "block (7, 150) of it", dict(
        n=n2, d=d2, layer=layer, target=target, row0=r0, col0=c0, seed=seed, key=key,
        accumulate=0, inplace=0), dict(p=p))
    part.add("x", "a", x[r0:r0 + n2, c0:c0 + d2]), part.add("out", "a", nan(n2, d2))
    for c, rows, cols in ((whole, np.arange(n), np.arange(d)),
                          (part, r0 + np.arange(n2), c0 + np.arange(d2))):
        keep = ref.dropout_keep(p, seed, key, layer, target, rows, cols)
        inv = np.float32(1.0) / (np.float32(1.0) - np.float32(p))
        want = np.where(keep, c["x"].astype(np.float32) * inv, np.float32(0))  # f32 product
        expect(c, "out", want.astype(np.float64), 0.0 if exact else None)
    cases += [whole, part]

    def block_check(whole=whole, part=part):
        a = whole.out["out"][r0:r0 + n2, c0:c0 + d2]
        rep.check("lora_dropout mask", "lora_dropout: a block at (row0, col0) equals that block "
                  "of the whole call", 0.0 if np.array_equal(a, part.out["out"]) else np.inf, 0.0)

    combos.append(block_check)
    c = new_case("fill_zero", "x (a) and f (f)")
    c.add("x", "a", rnd(7, 33)), c.add("f", "f", rnd(1001))
    expect(c, "x", np.zeros((7, 33)), 0.0)
    expect(c, "f", np.zeros(1001), 0.0)
    cases.append(c)


def run_driver(driver, args, cases, extra):
    with tempfile.TemporaryDirectory() as d:
        fin, fout = os.path.join(d, "in.bin"), os.path.join(d, "out.bin")
        write_cases(fin, cases)
        cmd = [driver, "--backend", args.backend, "--act", args.act] + extra + [fin, fout]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == SKIP:
            print(f"SKIP: {r.stdout.strip() or r.stderr.strip()}")
            sys.exit(SKIP)
        if r.returncode != 0:
            print(f"FAIL: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
            sys.exit(1)
        outs = read_cases(fout)
    if len(outs) != len(cases):
        print(f"FAIL: driver returned {len(outs)} cases for {len(cases)}")
        sys.exit(1)
    return outs


def check_backend(rep, args, driver, extra):
    cases, combos = [], []
    matmul_cases(cases)
    lora_cases(cases)
    rmsnorm_cases(cases)
    rope_cases(cases)
    swiglu_cases(cases)
    attention_cases(cases)
    ce_cases(cases, combos, rep, args.rtol, bf16=args.act == "bf16")
    adamw_cases(cases, combos, rep, args.rtol)
    misc_cases(cases)
    dropout_cases(cases, combos, rep, args.act)
    outs = run_driver(driver, args, cases, extra)
    tag = f"[{args.backend}{' ' + ' '.join(extra) if extra else ''}]"
    unsupported = set()
    for c, o in zip(cases, outs):
        if o.op != c.op:
            print(f"FAIL: case order: got {o.op} for {c.op}")
            sys.exit(1)
        if o.ints.get("status") == 2:
            unsupported.add(c.op)
            continue
        c.out = {k: a for k, (_, a) in o.arrays.items()}
        for name, (want, tol) in c.want.items():
            got = c.out[name].astype(np.float64).reshape(want.shape)
            rep.check(c.op, f"{tag} {c.label}: {name}", rel_err(got, want),
                      args.rtol if tol is None else tol)
        # arrays the op must not touch come back unchanged
        for name, (kind, a) in c.arrays.items():
            if kind == "w" or name in c.want or name in getattr(c, "untouched_ok", ()):
                continue
            if kind == "a" and args.act != "f32":
                continue
            same = np.array_equal(c.out[name], a, equal_nan=True)
            rep.check("inputs unchanged", f"{tag} {c.label}: input {name} modified",
                      0.0 if same else np.inf, 0.0)
    for op in sorted(unsupported):
        print(f"SKIP {tag} {op}: the backend has no such slot")
        if args.backend == "cpu":
            rep.check("slots", f"cpu backend lacks {op}", np.inf, 0.0)
    for combo in combos:
        if all(hasattr(c, "out") for c in cases if c.op in ("ce_rowmax", "ce_sums", "ce_grad",
                                                             "adamw", "lora_dropout")):
            combo()


# ---- (b) reference vs finite differences -------------------------------------------------


def fd_check(rep, label, analytic, f, x, R):
    fd = ref.finite_diff_grad(f, x, R)
    rep.check("finite differences", f"fd {label}", rel_err(analytic, fd), FD_TOL)


def check_finite_differences(rep):
    # matmul: dx and dW
    x, W = rnd(3, 7), rnd(5, 7)
    R = rnd(3, 5)
    dx, dW = ref.matmul_bwd(R, x, W)
    fd_check(rep, "matmul dx", dx, lambda a: ref.matmul(a, W), x, R)
    fd_check(rep, "matmul dW", dW, lambda a: ref.matmul(x, a), W, R)

    # lora: dx, dA, dB
    n, d_in, d_out, r, s = 4, 7, 6, 3, 0.7
    x, A, B = rnd(n, d_in), rnd(r, d_in), rnd(d_out, r)
    R = rnd(n, d_out)
    dx, dA, dB, _ = ref.lora_bwd(R, x, A, B, s)
    fd_check(rep, "lora dx", dx, lambda a: ref.lora(a, A, B, s), x, R)
    fd_check(rep, "lora dA", dA, lambda a: ref.lora(x, a, B, s), A, R)
    fd_check(rep, "lora dB", dB, lambda a: ref.lora(x, A, a, s), B, R)

    # rmsnorm: dx and dw, eps small and large
    for n, dim, eps in [(3, 9, 1e-5), (2, 5, 0.5)]:
        x, w, R = rnd(n, dim), rnd(dim), rnd(n, dim)
        dx, dw = ref.rmsnorm_bwd(R, x, w, eps)
        fd_check(rep, f"rmsnorm dx eps={eps}", dx, lambda a: ref.rmsnorm(a, w, eps), x, R)
        fd_check(rep, f"rmsnorm dw eps={eps}", dw, lambda a: ref.rmsnorm(x, a, eps), w, R)

    # rope
    n, nh, hd = 3, 2, 6
    pos, inv = rope_inputs(n, hd)
    pos[-1] = 4001
    x, R = rnd(n, nh * hd), rnd(n, nh * hd)
    fd_check(rep, "rope dx", ref.rope_bwd(R, pos, inv, nh, hd),
             lambda a: ref.rope(a, pos, inv, nh, hd), x, R)

    # swiglu
    g, u, R = rnd(3, 5, hi=4.0), rnd(3, 5), rnd(3, 5)
    dg, du = ref.swiglu_bwd(R, g, u)
    fd_check(rep, "swiglu dgate", dg, lambda a: ref.swiglu(a, u), g, R)
    fd_check(rep, "swiglu dup", du, lambda a: ref.swiglu(g, a), u, R)

    # attention: GQA over 3 sequences, and one KV head with odd head_dim
    for nh, nkv, hd, lens in [(6, 2, 4, [3, 1, 4]), (2, 1, 3, [5])]:
        seq_start, _, n, _ = attn_setup(nh, nkv, hd, lens)
        sc = 1.0 / np.sqrt(hd)
        q, k, v = rnd(n, nh * hd, hi=2.0), rnd(n, nkv * hd, hi=2.0), rnd(n, nkv * hd)
        R = rnd(n, nh * hd)
        dq, dk, dv = ref.attention_bwd(R, q, k, v, seq_start, nh, nkv, hd, sc)
        lab = f"heads={nh}/{nkv} hd={hd} lens={lens}"

        def att(qq, kk, vv):
            return ref.attention(qq, kk, vv, seq_start, nh, nkv, hd, sc)

        fd_check(rep, f"attention dq {lab}", dq, lambda a: att(a, k, v), q, R)
        fd_check(rep, f"attention dk {lab}", dk, lambda a: att(q, a, v), k, R)
        fd_check(rep, f"attention dv {lab}", dv, lambda a: att(q, k, a), v, R)

    # cross-entropy: gradient of the full loss, and the pieces over 3 slices
    n, V = 5, 11
    logits = rnd(n, V, hi=3.0)
    target = np.array([3, -1, 10, 0, 7], np.int32)
    weight = rng.uniform(0.1, 1.0, size=n)
    weight[3] = 0.0
    fd_check(rep, "ce dlogits", ref.ce_grad(logits, target, weight),
             lambda a: np.array(ref.ce_loss(a, target, weight)), logits, 1.0)
    rowmax = np.max([ref.ce_rowmax(logits[:, a:b]) for a, b in ((0, 4), (4, 8), (8, 11))], axis=0)
    se = tl = 0.0
    for a, b in ((0, 4), (4, 8), (8, 11)):
        s_, t_ = ref.ce_sums(logits[:, a:b], rowmax, target, a)
        se, tl = se + s_, tl + t_
    rep.check("reference self-checks", "ce pieces vs full loss (numpy)",
              rel_err(ref.ce_loss_from_pieces(rowmax, se, tl, target, weight),
                      ref.ce_loss(logits, target, weight)), 1e-12)

    # AdamW: backend.h formula vs PyTorch's documented algorithm
    p, gs = rnd(50), rnd(3, 50, lo=0.01, hi=0.5)
    for t0, m, v in [(1, np.zeros(50), np.zeros(50)), (5, rnd(50, hi=0.1), rng.uniform(1e-4, 1e-2, 50))]:
        a = adamw_ref(p, gs, m, v, t0, ADAMW_H)
        b = adamw_ref(p, gs, m, v, t0, ADAMW_H, ref.adamw_step_torch)
        rep.check("reference self-checks", f"adamw formula vs torch t0={t0}",
                  max(rel_err(a[0] - p, b[0] - p), rel_err(a[1], b[1]), rel_err(a[2], b[2])),
                  1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("driver")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--act", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--weights", default=None, choices=["bf16", "f32"],
                    help="CUDA weight storage (f32: the reference-precision mode)")
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()
    t = time.time()
    rep = Report()
    check_finite_differences(rep)
    runs = [[], ["--threads", "3"]] if args.backend == "cpu" else [[]]
    if args.weights:
        runs = [r + ["--weights", args.weights] for r in runs]
    for extra in runs:
        check_backend(rep, args, args.driver, extra)
    rep.summary()
    print(f"{rep.count} checks, {rep.failed} failed, {time.time() - t:.1f} s")
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()
