#!/usr/bin/env python3
"""`tessera train` end to end on the default model (docs/lora.md, "Training
from the command line"):

  - `tessera train --help` exits 0;
  - 3 steps on a tiny JSONL file (4 chat conversations, 2 prompt/completion
    records, a blank line): exit 0, three step lines with finite losses, a
    PEFT directory in --out (adapter_config.json with r = 4 and q/v targets,
    adapter_model.safetensors with PEFT's tensor names and shapes for every
    layer, finite values) and loss.csv;
  - the same under mpirun -np 2 --tp 2: the same step-1 loss (1e-4 relative);
  - refusals: a bad data line (the message names file:line), --pp 2 on one
    rank, a missing data file, an example longer than --ctx.

Skips (77) when the default model is not downloaded.

usage: test_train_cli.py TESSERA MPIEXEC
"""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_common import ENV, STEP_RE, default_model, safetensors_header  # noqa: E402
from check import Checks  # noqa: E402

CHECKS = Checks()
check, failures = CHECKS.check, CHECKS.failures


def run(cmd, timeout=120):
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def read_loss_csv(path):
    with open(path) as f:
        lines = f.read().strip().splitlines()
    assert lines[0] == "step,loss,grad_norm,tokens", lines[0]
    return [tuple(float(x) for x in ln.split(",")) for ln in lines[1:]]


def write_data(path):
    with open(path, "w") as f:
        for q, a in [("What is the capital of France?", "Paris."),
                     ("What is 2 + 2?", "4."),
                     ("Name a primary colour.", "Red."),
                     ("Who wrote Hamlet?", "Shakespeare.")]:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
        f.write("\n")
        f.write(json.dumps({"prompt": "The sky is", "completion": " blue."}) + "\n")
        f.write(json.dumps({"prompt": "One, two,", "completion": " three."}) + "\n")


def main():
    tessera, mpiexec = sys.argv[1:3]
    model = default_model()
    tmp = tempfile.mkdtemp(prefix="tessera-train-cli-")
    try:
        data = os.path.join(tmp, "train.jsonl")
        write_data(data)
        base = ["train", "--model", model, "--data", data, "--steps", "3", "--batch-size", "2",
                "--lr", "1e-3", "--rank", "4"]

        rc, out, err = run([tessera, "train", "--help"])
        check(rc == 0 and "--data" in out and "--out" in out, f"train --help exits 0 (rc {rc})")

        # ---- one rank ----
        out1 = os.path.join(tmp, "adapter1")
        rc, out, err = run([tessera] + base + ["--out", out1])
        check(rc == 0, f"tp=1 training exits 0 (rc {rc}) {err[-2000:] if rc else ''}")
        steps = [STEP_RE.match(ln) for ln in out.splitlines() if ln.startswith("step ")]
        check(len(steps) == 3 and all(steps), f"three step lines: {out!r}")
        losses = [float(m.group(3)) for m in steps if m]
        check(len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses),
              f"finite losses {losses}")
        check([int(m.group(1)) for m in steps if m] == [1, 2, 3]
              and all(m.group(2) == "3" for m in steps if m), "steps numbered 1/3 .. 3/3")
        files = sorted(os.listdir(out1)) if os.path.isdir(out1) else []
        check(files == ["adapter_config.json", "adapter_model.safetensors", "loss.csv"],
              f"--out holds the adapter and loss.csv: {files}")
        if files:
            cfg = json.load(open(os.path.join(out1, "adapter_config.json")))
            check(cfg.get("r") == 4 and cfg.get("lora_alpha") == 16
                  and sorted(cfg.get("target_modules", [])) == ["q_proj", "v_proj"]
                  and cfg.get("peft_type") == "LORA",
                  f"adapter_config.json: r {cfg.get('r')}, alpha {cfg.get('lora_alpha')}, "
                  f"targets {cfg.get('target_modules')}")
            header, blob = safetensors_header(os.path.join(out1, "adapter_model.safetensors"))
            names = set(header)
            n_layer = len({int(n.split(".")[4]) for n in names})
            want = set()
            for layer in range(n_layer):
                for t in ("q_proj", "v_proj"):
                    for ab in ("A", "B"):
                        want.add(f"base_model.model.model.layers.{layer}.self_attn.{t}"
                                 f".lora_{ab}.weight")
            check(n_layer == 30 and names == want,
                  f"PEFT tensor names for q, v in every layer ({len(names)} tensors, "
                  f"{n_layer} layers)")
            shapes_ok = all(
                (h["shape"][0] == 4 if ".lora_A." in n else h["shape"][1] == 4)
                and h["dtype"] == "F32" for n, h in header.items())
            check(shapes_ok, "lora_A is (4, d_in), lora_B is (d_out, 4), F32")
            vals = struct.unpack(f"<{len(blob) // 4}f", blob)
            check(all(math.isfinite(v) for v in vals), "every adapter value is finite")
            bsum = 0.0
            for n, h in header.items():
                if ".lora_B." in n:
                    a, b = h["data_offsets"]
                    bsum += sum(abs(v) for v in vals[a // 4:b // 4])
            check(bsum > 0, "training moved B away from zero")
            rows = read_loss_csv(os.path.join(out1, "loss.csv"))
            check([int(r[0]) for r in rows] == [1, 2, 3]
                  and all(abs(r[1] - x) < 1e-4 for r, x in zip(rows, losses)),
                  f"loss.csv has the printed losses: {rows}")

        # ---- tp = 2 ----
        out2 = os.path.join(tmp, "adapter2")
        rc, out, err = run([mpiexec, "--oversubscribe", "--bind-to", "none", "-np", "2", tessera]
                           + base + ["--out", out2, "--tp", "2"], timeout=180)
        check(rc == 0, f"tp=2 training exits 0 (rc {rc}) {err[-2000:] if rc else ''}")
        if rc == 0 and files:
            r1 = read_loss_csv(os.path.join(out1, "loss.csv"))
            r2 = read_loss_csv(os.path.join(out2, "loss.csv"))
            rel = abs(r2[0][1] - r1[0][1]) / abs(r1[0][1])
            check(rel < 1e-4, f"tp=2 step-1 loss {r2[0][1]:.6f} = tp=1's {r1[0][1]:.6f} "
                              f"(rel {rel:.2e})")
            check(len(out.splitlines()) == len([ln for ln in out.splitlines()
                                                if ln.startswith("step ")]) == 3,
                  "under mpirun only rank 0 prints the step lines")

        # ---- refusals ----
        bad = os.path.join(tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write(json.dumps({"prompt": "a", "completion": "b"}) + "\n\n")
            f.write('{"messages": [{"role": "user", "content": "hi"}, {"role": "robot"\n')
        rc, out, err = run([tessera, "train", "--model", model, "--data", bad, "--out",
                            os.path.join(tmp, "adapter3")])
        check(rc != 0 and "bad.jsonl:3" in err, f"a bad line is refused naming it (rc {rc}): "
                                                f"{err.strip()[-300:]}")
        with open(bad, "w") as f:
            f.write(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
        rc, out, err = run([tessera, "train", "--model", model, "--data", bad, "--out",
                            os.path.join(tmp, "adapter3")])
        check(rc != 0 and "bad.jsonl:1" in err and "robot" in err,
              f"an unknown role is refused (rc {rc}): {err.strip()[-300:]}")
        check(not os.path.exists(os.path.join(tmp, "adapter3")), "nothing saved on refusal")
        rc, out, err = run([tessera] + base + ["--out", os.path.join(tmp, "a4"), "--pp", "2"])
        check(rc == 2 and "--pp 2 needs 2 ranks" in err,
              f"--pp 2 on one rank refused naming the layout (rc {rc}): {err.strip()[-300:]}")
        rc, out, err = run([tessera, "train", "--model", model, "--data",
                            os.path.join(tmp, "missing.jsonl"), "--out", os.path.join(tmp, "a5")])
        check(rc != 0 and "missing.jsonl" in err, f"a missing data file (rc {rc})")
        rc, out, err = run([tessera] + base + ["--out", os.path.join(tmp, "a6"), "--ctx", "16"])
        check(rc != 0 and "train.jsonl:1" in err and "--ctx 16" in err,
              f"an example longer than --ctx is refused (rc {rc}): {err.strip()[-300:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(CHECKS.finish("test_train_cli"))


if __name__ == "__main__":
    main()
