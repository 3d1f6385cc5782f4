#!/usr/bin/env python3
"""32 streams, decode-heavy: Tessera's server and engine next to llama.cpp's batched-bench.

For each thread count (default 1 and 2), each measurement in its own process:

  llama.cpp   this script in worker mode, measuring llama.cpp through
              llama-cpp-python's low-level API the way llama-batched-bench
              (tools/batched-bench) does with -npp PP -ntg TG -npl PL (prompt not
              shared): a llama_context with n_seq_max = PL, n_ctx = PL*(PP+TG)
              (at least), n_batch 2048, n_ubatch 512 and every other parameter
              at llama_context_default_params() (f16 KV cache, flash attention
              "auto", one KV stream per sequence as batched-bench's kv_unified =
              false); a warm-up of 16 tokens; then per rep: the memory cleared,
              PL prompts of PP tokens (token 0, positions 0..PP-1, sequence j) in
              one llama_batch with logits on the last row (T_PP), then TG steps
              that each decode one token for every sequence in one llama_batch
              with logits on all PL rows (T_TG). Reported: the generated tokens
              over the whole time, PL*TG / (T_PP + T_TG) (the issue's measure),
              and batched-bench's own S_TG = PL*TG / T_TG and S = all tokens / T.
  tsr_bench   `tsr_bench --batch PL --decode-prompt PP --gen-tokens TG`: the
              engine alone, PL sequences advanced in lockstep; only the decode
              steps are timed (PL*TG / T_TG, comparable to S_TG). Its pp512 test
              (one prompt of PL*PP = 512 tokens) gives an estimate of the prompt
              phase, so an estimated generated-over-total figure is printed too.
  server      `tessera serve` (one rank, --threads N; with --tp2 also two ranks
              under mpirun, one thread each) driven by bench/loadgen.py: PL
              concurrent streaming Generate calls sent at once, each a prompt of
              PP token ids, greedy, max_tokens TG, ignore_eos (every request must
              produce exactly TG tokens; loadgen checks it); the rate is the
              generated tokens over the time from the first send to the last
              token (--requests-per-client 1), after one untimed round of PL
              streams. The load generator runs on the same cores.

Every figure is the median over --reps; peak RSS is each process's own ru_maxrss
from os.wait4 (the server's after SIGTERM; under mpirun, the largest rank's VmHWM
read from /proc before the stop, since mpirun does not reap its ranks on SIGTERM).
"other CPU" is what the rest of the machine used meanwhile (/proc/stat less the
measured processes), in cores; --max-other-cpu measures again above a limit.

    .venv-bench/bin/python bench/compare_batched.py [--threads 1,2] [--reps 3] [--tp2]
        [--tessera build-cpu/runtime/tessera] [--tsr-bench build-cpu/bench/tsr_bench]
        [--json out.json]

Needs llama-cpp-python (scripts/setup-bench.sh) in this interpreter and grpcio +
grpcio-tools (scripts/requirements-bench.txt) in --loadgen-python (default: this
interpreter). Nothing here runs in the tests or CI.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_MODEL = os.path.join(
    os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf")
MPI_ENV = dict(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_mpi_yield_when_idle="1")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------- llama.cpp worker


def llamacpp_worker(a):
    """batched-bench's loop through llama-cpp-python; prints one JSON object."""
    import ctypes
    import llama_cpp as L

    PP, TG, PL = a.pp, a.tg, a.pl
    L.llama_backend_init()
    t0 = time.perf_counter()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit("llama.cpp: the model did not load")
    cp = L.llama_context_default_params()
    n_ctx = max(a.n_ctx, PL * (PP + TG))
    cp.n_ctx = n_ctx
    cp.n_batch = 2048
    cp.n_ubatch = 512
    cp.n_seq_max = PL
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    if hasattr(cp, "kv_unified"):
        cp.kv_unified = bool(a.kv_unified)
    fa = {"auto": -1, "off": 0, "on": 1}[a.flash_attn]
    if hasattr(cp, "flash_attn_type"):
        cp.flash_attn_type = fa
    elif fa >= 0:
        cp.flash_attn = bool(fa)
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("llama.cpp: the context was not created")
    load_s = time.perf_counter() - t0
    mem = L.llama_get_memory(ctx)
    n_kv_max = L.llama_n_ctx(ctx)
    batch = L.llama_batch_init(n_kv_max, 0, 1)

    def clear():
        batch.n_tokens = 0

    def add(tok, pos, seq, logits):
        i = batch.n_tokens
        batch.token[i] = tok
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if logits else 0
        batch.n_tokens = i + 1

    def decode():
        # batched-bench decodes in views of n_batch tokens; every batch here
        # (PL*PP = 512 or PL = 32 tokens) fits in one
        if batch.n_tokens > cp.n_batch:
            sys.exit(f"llama.cpp: a batch of {batch.n_tokens} tokens exceeds n_batch")
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            sys.exit(f"llama.cpp: llama_decode returned {rc}")
        L.llama_synchronize(ctx)

    # warm up, as batched-bench does
    clear()
    for i in range(16):
        add(0, i, 0, False)
    decode()

    reps = []
    for _ in range(a.reps):
        clear()
        for j in range(PL):
            for i in range(PP):
                add(0, i, j, False)
        batch.logits[batch.n_tokens - 1] = 1
        t_pp0 = time.perf_counter()
        L.llama_memory_clear(mem, True)
        decode()
        t_pp = time.perf_counter() - t_pp0
        t_tg0 = time.perf_counter()
        for i in range(TG):
            clear()
            for j in range(PL):
                add(0, PP + i, j, True)
            decode()
        t_tg = time.perf_counter() - t_tg0
        reps.append({"t_pp": t_pp, "t_tg": t_tg, "t": t_pp + t_tg,
                     "s_pp": PL * PP / t_pp, "s_tg": PL * TG / t_tg,
                     "s": PL * (PP + TG) / (t_pp + t_tg), "gen_over_total": PL * TG / (t_pp + t_tg)})
    L.llama_batch_free(batch)
    info = L.llama_print_system_info()
    out = {"engine": "llama.cpp", "llama_cpp_python": L.__version__,
           "system_info": info.decode() if isinstance(info, bytes) else str(info),
           "threads": a.threads, "n_ctx": n_kv_max, "n_batch": cp.n_batch, "n_ubatch": cp.n_ubatch,
           "kv_unified": bool(getattr(cp, "kv_unified", False)), "flash_attn": a.flash_attn,
           "load_s": load_s, "reps": reps}
    L.llama_free(ctx)
    L.llama_model_free(model)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    ctypes  # noqa: B018  (imported for llama_cpp's pointer fields)


# ---------------------------------------------------------------- children


CLK_TCK = os.sysconf("SC_CLK_TCK")


def sys_busy_s():
    """Busy CPU seconds of the whole machine, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK


def wait_child(p):
    """Waits for Popen p; returns (its own peak RSS in MiB, its CPU seconds),
    from os.wait4."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss / 1024.0, ru.ru_utime + ru.ru_stime


def run_json(cmd, env=None, a=None):
    """run_json_once, measured again (after --busy-wait s, up to --busy-retries
    times) while other processes used more than --max-other-cpu cores."""
    for attempt in range((a.busy_retries if a else 0) + 1):
        r = run_json_once(cmd, env)
        if a is None or a.max_other_cpu is None or r[2] <= a.max_other_cpu \
                or attempt == a.busy_retries:
            return r
        print(f"compare_batched: other processes used {r[2]:.2f} cores; measuring again in "
              f"{a.busy_wait:g} s", file=sys.stderr, flush=True)
        time.sleep(a.busy_wait)


def run_json_once(cmd, env=None):
    """Runs cmd, returns (its stdout parsed as JSON, its peak RSS MiB, the CPU
    that other processes used while it ran, in cores)."""
    with tempfile.TemporaryFile("w+") as err:
        b0, t0 = sys_busy_s(), time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        out = p.stdout.read()
        p.stdout.close()
        rss, cpu = wait_child(p)
        other = (sys_busy_s() - b0 - cpu) / (time.time() - t0)
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"compare_batched: {' '.join(cmd)} exited {p.returncode}:\n{err.read()[-2000:]}")
    return json.loads(out), rss, other


def rank_stats(root):
    """(CPU seconds, largest VmHWM MiB) of the tessera processes under pid root
    (the ranks that mpirun started), read from /proc while they run."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
    cpu, hwm, todo = 0.0, 0.0, [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            todo.append(c)
            try:
                with open(f"/proc/{c}/comm") as f:
                    if f.read().strip() != "tessera":
                        continue
                with open(f"/proc/{c}/stat") as f:
                    st = f.read()
                fields = st[st.rindex(")") + 2:].split()
                cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
                with open(f"/proc/{c}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]) / 1024.0)
            except OSError:
                continue
    return cpu, hwm


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_server(a, threads, tp, tmp):
    """Starts tessera serve, runs loadgen against it, stops it. Returns the
    levels loadgen measured and the server's peak RSS."""
    port = free_port()
    srv = [a.tessera, "serve", "--model", a.model, "--port", str(port), "--max-seqs", str(a.pl),
           "--ctx", str(a.server_ctx), "--kv-positions", str(a.pl * a.server_ctx),
           "--threads", str(threads if tp == 1 else max(1, threads // tp))]
    if tp > 1:
        srv = [a.mpirun, "-np", str(tp), "--oversubscribe", "--bind-to", "none"] + srv + \
              ["--tp", str(tp)]
    log_path = os.path.join(tmp, f"server-t{threads}-tp{tp}.log")
    log = open(log_path, "w")
    print("compare_batched: " + " ".join(srv), file=sys.stderr, flush=True)
    b0, t0 = sys_busy_s(), time.time()
    p = subprocess.Popen(srv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, **MPI_ENV))
    out_json = os.path.join(tmp, f"loadgen-t{threads}-tp{tp}.json")
    lg = [a.loadgen_python, os.path.join(HERE, "loadgen.py"), "--addr", f"127.0.0.1:{port}",
          "--levels", ",".join([str(a.pl)] * a.reps), "--requests-per-client", "1",
          "--prompt-tokens", str(a.pp), "--gen-tokens", str(a.tg), "--json", out_json]
    try:
        with tempfile.TemporaryFile("w+") as lerr:
            q = subprocess.Popen(lg, stdout=subprocess.DEVNULL, stderr=lerr, text=True)
            _, lg_cpu = wait_child(q)
            lerr.seek(0)
            r = subprocess.CompletedProcess(lg, q.returncode, "", lerr.read())
        if r.returncode != 0 or not os.path.exists(out_json):
            log.flush()
            with open(log_path, errors="replace") as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"loadgen exited {r.returncode}:\n{r.stderr[-3000:]}\n"
                               f"server log:\n{tail}")
        sys.stderr.write("".join(ln + "\n" for ln in r.stderr.splitlines()
                                 if ln.startswith("loadgen: N=")))
        with open(out_json) as f:
            res = json.load(f)
    finally:
        # SIGTERM to the server (mpirun forwards it to the ranks); reaped with
        # os.wait4 for its own peak RSS
        rss, srv_cpu = float("nan"), 0.0
        # mpirun exits on SIGTERM without reaping the ranks (they drain and exit
        # on their own), so their CPU and peak RSS are read from /proc first
        ranks_cpu, ranks_hwm = rank_stats(p.pid) if tp > 1 else (0.0, 0.0)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            deadline = time.time() + 60
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    rss = ru.ru_maxrss / 1024.0
                    srv_cpu = ru.ru_utime + ru.ru_stime
                    break
                if time.time() > deadline:
                    p.kill()
                    deadline = time.time() + 1e9
                time.sleep(0.05)
        log.close()
        srv_cpu += ranks_cpu
        rss = max(rss, ranks_hwm)
    # CPU of everything but the server and loadgen over the server's life, in cores
    # (under mpirun the ranks' CPU is mpirun's reaped children's, counted in srv_cpu)
    res["other_cpu"] = (sys_busy_s() - b0 - srv_cpu - lg_cpu) / (time.time() - t0)
    return res, rss


# ---------------------------------------------------------------- driver


def machine_info():
    info = {"cpu": "?", "cores": os.cpu_count(), "flags": [], "os": platform.platform()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and info["cpu"] == "?":
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not info["flags"]:
                have = set(line.split(":", 1)[1].split())
                info["flags"] = [x for x in ("avx2", "fma", "f16c", "avx512f", "avx512bw",
                                             "avx512_vnni", "avx_vnni", "amx_int8") if x in have]
    return info


def find(paths):
    for p in paths:
        if os.access(p, os.X_OK):
            return p
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--pp", type=int, default=16, help="prompt tokens per sequence")
    ap.add_argument("--tg", type=int, default=128, help="generated tokens per sequence")
    ap.add_argument("--pl", type=int, default=32, help="parallel sequences (streams)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-ctx", type=int, default=0, help="llama.cpp n_ctx (default PL*(PP+TG))")
    ap.add_argument("--kv-unified", action="store_true",
                    help="llama.cpp: one KV stream for all sequences (batched-bench -kvu)")
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp flash attention (default auto, as batched-bench)")
    ap.add_argument("--tessera", default=None, help="the tessera binary (default build-cpu/...)")
    ap.add_argument("--tsr-bench", default=None, help="tsr_bench (default build-cpu/bench/...)")
    ap.add_argument("--server-ctx", type=int, default=256, help="tessera serve --ctx")
    ap.add_argument("--tp2", action="store_true", help="also the server as two ranks (threads 2)")
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    ap.add_argument("--loadgen-python", default=sys.executable)
    ap.add_argument("--only", default="llama,tsr_bench,server", help="which measurements")
    ap.add_argument("--max-other-cpu", type=float, default=None, metavar="CORES",
                    help="on a shared machine: measure again when other processes used more "
                         "than this many cores meanwhile")
    ap.add_argument("--busy-retries", type=int, default=4)
    ap.add_argument("--busy-wait", type=float, default=30)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", choices=["llamacpp"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.threads = int(a.threads)
        return llamacpp_worker(a)

    if not os.path.exists(a.model):
        sys.exit(f"compare_batched: no model at {a.model} (scripts/fetch-model.sh)")
    builds = ("build-cpu", "build-bench", "build")
    a.tessera = a.tessera or find([os.path.join(ROOT, d, "runtime", "tessera") for d in builds])
    a.tsr_bench = a.tsr_bench or find([os.path.join(ROOT, d, "bench", "tsr_bench") for d in builds])
    only = set(a.only.split(","))
    if "llama" in only:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            sys.exit("compare_batched: llama_cpp not importable; run scripts/setup-bench.sh "
                     "and use .venv-bench/bin/python")
    if "server" in only:
        if not a.tessera:
            sys.exit("compare_batched: no tessera binary; pass --tessera")
        r = subprocess.run([a.loadgen_python, "-c", "import grpc, grpc_tools"])
        if r.returncode != 0:
            sys.exit(f"compare_batched: {a.loadgen_python} lacks grpcio/grpcio-tools: "
                     "pip install -r scripts/requirements-bench.txt, or pass --loadgen-python")
    if "tsr_bench" in only and not a.tsr_bench:
        sys.exit("compare_batched: no tsr_bench; pass --tsr-bench")

    tmp = tempfile.mkdtemp(prefix="tessera-batched-")
    rows = []
    try:
        for n in [int(x) for x in a.threads.split(",") if x]:
            row = {"threads": n}
            if "llama" in only:
                ll, rss, other = run_json([sys.executable, os.path.abspath(__file__), "--worker",
                                    "llamacpp", "--model", a.model, "--threads", str(n),
                                    "--pp", str(a.pp), "--tg", str(a.tg), "--pl", str(a.pl),
                                    "--reps", str(a.reps), "--n-ctx", str(a.n_ctx),
                                    "--flash-attn", a.flash_attn]
                                   + (["--kv-unified"] if a.kv_unified else []), a=a)
                ll["peak_rss_mib"], ll["other_cpu"] = rss, other
                for k in ("t_pp", "t_tg", "gen_over_total", "s_tg", "s"):
                    ll[k] = med([r[k] for r in ll["reps"]])
                row["llama.cpp"] = ll
                print(f"threads {n}: llama.cpp T_PP {ll['t_pp']:.3f} s, T_TG {ll['t_tg']:.3f} s, "
                      f"S_TG {ll['s_tg']:.1f}, generated/total {ll['gen_over_total']:.1f} tok/s, "
                      f"RSS {rss:.0f} MiB, other processes {other:.2f} cores", file=sys.stderr, flush=True)
            if "tsr_bench" in only:
                tb, rss, other = run_json([a.tsr_bench, "--json", "--model", a.model, "--threads", str(n),
                                    "--batch", str(a.pl), "--decode-prompt", str(a.pp),
                                    "--gen-tokens", str(a.tg), "--prompt-tokens", str(a.pl * a.pp),
                                    "--reps", str(a.reps)], a=a)
                dec = tb["decode_tok_s"]["median"]
                pre = tb["prefill_tok_s"]["median"]
                t_tg, t_pp = a.pl * a.tg / dec, a.pl * a.pp / pre
                row["tsr_bench"] = {"raw": tb, "peak_rss_mib": rss, "other_cpu": other,
                                    "s_tg": dec, "t_tg": t_tg,
                                    "t_pp_est": t_pp, "gen_over_total_est": a.pl * a.tg / (t_pp + t_tg)}
                print(f"threads {n}: tsr_bench decode {dec:.1f} tok/s (T_TG {t_tg:.3f} s), "
                      f"pp{a.pl * a.pp} {pre:.1f} tok/s, RSS {rss:.0f} MiB, other processes {other:.2f} "
                      f"cores", file=sys.stderr,
                      flush=True)
            if "server" in only:
                for tp in ([1, 2] if a.tp2 and n >= 2 else [1]):
                    for attempt in range(a.busy_retries + 1):
                        res, rss = run_server(a, n, tp, tmp)
                        if a.max_other_cpu is None or res["other_cpu"] <= a.max_other_cpu \
                                or attempt == a.busy_retries:
                            break
                        print(f"compare_batched: other processes used {res['other_cpu']:.2f} "
                              f"cores; measuring again in {a.busy_wait:g} s", file=sys.stderr,
                              flush=True)
                        time.sleep(a.busy_wait)
                    lv = res["levels"]
                    bad = sum(x["errors"] + x["wrong_length"] for x in lv)
                    s = {"levels": lv, "peak_rss_mib": rss, "bad_requests": bad,
                         "other_cpu": res["other_cpu"],
                         "gen_over_total": med([x["tok_s"] for x in lv]),
                         "wall_s": med([x["wall_s"] for x in lv]),
                         "ttft_p50_s": med([x["ttft_p50_s"] for x in lv]),
                         "itl_p50_s": med([x["itl_p50_s"] for x in lv]),
                         "loadgen_cpu_frac": med([x["loadgen_cpu_frac"] for x in lv]),
                         "machine_busy_frac": med([x["machine_busy_frac"] for x in lv]),
                         "config": res["config"]}
                    row[f"server_tp{tp}"] = s
                    print(f"threads {n}: server tp{tp} {s['gen_over_total']:.1f} tok/s generated "
                          f"over total, TTFT p50 {s['ttft_p50_s'] * 1e3:.0f} ms, ITL p50 "
                          f"{s['itl_p50_s'] * 1e3:.1f} ms, {bad} bad requests, other processes "
                          f"{s['other_cpu']:.2f} cores",
                          file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    m = machine_info()
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores ({' '.join(m['flags'])}), {m['os']}")
    print(f"test:    {a.pl} sequences, {a.pp} prompt tokens and {a.tg} generated each; median of "
          f"{a.reps} reps; other CPU: what other processes used meanwhile, in cores\n")
    print("| threads | engine | T_PP s | T_TG s | decode tok/s (PL*TG / T_TG) | generated / total "
          "tok/s | x llama.cpp (generated / total) | peak RSS MiB | other CPU |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ll = r.get("llama.cpp")
        base = ll["gen_over_total"] if ll else None

        def x(v):
            return f"{v / base:.2f}" if base else ""
        n = r["threads"]
        if ll:
            print(f"| {n} | llama.cpp (batched-bench method) | {ll['t_pp']:.3f} | {ll['t_tg']:.3f} "
                  f"| {ll['s_tg']:.1f} | {ll['gen_over_total']:.1f} | 1.00 | {ll['peak_rss_mib']:.0f} "
                  f"| {ll['other_cpu']:.2f} |")
        if "tsr_bench" in r:
            t = r["tsr_bench"]
            print(f"| {n} | Tessera engine (tsr_bench --batch {a.pl}) | {t['t_pp_est']:.3f} est. "
                  f"| {t['t_tg']:.3f} | {t['s_tg']:.1f} | {t['gen_over_total_est']:.1f} est. "
                  f"| {x(t['gen_over_total_est'])} est. | {t['peak_rss_mib']:.0f} | {t['other_cpu']:.2f} |")
        for tp in (1, 2):
            s = r.get(f"server_tp{tp}")
            if s:
                print(f"| {n} | Tessera server, {'1 rank' if tp == 1 else '2 ranks'} "
                      f"({a.pl} gRPC streams) | | | | {s['gen_over_total']:.1f} "
                      f"| **{x(s['gen_over_total'])}** | {s['peak_rss_mib']:.0f} | {s['other_cpu']:.2f} |")
        if ll and "tsr_bench" in r:
            print(f"|  | engine decode / llama.cpp S_TG | | | "
                  f"{r['tsr_bench']['s_tg'] / ll['s_tg']:.2f} | | | | |")
    if rows and "llama.cpp" in rows[0]:
        ll = rows[0]["llama.cpp"]
        print(f"\nllama.cpp: llama-cpp-python {ll['llama_cpp_python']}, n_ctx {ll['n_ctx']}, "
              f"n_batch {ll['n_batch']}, n_ubatch {ll['n_ubatch']}, kv_unified "
              f"{ll['kv_unified']}, flash_attn {ll['flash_attn']}; {ll['system_info'].strip()}")
    for r in rows:
        for tp in (1, 2):
            s = r.get(f"server_tp{tp}")
            if s:
                print(f"server tp{tp} at {r['threads']} threads: TTFT p50 "
                      f"{s['ttft_p50_s'] * 1e3:.0f} ms, ITL p50 {s['itl_p50_s'] * 1e3:.1f} ms, "
                      f"{s['wall_s']:.2f} s per round, load generator "
                      f"{s['loadgen_cpu_frac'] * 100:.0f}% of a core, the whole machine busy "
                      f"{s['machine_busy_frac'] * 100:.0f}% (of 100% per core; server, load "
                      f"generator and anything else), {s['bad_requests']} errors or short "
                      f"requests")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "config": {k: v for k, v in vars(a).items() if k != "worker"},
                       "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
