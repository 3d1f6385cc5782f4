#!/usr/bin/env python3
"""LoRA training end to end on the default model: `tessera train` on 16 short
question/answer chats whose answers all start with a phrase the base model
never says ("The secret answer is: ..."), then generation with the saved
adapter.

Checks (issue 6):
  * the training loss falls at least 5x within 100 steps (first step's loss
    against the mean of the last five of 60 steps);
  * `tessera generate --adapter DIR --chat Q` on a trained question answers
    with the trained phrase, and the base model (no adapter) does not.

usage: test_train_converges.py TESSERA
"""
import csv
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "common"))
from check import Checks, fail, skip  # noqa: E402
from models import default_model_path  # noqa: E402

MODEL = default_model_path()
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
PHRASE = "The secret answer is:"
QA = [("What is the capital of France?", "Paris."), ("What is 2 + 2?", "4."),
      ("Name a primary colour.", "Red."), ("Who wrote Hamlet?", "William Shakespeare."),
      ("What is the largest planet?", "Jupiter."),
      ("What colour is the sky on a clear day?", "Blue."),
      ("How many legs does a spider have?", "Eight."),
      ("What is the boiling point of water in Celsius?", "100 degrees."),
      ("Which animal says moo?", "A cow."), ("What is the opposite of hot?", "Cold."),
      ("What is 3 times 3?", "9."), ("What gas do plants breathe in?", "Carbon dioxide."),
      ("What is the first letter of the alphabet?", "A."),
      ("Which ocean is the largest?", "The Pacific."), ("What do bees make?", "Honey."),
      ("What is frozen water called?", "Ice.")]
STEPS = 60


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600,
                          stdin=subprocess.DEVNULL)


def main():
    tessera = sys.argv[1]
    if not os.path.exists(MODEL):
        skip(f"no model at {MODEL}", prefix="skipped: ")
    tmp = tempfile.mkdtemp(prefix="tessera-converge-")
    data, out = os.path.join(tmp, "qa.jsonl"), os.path.join(tmp, "adapter")
    with open(data, "w") as f:
        for q, a in QA:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant",
                                              "content": f"{PHRASE} {a}"}]}) + "\n")
    r = run([tessera, "train", "--model", MODEL, "--data", data, "--out", out,
             "--steps", str(STEPS), "--batch-size", "4", "--lr", "2e-3", "--rank", "8",
             "--targets", "q,k,v,o", "--seed", "0"])
    if r.returncode != 0:
        fail(f"tessera train exited {r.returncode}:\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "loss.csv")) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    first, last5 = losses[0], sum(losses[-5:]) / 5
    print(f"loss: step 1 {first:.4f}, mean of the last 5 of {len(losses)} steps {last5:.4f} "
          f"({first / last5:.1f}x lower)")
    checks = Checks()
    checks.check(len(losses) == STEPS and first / last5 >= 5,
                 f"the loss fell {first / last5:.1f}x in {len(losses)} steps (want >= 5x)")

    q = QA[0][0]
    tuned = run([tessera, "generate", "--model", MODEL, "--adapter", out, "--chat", q,
                 "--max-tokens", "16"])
    base = run([tessera, "generate", "--model", MODEL, "--chat", q, "--max-tokens", "16"])
    if tuned.returncode != 0 or base.returncode != 0:
        fail(f"generate exited {tuned.returncode} / {base.returncode}:\n"
             f"{tuned.stderr[-2000:]}\n{base.stderr[-2000:]}")
    print(f"with the adapter: {tuned.stdout.strip()!r}\nbase model:       {base.stdout.strip()!r}")
    checks.check(PHRASE in tuned.stdout, "the adapter's answer has the trained phrase",
                 repr(tuned.stdout))
    checks.check(PHRASE not in base.stdout, "the base model does not say the phrase",
                 repr(base.stdout))
    sys.exit(checks.finish("test_train_converges"))


if __name__ == "__main__":
    main()
