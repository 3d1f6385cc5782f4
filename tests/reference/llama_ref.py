#!/usr/bin/env python3
"""Plain-NumPy reference forward pass for Llama-family models (test-only).

An independent, deliberately simple float64 implementation used to check Tessera's
kernels and runtime. It reads either

  * a GGUF file (via gguf.GGUFReader, weights dequantized with gguf.quants.dequantize), or
  * a Hugging Face model folder (config.json + *.safetensors, read with a small
    safetensors reader below; written e.g. by gguf_to_hf.py).

Model: token embedding -> N x [RMSNorm -> causal GQA attention with RoPE -> residual,
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head (tied to the embedding when
the file has no separate output matrix).

RoPE layout, the one subtle point:
  * llama.cpp's converter permutes the Q and K weight rows of `llama` models so that
    the GGUF file uses *adjacent-pair* RoPE: pairs (x[2i], x[2i+1]) are rotated by
    angle pos * theta^(-2i/d) (llama.cpp "normal" rope).
  * Hugging Face checkpoints use *rotate-half* (NEOX) RoPE: pairs (x[i], x[i+d/2]) with
    the same angle. `qwen2` GGUF files are not permuted and also use rotate-half.
  The two are the same function up to that row permutation, so the GGUF path and the
  HF path of the same model must give the same logits.

Python API:
  logits(gguf_path, token_ids)   -> np.ndarray (T, vocab) float64, all positions
  logits_hf(hf_dir, token_ids)   -> same, from a Hugging Face folder
  load(path)                     -> Model (GGUF file or HF folder), cached per path
  Model.logits(ids, last_only=False), Model.greedy(ids, n)

CLI:
  python llama_ref.py MODEL.gguf --tokens 1,2,3 --out logits.npy --top 5
  python llama_ref.py HF_DIR     --prompt "text" --generate 10
"""

import argparse
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field

import numpy as np

F64 = np.float64

ROPE_PAIRS = "pairs"  # adjacent pairs (x[2i], x[2i+1]): llama.cpp "normal" rope
ROPE_HALF = "half"    # rotate-half (x[i], x[i+d/2]): HF / NEOX rope


@dataclass
class Config:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    eps: float
    rope_theta: float
    rope_dim: int            # rotated dimensions per head (== head_dim for Llama)
    rope_style: str          # ROPE_PAIRS or ROPE_HALF
    n_ctx: int
    rope_pos_scale: float = 1.0            # linear scaling: positions are multiplied by this
    rope_freq_factors: np.ndarray = None   # per-pair divisors of the frequency (Llama 3), or None


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: np.ndarray           # (n_head*head_dim, n_embd)
    wk: np.ndarray           # (n_head_kv*head_dim, n_embd)
    wv: np.ndarray           # (n_head_kv*head_dim, n_embd)
    wo: np.ndarray           # (n_embd, n_head*head_dim)
    ffn_norm: np.ndarray
    w_gate: np.ndarray       # (n_ff, n_embd)
    w_up: np.ndarray         # (n_ff, n_embd)
    w_down: np.ndarray       # (n_embd, n_ff)
    bq: np.ndarray = None
    bk: np.ndarray = None
    bv: np.ndarray = None
    bo: np.ndarray = None
    # act_quant mode: weight field name -> the activation block (32 or 256) of its storage
    # type, for weights stored in a GGUF block format
    qblock: dict = field(default_factory=dict)


@dataclass
class Model:
    cfg: Config
    embed: np.ndarray        # (n_vocab, n_embd)
    out_norm: np.ndarray     # (n_embd,)
    lm_head: np.ndarray      # (n_vocab, n_embd); the same array as `embed` when tied
    layers: list = field(default_factory=list)
    tied: bool = False
    eos_id: int = None       # end-of-sequence token from the file's metadata, if any
    lm_qblock: int = None    # act_quant mode: the LM head's activation block, as Layer.qblock

    def logits(self, ids, last_only=False, act_quant=False):
        return forward(self, ids, last_only=last_only, act_quant=act_quant)

    def greedy(self, ids, n, stop_ids=()):
        """Greedy decoding of up to n tokens (recomputes the whole prefix each step)."""
        ids = list(ids)
        out = []
        for _ in range(n):
            nxt = int(np.argmax(forward(self, ids, last_only=True)[-1]))
            out.append(nxt)
            ids.append(nxt)
            if nxt in stop_ids:
                break
        return out

    def check_shapes(self):
        c = self.cfg
        q, kv = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
        want = {"wq": (q, c.n_embd), "wk": (kv, c.n_embd), "wv": (kv, c.n_embd),
                "wo": (c.n_embd, q), "w_gate": (c.n_ff, c.n_embd), "w_up": (c.n_ff, c.n_embd),
                "w_down": (c.n_embd, c.n_ff), "attn_norm": (c.n_embd,), "ffn_norm": (c.n_embd,)}
        for i, L in enumerate(self.layers):
            for name, shape in want.items():
                got = getattr(L, name).shape
                if got != shape:
                    raise ValueError(f"layer {i} {name}: shape {got}, expected {shape}")
        assert self.embed.shape == (c.n_vocab, c.n_embd), self.embed.shape
        assert self.lm_head.shape == (c.n_vocab, c.n_embd), self.lm_head.shape
        assert self.out_norm.shape == (c.n_embd,)
        assert len(self.layers) == c.n_layer


# ----------------------------------------------------------------------------------------
# The forward pass
# ----------------------------------------------------------------------------------------

def quantize_act(x, block, margin=None):
    """Rows of x as Tessera's int8 dot kernels see them (kernels/cpu/qdot.h): rounded to
    float32, then per block of `block` values d = max|x| / 127 and q = rint(x / d) (ties to
    even), computed as x * (1 / d) in float32; returns d * q in float64.

    Rounding is discontinuous: where x / d lies within the last bits of f32 arithmetic of
    a half-integer, Tessera's f32 activations may round the other way and the two results
    then differ by a whole step. margin, an array with one entry per row, is lowered to the
    smallest distance of any x / d of that row from a half-integer, so a caller can tell
    such rows apart."""
    x32 = np.asarray(x, dtype=np.float32)
    T, n = x32.shape
    b = x32.reshape(T, n // block, block)
    d = np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, np.float32(1)), np.float32(0))
    v = b * inv.astype(np.float32)
    if margin is not None:
        np.minimum(margin, np.abs(np.abs(v - np.floor(v)) - 0.5).min(axis=(1, 2)), out=margin)
    q = np.rint(v)
    return (q.astype(F64) * d.astype(F64)).reshape(T, n)


def mm(x, w, block=None, act_quant=False):
    """x @ w.T; with act_quant (True, or a margin array for quantize_act) and a block, x is
    first quantized as quantize_act does."""
    if act_quant is not False and block:
        x = quantize_act(x, block, None if act_quant is True else act_quant)
    return x @ w.T


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_angles(cfg, positions):
    """(T, rope_dim/2) angles: pos * theta^(-2i/rope_dim), with optional scaling."""
    half = cfg.rope_dim // 2
    inv_freq = cfg.rope_theta ** (-np.arange(half, dtype=F64) * 2.0 / cfg.rope_dim)
    if cfg.rope_freq_factors is not None:
        inv_freq = inv_freq / cfg.rope_freq_factors.astype(F64)
    pos = np.asarray(positions, dtype=F64) * cfg.rope_pos_scale
    return pos[:, None] * inv_freq[None, :]


def apply_rope(x, angles, rope_dim, style):
    """Rotates x (T, heads, head_dim) in place of a copy; only the first rope_dim dims."""
    cos = np.cos(angles)[:, None, :]  # (T, 1, rope_dim/2)
    sin = np.sin(angles)[:, None, :]
    out = x.copy()
    r = x[..., :rope_dim]
    if style == ROPE_PAIRS:
        a, b = r[..., 0::2], r[..., 1::2]
        out[..., 0:rope_dim:2] = a * cos - b * sin
        out[..., 1:rope_dim:2] = a * sin + b * cos
    elif style == ROPE_HALF:
        h = rope_dim // 2
        a, b = r[..., :h], r[..., h:]
        out[..., :h] = a * cos - b * sin
        out[..., h:rope_dim] = a * sin + b * cos
    else:
        raise ValueError(style)
    return out


def attention(cfg, L, h, angles, act_quant=False):
    T = h.shape[0]
    H, KV, D = cfg.n_head, cfg.n_head_kv, cfg.head_dim
    qb = L.qblock.get
    q = mm(h, L.wq, qb("wq"), act_quant)
    k = mm(h, L.wk, qb("wk"), act_quant)
    v = mm(h, L.wv, qb("wv"), act_quant)
    if L.bq is not None:
        q = q + L.bq
    if L.bk is not None:
        k = k + L.bk
    if L.bv is not None:
        v = v + L.bv
    q = apply_rope(q.reshape(T, H, D), angles, cfg.rope_dim, cfg.rope_style)
    k = apply_rope(k.reshape(T, KV, D), angles, cfg.rope_dim, cfg.rope_style)
    v = v.reshape(T, KV, D)
    # GQA: query head j reads key/value head j // (H / KV).
    rep = H // KV
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    scores = np.einsum("thd,shd->hts", q, k) / math.sqrt(D)
    causal = np.triu(np.ones((T, T), dtype=bool), k=1)
    scores = np.where(causal[None], -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    o = mm(np.einsum("hts,shd->thd", p, v).reshape(T, H * D), L.wo, qb("wo"), act_quant)
    return o if L.bo is None else o + L.bo


def forward(model, ids, last_only=False, act_quant=False):
    """Logits (T, vocab) for token ids at positions 0..T-1 (or (1, vocab) if last_only).

    act_quant: the inputs of every matmul whose weight the file stores in a block format
    are quantized per block to 8 bits first (quantize_act), as Tessera's CPU backend does
    when it keeps the weights in their blocks and runs int8 dot kernels. An array of one
    float per position instead of True also receives each row's rounding margin (see
    quantize_act; start it at 1)."""
    cfg = model.cfg
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError("token ids must be a non-empty 1-D sequence")
    if ids.min() < 0 or ids.max() >= cfg.n_vocab:
        raise ValueError(f"token id out of range [0, {cfg.n_vocab})")
    x = model.embed[ids].astype(F64)
    angles = rope_angles(cfg, np.arange(len(ids)))
    for L in model.layers:
        x = x + attention(cfg, L, rms_norm(x, L.attn_norm, cfg.eps), angles, act_quant)
        h = rms_norm(x, L.ffn_norm, cfg.eps)
        qb = L.qblock.get
        g = silu(mm(h, L.w_gate, qb("w_gate"), act_quant)) * mm(h, L.w_up, qb("w_up"), act_quant)
        x = x + mm(g, L.w_down, qb("w_down"), act_quant)
    if last_only:
        x = x[-1:]
    x = rms_norm(x, model.out_norm, cfg.eps)
    return mm(x, model.lm_head, model.lm_qblock, act_quant)


# ----------------------------------------------------------------------------------------
# GGUF loading
# ----------------------------------------------------------------------------------------

# Architectures whose GGUF files use adjacent-pair RoPE (Q/K rows permuted by the converter).
_GGUF_ROPE_STYLE = {"llama": ROPE_PAIRS, "qwen2": ROPE_HALF}


def _gguf_tensor(t):
    """Dequantized GGUF tensor as float64 in numpy (row-major) order.

    GGUF lists dimensions fastest-first (ne[0] = row length), so the numpy shape is the
    reverse of `t.shape`: a 2-D weight becomes (rows = out_features, cols = in_features).
    """
    import gguf
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    shape = tuple(int(n) for n in reversed(list(t.shape)))
    return np.asarray(a, dtype=F64).reshape(shape)


def load_gguf(path):
    import gguf
    r = gguf.GGUFReader(path)

    def field(key, default=KeyError):
        f = r.fields.get(key)
        if f is None:
            if default is KeyError:
                raise KeyError(f"{path}: missing GGUF key {key}")
            return default
        return f.contents()

    arch = field("general.architecture")
    if arch not in _GGUF_ROPE_STYLE:
        raise NotImplementedError(f"llama_ref: unsupported architecture {arch!r}")
    tensors = {t.name: t for t in r.tensors}

    def qblock(name):
        """The activation block of a weight's storage type (act_quant), or None."""
        t = tensors.get(name)
        if t is None:
            return None
        ty = gguf.GGMLQuantizationType
        if t.tensor_type in (ty.Q4_0, ty.Q4_1, ty.Q5_0, ty.Q5_1, ty.Q8_0, ty.IQ4_NL):
            return 32
        if t.tensor_type in (ty.Q2_K, ty.Q3_K, ty.Q4_K, ty.Q5_K, ty.Q6_K):
            return 256
        return None

    def tensor(name, required=True):
        t = tensors.get(name)
        if t is None:
            if required:
                raise KeyError(f"{path}: missing tensor {name}")
            return None
        return _gguf_tensor(t)

    n_embd = int(field(f"{arch}.embedding_length"))
    n_head = int(field(f"{arch}.attention.head_count"))
    head_dim = int(field(f"{arch}.attention.key_length", n_embd // n_head))
    v_dim = int(field(f"{arch}.attention.value_length", head_dim))
    if v_dim != head_dim:
        raise NotImplementedError("llama_ref: key_length != value_length")
    embed = tensor("token_embd.weight")
    cfg = Config(
        arch=arch,
        n_embd=n_embd,
        n_layer=int(field(f"{arch}.block_count")),
        n_head=n_head,
        n_head_kv=int(field(f"{arch}.attention.head_count_kv", n_head)),
        head_dim=head_dim,
        n_ff=int(field(f"{arch}.feed_forward_length")),
        n_vocab=embed.shape[0],
        eps=float(field(f"{arch}.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field(f"{arch}.rope.freq_base", 10000.0)),
        rope_dim=int(field(f"{arch}.rope.dimension_count", head_dim)),
        rope_style=_GGUF_ROPE_STYLE[arch],
        n_ctx=int(field(f"{arch}.context_length")),
    )

    # RoPE scaling. Newer files: rope.scaling.type + rope.scaling.factor; older files:
    # rope.scale_linear. Llama 3.x stores per-frequency divisors in a rope_freqs tensor.
    stype = field(f"{arch}.rope.scaling.type", None)
    factor = field(f"{arch}.rope.scaling.factor", None)
    if stype is None and field(f"{arch}.rope.scale_linear", None) is not None:
        stype, factor = "linear", field(f"{arch}.rope.scale_linear")
    if stype == "linear" and factor and float(factor) != 1.0:
        cfg.rope_pos_scale = 1.0 / float(factor)
    elif stype not in (None, "none", "linear"):
        raise NotImplementedError(f"llama_ref: rope scaling {stype!r} not implemented")
    if "rope_freqs.weight" in tensors:
        cfg.rope_freq_factors = tensor("rope_freqs.weight")

    layers = []
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        layers.append(Layer(
            attn_norm=tensor(p + "attn_norm.weight"),
            wq=tensor(p + "attn_q.weight"),
            wk=tensor(p + "attn_k.weight"),
            wv=tensor(p + "attn_v.weight"),
            wo=tensor(p + "attn_output.weight"),
            ffn_norm=tensor(p + "ffn_norm.weight"),
            w_gate=tensor(p + "ffn_gate.weight"),
            w_up=tensor(p + "ffn_up.weight"),
            w_down=tensor(p + "ffn_down.weight"),
            bq=tensor(p + "attn_q.bias", required=False),
            bk=tensor(p + "attn_k.bias", required=False),
            bv=tensor(p + "attn_v.bias", required=False),
            bo=tensor(p + "attn_output.bias", required=False),
            qblock={k: qblock(p + g) for k, g in (
                ("wq", "attn_q.weight"), ("wk", "attn_k.weight"), ("wv", "attn_v.weight"),
                ("wo", "attn_output.weight"), ("w_gate", "ffn_gate.weight"),
                ("w_up", "ffn_up.weight"), ("w_down", "ffn_down.weight"))},
        ))
    lm_head = tensor("output.weight", required=False)
    tied = lm_head is None
    m = Model(cfg=cfg, embed=embed, out_norm=tensor("output_norm.weight"),
              lm_head=embed if tied else lm_head, layers=layers, tied=tied,
              eos_id=field("tokenizer.ggml.eos_token_id", None),
              lm_qblock=qblock("token_embd.weight" if tied else "output.weight"))
    m.check_shapes()
    return m


# ----------------------------------------------------------------------------------------
# Hugging Face folder loading (config.json + safetensors)
# ----------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
              "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1"}


def read_safetensors(path):
    """{name: float64/int array} from one .safetensors file (BF16 widened exactly)."""
    out = {}
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        base = 8 + hlen
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = buf[base + begin: base + end]
        a = raw.view(_ST_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":  # bf16 = the high 16 bits of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        shape = tuple(info["shape"])
        if a.size != math.prod(shape):
            raise ValueError(f"{path}: {name}: {a.size} elements for shape {shape}")
        out[name] = np.array(a.reshape(shape), dtype=F64 if a.dtype.kind == "f" else a.dtype)
    return out


def read_hf_weights(hf_dir):
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for fn in files:
        w.update(read_safetensors(os.path.join(hf_dir, fn)))
    return w


def _hf_rope_freq_factors(rs, theta, dim):
    """Per-frequency divisors for HF rope_scaling {"rope_type": "llama3", ...}."""
    half = dim // 2
    inv = theta ** (-np.arange(half, dtype=F64) * 2.0 / dim)
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    orig = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = np.clip((orig / wavelen - lo) / (hi - lo), 0.0, 1.0)
    # smooth = 1: keep the frequency; smooth = 0: divide it by `factor`; in between: blend.
    new_inv = (1 - smooth) * inv / factor + smooth * inv
    return inv / new_inv


def load_hf(hf_dir):
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    model_type = c.get("model_type", "llama")
    if model_type not in ("llama", "qwen2"):
        raise NotImplementedError(f"llama_ref: unsupported model_type {model_type!r}")
    w = read_hf_weights(hf_dir)
    n_head = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // n_head
    cfg = Config(
        arch=model_type,
        n_embd=c["hidden_size"],
        n_layer=c["num_hidden_layers"],
        n_head=n_head,
        n_head_kv=c.get("num_key_value_heads", n_head),
        head_dim=head_dim,
        n_ff=c["intermediate_size"],
        n_vocab=c["vocab_size"],
        eps=c["rms_norm_eps"],
        rope_theta=c.get("rope_theta", 10000.0),
        rope_dim=int(head_dim * c.get("partial_rotary_factor", 1.0)),
        rope_style=ROPE_HALF,
        n_ctx=c.get("max_position_embeddings", 0),
    )
    rs = c.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            cfg.rope_pos_scale = 1.0 / rs["factor"]
        elif kind == "llama3":
            cfg.rope_freq_factors = _hf_rope_freq_factors(rs, cfg.rope_theta, cfg.rope_dim)
        elif kind != "default":
            raise NotImplementedError(f"llama_ref: rope_scaling {kind!r} not implemented")

    layers = []
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        layers.append(Layer(
            attn_norm=w[p + "input_layernorm.weight"],
            wq=w[p + "self_attn.q_proj.weight"],
            wk=w[p + "self_attn.k_proj.weight"],
            wv=w[p + "self_attn.v_proj.weight"],
            wo=w[p + "self_attn.o_proj.weight"],
            ffn_norm=w[p + "post_attention_layernorm.weight"],
            w_gate=w[p + "mlp.gate_proj.weight"],
            w_up=w[p + "mlp.up_proj.weight"],
            w_down=w[p + "mlp.down_proj.weight"],
            bq=w.get(p + "self_attn.q_proj.bias"),
            bk=w.get(p + "self_attn.k_proj.bias"),
            bv=w.get(p + "self_attn.v_proj.bias"),
            bo=w.get(p + "self_attn.o_proj.bias"),
        ))
    embed = w["model.embed_tokens.weight"]
    tied = "lm_head.weight" not in w
    if tied and not c.get("tie_word_embeddings", True):
        raise KeyError(f"{hf_dir}: lm_head.weight missing and tie_word_embeddings is false")
    eos = c.get("eos_token_id")
    m = Model(cfg=cfg, embed=embed, out_norm=w["model.norm.weight"],
              lm_head=embed if tied else w["lm_head.weight"], layers=layers, tied=tied,
              eos_id=eos[0] if isinstance(eos, list) else eos)
    m.check_shapes()
    return m


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------

_cache = {}


def load(path):
    """Model from a GGUF file or a Hugging Face folder; cached by (path, mtime)."""
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _cache:
        _cache.clear()  # keep at most one model (~1 GB of float64 for 135M params)
        _cache[key] = load_hf(path) if os.path.isdir(path) else load_gguf(path)
    return _cache[key]


def logits(gguf_path, token_ids):
    """All positions' logits (T, vocab), float64, from a GGUF file."""
    return load(gguf_path).logits(token_ids)


def logits_hf(hf_dir, token_ids):
    """All positions' logits (T, vocab), float64, from a Hugging Face folder."""
    return load(hf_dir).logits(token_ids)


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------

def _tokenizer_for(path):
    """A `tokenizers` tokenizer for a GGUF file or a HF folder (test helper)."""
    if os.path.isdir(path):
        from tokenizers import Tokenizer
        return Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import hf_tokenizer
    return hf_tokenizer.build_tokenizer(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="NumPy reference Llama forward pass.")
    ap.add_argument("model", help="GGUF file or Hugging Face folder")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", help="comma-separated token ids")
    src.add_argument("--prompt", help="text, tokenized with the model's vocabulary (no BOS added)")
    ap.add_argument("--out", help="write all positions' logits as float32 .npy (T, vocab)")
    ap.add_argument("--top", type=int, default=0, help="print the top-K tokens of the last position")
    ap.add_argument("--generate", type=int, default=0, help="greedy-decode N tokens and print them")
    ap.add_argument("--no-stop", action="store_true", help="do not stop generating at the EOS token")
    a = ap.parse_args(argv)

    tok = None
    if a.prompt is not None:
        tok = _tokenizer_for(a.model)
        ids = tok.encode(a.prompt, add_special_tokens=False).ids
    else:
        ids = [int(x) for x in a.tokens.split(",") if x.strip()]
    model = load(a.model)
    print(f"tokens ({len(ids)}): {','.join(map(str, ids))}", file=sys.stderr)

    if a.out or a.top:
        lg = model.logits(ids)
        if a.out:
            np.save(a.out, lg.astype(np.float32))
            print(f"wrote {a.out} {lg.shape}", file=sys.stderr)
        if a.top:
            last = lg[-1]
            for t in np.argsort(-last, kind="stable")[: a.top]:
                piece = ""
                if tok is None:
                    try:
                        tok = _tokenizer_for(a.model)
                    except Exception:  # a tokenizer is only cosmetic here
                        tok = False
                if tok:
                    piece = repr(tok.decode([int(t)], skip_special_tokens=False))
                print(f"{int(t)}\t{last[t]:.6f}\t{piece}")
    if a.generate:
        stop = () if a.no_stop or model.eos_id is None else (int(model.eos_id),)
        out = model.greedy(ids, a.generate, stop_ids=stop)
        print(",".join(map(str, out)))
        if tok is None:
            tok = _tokenizer_for(a.model)
        if tok:
            print(repr(tok.decode(out, skip_special_tokens=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
