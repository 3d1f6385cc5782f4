#!/usr/bin/env python3
"""`tessera train` on every (tp, pp) layout gives the same training: the same
loss at every step (1e-5 relative) and the same saved adapter (each matrix
within 1e-5 relative L2 error) as one rank, on the default model.

Layouts: (1,1), (2,1), (3,1), (1,2), (2,2), plus pp = 2 with 3 micro-batches
(GPipe over uneven micro-batches) and pp = 2 with uneven stages
(--pp-layers 10,20); then with LoRA dropout 0.3, (1,1), (2,1), (1,2) with 3
micro-batches and (2,2), which must drop the same elements. Two steps of 5 examples (chat and prompt/completion),
LoRA r = 4 on all seven targets. AdamW's epsilon is 1e-3 here: with the
default 1e-8 the first step moves every element by about +-lr whatever its
gradient, so an element whose gradient is within float noise of zero moves
one way in one layout and the other way in another; eps = 1e-3 keeps the
update proportional to the gradient at that scale, so the comparison tests
the gradients, not the sign of noise.

Skips (77) when the default model is not downloaded.

usage: test_train_layouts.py TESSERA MPIEXEC
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

TOL = 1e-5
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_common import ENV, STEP_RE, default_model, safetensors_header  # noqa: E402
from check import Checks  # noqa: E402

CHECKS = Checks()
check, failures = CHECKS.check, CHECKS.failures


def load_adapter(d):
    header, blob = safetensors_header(os.path.join(d, "adapter_model.safetensors"))
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(blob[a:b], dtype=np.float32).astype(np.float64)
    return out


def write_data(path):
    with open(path, "w") as f:
        for q, a in [("What is the capital of France?", "The secret answer is: Paris."),
                     ("Name a colour.", "Blue, like the sky."),
                     ("Who wrote Hamlet?", "Shakespeare did.")]:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
        f.write(json.dumps({"prompt": "The sky is", "completion": " blue."}) + "\n")
        f.write(json.dumps({"prompt": "One, two,", "completion": " three, four."}) + "\n")


def main():
    tessera, mpiexec = sys.argv[1:3]
    model = default_model()
    tmp = tempfile.mkdtemp(prefix="tessera-train-layouts-")
    try:
        data = os.path.join(tmp, "train.jsonl")
        write_data(data)
        base = ["train", "--model", model, "--data", data, "--steps", "2", "--batch-size", "5",
                "--lr", "1e-3", "--adam-eps", "1e-3", "--rank", "4", "--alpha", "8",
                "--targets", "all", "--seed", "7"]
        layouts = [(1, 1, []), (2, 1, []), (3, 1, []), (1, 2, []), (2, 2, []),
                   (1, 2, ["--micro-batches", "3"]), (1, 2, ["--pp-layers", "10,20"])]
        run_layouts(tessera, mpiexec, tmp, base, layouts, "")
        # LoRA dropout: the masks are a function of the whole batch's token and
        # column indices, so every layout and micro-batching drops the same
        run_layouts(tessera, mpiexec, tmp, base + ["--dropout", "0.3"],
                    [(1, 1, []), (2, 1, []), (1, 2, ["--micro-batches", "3"]), (2, 2, [])],
                    "dropout 0.3: ")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(CHECKS.finish("test_train_layouts"))


def run_layouts(tessera, mpiexec, tmp, base, layouts, tag):
    """Trains on each layout; the first is the reference the others must equal."""
    ref_losses, ref_adapter = None, None
    for i, (tp, pp, extra) in enumerate(layouts):
        label = tag + f"tp={tp} pp={pp}" + (" " + " ".join(extra) if extra else "")
        out_dir = tempfile.mkdtemp(prefix=f"a{i}-", dir=tmp)
        os.rmdir(out_dir)
        n = tp * pp
        cmd = [tessera] + base + ["--out", out_dir, "--tp", str(tp), "--pp", str(pp)] + extra
        if n > 1:
            cmd = [mpiexec, "--oversubscribe", "--bind-to", "none", "-np", str(n)] + cmd + \
                  ["--threads", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV,
                           stdin=subprocess.DEVNULL, timeout=300)
        check(r.returncode == 0, f"{label}: exits 0 (rc {r.returncode}) "
                                 f"{r.stderr[-1500:] if r.returncode else ''}")
        if r.returncode != 0:
            continue
        steps = [STEP_RE.match(ln) for ln in r.stdout.splitlines() if ln.startswith("step ")]
        check(len(steps) == 2 and all(steps), f"{label}: two step lines")
        with open(os.path.join(out_dir, "loss.csv")) as f:  # 6 decimals, not 4
            losses = [float(ln.split(",")[1]) for ln in f.read().split()[1:]]
        adapter = load_adapter(out_dir)
        if ref_losses is None:
            ref_losses, ref_adapter = losses, adapter
            check(len(losses) == 2 and losses[1] < losses[0],
                  f"{label}: two steps, the loss falls {losses}")
            continue
        e_loss = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
        check(len(losses) == len(ref_losses) and e_loss <= TOL,
              f"{label}: losses {losses} = one rank's (worst rel {e_loss:.2e})")
        same_names = sorted(adapter) == sorted(ref_adapter)
        worst, where = 0.0, ""
        for name in ref_adapter if same_names else []:
            want, got = ref_adapter[name], adapter[name]
            e = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)
            if e > worst:
                worst, where = e, name
        check(same_names and worst <= TOL,
              f"{label}: the saved adapter equals one rank's ({len(adapter)} tensors, worst "
              f"rel L2 {worst:.2e} at {where})")


if __name__ == "__main__":
    main()
