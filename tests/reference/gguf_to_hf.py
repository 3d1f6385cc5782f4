#!/usr/bin/env python3
"""Writes the weights of a GGUF Llama/Qwen2 model as a Hugging Face model folder (test-only).

  python gguf_to_hf.py MODEL.gguf OUTDIR [--dtype f32|f16|bf16] [--shards N]
                       [--merges-format pairs|strings]

OUTDIR receives:
  config.json                    LlamaForCausalLM (or Qwen2ForCausalLM) configuration
  model.safetensors              all tensors, or with --shards N > 1:
  model-0000i-of-0000N.safetensors + model.safetensors.index.json
  tokenizer.json                 HF tokenizers JSON built from the GGUF vocabulary
  tokenizer_config.json          bos/eos tokens and the chat template

Tessera's tests use it to exercise the safetensors loader on exactly the same weights
as the GGUF loader: both must produce the same logits (llama_ref.py checks the Python
side: its GGUF path and its HF path agree).

Weights are dequantized to float32 and then stored in the requested dtype. The
safetensors format is written here directly: an 8-byte little-endian header length,
a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} padded with
spaces to a multiple of 8 bytes, then the raw little-endian tensor data.

Q/K rows: llama.cpp's converter permuted the rows of each attention head of Q and K
for `llama` models, from HF's rotate-half RoPE layout to GGUF's adjacent-pair layout:
    w.reshape(n_heads, 2, head_dim // 2, n_in).swapaxes(1, 2).reshape(w.shape)
i.e. GGUF row 2i+s of a head is HF row s*head_dim/2 + i. This script inverts that.
(`qwen2` GGUF files are not permuted.)
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_tokenizer  # noqa: E402  (test helper next to this file)

ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


# ----------------------------------------------------------------------------------------
# dtype conversion and the safetensors writer
# ----------------------------------------------------------------------------------------

def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, rounding to nearest, ties to even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    # NaN must stay NaN (rounding could carry it into an infinity): keep a quiet NaN.
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def encode_tensor(a, dtype):
    """Raw little-endian bytes of float array `a` in dtype f32|f16|bf16."""
    if dtype == "f32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "f16":
        return np.ascontiguousarray(a, dtype="<f2").tobytes()
    if dtype == "bf16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, dtype, metadata=None):
    """Writes {name: float32 array} (in the given order) to `path`; returns data bytes."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors:
        data = encode_tensor(a, dtype)
        header[name] = {"dtype": ST_DTYPE[dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    return offset


# ----------------------------------------------------------------------------------------
# Reading and renaming the GGUF weights
# ----------------------------------------------------------------------------------------

def unpermute_rope_rows(w, n_heads):
    """Inverse of llama.cpp's Q/K row permutation: adjacent-pair layout -> rotate-half."""
    rows = w.shape[0]
    head_dim = rows // n_heads
    assert head_dim * n_heads == rows and head_dim % 2 == 0
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def _dequant(t):
    import gguf
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape(tuple(int(n) for n in reversed(list(t.shape))))


GGUF_TO_HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def convert(gguf_path):
    """(config dict, [(hf_name, float32 array)], vocab info) for a GGUF file."""
    import gguf
    r = gguf.GGUFReader(gguf_path)

    def field(key, default=KeyError):
        f = r.fields.get(key)
        if f is None:
            if default is KeyError:
                raise KeyError(f"{gguf_path}: missing GGUF key {key}")
            return default
        return f.contents()

    arch = field("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise NotImplementedError(f"gguf_to_hf: unsupported architecture {arch!r}")
    if arch == "qwen2" and any(t.name.endswith("attn_output.bias") for t in r.tensors):
        raise NotImplementedError("gguf_to_hf: Qwen2 has no o_proj bias in HF")
    n_embd = int(field(f"{arch}.embedding_length"))
    n_head = int(field(f"{arch}.attention.head_count"))
    n_head_kv = int(field(f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(field(f"{arch}.attention.key_length", n_embd // n_head))
    rope_dim = int(field(f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise NotImplementedError("gguf_to_hf: partial rotary embeddings")
    tensors = {t.name: t for t in r.tensors}
    if "rope_freqs.weight" in tensors:
        raise NotImplementedError("gguf_to_hf: rope_freqs (Llama 3 scaling) cannot be mapped back exactly")

    rope_scaling = None
    stype = field(f"{arch}.rope.scaling.type", None)
    factor = field(f"{arch}.rope.scaling.factor", None)
    if stype is None and field(f"{arch}.rope.scale_linear", None) is not None:
        stype, factor = "linear", field(f"{arch}.rope.scale_linear")
    if stype == "linear" and factor and float(factor) != 1.0:
        rope_scaling = {"rope_type": "linear", "factor": float(factor)}
    elif stype not in (None, "none", "linear"):
        raise NotImplementedError(f"gguf_to_hf: rope scaling {stype!r}")

    n_layer = int(field(f"{arch}.block_count"))
    embed = _dequant(tensors["token_embd.weight"])
    tied = "output.weight" not in tensors
    has_bias = any(f"blk.0.attn_{x}.bias" in tensors for x in ("q", "k", "v", "output"))
    # HF Llama's attention_bias=True gives all four projections a bias: missing ones are 0.
    bias_len = {"attn_q.bias": n_head * head_dim, "attn_k.bias": n_head_kv * head_dim,
                "attn_v.bias": n_head_kv * head_dim, "attn_output.bias": n_embd}

    out = [("model.embed_tokens.weight", embed)]
    for i in range(n_layer):
        for gname, hname in GGUF_TO_HF_LAYER.items():
            t = tensors.get(f"blk.{i}.{gname}")
            if t is None:
                if gname in bias_len and arch == "llama" and has_bias:
                    out.append((f"model.layers.{i}.{hname}", np.zeros(bias_len[gname], np.float32)))
                    continue
                if gname.endswith(".bias"):
                    continue
                raise KeyError(f"{gguf_path}: missing tensor blk.{i}.{gname}")
            w = _dequant(t)
            if arch == "llama" and gname.startswith("attn_q."):
                w = unpermute_rope_rows(w, n_head)
            elif arch == "llama" and gname.startswith("attn_k."):
                w = unpermute_rope_rows(w, n_head_kv)
            out.append((f"model.layers.{i}.{hname}", w))
    out.append(("model.norm.weight", _dequant(tensors["output_norm.weight"])))
    if not tied:
        out.append(("lm_head.weight", _dequant(tensors["output.weight"])))

    vocab = hf_tokenizer.vocab_info(gguf_path)
    config = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "hidden_size": n_embd,
        "intermediate_size": int(field(f"{arch}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "num_hidden_layers": n_layer,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(field(f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": rope_scaling,
        "max_position_embeddings": int(field(f"{arch}.context_length")),
        "vocab_size": int(embed.shape[0]),
        "tie_word_embeddings": tied,
        "bos_token_id": vocab["bos_token_id"],
        "eos_token_id": vocab["eos_token_id"],
    }
    if vocab["padding_token_id"] is not None:
        config["pad_token_id"] = vocab["padding_token_id"]
    if arch == "llama":
        config["attention_bias"] = has_bias
        config["mlp_bias"] = False
    return config, out, vocab


# ----------------------------------------------------------------------------------------
# Writing the folder
# ----------------------------------------------------------------------------------------

def split_shards(tensors, n):
    """Splits the ordered tensor list into n consecutive, roughly equal-sized groups."""
    if n < 1 or n > len(tensors):
        raise ValueError(f"--shards must be between 1 and {len(tensors)}")
    sizes = [a.size for _, a in tensors]
    total = sum(sizes)
    shards, cur, acc = [], [], 0
    for k, (item, size) in enumerate(zip(tensors, sizes)):
        cur.append(item)
        acc += size
        left_items, left_shards = len(tensors) - k - 1, n - len(shards) - 1
        # Close the shard when it reached its share, keeping one tensor per later shard.
        if left_shards > 0 and (acc >= total * (len(shards) + 1) / n or left_items == left_shards):
            shards.append(cur)
            cur = []
    shards.append(cur)
    assert len(shards) == n and all(shards)
    return shards


def write_tokenizer(outdir, gguf_path, vocab, merges_format):
    tok = hf_tokenizer.build_tokenizer(gguf_path, info=vocab)
    path = os.path.join(outdir, "tokenizer.json")
    tok.save(path, pretty=True)
    # Rewrite the merges in the requested format: tokenizers >= 0.20 writes [a, b] pairs;
    # older tokenizer.json files hold "a b" strings. Both must load.
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    merges = j["model"]["merges"]
    pairs = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]
    j["model"]["merges"] = pairs if merges_format == "pairs" else [f"{a} {b}" for a, b in pairs]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)

    tokens = vocab["tokens"]
    def name(i):
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(vocab["bos_token_id"]),
        "eos_token": name(vocab["eos_token_id"]),
        "pad_token": name(vocab["padding_token_id"]),
        "unk_token": name(vocab["unknown_token_id"]),
        "add_bos_token": vocab["add_bos_token"],
        "model_max_length": None,
    }
    if vocab["chat_template"]:
        tcfg["chat_template"] = vocab["chat_template"]
    with open(os.path.join(outdir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tcfg, f, ensure_ascii=False, indent=2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("outdir")
    ap.add_argument("--dtype", choices=sorted(ST_DTYPE), default="f32")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--merges-format", choices=("pairs", "strings"), default="pairs")
    a = ap.parse_args(argv)

    config, tensors, vocab = convert(a.gguf)
    config["torch_dtype"] = TORCH_DTYPE[a.dtype]
    os.makedirs(a.outdir, exist_ok=True)
    # Remove safetensors left by an earlier run with another --shards value.
    for fn in os.listdir(a.outdir):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(a.outdir, fn))

    meta = {"format": "pt"}
    if a.shards == 1:
        write_safetensors(os.path.join(a.outdir, "model.safetensors"), tensors, a.dtype, meta)
    else:
        weight_map, total = {}, 0
        groups = split_shards(tensors, a.shards)
        for k, group in enumerate(groups, start=1):
            fn = f"model-{k:05d}-of-{a.shards:05d}.safetensors"
            total += write_safetensors(os.path.join(a.outdir, fn), group, a.dtype, meta)
            weight_map.update({name: fn for name, _ in group})
        with open(os.path.join(a.outdir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    with open(os.path.join(a.outdir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_tokenizer(a.outdir, a.gguf, vocab, a.merges_format)
    print(a.outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
