#!/usr/bin/env python3
"""Float64 NumPy reference for the training (LoRA) ops of the kernel backend.

Each op has a forward (what the model computes) and, where the backend has a
backward slot, the analytic gradient of a scalar loss L given dL/d(output).
Shapes follow kernels/backend.h: rows are tokens, row-major (n, features).
The analytic gradients are checked against central finite differences of the
forwards here (finite_diff_grad) by tests/train/test_train_ops.py, and the C
backends are checked against the analytic gradients.

What it is not: a training loop or an autograd. Nothing here is used by
Tessera at run time.

  matmul / matmul_bwd          y = x W^T                      (W frozen: dx)
  lora / lora_bwd              y = scale (x A^T) B^T          (dx, dA, dB)
  dropout_stream, dropout_bits, dropout_keep, dropout
                               LoRA dropout's hash (runtime/model/lora.h), bit for bit,
                               and the inverted mask it gives
  rmsnorm / rmsnorm_bwd        y = x / sqrt(mean(x^2)+eps) * w (dx; dw too)
  rope / rope_bwd              rotate-half RoPE               (dx)
  swiglu / swiglu_bwd          out = silu(gate) * up          (dgate, dup)
  attention / attention_bwd    causal GQA over contiguous sequences -> out, lse
                               (dq, dk, dv)
  ce_rowmax, ce_sums           vocabulary-parallel cross-entropy pieces of a
                               slice (row0 offset, target -1 = no loss)
  ce_loss_from_pieces          the loss from the all-reduced pieces
  ce_loss / ce_grad            the full weighted loss and its gradient
  adamw_step                   the formula in backend.h
  adamw_step_torch             the algorithm as PyTorch documents AdamW
  finite_diff_grad             central differences of sum(f(x) * R)
"""

import numpy as np

# ---- matmul and LoRA --------------------------------------------------------------


def matmul(x, W):
    """y(n, rows) = x(n, cols) W(rows, cols)^T."""
    return x @ W.T


def matmul_bwd(dy, x, W):
    """(dx, dW) of y = x W^T given dy."""
    return dy @ W, dy.T @ x


def lora(x, A, B, scale):
    """The LoRA delta y(n, d_out) = scale (x A^T) B^T and xa = x A^T (n, r)."""
    xa = x @ A.T
    return scale * (xa @ B.T), xa


def lora_bwd(dy, x, A, B, scale):
    """(dx, dA, dB, t) of the LoRA delta given dy; t = scale dy B."""
    xa = x @ A.T
    t = scale * (dy @ B)
    return t @ A, t.T @ x, scale * (dy.T @ xa), t


# ---- LoRA dropout (runtime/model/lora.h defines the hash; this is its NumPy copy) ---------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_SALT = 0xD1B54A32D192ED03
_N_TARGETS = 7


def _mix_int(z):
    """splitmix64's output function on a Python int (mod 2^64)."""
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix(z):
    """The same on a uint64 array (NumPy's unsigned array arithmetic wraps mod 2^64)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_stream(seed, key, layer, target):
    """The 64-bit stream of (seed, key, layer, target) (target: 0 = q .. 6 = down)."""
    s = _mix_int((seed & _M64) ^ _SALT)
    s = _mix_int(s ^ (key & _M64))
    return _mix_int(s + _GOLDEN * (1 + layer * _N_TARGETS + target))


def dropout_bits(stream, tokens, cols):
    """(len(tokens), len(cols)) uint32: the 24 bits of each (global token, global column)."""
    t = np.asarray(tokens, np.int64).astype(np.uint64)[:, None]
    c = np.asarray(cols, np.int64).astype(np.uint64)[None, :]
    with np.errstate(over="ignore"):
        row = _mix(np.uint64(stream) ^ t)
        h = _mix(row + np.uint64(_GOLDEN) * (c + np.uint64(1)))
    return (h >> np.uint64(40)).astype(np.uint32)


def dropout_threshold(p):
    """ceil(p * 2^24) for p as an f32 (an element is dropped when its bits are below)."""
    return int(np.ceil(float(np.float32(p)) * 2.0**24))


def dropout_keep(p, seed, key, layer, target, tokens, cols):
    """Boolean (len(tokens), len(cols)): True where the element is kept."""
    bits = dropout_bits(dropout_stream(seed, key, layer, target), tokens, cols)
    return bits >= np.uint32(dropout_threshold(p))


def dropout_scale(p):
    """1 / (1 - p) as the C side computes it: in f32, from p as an f32."""
    return float(np.float32(1.0) / (np.float32(1.0) - np.float32(p)))


def dropout(x, keep, p):
    """Inverted dropout: x / (1 - p) where kept, 0 where dropped."""
    return np.where(keep, x * dropout_scale(p), 0.0)


# ---- RMSNorm, RoPE, SwiGLU ----------------------------------------------------------


def rmsnorm(x, w, eps):
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * r * w


def rmsnorm_bwd(dy, x, w, eps):
    """(dx, dw) of y = x r w, r = (mean(x^2) + eps)^(-1/2)."""
    dim = x.shape[-1]
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    dot = np.sum(w * dy * x, axis=-1, keepdims=True)
    dx = r * w * dy - x * r**3 / dim * dot
    dw = np.sum(dy * x * r, axis=0)
    return dx, dw


def _rope_angles(pos, inv_freq):
    a = np.asarray(pos, np.float64)[:, None] * np.asarray(inv_freq, np.float64)[None, :]
    return np.cos(a)[:, None, :], np.sin(a)[:, None, :]


def rope(x, pos, inv_freq, n_heads, head_dim):
    """Rotate-half RoPE of x(n, n_heads * head_dim): (x[i], x[i+hd/2]) by pos * inv_freq[i]."""
    assert head_dim % 2 == 0
    n, half = x.shape[0], head_dim // 2
    c, s = _rope_angles(pos, inv_freq)
    v = x.reshape(n, n_heads, head_dim)
    x0, x1 = v[..., :half], v[..., half:]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1).reshape(x.shape)


def rope_bwd(dy, pos, inv_freq, n_heads, head_dim):
    """dx = R^T dy (the transposed rotation, written out rather than as rope(-pos))."""
    n, half = dy.shape[0], head_dim // 2
    c, s = _rope_angles(pos, inv_freq)
    g = dy.reshape(n, n_heads, head_dim)
    g0, g1 = g[..., :half], g[..., half:]
    return np.concatenate([g0 * c + g1 * s, -g0 * s + g1 * c], axis=-1).reshape(dy.shape)


def _sigmoid(g):
    return 1.0 / (1.0 + np.exp(-g))


def swiglu(gate, up):
    return gate * _sigmoid(gate) * up


def swiglu_bwd(dout, gate, up):
    """(dgate, dup) of out = gate sigmoid(gate) up."""
    s = _sigmoid(gate)
    return dout * up * (s + gate * s * (1.0 - s)), dout * gate * s


# ---- causal GQA attention over contiguous sequences --------------------------------------


def _heads(a, n_heads, hd):
    return a.reshape(a.shape[0], n_heads, hd)


def _probs(Qh, Kh, scale):
    """Causal softmax of scale Qh Kh^T for one sequence and head: (P, lse)."""
    L = Qh.shape[0]
    S = scale * (Qh @ Kh.T)
    S = np.where(np.tril(np.ones((L, L), bool)), S, -np.inf)
    m = S.max(axis=1, keepdims=True)
    e = np.exp(S - m)
    z = e.sum(axis=1, keepdims=True)
    return e / z, (m + np.log(z))[:, 0]


def attention(q, k, v, seq_start, n_head, n_kv_head, head_dim, scale):
    """out(n, n_head*hd), lse(n, n_head): token rows seq_start[s]..seq_start[s+1]-1 form
    sequence s; query head h reads KV head h // (n_head // n_kv_head)."""
    group = n_head // n_kv_head
    out = np.zeros((q.shape[0], n_head, head_dim))
    lse = np.zeros((q.shape[0], n_head))
    Q, K, V = _heads(q, n_head, head_dim), _heads(k, n_kv_head, head_dim), _heads(v, n_kv_head, head_dim)
    for a, b in zip(seq_start[:-1], seq_start[1:]):
        for h in range(n_head):
            g = h // group
            P, l = _probs(Q[a:b, h], K[a:b, g], scale)
            out[a:b, h] = P @ V[a:b, g]
            lse[a:b, h] = l
    return out.reshape(q.shape[0], -1), lse


def attention_bwd(dout, q, k, v, seq_start, n_head, n_kv_head, head_dim, scale):
    """(dq, dk, dv) given dL/dout; dk, dv summed over the query heads of each KV group.
    Uses the softmax Jacobian on the recomputed P (not the D = dout.out shortcut)."""
    group = n_head // n_kv_head
    Q, K, V = _heads(q, n_head, head_dim), _heads(k, n_kv_head, head_dim), _heads(v, n_kv_head, head_dim)
    dO = _heads(dout, n_head, head_dim)
    dq, dk, dv = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for a, b in zip(seq_start[:-1], seq_start[1:]):
        for h in range(n_head):
            g = h // group
            P, _ = _probs(Q[a:b, h], K[a:b, g], scale)
            dv[a:b, g] += P.T @ dO[a:b, h]
            dP = dO[a:b, h] @ V[a:b, g].T
            dS = P * (dP - np.sum(dP * P, axis=1, keepdims=True))
            dq[a:b, h] = scale * (dS @ K[a:b, g])
            dk[a:b, g] += scale * (dS.T @ Q[a:b, h])
    n = q.shape[0]
    return dq.reshape(n, -1), dk.reshape(n, -1), dv.reshape(n, -1)


# ---- vocabulary-parallel cross-entropy ---------------------------------------------------


def ce_rowmax(logits):
    return logits.max(axis=1)


def _owned(target, V, row0):
    t = np.asarray(target)
    col = t - row0
    return (t >= 0) & (col >= 0) & (col < V), col


def ce_sums(logits, rowmax, target, row0):
    """(sumexp, tlogit) of a slice covering vocabulary rows row0 .. row0+V-1."""
    n, V = logits.shape
    sumexp = np.exp(logits - rowmax[:, None]).sum(axis=1)
    own, col = _owned(target, V, row0)
    tlogit = np.where(own, logits[np.arange(n), np.where(own, col, 0)], 0.0)
    return sumexp, tlogit


def ce_loss_from_pieces(rowmax, sumexp, tlogit, target, weight):
    """sum_i weight_i (log sumexp_i + rowmax_i - tlogit_i) over rows with a target."""
    valid = np.asarray(target) >= 0
    return float(np.sum(np.where(valid, weight * (np.log(sumexp) + rowmax - tlogit), 0.0)))


def ce_loss(logits, target, weight):
    """The full weighted cross-entropy: sum_i weight_i (-log softmax(l_i)[target_i])."""
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    t = np.asarray(target)
    valid = t >= 0
    lt = logits[np.arange(len(t)), np.where(valid, t, 0)]
    return float(np.sum(np.where(valid, weight * (lse - lt), 0.0)))


def ce_grad(logits, target, weight, row0=0, rowmax=None, sumexp=None):
    """dL/dlogits of ce_loss for a slice (row0, given the global rowmax and sumexp; by
    default the slice is the whole vocabulary): weight (softmax - onehot)."""
    n, V = logits.shape
    if rowmax is None:
        rowmax = logits.max(axis=1)
    if sumexp is None:
        sumexp = np.exp(logits - rowmax[:, None]).sum(axis=1)
    t = np.asarray(target)
    w = np.where(t >= 0, weight, 0.0)[:, None]
    g = np.exp(logits - rowmax[:, None]) / sumexp[:, None]
    own, col = _owned(t, V, row0)
    g[np.arange(n)[own], col[own]] -= 1.0
    return w * g


# ---- AdamW --------------------------------------------------------------------------------


def adamw_step(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """One step of the formula in kernels/backend.h; returns new (p, m, v)."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1**t)
    vhat = v / (1 - beta2**t)
    return p - lr * (mhat / (np.sqrt(vhat) + eps) + weight_decay * p), m, v


def adamw_step_torch(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """The AdamW algorithm as the torch.optim.AdamW documentation writes it
    (amsgrad=False, maximize=False): decay first, then the Adam update."""
    p = p - lr * weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    mhat = m / (1 - beta1**t)
    vhat = v / (1 - beta2**t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v


# ---- finite differences --------------------------------------------------------------------


def finite_diff_grad(f, x, R, h=1e-5, idx=None):
    """Central differences of L(x) = sum(f(x) * R) (f returns an array, or a tuple whose
    first element is used) at the flat indices idx (default: all). Returns an array of
    x's shape with NaN where not evaluated."""
    def L(xx):
        y = f(xx)
        if isinstance(y, tuple):
            y = y[0]
        return float(np.sum(y * R))

    x = np.array(x, np.float64)
    g = np.full(x.size, np.nan)
    flat = x.reshape(-1)
    for i in range(x.size) if idx is None else idx:
        old = flat[i]
        flat[i] = old + h
        lp = L(x)
        flat[i] = old - h
        lm = L(x)
        flat[i] = old
        g[i] = (lp - lm) / (2 * h)
    return g.reshape(x.shape)
