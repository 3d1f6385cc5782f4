#!/usr/bin/env python3
"""LoRA training on the CUDA backend against the CPU backend: `tessera train`
on the default model, the same data, seed and hyper-parameters, 3 steps.

  device flags                                          per-step loss vs the CPU
  --device cuda --act-dtype f32 --weight-dtype f32      1e-4 relative (reference precision)
  --device cuda --act-dtype f32                         1e-2 relative on step 1
  --device cuda (bf16)                                  1e-2 relative on step 1

Step 1's loss depends on the base model only (B starts at zero); later steps
also on the optimizer's path, which bf16 gradients move, so only the
reference-precision mode is held to every step. Also prints each run's
training tokens/s (the GPU benchmark's LoRA line).

Skips (77) without a CUDA device or the model. Standard library only (the GPU
machine's python3 has no test venv).

usage: test_cuda_lora.py TESSERA
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "common"))
from check import Checks, fail, skip  # noqa: E402
from models import default_model_path  # noqa: E402

MODEL = default_model_path()
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
STEP = re.compile(r"^step (\d+)/\d+\s+loss (\S+)\s+grad_norm (\S+)\s+tokens (\d+)\s+tok/s (\S+)",
                  re.M)
QA = [("What is the capital of France?", "Paris."), ("What is 2 + 2?", "4."),
      ("Name a primary colour.", "Red."), ("Who wrote Hamlet?", "William Shakespeare.")]


def train(tessera, data, out, flags):
    cmd = [tessera, "train", "--model", MODEL, "--data", data, "--out", out, "--steps", "3",
           "--batch-size", "8", "--lr", "1e-3", "--rank", "8", "--seed", "1",
           "--targets", "q,k,v,o,gate,up,down", *flags]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300,
                       stdin=subprocess.DEVNULL)
    return r, [(int(s), float(l), float(t)) for s, l, _, _, t in STEP.findall(r.stdout)]


def main():
    tessera = sys.argv[1]
    if not os.path.exists(MODEL):
        skip(f"no model at {MODEL}", prefix="skipped: ")
    tmp = tempfile.mkdtemp(prefix="tessera-cuda-lora-")
    data = os.path.join(tmp, "d.jsonl")
    with open(data, "w") as f:
        for q, a in QA * 4:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
    # the CUDA run first: without a GPU it fails at once and the test skips
    runs = {"cuda ref": ["--device", "cuda", "--act-dtype", "f32", "--weight-dtype", "f32"],
            "cpu": ["--device", "cpu"],
            "cuda f32": ["--device", "cuda", "--act-dtype", "f32"],
            "cuda bf16": ["--device", "cuda"]}
    got, checks = {}, Checks()
    for name, flags in runs.items():
        r, steps = train(tessera, data, os.path.join(tmp, name.replace(" ", "-")), flags)
        if r.returncode != 0 and name == "cuda ref" and re.search(
                r"no (usable )?cuda|no CUDA|has no CUDA backend", r.stderr, re.I):
            skip(f"no CUDA device ({r.stderr.strip().splitlines()[-1]})", prefix="skipped: ")
        if r.returncode != 0 or len(steps) != 3:
            fail(f"{name}: exit {r.returncode}, {len(steps)} step lines\n{r.stderr[-2000:]}")
        got[name] = steps
        print(f"{name:10s} " + "  ".join(f"step {s}: loss {l:.5f}" for s, l, _ in steps) +
              f"  ({steps[-1][2]:.0f} tok/s)")
    cpu = got["cpu"]
    for name, steps in got.items():
        if name == "cpu":
            continue
        for (s, l, _), (_, lc, _) in zip(steps, cpu):
            rel = abs(l - lc) / abs(lc)
            limit = 1e-4 if name == "cuda ref" else 1e-2
            if name != "cuda ref" and s > 1:
                continue
            checks.check(rel <= limit, f"[{name}] step {s}: {l:.5f} vs cpu {lc:.5f}: relative "
                         f"{rel:.1e} (limit {limit:.0e})")
    sys.exit(checks.finish("test_cuda_lora"))


if __name__ == "__main__":
    main()
