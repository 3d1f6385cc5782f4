#!/usr/bin/env python3
"""slurm/tessera-train.sbatch on a real (local) Slurm: `sbatch -n 2
slurm/tessera-train.sbatch --model M --tp 2 --data F --out DIR --steps N` trains
a LoRA adapter from a JSONL file, saves it in DIR and the job exits 0.

The records use the chat ("messages") form of the JSONL format in docs/lora.md.
Skips (77) if `tessera train --help` fails (a build without it) or where the
local Slurm cannot run (see test_slurm.py).

usage: test_slurm_train.py TESSERA_LAUNCH TESSERA
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_common import ROOT, ROOT_ENV, check, default_model, skip  # noqa: E402


def main():
    launch, tessera = sys.argv[1:3]
    r = subprocess.run([tessera, "train", "--help"], capture_output=True, text=True,
                       env=dict(os.environ, **ROOT_ENV), stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0:
        skip("`tessera train` does not exist yet (`tessera train --help` exits "
             f"{r.returncode}: {r.stderr.strip().splitlines()[0] if r.stderr.strip() else ''}); "
             "a build without LoRA training")
    if os.geteuid() != 0:
        skip("the local Slurm harness needs root")
    for tool in ("sbatch", "srun"):
        if not shutil.which(tool):
            skip(f"{tool} not found (scripts/setup.sh installs slurm-wlm and munge)")
    model = default_model()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_slurm import Slurm  # the same harness wrapper

    tmp = tempfile.mkdtemp(prefix="tessera-slurm-train-")
    data = os.path.join(tmp, "train.jsonl")
    with open(data, "w") as f:
        for q, a in [("What is the capital of France?", "Paris."),
                     ("What is 2 + 2?", "4."),
                     ("Name a primary colour.", "Red.")] * 4:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
    out_dir = os.path.join(tmp, "adapter")
    slurm = Slurm(tmp)
    slurm.env["TESSERA_LAUNCH"] = os.path.abspath(launch)
    slurm.start()
    try:
        log = os.path.join(tmp, "train-%j.out")
        r = slurm.run(["sbatch", "--parsable", "--wait", "-n", "2", "-o", log,
                       os.path.join(ROOT, "slurm", "tessera-train.sbatch"),
                       "--tessera", os.path.realpath(tessera), "--model", model, "--tp", "2",
                       "--data", data, "--out", out_dir, "--steps", "2"], timeout=600)
        job = r.stdout.strip().split(";")[0]
        text = open(log.replace("%j", job)).read() if job else ""
        check(r.returncode == 0, f"the training job exited {r.returncode}:\n{text[-4000:]}\n{r.stderr}")
        check(os.path.isdir(out_dir) and os.listdir(out_dir),
              f"no adapter saved in {out_dir}:\n{text[-4000:]}")
        print(f"ok  job {job}: adapter saved: {sorted(os.listdir(out_dir))}")
    finally:
        slurm.stop()
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
