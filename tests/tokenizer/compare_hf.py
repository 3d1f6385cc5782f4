#!/usr/bin/env python3
"""Compares Tessera's C tokenizer with Hugging Face `tokenizers` on thousands
of generated strings (seeded) plus fixed nasty cases.

For every string, both with special-token parsing on and off, it asserts:
  * identical token ids;
  * C decode(ids) == HF decode(ids) (with and without skipping specials);
  * decode(encode(s)) == s whenever every byte of s has a token in the vocab
    (SmolLM2 lacks a few control/lead bytes; HF drops those too);
and tsr_tok_dump itself checks that the streaming decoder's output equals the
full decode. Strings travel as JSON lines, so NULs and newlines are safe.

Cases (--case):
  gguf           the model's GGUF file (its own pre-tokenizer)
  json-pairs     tokenizer.json written by `tokenizers` (merges as ["a","b"])
  json-strings   the same with merges as "a b" strings
  pre-variants   the same vocab with the gpt2, llama-bpe and qwen2
                 pre-tokenizers, through tokenizer.json AND tokenizer-only GGUFs

Exit status: 0 pass, 1 mismatch, 77 skipped (model or Python packages absent).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
            "<|eot_id|>", "<jupyter_code>"]

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Hello", "World",
         "tokenizer", "SmolLM", "internationalization", "GPU", "CUDA", "x", "I", "a",
         "don't", "I'M", "we'll", "they'VE", "it's", "he'd", "You're", "O'Neil", "rock'n'roll",
         "café", "naïve", "résumé", "Zürich", "façade", "Ærø", "Straße", "ÉCOLE",
         "Καλημέρα", "κόσμε", "Ελληνικά", "Привет", "мир", "Ёлка", "Україна",
         "你好", "世界", "日本語", "のテキスト", "한국어", "中文分词",
         "مرحبا", "שלום", "नमस्ते", "สวัสดี", "ქართული", "Հայերեն",
         "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "❤️", "🙂", "🤖", "👩🏿‍💻", "🧑‍🤝‍🧑",
         "e\u0301", "n\u0303", "Z\u0324\u0354\u0367\u0311\u0313", "ﬁ", "Å", "Å",
         "٣٤٥", "①②③", "Ⅻ", "½", "x²", "१२३", "𝟘𝟙𝟚", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
         "http://example.com/a?b=c&d=e", "user@example.org", "#hashtag", "@mention",
         "$100", "3.14159", "1,000,000", "2024-07-26", "12:34:56", "0x1F", "1e-9", "v2.0.1"]

PUNCT = list(".,;:!?-—–…()[]{}<>\"'`~@#$%^&*_+=|\\/") + ["...", "?!", "''", "\"\"",
                                                        "‘", "’", "“", "”", "«", "»", "¿", "¡"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "\n ", "\t\t",
          " \t ", "\u00a0", "\u2009", "\u3000", "\u2028", "\u0085", "\u200b", "\f", "\v"]

CODE = [
    "def f(x):\n    return x ** 2\n",
    "int main(void) {\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<div class=\"x\">Hello &amp; bye</div>",
    "SELECT * FROM users WHERE id = 42;",
    "if x != None and y >= 10:\n        print(f'{x!r}')",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
    "    \n    \n\n",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "$ ls -la | grep '\\.c$' > out.txt 2>&1",
    "x = [i*i for i in range(10)]  # squares",
]

FIXED = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "\t", "\t\t", "a  b", "a \n b", "  leading",
    "trailing  ", "trailing \n", "'", "''", "'s", "'S", "don''t", "x'sy", " 's", "'ll've",
    "...", "—", "–-", "🙂" * 20, "a" * 1000, " " * 500, "\n" * 300, "1" * 200, "ab\x00cd",
    "\x00", "\x07bell", "\x1b[31mred\x1b[0m", "12345678901234567890", " 1 2 3 ", "1.5e10",
    "<|im_start|>", "<|im_start|><|im_end|>", "<<|im_start|>>", "<|im_start", "im_start|>",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", " <|im_end|> ",
    "<|endoftext|><|endoftext|>", "<|<|im_end|>|>", "text<|im_end|>", "\n<|im_start|>\n",
    "A\u0301\u0302\u0303\u0304", "\ufeffBOM", "\U0010ffff", "\U00040000", "\uffff", "\ud7ff",
    "ǅ", "ǈ", "İstanbul", "ΣΑΣ", "ﬀ", "\u0300leading combining", "a\u200db", "a\u200cb",
    "x\u00a0\u00a0y", "\u3000\u3000全角", "tab\tseparated\tvalues", "CRLF\r\nline\r\n",
    "   \n\n   \n", "a \t\n b", "I'M DON'T WE'LL THEY'RE", "'re're", " ' ", "''s",
    "£€¥₹₿", "∑∫√∞≠≈", "→⇒⟶", "░▒▓█", "🇺🇸🇬🇧🇯🇵", "👨‍👩‍👧", "🏽", "\u200d", "‍👍",
]


def gen_strings(n, seed):
    rng = random.Random(seed)
    out = list(FIXED)

    def rand_cp():
        ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff),
                  (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x206f),
                  (0x2190, 0x23ff), (0x3000, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3),
                  (0xe000, 0xe0ff), (0xff00, 0xffef), (0x1f300, 0x1faff), (0x1d400, 0x1d7ff),
                  (0x20000, 0x2a6df), (0x0, 0x1f)]
        lo, hi = rng.choice(ranges)
        return chr(rng.randint(lo, hi))

    def piece():
        k = rng.random()
        if k < 0.35:
            return rng.choice(WORDS)
        if k < 0.5:
            return rng.choice(PUNCT)
        if k < 0.65:
            return rng.choice(SPACES)
        if k < 0.72:
            return str(rng.randint(0, 10 ** rng.randint(1, 12)))
        if k < 0.78:
            return rng.choice(SPECIALS)
        if k < 0.83:
            return rng.choice(CODE)
        if k < 0.93:
            return "".join(rand_cp() for _ in range(rng.randint(1, 6)))
        w = rng.choice(WORDS)
        return rng.choice([w.upper(), w.lower(), w.capitalize(), " " + w, w + " "])

    while len(out) < n:
        parts = [piece() for _ in range(rng.randint(1, 14))]
        sep = rng.choice(["", " ", " ", "", "\n", "\t"])
        s = sep.join(parts)
        if rng.random() < 0.1:
            s = s + rng.choice(SPACES)
        if rng.random() < 0.1:
            s = rng.choice(SPACES) + s
        out.append(s)
    return out


def run_dump(dump, args, strings):
    inp = "".join(json.dumps({"text": s, "special": sp}) + "\n"
                  for sp in (True, False) for s in strings)
    p = subprocess.run([dump] + args, input=inp.encode(), capture_output=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace"))
        raise SystemExit(f"FAIL: tsr_tok_dump {' '.join(args)} exited {p.returncode}")
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 2 * len(strings), (len(lines), len(strings))
    res = [json.loads(x) for x in lines]
    return res[:len(strings)], res[len(strings):]


def compare(label, hf, dump, args, strings, droppable):
    with_sp, without_sp = run_dump(dump, args, strings)
    bad = 0
    for special, results in ((True, with_sp), (False, without_sp)):
        hf.encode_special_tokens = not special
        encs = hf.encode_batch(strings, add_special_tokens=False)
        for s, enc, r in zip(strings, encs, results):
            problems = []
            if "error" in r:
                problems.append(f"C error: {r['error']}")
            else:
                if r["ids"] != enc.ids:
                    problems.append(f"ids differ:\n      C : {r['ids']}\n      HF: {enc.ids}")
                want = hf.decode(r["ids"], skip_special_tokens=False)
                if r["decoded"] != want:
                    problems.append(f"decode differs: C {r['decoded']!r} HF {want!r}")
                want = hf.decode(r["ids"], skip_special_tokens=True)
                if r["decoded_skip"] != want:
                    problems.append(f"skip-special decode differs: C {r['decoded_skip']!r} "
                                    f"HF {want!r}")
                if not any(ch in droppable for ch in s.encode("utf-8")) and r["decoded"] != s:
                    problems.append(f"round trip: got {r['decoded']!r}")
            if problems:
                bad += 1
                if bad <= 15:
                    print(f"MISMATCH [{label}, special={special}] {s!r}")
                    for p in problems:
                        print("    " + p)
    hf.encode_special_tokens = False
    n = 2 * len(strings)
    print(f"{label}: {n - bad}/{n} encodings identical to HF "
          f"({len(strings)} strings x special on/off)")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="path to tsr_tok_dump")
    ap.add_argument("--model", default=os.path.expanduser(
        "~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--case", required=True,
                    choices=["gguf", "json-pairs", "json-strings", "pre-variants"])
    ap.add_argument("-n", type=int, default=2500, help="number of strings (>= fixed cases)")
    ap.add_argument("--seed", type=int, default=20240726)
    a = ap.parse_args()

    if not os.path.isfile(a.model):
        print(f"SKIP: model not found at {a.model} (run scripts/fetch-model.sh)")
        return 77
    try:
        import tok_ref  # noqa: needs gguf + tokenizers
    except ImportError as e:
        print(f"SKIP: Python packages missing ({e}); run scripts/setup.sh and use .venv")
        return 77

    info = tok_ref.read_gguf_vocab(a.model)
    byte_tokens = set(info["tokens"])
    # Bytes with no single-byte token: HF and Tessera both drop them.
    bs = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174]
    cmap, k = {}, 0
    for b in range(256):
        cmap[b] = chr(b) if b in bs else chr(256 + k)
        k += b not in bs
    droppable = {b for b in range(256) if cmap[b] not in byte_tokens}

    strings = gen_strings(a.n, a.seed)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="tsr_tok_") as tmp:
        if a.case == "gguf":
            hf = tok_ref.build_hf(info)
            bad += compare(f"gguf[{info['pre']}]", hf, a.dump, ["--gguf", a.model], strings,
                           droppable)
        elif a.case in ("json-pairs", "json-strings"):
            fmt = a.case.split("-")[1]
            hf = tok_ref.build_hf(info)
            tj, tc = os.path.join(tmp, "tokenizer.json"), os.path.join(tmp, "config.json")
            tok_ref.write_json_files(hf, info, tj, tc, fmt)
            # The peer is the file itself, as HF loads it.
            from tokenizers import Tokenizer
            peer = Tokenizer.from_file(tj)
            bad += compare(f"tokenizer.json[{fmt}]", peer, a.dump,
                           ["--json", tj, "--config", tc], strings, droppable)
        else:
            for pre in ("gpt2", "llama-bpe", "qwen2"):
                hf = tok_ref.build_hf(info, pre)
                tj, tc = os.path.join(tmp, pre + ".json"), os.path.join(tmp, pre + ".cfg.json")
                tok_ref.write_json_files(hf, info, tj, tc, "pairs")
                bad += compare(f"tokenizer.json[{pre}]", hf, a.dump,
                               ["--json", tj, "--config", tc], strings, droppable)
                g = os.path.join(tmp, pre + ".gguf")
                tok_ref.write_tokenizer_gguf(info, g, pre)
                bad += compare(f"gguf[{pre}]", hf, a.dump, ["--gguf", g], strings, droppable)
    if bad:
        print(f"FAIL: {bad} mismatching encodings")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
