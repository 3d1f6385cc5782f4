#!/usr/bin/env python3
"""Reference tokenizers for tests/tokenizer: builds Hugging Face `tokenizers`
byte-level BPE tokenizers from a GGUF vocabulary, and writes the files the C
tokenizer loads (tokenizer.json in both merges encodings, tokenizer_config.json,
tokenizer-only GGUF files with another `tokenizer.ggml.pre`).

Test-only. CONTROL tokens (type 3) become special added tokens; USER_DEFINED
tokens (type 4) become non-special added tokens (always matched in text, kept
when decoding with skip_special_tokens), which is what the C tokenizer does.
"""

import json

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

CONTROL, USER_DEFINED = 3, 4

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                r"|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Pre-tokenizer flavours, named as GGUF's tokenizer.ggml.pre.
PRE_FLAVOURS = ("smollm", "gpt2", "llama-bpe", "qwen2")


def _field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def read_gguf_vocab(path):
    r = gguf.GGUFReader(path)
    tokens = list(_field(r, "tokenizer.ggml.tokens"))
    return {
        "model": _field(r, "tokenizer.ggml.model"),
        "pre": _field(r, "tokenizer.ggml.pre", "default"),
        "tokens": tokens,
        "types": [int(x) for x in _field(r, "tokenizer.ggml.token_type", [1] * len(tokens))],
        "merges": list(_field(r, "tokenizer.ggml.merges", [])),
        "bos": _field(r, "tokenizer.ggml.bos_token_id"),
        "eos": _field(r, "tokenizer.ggml.eos_token_id"),
        "pad": _field(r, "tokenizer.ggml.padding_token_id"),
        "add_bos": bool(_field(r, "tokenizer.ggml.add_bos_token", False)),
        "chat_template": _field(r, "tokenizer.chat_template"),
    }


def pre_tokenizer_for(pre):
    if pre in ("smollm", "starcoder"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]), False
    if pre in ("gpt2", "default"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False
    if pre in ("llama-bpe", "qwen2"):
        pat = LLAMA3_PATTERN if pre == "llama-bpe" else QWEN2_PATTERN
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]), pre == "llama-bpe"
    raise ValueError(f"unknown pre-tokenizer flavour {pre!r}")


def build_hf(info, pre=None):
    """A tokenizers.Tokenizer for the vocab in `info` with flavour `pre`."""
    pre = pre or info["pre"]
    tokens = info["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for m in info["merges"]:
        a, sep, b = m.partition(" ")
        assert sep, m
        merges.append((a, b))
    pt, ignore_merges = pre_tokenizer_for(pre)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pt
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, info["types"]) if ty == CONTROL]
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, info["types"]) if ty == USER_DEFINED]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    return tok


def write_json_files(tok, info, json_path, config_path, merges_format):
    """tokenizer.json ("pairs": ["a","b"]; "strings": "a b") + config."""
    tok.save(json_path)
    with open(json_path, encoding="utf-8") as f:
        j = json.load(f)
    merges = j["model"]["merges"]
    if merges_format == "strings":
        j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    else:
        j["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    t = info["tokens"]
    cfg = {
        "bos_token": t[info["bos"]] if info["bos"] is not None else None,
        "eos_token": t[info["eos"]] if info["eos"] is not None else None,
        "pad_token": t[info["pad"]] if info["pad"] is not None else None,
        "add_bos_token": info["add_bos"],
        "chat_template": info["chat_template"],
    }
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False)


def write_tokenizer_gguf(info, path, pre):
    """A GGUF file holding only the tokenizer, with tokenizer.ggml.pre = pre."""
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(info["tokens"])
    w.add_token_types(info["types"])
    w.add_token_merges(info["merges"])
    if info["bos"] is not None:
        w.add_bos_token_id(int(info["bos"]))
    if info["eos"] is not None:
        w.add_eos_token_id(int(info["eos"]))
    w.add_add_bos_token(info["add_bos"])
    if info["chat_template"]:
        w.add_chat_template(info["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
