#!/usr/bin/env python3
"""bench/compare_llamacpp.py - Tessera's tsr_bench next to llama.cpp on the same GGUF.

For each thread count it runs, one after the other and each in its own process:
  * tsr_bench --json (Tessera, one rank, CPU backend);
  * this script in worker mode, which measures llama.cpp through llama-cpp-python
    the way llama-bench does: prefill of P prompt ids in one batch on a fresh
    context, then G greedy single-token decode steps after a short prompt.
Both engines get the same model file, thread count, prompt ids (the splitmix64
stream tsr_bench uses; checked), prompt length, generation length and reps, and
report the median (min, max) over reps. Peak RSS is each child's own ru_maxrss
(os.wait4), so the engines do not share a number.

Run it with the benchmark venv (scripts/setup-bench.sh builds it):

  .venv-bench/bin/python bench/compare_llamacpp.py [--model M] [--threads 1,2]
      [--prompt-tokens 512] [--gen-tokens 128] [--reps 3] [--json]

What it is not: a correctness comparison (tests/model compares logits), nor part
of the tests or CI. llama.cpp is a benchmark-only dependency.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(
    os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
SEED = 0x7E55E7A5EED  # TSR_BENCH_SEED in bench/tsr_bench.c
MASK64 = (1 << 64) - 1


def prompt_ids(n, n_vocab, seed=SEED):
    """The splitmix64 id stream of tsr_bench.c."""
    out, state = [], seed
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        out.append(z % n_vocab)
    return out


def summarize(rates):
    s = sorted(rates)
    n = len(s)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return {"median": med, "min": s[0], "max": s[-1], "reps": rates}


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- llama.cpp worker


def llamacpp_worker(a):
    """Measures llama.cpp in this process and prints one JSON object."""
    rss_python = rss_mib()  # interpreter + numpy, before llama_cpp is imported
    import numpy as np
    import llama_cpp

    P, G, D = a.prompt_tokens, a.gen_tokens, a.decode_prompt
    ctx = max(P, D + G)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=a.model,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_ctx=ctx,
        n_batch=max(P, D),
        n_ubatch=max(P, D),
        logits_all=False,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    ids = prompt_ids(max(P, D), n_vocab)

    def last_logits():
        p = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(n_vocab,))

    def prefill():
        llm.reset()  # n_tokens = 0; eval() then drops every cached position >= 0
        t = time.perf_counter()
        llm.eval(ids[:P])
        return P / (time.perf_counter() - t)

    def decode(g):
        llm.reset()
        llm.eval(ids[:D])
        tok = int(np.argmax(last_logits()))
        t = time.perf_counter()
        for _ in range(g):
            llm.eval([tok])
            tok = int(np.argmax(last_logits()))
        return g / (time.perf_counter() - t)

    if a.warmup:
        prefill()
        decode(min(G, 8))
    pp, tg = [], []
    for _ in range(a.reps):
        pp.append(prefill())
        tg.append(decode(G))
    info = llama_cpp.llama_print_system_info()
    out = {
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": info.decode() if isinstance(info, bytes) else str(info),
        "model": a.model,
        "threads": a.threads,
        "prompt_tokens": P,
        "gen_tokens": G,
        "decode_prompt": D,
        "reps": a.reps,
        "prompt_head": ids[:4],
        "load_s": load_s,
        "prefill_tok_s": summarize(pp),
        "decode_tok_s": summarize(tg),
        "python_baseline_rss_mib": rss_python,
        "peak_rss_mib": rss_mib(),
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


# ---------------------------------------------------------------- driver


def run_child(cmd):
    """Runs cmd, returns (parsed JSON of its stdout, its own peak RSS in MiB)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"compare_llamacpp: {' '.join(cmd)} exited with {p.returncode}")
    return json.loads(out), ru.ru_maxrss / 1024.0


def find_tsr_bench():
    for d in ("build-bench", "build", "build-release"):
        p = os.path.join(ROOT, d, "bench", "tsr_bench")
        if os.access(p, os.X_OK):
            return p
    return None


def machine_info():
    info = {"cpu": "?", "cores": os.cpu_count(), "flags": [], "mem_gib": None,
            "os": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and info["cpu"] == "?":
                    info["cpu"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not info["flags"]:
                    have = set(line.split(":", 1)[1].split())
                    info["flags"] = [x for x in ("avx", "avx2", "fma", "f16c", "avx512f",
                                                 "avx512bw", "avx512_vnni", "avx_vnni",
                                                 "amx_int8") if x in have]
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            info["mem_gib"] = round(kb / 1048576.0, 1)
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"') + \
                        " (Linux " + platform.release() + ")"
    except OSError:
        pass
    return info


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--decode-prompt", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--tsr-bench", default=None, help="path of tsr_bench (default: build*/bench)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--worker", choices=["llamacpp"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.threads = int(a.threads)
        return llamacpp_worker(a)

    if not os.path.exists(a.model):
        sys.exit(f"compare_llamacpp: no model at {a.model} (scripts/fetch-model.sh fetches it)")
    tsr = a.tsr_bench or find_tsr_bench()
    if not tsr or not os.access(tsr, os.X_OK):
        sys.exit(f"compare_llamacpp: no tsr_bench at {tsr or 'build*/bench/'}; build it: "
                 "cmake --build BUILD --target tsr_bench")
    try:
        import llama_cpp  # noqa: F401  (only checks the venv; measured in a child)
    except ImportError:
        sys.exit("compare_llamacpp: llama_cpp not importable; run scripts/setup-bench.sh and use "
                 ".venv-bench/bin/python")

    common = ["--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens),
              "--decode-prompt", str(a.decode_prompt), "--reps", str(a.reps)]
    if not a.warmup:
        common.append("--no-warmup")
    rows = []
    for n in [int(x) for x in a.threads.split(",") if x]:
        t, t_rss = run_child([tsr, "--json", "--model", a.model, "--threads", str(n)] + common)
        ll, l_rss = run_child([sys.executable, os.path.abspath(__file__), "--worker", "llamacpp",
                               "--model", a.model, "--threads", str(n)] + common)
        if t["prompt_head"] != ll["prompt_head"]:
            sys.exit(f"compare_llamacpp: prompt ids differ: {t['prompt_head']} vs {ll['prompt_head']}")
        t["peak_rss_mib"], ll["peak_rss_mib"] = t_rss, l_rss
        rows.append({"threads": n, "tessera": t, "llama.cpp": ll,
                     "ratio": {"prefill": ratio(t["prefill_tok_s"]["median"],
                                                ll["prefill_tok_s"]["median"]),
                               "decode": ratio(t["decode_tok_s"]["median"],
                                               ll["decode_tok_s"]["median"]),
                               "peak_rss": ratio(t_rss, l_rss)}})

    report = {"machine": machine_info(), "model": a.model, "prompt_tokens": a.prompt_tokens,
              "gen_tokens": a.gen_tokens, "decode_prompt": a.decode_prompt, "reps": a.reps,
              "llama_cpp_python": rows[0]["llama.cpp"]["llama_cpp_python"] if rows else None,
              "results": rows}
    if a.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, {m['os']}")
    print(f"flags:   {' '.join(m['flags'])}")
    print(f"model:   {a.model}")
    print(f"tests:   pp{a.prompt_tokens} (one batch), tg{a.gen_tokens} (after {a.decode_prompt} "
          f"prompt tokens), median of {a.reps} reps [min-max]; "
          f"llama-cpp-python {report['llama_cpp_python']}")
    hdr = f"{'threads':>7}  {'engine':<10} {'prefill tok/s':>24} {'decode tok/s':>22} {'peak RSS MiB':>13} {'load s':>7}"
    print(hdr)
    print("-" * len(hdr))

    def cell(s):
        return f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"

    for r in rows:
        for name in ("tessera", "llama.cpp"):
            e = r[name]
            print(f"{r['threads']:>7}  {name:<10} {cell(e['prefill_tok_s']):>24} "
                  f"{cell(e['decode_tok_s']):>22} {e['peak_rss_mib']:>13.0f} {e['load_s']:>7.2f}")
        q = r["ratio"]
        print(f"{r['threads']:>7}  {'ratio T/L':<10} {q['prefill']:>24.2f} {q['decode']:>22.2f} "
              f"{q['peak_rss']:>13.2f}")
    if rows:
        ll = rows[0]["llama.cpp"]
        print(f"llama.cpp's RSS includes the Python interpreter ({ll['python_baseline_rss_mib']:.0f} "
              f"MiB before llama_cpp is imported); its load is an mmap with repacking, Tessera's "
              f"copies each rank's blocks out of the mmap (a CUDA-enabled build also maps the "
              f"CUDA libraries: measure RSS with -DTESSERA_CUDA=OFF).")
        print(f"llama.cpp CPU features: {ll['system_info'].strip()}")


if __name__ == "__main__":
    main()
