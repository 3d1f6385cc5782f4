#!/usr/bin/env python3
"""A LoRA training step of `tessera train` next to PyTorch + PEFT on the CPU.

Both sides train the same adapter on the same batches: LoRA r = 16, alpha = 32,
dropout 0 on all seven projections (q, k, v, o, gate, up, down), batches of 4
chats, AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay), the global
gradient norm clipped to 1.0, the same number of threads, on the same GGUF file:

  tessera   `tessera train --model M --data D --batch-size 4 --rank 16 --alpha 32
            --targets all --threads T [--weight-dtype file|f32]`, one rank, no
            mpirun: with `file` (the default) the frozen base stays in the GGUF's
            quantized blocks (QLoRA), with `f32` every weight is dequantized at
            load. The step time is the step line's tokens / tok/s (the loop times
            the forward/backward and the optimizer step).
  peft      transformers' AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)
            (the GGUF dequantized to f32 at load, as transformers does), PEFT's
            get_peft_model(LoraConfig(...)), torch.set_num_threads(T); a step is
            model(input_ids, attention_mask, labels).loss.backward(),
            clip_grad_norm_(1.0), AdamW.step(), zero_grad(), timed around all of it.

The data: the 8 chats of bench/bench_train.py (or --data FILE, JSONL of
{"messages": [...]}). The PEFT side renders each chat with the model's own chat
template (tokenizer.apply_chat_template, which inserts SmolLM2's default system
message as Tessera's renderer does) and puts the loss on every assistant
message's content and its <|im_end|>, as docs/lora.md says Tessera does; the
script checks that each rendered chat tokenizes to the same ids in Tessera
(`tessera tokenize`) and that every step's batch has as many tokens on both
sides. The batches follow Tessera's epoch shuffle (runtime/train/epoch.c,
splitmix64 from --seed), so step k holds the same 4 chats on both sides. Tessera
packs a batch's sequences without padding; the PEFT side pads the batch to its
longest sequence (right padding, attention mask, label -100), as a PyTorch
training loop does. Training tokens/s counts the real tokens only, on both
sides.

Reported per engine: the median step time and the training tokens/s (tokens
over time) of the steps after --warmup, over all reps; the peak RSS of its
process (each engine runs in its own child, ru_maxrss from os.wait4, so neither
number contains the other); the first steps' losses.

    /work/venvs/peft/bin/python bench/compare_peft_train.py          # scripts/setup-peft.sh
    ... --tessera build-cpu/runtime/tessera --steps 12 --reps 2 --json out.json

The orchestrating Python needs nothing beyond the standard library; the PEFT
worker runs with --peft-python (default: this interpreter), which needs torch,
transformers, peft and gguf.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_train import QA  # noqa: E402

STEP_RE = re.compile(r"^step (\d+)/(\d+)  loss (\S+)  grad_norm (\S+)  tokens (\d+)  tok/s (\S+)$")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------
# Tessera's epoch plan (runtime/train/epoch.c, base/rng.h), so step k holds the
# same examples on both sides
# ---------------------------------------------------------------------------
def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def epoch_shuffle(n, seed, epoch):
    s = (seed ^ ((0xD1B54A32D192ED03 * (epoch + 1)) & MASK64)) & MASK64
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        s, r = splitmix64(s)
        j = r % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def step_batches(n_ex, batch, steps, seed):
    per_epoch = -(-n_ex // batch)
    out, perm, shuffled = [], None, -1
    for k in range(steps):
        epoch, first = k // per_epoch, (k % per_epoch) * batch
        if epoch != shuffled:
            perm, shuffled = epoch_shuffle(n_ex, seed, epoch), epoch
        out.append([perm[first + i] for i in range(min(batch, n_ex - first))])
    return out


# ---------------------------------------------------------------------------
# child processes
# ---------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER = {}  # the last run_child's: CPU that other processes used meanwhile, in cores


def sys_busy_s():
    """Busy CPU seconds of the whole machine, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK


def run_child(cmd, env=None, timeout=3600):
    """Runs cmd; returns (rc, stdout, stderr, peak RSS MiB, wall s) with the
    child's own ru_maxrss from os.wait4. OTHER["cores"] becomes the CPU other
    processes used meanwhile (the machine's busy time less the child's)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        b0, t0 = sys_busy_s(), time.time()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.time() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - t0
        OTHER["cores"] = (sys_busy_s() - b0 - ru.ru_utime - ru.ru_stime) / wall
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), ru.ru_maxrss / 1024.0, wall


def tessera_ids(tessera, model, text):
    r = subprocess.run([tessera, "tokenize", "--model", model, "--text", text],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"tessera tokenize failed: {r.stderr[-500:]}")
    return [int(x) for x in r.stdout.split()]


def run_tessera(a, data_path, weight_dtype, tmp, rep):
    out = os.path.join(tmp, f"adapter-{weight_dtype}-{rep}")
    cmd = [a.tessera, "train", "--model", a.model, "--data", data_path, "--out", out,
           "--steps", str(a.steps), "--batch-size", str(a.batch), "--rank", str(a.rank),
           "--alpha", str(a.alpha), "--targets", "all", "--lr", str(a.lr),
           "--seed", str(a.seed), "--threads", str(a.threads), "--weight-dtype", weight_dtype]
    rc, so, se, rss, wall = run_child(cmd)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{se[-1500:]}")
    steps = []
    for line in so.splitlines():
        m = STEP_RE.match(line)
        if m:
            tok, tps = int(m.group(5)), float(m.group(6))
            steps.append({"loss": float(m.group(3)), "grad_norm": float(m.group(4)),
                          "tokens": tok, "step_s": tok / tps})
    if len(steps) != a.steps:
        raise RuntimeError(f"tessera train printed {len(steps)} step lines, not {a.steps}")
    shutil.rmtree(out, ignore_errors=True)
    return {"steps": steps, "peak_rss_mib": rss, "wall_s": wall, "cmd": cmd,
            "other_cpu": OTHER["cores"]}


def run_peft(a, job_path, tmp, rep, bf16=False):
    res = os.path.join(tmp, f"peft-{rep}{'-bf16' if bf16 else ''}.json")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TQDM_DISABLE="1")
    cmd = [a.peft_python, os.path.abspath(__file__), "--worker", "train", "--job", job_path,
           "--result", res] + (["--autocast-bf16"] if bf16 else [])
    rc, so, se, rss, wall = run_child(cmd, env=env)
    if rc != 0:
        raise RuntimeError(f"the PEFT worker exited {rc}:\n{se[-3000:]}")
    with open(res) as f:
        r = json.load(f)
    r.update(peak_rss_mib=rss, wall_s=wall, other_cpu=OTHER["cores"])
    return r


# ---------------------------------------------------------------------------
# the workers (run with the PEFT venv's Python)
# ---------------------------------------------------------------------------
def worker_tokenize(job, result):
    """Renders every chat with the model's template and tokenizes it in pieces
    cut where each assistant message's content starts and where its
    end-of-turn token ends: ids and a loss mask per example."""
    from transformers import AutoTokenizer
    d, g = os.path.split(job["model"])
    tok = AutoTokenizer.from_pretrained(d, gguf_file=g)
    eot = "<|im_end|>"
    out = []
    for msgs in job["chats"]:
        full = tok.apply_chat_template(msgs, tokenize=False)
        cuts = []  # (start, end) character spans that carry loss
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = tok.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
            through = tok.apply_chat_template(msgs[:i + 1], tokenize=False)
            if not full.startswith(through) or not through.startswith(before):
                raise RuntimeError("the chat template does not render conversations as prefixes")
            span = through[len(before):]
            k = span.find(eot)
            if k < 0:
                raise RuntimeError(f"no {eot} after an assistant message")
            cuts.append((len(before), len(before) + k + len(eot)))
        ids, mask, pos = [], [], 0
        for s, e in cuts:
            for piece, w in ((full[pos:s], 0), (full[s:e], 1)):
                if piece:
                    p = tok(piece, add_special_tokens=False).input_ids
                    ids += p
                    mask += [w] * len(p)
            pos = e
        if pos < len(full):
            p = tok(full[pos:], add_special_tokens=False).input_ids
            ids += p
            mask += [0] * len(p)
        out.append({"text": full, "ids": ids, "mask": mask,
                    "whole_ids": tok(full, add_special_tokens=False).input_ids})
    with open(result, "w") as f:
        json.dump({"examples": out, "pad_id": tok.pad_token_id if tok.pad_token_id is not None
                   else tok.eos_token_id}, f)


def proc_status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return None


def worker_train(job, result):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    import transformers
    import peft

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    d, g = os.path.split(job["model"])
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=g, dtype=torch.float32)
    cfg = LoraConfig(r=job["rank"], lora_alpha=job["alpha"], lora_dropout=0.0,
                     target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    load_s = time.perf_counter() - t0
    # The process's peak RSS covers the load too (transformers' GGUF conversion);
    # the peak of the training loop alone is read after resetting the
    # high-water mark (Linux clear_refs 5).
    rss_loaded = hwm_reset = None
    try:
        rss_loaded = proc_status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        pass
    ex, pad = job["examples"], job["pad_id"]
    steps = []
    for b in job["batches"]:
        seqs = [ex[i] for i in b]
        L = max(len(s["ids"]) for s in seqs)
        ids = torch.full((len(seqs), L), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        lab = torch.full((len(seqs), L), -100, dtype=torch.long)
        for r, s in enumerate(seqs):
            n = len(s["ids"])
            ids[r, :n] = torch.tensor(s["ids"])
            att[r, :n] = 1
            # label j is the token at j where it carries loss; the model shifts
            lab[r, :n] = torch.tensor([t if w else -100 for t, w in zip(s["ids"], s["mask"])])
        ts = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=job.get("autocast_bf16", False)):
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - ts
        steps.append({"loss": float(loss), "grad_norm": float(gn),
                      "tokens": int(att.sum()), "padded_tokens": len(seqs) * L, "step_s": dt})
    with open(result, "w") as f:
        json.dump({"steps": steps, "load_s": load_s, "torch": torch.__version__,
                   "transformers": transformers.__version__, "peft": peft.__version__,
                   "threads": torch.get_num_threads(), "rss_after_load_mib": rss_loaded,
                   "train_peak_rss_mib": proc_status_mib("VmHWM") if hwm_reset else None,
                   "trainable": sum(p.numel() for p in params)}, f)


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def summarize(runs, warmup):
    steps = [s for r in runs for s in r["steps"][warmup:]]
    tok = sum(s["tokens"] for s in steps)
    t = sum(s["step_s"] for s in steps)
    times = [s["step_s"] for s in steps]
    return {"step_s_median": statistics.median(times), "step_s_min": min(times),
            "step_s_max": max(times), "tok_s": tok / t,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "other_cpu_max": max(r["other_cpu"] for r in runs),
            "losses": runs[0]["steps"] and [s["loss"] for s in runs[0]["steps"]]}


def machine():
    cpu, flags = "", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    simd = [x for x in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                        "amx_int8") if x in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": simd}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default=None, help="the tessera binary (default: build-cpu or build)")
    ap.add_argument("--model", default=os.path.join(
        os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models")),
        "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", help="JSONL of {\"messages\": [...]} chats (default: bench_train's 8)")
    ap.add_argument("--peft-python", default=sys.executable,
                    help="Python with torch, transformers, peft, gguf (scripts/setup-peft.sh)")
    ap.add_argument("--weight-dtypes", default="file,f32", help="tessera train --weight-dtype runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    ap.add_argument("--reps", type=int, default=2, help="runs of each engine, interleaved")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-other-cpu", type=float, default=None, metavar="CORES",
                    help="on a shared machine: run again when other processes used more than "
                         "this many cores meanwhile")
    ap.add_argument("--busy-retries", type=int, default=4)
    ap.add_argument("--busy-wait", type=float, default=30)
    ap.add_argument("--skip-peft", action="store_true")
    ap.add_argument("--peft-bf16", action="store_true",
                    help="also PEFT under torch.autocast(bfloat16) (AMX/AVX-512 BF16 matmuls; "
                         "not the f32 settings of the comparison)")
    ap.add_argument("--autocast-bf16", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", choices=["tokenize", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        with open(a.job) as f:
            job = json.load(f)
        job["autocast_bf16"] = a.autocast_bf16
        (worker_tokenize if a.worker == "tokenize" else worker_train)(job, a.result)
        return 0

    if a.tessera is None:
        for d in ("build-cpu", "build-bench", "build"):
            p = os.path.join(ROOT, d, "runtime", "tessera")
            if os.access(p, os.X_OK):
                a.tessera = p
                break
    if not a.tessera or not os.access(a.tessera, os.X_OK):
        ap.error("no tessera binary: pass --tessera")
    if not os.path.exists(a.model):
        sys.exit(f"{a.model} is not there (scripts/fetch-model.sh)")
    if a.warmup >= a.steps:
        ap.error("--warmup must be below --steps")

    tmp = tempfile.mkdtemp(prefix="tessera-peft-")
    try:
        # the data, on both sides
        if a.data:
            with open(a.data) as f:
                chats = [json.loads(ln)["messages"] for ln in f if ln.strip()]
        else:
            chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
                     for q, ans in QA]
        data_path = os.path.join(tmp, "data.jsonl")
        with open(data_path, "w") as f:
            for m in chats:
                f.write(json.dumps({"messages": m}) + "\n")
        job_path, tok_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "tok.json")
        with open(job_path, "w") as f:
            json.dump({"model": a.model, "chats": chats}, f)
        rc, so, se, _, _ = run_child([a.peft_python, os.path.abspath(__file__), "--worker",
                                      "tokenize", "--job", job_path, "--result", tok_path],
                                     env=dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1"))
        if rc != 0:
            sys.exit(f"the tokenizing worker failed:\n{se[-3000:]}")
        with open(tok_path) as f:
            tk = json.load(f)
        examples = tk["examples"]
        for i, e in enumerate(examples):
            mine = tessera_ids(a.tessera, a.model, e["text"])
            if mine != e["whole_ids"] or mine != e["ids"]:
                sys.exit(f"chat {i}: Tessera and transformers tokenize it differently:\n"
                         f"  tessera      {mine}\n  transformers {e['whole_ids']}\n"
                         f"  in pieces    {e['ids']}")
        n_tok = sum(len(e["ids"]) for e in examples)
        n_loss = sum(sum(e["mask"][1:]) for e in examples)
        batches = step_batches(len(examples), a.batch, a.steps, a.seed)
        print(f"data: {len(examples)} chats, {n_tok} tokens ({n_loss} carry loss), "
              f"{a.steps} steps of {a.batch}; identical ids in Tessera and transformers",
              file=sys.stderr)
        with open(job_path, "w") as f:
            json.dump({"model": a.model, "examples": examples, "pad_id": tk["pad_id"],
                       "batches": batches, "threads": a.threads, "rank": a.rank,
                       "alpha": a.alpha, "lr": a.lr, "seed": a.seed}, f)

        engines = [f"tessera-{w}" for w in a.weight_dtypes.split(",") if w]
        if not a.skip_peft:
            engines.append("peft")
        if a.peft_bf16:
            engines.append("peft-bf16")
        runs = {e: [] for e in engines}
        for rep in range(a.reps):
            for e in engines:
                print(f"rep {rep + 1}/{a.reps}: {e}", file=sys.stderr, flush=True)
                for attempt in range(a.busy_retries + 1):
                    r = run_peft(a, job_path, tmp, rep, e == "peft-bf16") \
                        if e.startswith("peft") else \
                        run_tessera(a, data_path, e.split("-", 1)[1], tmp, rep)
                    if a.max_other_cpu is None or r["other_cpu"] <= a.max_other_cpu \
                            or attempt == a.busy_retries:
                        break
                    print(f"  other processes used {r['other_cpu']:.2f} cores; again in "
                          f"{a.busy_wait:g} s", file=sys.stderr, flush=True)
                    time.sleep(a.busy_wait)
                want = [sum(len(examples[i]["ids"]) for i in b) for b in batches]
                got = [s["tokens"] for s in r["steps"]]
                if got != want:
                    sys.exit(f"{e}: tokens per step {got}, expected {want}: the batches differ")
                runs[e].append(r)
                med = statistics.median(s["step_s"] for s in r["steps"][a.warmup:])
                print(f"  median step {med * 1e3:.0f} ms, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                      f"other processes {r['other_cpu']:.2f} cores",
                      file=sys.stderr, flush=True)
        summ = {e: summarize(runs[e], a.warmup) for e in engines}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    m = machine()
    print(f"\n{m['cpu']}, {m['cores']} cores ({', '.join(m['simd'])}); {a.threads} threads; "
          f"LoRA r={a.rank} alpha={a.alpha:g} on {','.join(t[:-5] for t in TARGETS)}; "
          f"batch {a.batch} chats; {a.steps} steps x {a.reps} reps, first {a.warmup} of each "
          f"left out\n")
    base = summ.get("peft")
    print("| engine | median step ms [min-max] | train tok/s | peak RSS MiB | "
          "step time: PEFT / engine | tok/s: engine / PEFT | RSS: engine / PEFT | other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in engines:
        s = summ[e]
        r = (f"{base['step_s_median'] / s['step_s_median']:.2f} | {s['tok_s'] / base['tok_s']:.2f} "
             f"| {s['peak_rss_mib'] / base['peak_rss_mib']:.2f}") if base else "| |"
        print(f"| {e} | {s['step_s_median'] * 1e3:.0f} [{s['step_s_min'] * 1e3:.0f}-"
              f"{s['step_s_max'] * 1e3:.0f}] | {s['tok_s']:.1f} | {s['peak_rss_mib']:.0f} | {r} "
              f"| {s['other_cpu_max']:.2f} |")
    n_show = min(a.steps, 8)
    print(f"\nloss, first {n_show} steps (rep 1):")
    for e in engines:
        print(f"  {e:14s} " + " ".join(f"{x:.4f}" for x in summ[e]["losses"][:n_show]))
    if "peft" in runs:
        p = runs["peft"][0]
        pad = sum(s["padded_tokens"] - s["tokens"] for s in p["steps"])
        print(f"\nPEFT: torch {p['torch']}, transformers {p['transformers']}, peft {p['peft']}, "
              f"{p['threads']} threads, {p['trainable']} trainable parameters; padding added "
              f"{pad / sum(s['tokens'] for s in p['steps']) * 100:.0f}% to its batches; "
              f"RSS {p['rss_after_load_mib']:.0f} MiB after loading, the training loop's own "
              f"peak {p['train_peak_rss_mib']:.0f} MiB (the process's peak is the larger of this "
              f"and the load's)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "config": {k: v for k, v in vars(a).items()
                                                if k not in ("worker", "job", "result")},
                       "summary": summ, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
