#!/usr/bin/env python3
"""Float64 NumPy reference for LoRA training of a whole Llama model (test-only).

The forward of llama_ref.py (the same weights, read from a GGUF file or an HF
folder) with LoRA deltas on the adapted projections, the weighted
cross-entropy of a batch of sequences, and its gradient with respect to every
LoRA matrix, written out by hand with the per-op backwards of train_ref.py.
Checked against central finite differences of its own loss by
tests/lora/test_lora.py, and Tessera's runtime/train/train.c against it.

Conventions, as runtime/train/train.h and runtime/model/lora.h state them:
  * a batch is sequences laid end to end (seq_start), each starting at
    position 0; weight[i] applies to predicting token i+1 from position i of
    the same sequence; the loss is the weighted SUM of the cross-entropies;
  * projection t of layer l computes y = x W^T (+ bias) + scale (x A^T) B^T
    with A (r, d_in), B (d_out, r), scale = alpha / r (alpha / sqrt(r) with
    rsLoRA); targets "q", "k", "v", "o", "gate", "up", "down";
  * Q/K rows are in rotate-half (Hugging Face) order, as Tessera holds them
    whatever the file: llama GGUF files store them permuted for adjacent-pair
    RoPE, so hf_layout() un-permutes them (the same permutation as
    gguf_to_hf.py) and the LoRA B of q and k has HF's row order (PEFT's);
  * LoRA dropout (PEFT's lora_dropout, runtime/model/lora.h): with adapter.dropout
    p > 0 and a dropout_key (the training forward), the LoRA branch of
    (layer l, target t) sees dropout(x) = mask * x / (1 - p), the mask from
    train_ref.dropout_keep (runtime/model/lora.h's hash, bit for bit) over the
    batch's global token indices (token_offset + i) and the full d_in; the
    base projection sees x. The backward masks the branch's input gradient
    the same way. Without a key (evaluation) nothing is dropped.

API:
  TARGETS                              the target names in Tessera's order
  hf_layout(model)                     llama_ref.Model with Q/K in rotate-half order
  Adapter(scale, A, B, dropout, seed)  A, B: dicts (layer, target) -> array; dropout p
                                       and the seed of its masks
  batch_targets(tokens, seq_start, w)  (target, weight) per position
  loss_and_grads(model, adapter, tokens, seq_start, weights, grads=True,
                 dropout_key=None, token_offset=0)
                                       -> (loss, dA, dB) (dA/dB dicts, None without grads)
  dropout_masks(adapter, n, key, token_offset)
                                       (layer, target) -> keep mask (n, d_in)
  adamw(p, g, m, v, t, lr, b1, b2, eps, wd)  train_ref.adamw_step

What it is not: fast, or a trainer. Nothing here runs in Tessera.
"""

import copy
import math
from dataclasses import dataclass, field

import numpy as np

import llama_ref
import train_ref

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_WEIGHT = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w_gate", "up": "w_up",
           "down": "w_down"}
_BIAS = {"q": "bq", "k": "bk", "v": "bv"}


def _unpermute_rows(w, n_heads):
    """llama.cpp's Q/K row permutation undone (gguf_to_hf.py's unpermute_rope_rows):
    within each head, stored row 2i+s is rotate-half row s*head_dim/2 + i."""
    rows = w.shape[0]
    hd = rows // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, hd // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def hf_layout(model):
    """A copy of llama_ref model `model` whose Q/K rows (and biases) are in rotate-half
    order and whose RoPE is rotate-half: the same function, Tessera's layout."""
    cfg = model.cfg
    if cfg.rope_dim != cfg.head_dim:
        raise NotImplementedError("lora_ref: partial RoPE")
    if cfg.rope_style == llama_ref.ROPE_HALF:
        return model
    m = copy.copy(model)
    m.cfg = copy.copy(cfg)
    m.cfg.rope_style = llama_ref.ROPE_HALF
    m.layers = []
    for L in model.layers:
        L2 = copy.copy(L)
        L2.wq = _unpermute_rows(L.wq, cfg.n_head)
        L2.wk = _unpermute_rows(L.wk, cfg.n_head_kv)
        if L.bq is not None:
            L2.bq = _unpermute_rows(L.bq, cfg.n_head)
        if L.bk is not None:
            L2.bk = _unpermute_rows(L.bk, cfg.n_head_kv)
        m.layers.append(L2)
    return m


def inv_freq(cfg):
    """RoPE inverse frequencies with the model's scaling folded in (linear scaling
    multiplies the positions, i.e. the frequencies)."""
    half = cfg.rope_dim // 2
    f = cfg.rope_theta ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.rope_dim)
    if cfg.rope_freq_factors is not None:
        f = f / np.asarray(cfg.rope_freq_factors, np.float64)
    return f * cfg.rope_pos_scale


@dataclass
class Adapter:
    scale: float
    A: dict = field(default_factory=dict)  # (layer, target) -> (r, d_in)
    B: dict = field(default_factory=dict)  # (layer, target) -> (d_out, r)
    dropout: float = 0.0                   # LoRA dropout p (training only)
    seed: int = 0                          # the seed of dropout's masks (cfg.seed)


def batch_targets(tokens, seq_start, weights):
    """target[i] = tokens[i+1] within the sequence, else -1; weight 0 where no target."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).copy()
    target = np.full(n, -1, np.int64)
    for a, b in zip(seq_start[:-1], seq_start[1:]):
        target[a:b - 1] = tokens[a + 1:b]
        w[b - 1] = 0.0
    return target, w


def _positions(seq_start):
    return np.concatenate([np.arange(b - a) for a, b in zip(seq_start[:-1], seq_start[1:])])


def dropout_masks(adapter, n, key, token_offset=0):
    """(layer, target) -> the boolean keep mask (n, d_in) of each adapted matrix for a
    batch of n tokens starting at global token token_offset, under dropout key `key`."""
    return {(l, t): train_ref.dropout_keep(adapter.dropout, adapter.seed, key, l,
                                           TARGETS.index(t), token_offset + np.arange(n),
                                           np.arange(A.shape[1]))
            for (l, t), A in adapter.A.items()}


def loss_and_grads(model, adapter, tokens, seq_start, weights=None, grads=True,
                   dropout_key=None, token_offset=0):
    """(loss, dA, dB): the weighted-sum cross-entropy of the batch and, with grads, its
    gradient with respect to every A and B of the adapter (dicts like adapter.A/B).
    `model` must be in Tessera's layout (hf_layout). With adapter.dropout > 0 and a
    dropout_key, the LoRA inputs are dropped as the training forward drops them (the
    masks are fixed by the key: the loss is a smooth function of A and B)."""
    cfg = model.cfg
    H, KV, D, eps = cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.eps
    seq_start = [int(s) for s in seq_start]
    pos = _positions(seq_start)
    inv = inv_freq(cfg)
    att_scale = 1.0 / math.sqrt(D)
    s = adapter.scale
    target, w = batch_targets(tokens, seq_start, weights)
    p = adapter.dropout
    masks = (dropout_masks(adapter, len(tokens), dropout_key, token_offset)
             if p > 0 and dropout_key is not None else {})

    def lora_in(l, t, x):
        return train_ref.dropout(x, masks[l, t], p) if (l, t) in masks else x

    def proj(l, t, x, L):
        y = x @ getattr(L, _WEIGHT[t]).T
        b = getattr(L, _BIAS[t], None) if t in _BIAS else None
        if b is not None:
            y = y + b
        if (l, t) in adapter.A:
            y = y + train_ref.lora(lora_in(l, t, x), adapter.A[l, t], adapter.B[l, t], s)[0]
        return y

    x = model.embed[np.asarray(tokens)].astype(np.float64)
    caches = []
    for l, L in enumerate(model.layers):
        c = {"x": x}
        c["h1"] = h1 = train_ref.rmsnorm(x, L.attn_norm, eps)
        q, k = proj(l, "q", h1, L), proj(l, "k", h1, L)
        c["v"] = v = proj(l, "v", h1, L)
        c["q"] = q = train_ref.rope(q, pos, inv, H, D)
        c["k"] = k = train_ref.rope(k, pos, inv, KV, D)
        c["att"] = att = train_ref.attention(q, k, v, seq_start, H, KV, D, att_scale)[0]
        c["x2"] = x2 = x + proj(l, "o", att, L)
        c["h2"] = h2 = train_ref.rmsnorm(x2, L.ffn_norm, eps)
        c["g"], c["u"] = g, u = proj(l, "gate", h2, L), proj(l, "up", h2, L)
        c["s"] = sw = train_ref.swiglu(g, u)
        x = x2 + proj(l, "down", sw, L)
        caches.append(c)
    hN = train_ref.rmsnorm(x, model.out_norm, eps)
    logits = hN @ model.lm_head.T
    loss = train_ref.ce_loss(logits, target, w)
    if not grads:
        return loss, None, None

    dA, dB = {}, {}

    def proj_bwd(l, t, dy, xin, L):
        dx = dy @ getattr(L, _WEIGHT[t])
        if (l, t) in adapter.A:
            dxl, da, db, _ = train_ref.lora_bwd(dy, lora_in(l, t, xin), adapter.A[l, t],
                                                adapter.B[l, t], s)
            dx = dx + lora_in(l, t, dxl)  # d/dx of m x / (1-p) is m / (1-p)
            dA[l, t], dB[l, t] = da, db
        return dx

    dlogits = train_ref.ce_grad(logits, target, w)
    dx = train_ref.rmsnorm_bwd(dlogits @ model.lm_head, x, model.out_norm, eps)[0]
    for l in reversed(range(len(model.layers))):
        L, c = model.layers[l], caches[l]
        ds = proj_bwd(l, "down", dx, c["s"], L)
        dg, du = train_ref.swiglu_bwd(ds, c["g"], c["u"])
        dh2 = proj_bwd(l, "gate", dg, c["h2"], L) + proj_bwd(l, "up", du, c["h2"], L)
        dx = dx + train_ref.rmsnorm_bwd(dh2, c["x2"], L.ffn_norm, eps)[0]
        datt = proj_bwd(l, "o", dx, c["att"], L)
        dq, dk, dv = train_ref.attention_bwd(datt, c["q"], c["k"], c["v"], seq_start, H, KV, D,
                                             att_scale)
        dq = train_ref.rope_bwd(dq, pos, inv, H, D)
        dk = train_ref.rope_bwd(dk, pos, inv, KV, D)
        dh1 = (proj_bwd(l, "q", dq, c["h1"], L) + proj_bwd(l, "k", dk, c["h1"], L)
               + proj_bwd(l, "v", dv, c["h1"], L))
        dx = dx + train_ref.rmsnorm_bwd(dh1, c["x"], L.attn_norm, eps)[0]
    return loss, dA, dB


def adamw(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step as kernels/backend.h writes it; returns (p, m, v)."""
    return train_ref.adamw_step(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay)


def clip_coef(norm, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor (1 when not clipping)."""
    if max_norm <= 0:
        return 1.0
    return min(1.0, max_norm / (norm + 1e-6))
