#!/usr/bin/env python3
"""LoRA training step time and training tokens/s per (tp, pp) layout, two ways:

  batch  `tessera train` inside the MPI job (the step lines' tok/s);
  rpc    a `tessera serve` job driven over gRPC: ForwardBackward + OptimStep
         per step, timed by the client (so it includes tokenization on the
         server, the RPCs and the engine's descriptor broadcast).

Both run the same data (8 chat examples of the default model, one batch a
step), LoRA r = 8 on all seven projections, and report the median over the
steps after the first two (warm-up).

usage: bench/bench_train.py [--tessera build/runtime/tessera] [--layouts 1x1,2x1,1x2,2x2]
                            [--steps 8] [--modes batch,rpc] [--json out.json]
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1")
STEP_RE = re.compile(r"^step (\d+)/(\d+)  loss (\S+)  grad_norm (\S+)  tokens (\d+)  tok/s (\S+)$")
QA = [("What is the capital of France?", "The capital of France is Paris, on the Seine."),
      ("Name a primary colour.", "Red is a primary colour, as are blue and yellow."),
      ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
      ("What is 12 times 12?", "Twelve times twelve is one hundred and forty-four."),
      ("What do bees make?", "Bees make honey and wax in their hives."),
      ("How many legs has a spider?", "A spider has eight legs."),
      ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
      ("Which planet is the largest?", "Jupiter is the largest planet of the solar system.")]


def model_path():
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    return os.path.join(root, "SmolLM2-135M-Instruct.Q4_1.gguf")


def launch(tessera, tp, pp, args):
    cmd = [tessera] + args + ["--tp", str(tp), "--pp", str(pp)]
    n = tp * pp
    if n > 1:
        cmd = ["mpiexec", "-np", str(n), "--bind-to", "none"] + cmd + \
              ["--threads", str(max(1, os.cpu_count() // n))]
    return cmd


def bench_batch(tessera, model, data, tp, pp, steps, tmp):
    out = os.path.join(tmp, f"out-{tp}-{pp}")
    cmd = launch(tessera, tp, pp, ["train", "--model", model, "--data", data, "--out", out,
                                   "--steps", str(steps), "--batch-size", "8", "--rank", "8",
                                   "--targets", "all", "--lr", "1e-4"])
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"tessera train {tp}x{pp} failed: {r.stderr[-800:]}")
    rows = [STEP_RE.match(ln) for ln in r.stdout.splitlines()]
    rows = [m for m in rows if m][2:]
    tps = [float(m.group(6)) for m in rows]
    toks = [int(m.group(5)) for m in rows]
    t = statistics.median(tok / s for tok, s in zip(toks, tps))
    return {"tok_s": statistics.median(tps), "step_s": t, "tokens": toks[0]}


def bench_rpc(tessera, model, tp, pp, steps, tmp):
    sys.path.insert(0, os.path.join(tmp, "stubs"))
    import grpc
    import tessera_pb2 as pb
    import tessera_pb2_grpc as pbg
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = open(os.path.join(tmp, f"serve-{tp}-{pp}.log"), "w+")
    srv = subprocess.Popen(launch(tessera, tp, pp, ["serve", "--model", model, "--port", str(port),
                                                    "--max-seqs", "4", "--ctx", "512"]),
                           stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        t0 = time.time()
        while "tessera: ready" not in open(log.name).read():
            if srv.poll() is not None or time.time() - t0 > 300:
                raise RuntimeError(f"serve {tp}x{pp} did not start: {open(log.name).read()[-800:]}")
            time.sleep(0.1)
        api = pbg.TesseraStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        api.CreateAdapter(pb.CreateAdapterRequest(name="bench", config=pb.LoraConfig(
            rank=8, alpha=16, target_modules=["all"])))
        exs = [pb.TrainExample(chat=pb.ChatInput(messages=[
            pb.ChatMessage(role="user", content=q), pb.ChatMessage(role="assistant", content=a)]))
            for q, a in QA]
        times, toks = [], 0
        for _ in range(steps):
            t = time.time()
            fb = api.ForwardBackward(pb.ForwardBackwardRequest(adapter="bench", examples=exs))
            api.OptimStep(pb.OptimStepRequest(adapter="bench", adamw=pb.AdamWParams(lr=1e-4)))
            times.append(time.time() - t)
            toks = fb.n_tokens
        st = statistics.median(times[2:])
        return {"tok_s": toks / st, "step_s": st, "tokens": toks}
    finally:
        srv.terminate()
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build", "runtime", "tessera"))
    ap.add_argument("--layouts", default="1x1,2x1,1x2,2x2")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--modes", default="batch,rpc")
    ap.add_argument("--json")
    a = ap.parse_args()
    model = model_path()
    if not os.path.exists(model):
        sys.exit(f"{model} is not downloaded (scripts/fetch-model.sh)")
    tmp = tempfile.mkdtemp(prefix="tessera-bench-train-")
    try:
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            for q, ans in QA:
                f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": ans}]}) + "\n")
        modes = a.modes.split(",")
        if "rpc" in modes:
            os.makedirs(os.path.join(tmp, "stubs"))
            subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I",
                            os.path.join(ROOT, "proto", "tessera", "v1"),
                            "--python_out=" + os.path.join(tmp, "stubs"),
                            "--grpc_python_out=" + os.path.join(tmp, "stubs"), "tessera.proto"],
                           check=True)
        results = []
        print(f"{'layout':>7} {'mode':>5} {'tokens':>7} {'step s':>8} {'train tok/s':>12}")
        for lay in a.layouts.split(","):
            tp, pp = (int(x) for x in lay.split("x"))
            for mode in modes:
                r = (bench_batch(tessera=a.tessera, model=model, data=data, tp=tp, pp=pp,
                                 steps=a.steps, tmp=tmp) if mode == "batch" else
                     bench_rpc(a.tessera, model, tp, pp, a.steps, tmp))
                r.update(layout=lay, mode=mode)
                results.append(r)
                print(f"{lay:>7} {mode:>5} {r['tokens']:>7} {r['step_s']:>8.3f} "
                      f"{r['tok_s']:>12.1f}", flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
