#!/usr/bin/env python3
"""tests/fuzz/make_seeds.py - writes the seed corpora of the fuzz harnesses.

   make_seeds.py --out BUILD/tests/fuzz/seeds [--model SmolLM2.gguf]

One folder per harness (OUT/<target>/), a few small files each, generated at
test time and never committed. From the default model (when --model exists):
its tokenizer cut down to the 256 byte tokens, the first merges that stay
inside them and the special tokens, its chat template, its metadata on a tiny
model, and its real header truncated. Everything else is built here: a tiny
Llama/Qwen2 model as GGUF (f32, f16, q8_0, q4_0, q4_1 tensors) and as a
Hugging Face directory (sharded and not), PEFT adapters for fuzz_peft's model,
training JSONL, every gRPC request message (encoded by hand: no protoc), and
tessera-launch's example configs (configs/*.yaml).

Multi-file inputs are joined with the harnesses' separator (FZ_SEP in
fuzz_common.h). Needs numpy and gguf (the test venv)."""
import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:  # the venv lacks it: GGUF seeds are skipped
    gguf = None

SEP = b"\n%%%%\n"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
LLAMA31 = LLAMA3.replace("{{ bos_token }}", "{{ bos_token }}{{ 'Cutting Knowledge Date: December 2023' }}"
                         "{{ 'Today Date: 26 Jul 2024' }}")


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def byte_tokens():
    """GPT-2's byte-to-unicode map: the 256 byte-level token strings."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    m = dict(zip(bs, cs))
    return [chr(m[b]) for b in range(256)]


# ---- the small tokenizer --------------------------------------------------

def small_tokenizer(model):
    """(tokens, merges, specials, template): the model's when it is readable,
    else byte tokens with a few merges of our own."""
    toks = byte_tokens()
    merges, template = [], CHATML
    if model and gguf and os.path.exists(model):
        r = gguf.GGUFReader(model)

        def strs(key):
            f = r.fields[key]
            return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        vocab = set(strs("tokenizer.ggml.tokens"))
        toks = [t for t in toks if t in vocab]
        have = set(toks)
        for m in strs("tokenizer.ggml.merges"):
            a, _, b = m.partition(" ")
            if a in have and b in have and a + b not in have:
                merges.append(m)
                toks.append(a + b)
                have.add(a + b)
                if len(merges) >= 300:
                    break
        f = r.fields["tokenizer.chat_template"]
        template = bytes(f.parts[f.data[0]]).decode()
    else:
        have = set(toks)
        for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]:
            merges.append(a + " " + b)
            toks.append(a + b)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return toks, merges, specials, template


def tokenizer_json(toks, merges, specials, pairs=False, pre="bytelevel"):
    n = len(toks)
    vocab = {t: i for i, t in enumerate(toks)}
    added = [{"id": n + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    if pre == "bytelevel":
        pre_tok = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                   "use_regex": True}
    else:
        pre_tok = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t)|\\p{L}+| ?[^\\s\\p{L}\\p{N}]+|\\s+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]}
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": pre_tok,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab,
                  "merges": [m.split(" ") for m in merges] if pairs else merges}},
        ensure_ascii=False, indent=1)


# ---- tiny models ----------------------------------------------------------

# Rows of the tiny models' embedding: small, so the seeds stay a few KiB (the
# model's vocabulary size is the embedding's, not the tokenizer's).
N_VOCAB_W = 32


def tiny_weights(n_vocab, n_embd=16, n_head=2, n_head_kv=1, n_ff=32, n_layer=1, bias=False):
    rng = np.random.default_rng(7)
    hd = n_embd // n_head
    w = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,)}
    for l in range(n_layer):
        p = f"blk.{l}."
        w.update({p + "attn_norm.weight": (n_embd,), p + "ffn_norm.weight": (n_embd,),
                  p + "attn_q.weight": (n_head * hd, n_embd),
                  p + "attn_k.weight": (n_head_kv * hd, n_embd),
                  p + "attn_v.weight": (n_head_kv * hd, n_embd),
                  p + "attn_output.weight": (n_embd, n_head * hd),
                  p + "ffn_gate.weight": (n_ff, n_embd), p + "ffn_up.weight": (n_ff, n_embd),
                  p + "ffn_down.weight": (n_embd, n_ff)})
        if bias:
            w.update({p + "attn_q.bias": (n_head * hd,), p + "attn_k.bias": (n_head_kv * hd,),
                      p + "attn_v.bias": (n_head_kv * hd,)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in w.items()}


def gguf_seeds(out, toks, merges, specials, template, model):
    import tempfile
    tmp = tempfile.mkdtemp(prefix="tsr-seeds-")
    all_toks = toks + specials
    for variant in ["f32", "quant", "qwen2", "tok-only"]:
        arch = "qwen2" if variant == "qwen2" else "llama"
        path = os.path.join(tmp, variant + ".gguf")
        w = gguf.GGUFWriter(path, arch)
        w.add_name("fuzz-" + variant)
        w.add_block_count(1)
        w.add_context_length(64)
        w.add_embedding_length(32 if variant == "quant" else 16)
        w.add_feed_forward_length(32)
        w.add_head_count(2)
        w.add_head_count_kv(1)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm" if variant != "qwen2" else "qwen2")
        w.add_token_list(all_toks)
        w.add_token_types([1] * len(toks) + [3] * len(specials))
        w.add_token_merges(merges)
        w.add_bos_token_id(len(toks))
        w.add_eos_token_id(len(toks) + 2)
        w.add_chat_template(template)
        if variant != "tok-only":
            ws = tiny_weights(N_VOCAB_W, n_embd=32 if variant == "quant" else 16,
                              bias=variant == "qwen2")
            for i, (name, a) in enumerate(ws.items()):
                if variant == "quant" and a.ndim == 2:
                    qt = [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0,
                          gguf.GGMLQuantizationType.Q4_1][i % 3]
                    w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
                elif variant == "qwen2" and a.ndim == 2:
                    w.add_tensor(name, a.astype(np.float16))
                else:
                    w.add_tensor(name, a)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(path, "rb") as f:
            write(out, "gguf", variant + ".gguf", f.read())
        os.remove(path)
    os.rmdir(tmp)
    if model and os.path.exists(model):
        with open(model, "rb") as f:
            head = f.read(1 << 16)
        write(out, "gguf", "model-head-4k.gguf", head[:4096])
        write(out, "gguf", "model-head-64k.gguf", head)


def safetensors_bytes(tensors, meta=None):
    """tensors: name -> numpy array (f32, f16) or (dtype name, bytes, shape)."""
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, a in tensors.items():
        if isinstance(a, tuple):
            dt, raw, shape = a
        else:
            dt = {np.float32: "F32", np.float16: "F16"}[a.dtype.type]
            raw, shape = a.tobytes(), list(a.shape)
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


HF_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
            "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}


def hf_name(g):
    if g in HF_NAMES:
        return HF_NAMES[g]
    _, l, rest = g.split(".", 2)
    mod, kind = rest.rsplit(".", 1)
    return f"model.layers.{l}.{HF_NAMES[mod]}.{kind}"


def hf_config(n_vocab, **kw):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
         "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
         "num_hidden_layers": 1, "vocab_size": n_vocab, "max_position_embeddings": 64,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
         "hidden_act": "silu", "torch_dtype": "float32"}
    c.update(kw)
    return json.dumps(c, indent=1)


def st_and_hf_seeds(out, n_vocab):
    ws = tiny_weights(n_vocab)
    hf = {hf_name(k): v for k, v in ws.items()}
    single = safetensors_bytes(hf, {"format": "pt"})
    write(out, "safetensors", "tiny-model.safetensors", single)
    mixed = {"a.f16": np.arange(6, dtype=np.float16).reshape(2, 3),
             "b.bf16": ("BF16", bytes(range(8)), [4]), "c.i64": ("I64", bytes(16), [2]),
             "d.scalar": ("F32", bytes(4), []), "e.bool": ("BOOL", b"\x01\x00", [2, 1])}
    write(out, "safetensors", "dtypes.safetensors", safetensors_bytes(mixed, {"k": "v"}))
    write(out, "safetensors", "empty.safetensors", safetensors_bytes({}))
    # hf_config
    configs = {
        "llama": hf_config(n_vocab),
        "qwen2": hf_config(n_vocab, model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                           use_sliding_window=False, sliding_window=4096),
        "mistral": hf_config(n_vocab, model_type="mistral", sliding_window=32, head_dim=8),
        "llama3-rope": hf_config(n_vocab, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}, _name_or_path="fuzz/llama3"),
        "linear-rope": hf_config(n_vocab, rope_scaling={"type": "linear", "factor": 2.0},
                                 attention_bias=False, mlp_bias=False),
    }
    for k, v in configs.items():
        write(out, "hf_config", k + ".json", v)
    # hf_dir: index SEP shard1 SEP shard2 SEP config
    names = sorted(hf)
    half = len(names) // 2
    s1 = safetensors_bytes({n: hf[n] for n in names[:half]})
    s2 = safetensors_bytes({n: hf[n].astype(np.float16) for n in names[half:]})
    index = json.dumps({"metadata": {"total_size": 0}, "weight_map": {
        n: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors")
        for i, n in enumerate(names)}}, indent=1).encode()
    write(out, "hf_dir", "sharded", SEP.join([index, s1, s2, configs["llama"].encode()]))
    write(out, "hf_dir", "single", SEP.join([b"", single, b"", configs["llama"].encode()]))


# ---- PEFT adapters (fuzz_peft's model: 2 layers, n_embd 16, 4x4 heads, 2 KV, n_ff 32) ----

def peft_seeds(out):
    rng = np.random.default_rng(3)
    dims = {"q_proj": (16, 16), "k_proj": (16, 8), "v_proj": (16, 8), "o_proj": (16, 16),
            "gate_proj": (16, 32), "up_proj": (16, 32), "down_proj": (32, 16)}
    for name, targets, r, dt in [("qv", ["q_proj", "v_proj"], 2, np.float32),
                                 ("all-f16", list(dims), 1, np.float16)]:
        cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 4,
               "lora_dropout": 0.05, "target_modules": targets, "bias": "none",
               "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
               "modules_to_save": None, "base_model_name_or_path": "fuzz/tiny",
               "inference_mode": True, "init_lora_weights": True}
        t = {}
        for l in range(2):
            for m in targets:
                d_in, d_out = dims[m]
                grp = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
                p = f"base_model.model.model.layers.{l}.{grp}.{m}."
                t[p + "lora_A.weight"] = rng.standard_normal((r, d_in)).astype(dt)
                t[p + "lora_B.weight"] = rng.standard_normal((d_out, r)).astype(dt)
        write(out, "peft", name, json.dumps(cfg, indent=1).encode() + SEP + safetensors_bytes(t))


# ---- protobuf, by hand ----------------------------------------------------

def varint(v):
    v &= (1 << 64) - 1
    b = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        b.append(c | (0x80 if v else 0))
        if not v:
            return bytes(b)


def fld(n, v):
    """One field: int -> varint, float -> fixed32, bytes/str/list-of-bytes -> length-delimited."""
    if isinstance(v, bool) or isinstance(v, int):
        return varint(n << 3) + varint(int(v))
    if isinstance(v, float):
        return varint(n << 3 | 5) + struct.pack("<f", v)
    if isinstance(v, str):
        v = v.encode()
    return varint(n << 3 | 2) + varint(len(v)) + v


def msg(*fields):
    return b"".join(fld(n, v) for n, v in fields)


def packed(n, ints):
    return fld(n, b"".join(varint(i) for i in ints))


def grpc_seeds(out):
    chat = msg((1, msg((1, "system"), (2, "Be brief."))), (1, msg((1, "user"), (2, "Hi there"))))
    sampling = msg((1, 0.7), (2, 40), (3, 0.9), (4, 0.05), (5, 42), (6, 1.1), (9, 16), (10, 1),
                   (11, "\n\n"), (11, "END"), (12, 2), (14, True), (15, 3))
    lora = msg((1, 4), (2, 8.0), (3, True), (4, "q_proj"), (4, "v_proj"), (5, 0.1), (6, 7))
    ex_pc = msg((3, msg((1, "What is 2+2?"), (2, " 4"))))
    ex_tok = msg((1, packed(1, [1, 2, 3, 4])), (5, b"".join(struct.pack("<f", w) for w in [0, 1, 1, 0.5])))
    ex_chat = msg((4, chat + msg((1, msg((1, "assistant"), (2, "Hello!"))))))
    ex_text = msg((2, "<|im_start|>user\nhello<|im_end|>"))
    seeds = {  # method byte (harness: data[0] % 14) -> bodies
        0: [msg((1, "req-1"), (2, "Hello, world"), (6, sampling)),
            msg((3, packed(1, [1, 2, 3])), (5, "my-adapter")), msg((4, chat)),
            msg((4, chat + fld(2, True)))],
        1: [msg((1, "Hello <|im_start|>"), (3, True), (4, True)), msg((2, chat))],
        2: [msg((1, packed(1, [1, 2, 3, 40, 200])), (2, True))],
        3: [b""],
        4: [msg((1, "req-1"))],
        5: [msg((1, "tessera.v1.Tessera"))],
        6: [msg((1, "ad-1"), (2, lora))],
        7: [msg((1, "ad-1"), (2, ex_pc), (2, ex_tok), (2, ex_chat), (2, ex_text))],
        8: [msg((1, ""), (2, ex_pc))],
        9: [msg((1, "ad-1"), (2, msg((1, 1e-3), (2, 0.9), (3, 0.999), (4, 1e-8), (5, 0.01))), (3, 1.0))],
        10: [msg((1, "ad-1"), (2, "/tmp/tessera-fuzz-adapter"), (3, True))],
        11: [msg((1, "ad-2"), (2, "/tmp/tessera-fuzz-adapter"))],
        12: [b""],
        13: [msg((1, "ad-1"))],
    }
    for method, bodies in seeds.items():
        for i, body in enumerate(bodies):
            write(out, "grpc", f"m{method:02d}-{i}", bytes([method]) + body)


# ---- text seeds -----------------------------------------------------------

TEXTS = ["Hello, world!", "  leading spaces and\ttabs\n\nnew lines  ",
         "def f(x):\n    return x ** 2  # square\n", "Numbers 1234567 and 3.14159, 1e-9",
         "Unicode: caf\u00e9 na\u00efve \u00fc\u00df \u4e2d\u6587 \u65e5\u672c\u8a9e "
         "\ud55c\uad6d\uc5b4 \U0001F600\U0001F44D",
         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|><|endoftext",
         "'s 't 're 've 'm 'll 'd", "\x00\x01\x1d\x7f bytes"]


def text_seeds(out, toks, merges, specials, template):
    for i, t in enumerate(TEXTS):
        write(out, "tokenize", f"text-{i}", t)
    tj = tokenizer_json(toks, merges, specials).encode()
    tc = json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
                     "pad_token": {"content": "<|im_end|>"}, "add_bos_token": False,
                     "add_eos_token": False, "chat_template": template}, indent=1).encode()
    write(out, "tokenizer_json", "strings+config", tj + SEP + tc)
    write(out, "tokenizer_json", "pairs-sequence",
          tokenizer_json(toks, merges, specials, pairs=True, pre="sequence").encode())
    for name, tmpl in [("chatml", template), ("llama3", LLAMA3), ("llama31", LLAMA31)]:
        parts = [tmpl, "<|begin_of_text|>", "system", "Be brief.", "user", "Hi there",
                 "assistant", "Hello!"]
        write(out, "chat", name, SEP.join(p.encode() for p in parts))
    records = [
        {"prompt": "What is 2+2?", "completion": " 4"},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
         "extra": 1},
    ]
    write(out, "train_jsonl", "mixed.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    write(out, "train_jsonl", "one.jsonl", json.dumps(records[0]))


def launch_seeds(out):
    d = os.path.join(ROOT, "configs")
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if f.endswith((".yaml", ".yml")):
            with open(os.path.join(d, f), "rb") as fh:
                write(out, "launch_config", f, fh.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    toks, merges, specials, template = small_tokenizer(a.model)
    if gguf:
        gguf_seeds(a.out, toks, merges, specials, template, a.model)
    else:
        print("make_seeds: no gguf module: GGUF seeds skipped", file=sys.stderr)
    st_and_hf_seeds(a.out, N_VOCAB_W)
    peft_seeds(a.out)
    grpc_seeds(a.out)
    text_seeds(a.out, toks, merges, specials, template)
    launch_seeds(a.out)
    n = sum(len(fs) for _, _, fs in os.walk(a.out))
    size = sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(a.out) for f in fs)
    print(f"make_seeds: {n} seeds, {size} bytes, in {a.out}")


if __name__ == "__main__":
    main()
