#!/usr/bin/env python3
"""`tessera merge-lora` (docs/lora.md, "Merging an adapter").

  (a) a random adapter (r = 4; q, v, o, down) on the default GGUF model merged
      into an f32 Hugging Face directory: its logits (dump_logits) equal the
      base's with --adapter (rel err <= 1e-4), greedy `tessera generate` text
      is identical on the reference path (--weight-dtype f32 --kv-dtype f32:
      by default the GGUF keeps its blocks and rounds activations to 8 bits,
      the f32 merge does not), and the files are what Hugging Face expects;
  (b) a B = 0 adapter merges to the base's logits;
  (c) --dtype bf16 writes BF16 tensors that load and stay close;
  (d) refusals: an adapter of the wrong shape, a missing adapter, a
      non-empty --out: nonzero exit, nothing written.

Skips (77) when the default model is not downloaded.

usage: test_merge.py TESSERA DUMP_LOGITS
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_adapter_generate import (  # noqa: E402
    DEFAULT_MODEL, F32, SKIP, check, dump, failures, generate, rel_err, run, write_adapter)


class Cfg:
    """The default model's shape (SmolLM2-135M)."""
    n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff = 576, 30, 9, 3, 64, 1536


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def merge(tessera, model, adapter, out, *extra):
    return run([tessera, "merge-lora", "--model", model, "--adapter", adapter, "--out", out,
                *extra])


def main():
    tessera, dump_logits = sys.argv[1:3]
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    model = os.path.join(root, DEFAULT_MODEL)
    if not os.path.exists(model):
        print(f"skip: {model} is not downloaded")
        sys.exit(SKIP)
    cfg = Cfg()
    tmp = tempfile.mkdtemp(prefix="tessera-merge-")
    try:
        ids = [1, 504, 3458, 282, 4649, 314, 1345, 30]
        chat = "What is the capital of France?"

        # ---- (a) a random adapter ----
        ad = os.path.join(tmp, "ad")
        write_adapter(ad, cfg, 4, 8, ["q", "v", "o", "down"], 7, 0.05)
        out = os.path.join(tmp, "merged")
        rc, _, err = merge(tessera, model, ad, out)
        check(rc == 0, f"merge-lora exits 0 (rc {rc}) {err.strip()[-300:]}")
        files = sorted(os.listdir(out)) if os.path.isdir(out) else []
        check(files == ["config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json"], f"output files {files}")
        check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "no temporary directory left")
        conf = json.load(open(os.path.join(out, "config.json")))
        check(conf.get("architectures") == ["LlamaForCausalLM"] and
              conf.get("num_hidden_layers") == 30 and conf.get("torch_dtype") == "float32" and
              conf.get("tie_word_embeddings") is True, "config.json")
        hdr = st_header(os.path.join(out, "model.safetensors"))
        names = {k for k in hdr if k != "__metadata__"}
        check(len(names) == 2 + 30 * 9 and "model.embed_tokens.weight" in names and
              "model.layers.29.mlp.down_proj.weight" in names and "lm_head.weight" not in names,
              f"tensor names ({len(names)})")
        check(all(v["dtype"] == "F32" for k, v in hdr.items() if k != "__metadata__"), "F32")
        with_ad = dump(dump_logits, model, ids, adapter=ad)
        base = dump(dump_logits, model, ids)
        merged = dump(dump_logits, out, ids)
        e = rel_err(merged, with_ad.astype(np.float64))
        check(e <= 1e-4, f"merged logits == base + adapter (rel err {e:.2e})")
        check(rel_err(base, with_ad.astype(np.float64)) > 1e-3, "the adapter changes the logits")
        rc1, t1, e1 = generate(tessera, None, model, chat, adapter=ad, extra=F32)
        rc2, t2, e2 = generate(tessera, None, out, chat, extra=F32)
        check(rc1 == 0 and rc2 == 0 and t1 == t2 and t1.strip(),
              f"greedy text identical: {t1!r} vs {t2!r} {e2.strip()[-200:]}")

        # ---- (b) B = 0 ----
        zero = os.path.join(tmp, "zero")
        write_adapter(zero, cfg, 4, 8, ["q", "v", "o", "down"], 1, 0)
        outz = os.path.join(tmp, "merged-zero")
        rc, _, err = merge(tessera, model, zero, outz)
        check(rc == 0, f"B = 0 merges {err.strip()[-200:]}")
        if rc == 0:
            ez = rel_err(dump(dump_logits, outz, ids), base.astype(np.float64))
            check(ez <= 1e-5, f"B = 0: the base's logits (rel err {ez:.2e})")

        # ---- (c) bf16, and an HF-directory base ----
        outb = os.path.join(tmp, "merged-bf16")
        rc, _, err = merge(tessera, out, zero, outb, "--dtype", "bf16")
        check(rc == 0, f"--dtype bf16 from an HF directory {err.strip()[-200:]}")
        if rc == 0:
            hb = st_header(os.path.join(outb, "model.safetensors"))
            check(all(v["dtype"] == "BF16" for k, v in hb.items() if k != "__metadata__"),
                  "BF16 tensors")
            check(json.load(open(os.path.join(outb, "config.json")))["torch_dtype"] ==
                  "bfloat16", "torch_dtype bfloat16")
            check(sorted(os.listdir(outb)) == files, "tokenizer files copied")
            eb = rel_err(dump(dump_logits, outb, ids), with_ad.astype(np.float64))
            check(eb <= 0.1, f"bf16 logits close (rel err {eb:.2e})")

        # ---- (d) refusals ----
        bad = os.path.join(tmp, "bad")
        write_adapter(bad, cfg, 4, 8, ["q"], 2, 0.05, n_layer=31)
        outx = os.path.join(tmp, "never")
        rc, _, err = merge(tessera, model, bad, outx)
        check(rc not in (0, None) and "adapter" in err and not os.path.exists(outx),
              f"an adapter for another shape is refused: {err.strip()[-200:]}")
        rc, _, err = merge(tessera, model, os.path.join(tmp, "nope"), outx)
        check(rc not in (0, None) and not os.path.exists(outx),
              f"a missing adapter is refused: {err.strip()[-200:]}")
        rc, _, err = merge(tessera, model, ad, out)
        check(rc == 2 and "not empty" in err, f"a non-empty --out is refused: {err.strip()}")
        rc, _, err = run([tessera, "merge-lora", "--model", model, "--adapter", ad])
        check(rc == 2, "--out is required")
        check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "no temporary directory left")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
