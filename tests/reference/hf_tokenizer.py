#!/usr/bin/env python3
"""Builds a Hugging Face `tokenizers` tokenizer from the vocabulary stored in a GGUF file.

Test-only helper: it gives an independent tokenizer (the Rust `tokenizers` library) to
check Tessera's own C tokenizer against, and it is the tokenizer that gguf_to_hf.py
saves as tokenizer.json.

What it reads from the GGUF file:
  tokenizer.ggml.model       must be "gpt2" (byte-level BPE)
  tokenizer.ggml.pre         pre-tokenizer flavour (see _pre_tokenizer below)
  tokenizer.ggml.tokens      vocabulary, id = index
  tokenizer.ggml.merges      merge rules "left right", rank = index
  tokenizer.ggml.token_type  1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
  tokenizer.ggml.{bos,eos,unknown,padding}_token_id

Tokens of type CONTROL (3) and USER_DEFINED (4) become special added tokens: they are
matched verbatim in the input text before any pre-tokenization and are skipped when
decoding with skip_special_tokens=True.

Usage:
  python hf_tokenizer.py MODEL.gguf "text to encode"          # prints ids
  python hf_tokenizer.py MODEL.gguf --decode 1,2,3             # prints text
"""

import argparse
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# Split patterns (facts about the upstream tokenizers, matching llama.cpp's pre-tokenizer
# table). The GPT-2 pattern is also what ByteLevel(use_regex=True) applies by itself.
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GGUF `tokenizer.ggml.pre` values whose upstream tokenizer is "split every digit, then
# the GPT-2 regex" (SmolLM / StarCoder family).
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _pre_tokenizer(pre):
    """The pre-tokenizer for a GGUF `tokenizer.ggml.pre` value."""
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    if pre in ("gpt2", "default", None):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in ("qwen2", "llama-bpe", "llama3"):
        pattern = _QWEN2_PATTERN if pre == "qwen2" else _LLAMA3_PATTERN
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    raise NotImplementedError(f"hf_tokenizer: unsupported tokenizer.ggml.pre {pre!r}")


def vocab_info(gguf_path):
    """Raw vocabulary facts from a GGUF file, as plain Python values."""
    r = gguf.GGUFReader(gguf_path)
    model = _field(r, "tokenizer.ggml.model")
    if model != "gpt2":
        raise NotImplementedError(f"hf_tokenizer: only byte-level BPE (gpt2) vocabularies, got {model!r}")
    tokens = list(_field(r, "tokenizer.ggml.tokens"))
    types = list(_field(r, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = list(_field(r, "tokenizer.ggml.merges", []))
    return {
        "pre": _field(r, "tokenizer.ggml.pre"),
        "tokens": tokens,
        "token_type": types,
        "merges": merges,
        "bos_token_id": _field(r, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(r, "tokenizer.ggml.eos_token_id"),
        "unknown_token_id": _field(r, "tokenizer.ggml.unknown_token_id"),
        "padding_token_id": _field(r, "tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_field(r, "tokenizer.ggml.add_bos_token", False)),
        "chat_template": _field(r, "tokenizer.chat_template"),
    }


def build_tokenizer(gguf_path, info=None):
    """A `tokenizers.Tokenizer` equivalent to the GGUF file's vocabulary."""
    info = info or vocab_info(gguf_path)
    tokens = info["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("hf_tokenizer: duplicate strings in tokenizer.ggml.tokens")

    # Byte-level tokens never contain a raw space (it is mapped to 'Ġ'), so the first
    # space separates the two halves of a merge rule.
    merges = []
    for m in info["merges"]:
        left, sep, right = m.partition(" ")
        if not sep:
            raise ValueError(f"hf_tokenizer: malformed merge {m!r}")
        merges.append((left, right))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.normalizer = None
    tok.pre_tokenizer = _pre_tokenizer(info["pre"])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    # Special tokens keep their vocabulary ids (they are already in `vocab`).
    special = [
        AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        for t, ty in zip(tokens, info["token_type"])
        if ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
    ]
    tok.add_special_tokens(special)
    return tok


def encode(tok, text):
    """Token ids for `text`; special tokens written in the text are recognised, no BOS added."""
    return tok.encode(text, add_special_tokens=False).ids


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("text", nargs="?", help="text to encode")
    ap.add_argument("--decode", help="comma-separated ids to decode")
    a = ap.parse_args(argv)
    tok = build_tokenizer(a.gguf)
    if a.decode is not None:
        ids = [int(x) for x in a.decode.split(",") if x.strip()]
        print(tok.decode(ids, skip_special_tokens=False))
    elif a.text is not None:
        print(",".join(str(i) for i in encode(tok, a.text)))
    else:
        ap.error("give TEXT or --decode IDS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
