#!/usr/bin/env python3
"""bench/compare_perplexity.py - perplexity of Tessera's paths next to llama.cpp's.

For each GGUF file: `tessera perplexity` with the weights in their blocks (the default,
8-bit activations) and with --weight-dtype f32 (the reference path), and llama.cpp's
perplexity computed the way llama-perplexity does, through llama-cpp-python: the text
tokenized by llama.cpp, cut into chunks of --ctx tokens (BOS first where the model adds
one), each chunk evaluated from an empty cache, the second half of each chunk scored.
Prints one row per file and the ratios the issue's goals are stated in.

  .venv-bench/bin/python bench/compare_perplexity.py --text FILE [--ctx 512]
      [--threads 2] MODEL.gguf [MODEL.gguf ...]

What it is not: a test (tests/model checks tessera's perplexity against the NumPy
reference); llama.cpp is a benchmark-only dependency (scripts/setup-bench.sh).
"""
import argparse
import math
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PPL_RE = re.compile(r"Final estimate: PPL = (\S+)")


def tessera_ppl(tessera, model, text, ctx, threads, weights):
    r = subprocess.run([tessera, "perplexity", "--model", model, "--file", text, "--ctx", str(ctx),
                        "--threads", str(threads), "--weight-dtype", weights],
                       capture_output=True, text=True)
    m = PPL_RE.search(r.stdout + r.stderr)
    if r.returncode != 0 or not m:
        sys.exit(f"tessera perplexity failed ({r.returncode}): {r.stderr[-500:]}")
    return float(m.group(1))


def llamacpp_ppl(model, text, ctx, threads):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx,
                          n_threads=threads, logits_all=True, verbose=False)
    data = open(text, "rb").read()
    with_bos = llm.tokenize(b"x", add_bos=True)
    add_bos = len(with_bos) > len(llm.tokenize(b"x", add_bos=False))
    toks = llm.tokenize(data, add_bos=add_bos)
    nll, count = 0.0, 0
    for c in range(len(toks) // ctx):
        chunk = toks[c * ctx:(c + 1) * ctx]
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:ctx], dtype=np.float64)
        for j in range(ctx // 2, ctx - 1):
            row = logits[j]
            mx = row.max()
            nll += -(row[chunk[j + 1]] - mx - math.log(np.exp(row - mx).sum()))
            count += 1
    return math.exp(nll / count)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--text", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build", "runtime", "tessera"))
    a = ap.parse_args()
    print(f"| model | Tessera blocks | Tessera f32 | llama.cpp | blocks / f32 | blocks / llama.cpp |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in a.models:
        q = tessera_ppl(a.tessera, m, a.text, a.ctx, a.threads, "file")
        f = tessera_ppl(a.tessera, m, a.text, a.ctx, a.threads, "f32")
        l = llamacpp_ppl(m, a.text, a.ctx, a.threads)
        print(f"| {os.path.basename(m)} | {q:.4f} | {f:.4f} | {l:.4f} | {q / f:.4f} | {q / l:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
