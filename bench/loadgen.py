#!/usr/bin/env python3
"""Load generator for `tessera serve`: N concurrent streaming Generate clients.

For each concurrency level N (default 1,2,4,8,16,32,64) it runs N closed-loop
clients on one asyncio event loop (grpc.aio: one Python thread, so the load
generator stays light next to the server on a small machine). Each client sends
a request, reads its stream to the end, and sends the next, until the level's
duration has passed; requests still in flight then run to completion (their
latencies count, their tokens after the window do not). Every request is a
fixed prompt of exactly P token ids (deterministic English-like text, tokenized
once by the server and cut to P ids; 256 different prompts) with
max_tokens = G, greedy (or --temperature/--top-k/--top-p/--seed), ignore_eos =
true: every request generates exactly G tokens, and the run checks that it did.

Per request it records: TTFT (arrival of the first chunk carrying tokens minus
the send time), the inter-token latencies (gap between consecutive chunks
divided by the tokens in the later chunk: the server merges tokens that pile
up while a send is in flight), the total, and the server's own timings from
the final message. Per level it reports requests, TTFT p50/p95, ITL p50/p95,
the aggregate generated tokens/s (tokens that arrived inside the window /
window), its ratio to N = 1, and the CPU time the load generator itself used
(getrusage of this process), the server's ranks used (/proc) and everything
else on the machine used (/proc/stat), as fractions of one core. On a shared
machine, --max-other-cpu CORES measures a level again when other processes took
more than that.

    # start a server, sweep, write JSON + markdown + a plot
    .venv-bench/bin/python bench/loadgen.py --tessera build/runtime/tessera \\
        --model M --tp 2 --max-seqs 64 --ctx 256 \\
        --json out.json --markdown out.md --plot out.png
    # attach to a server that is already running
    .venv-bench/bin/python bench/loadgen.py --addr 127.0.0.1:50051 --levels 1,8,32

Dependencies: scripts/requirements-bench.txt (grpcio, grpcio-tools; matplotlib
for --plot). The stubs are generated from proto/ at run time into a temporary
directory, as the end-to-end tests do.
"""
import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:
    import grpc
    import grpc.aio  # noqa: F401
    import grpc_tools  # noqa: F401
except ImportError:
    sys.exit("loadgen: grpcio and grpcio-tools are needed: "
             "pip install -r scripts/requirements-bench.txt")

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Words for the prompts: common English, so the ids look like real text.
WORDS = ("the of and to in is was for on that with as by at from his her it an were are "
         "which this be or has had not but they one their been its new first who also two "
         "after more other year time people city world state water house river music light "
         "small large early later north south old young long great school market garden "
         "village mountain island station road bridge forest winter summer morning evening "
         "story letter window table kitchen doctor teacher farmer captain student artist "
         "written built opened carried found known called moved played taught watched").split()


# ---------------------------------------------------------------------------
# stubs, server, helpers
# ---------------------------------------------------------------------------
def gen_stubs(tmp):
    out = os.path.join(tmp, "stubs")
    os.makedirs(out, exist_ok=True)
    for sub, name in (("tessera/v1", "tessera.proto"), ("grpc/health/v1", "health.proto")):
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I",
                        os.path.join(ROOT, "proto", sub), "--python_out=" + out,
                        "--grpc_python_out=" + out, name], check=True)
    sys.path.insert(0, out)
    import tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc  # noqa: E401
    return tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def default_tessera():
    for d in ("build", "build-lg", "build-bench"):
        p = os.path.join(ROOT, d, "runtime", "tessera")
        if os.access(p, os.X_OK):
            return p
    return shutil.which("tessera")


def default_model():
    return os.path.expanduser("~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def proc_children():
    """ppid -> [pid] for every process."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid):
    kids, out, pending = proc_children(), [], [pid]
    while pending:
        p = pending.pop()
        for c in kids.get(p, []):
            out.append(c)
            pending.append(c)
    return out


def proc_cpu_s(pids):
    """utime + stime of the given processes, in seconds (gone ones count 0)."""
    tot = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        tot += int(fields[11]) + int(fields[12])
    return tot / CLK_TCK


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def sys_cpu_s():
    """(busy, steal) CPU seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    steal = v[7] if len(v) > 7 else 0
    return busy / CLK_TCK, steal / CLK_TCK


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs, q):
    """Percentile q (0..100) with linear interpolation, as numpy's default."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "grpcio": grpc.__version__}


class Server:
    """A `tessera serve` job under mpirun, or an address to attach to."""

    def __init__(self, args, tmp):
        self.proc = None
        self.log_path = None
        if args.addr:
            self.addr = args.addr
            return
        port = args.port or free_port()
        self.addr = f"127.0.0.1:{port}"
        np_ = args.np or args.tp * args.pp
        cmd = [args.tessera, "serve", "--model", args.model, "--tp", str(args.tp),
               "--pp", str(args.pp), "--port", str(port), "--max-seqs", str(args.max_seqs),
               "--ctx", str(args.ctx)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.max_batch_tokens:
            cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
        cmd += args.server_arg
        if not args.no_mpirun:
            cmd = [args.mpirun, "-np", str(np_), "--oversubscribe", "--bind-to", "none"] + cmd
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_mpi_yield_when_idle="1")
        self.log_path = args.server_log or os.path.join(tmp, "server.log")
        self.log = open(self.log_path, "w")
        print("loadgen: starting", " ".join(cmd), file=sys.stderr)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)

    def ranks(self):
        """The pids of the server's ranks (empty when attached)."""
        if not self.proc:
            return []
        name = os.path.basename(self.cmd[self.cmd.index("serve") - 1])[:15]
        if self.proc.poll() is None and proc_comm(self.proc.pid) == name:
            return [self.proc.pid]
        return [p for p in descendants(self.proc.pid) if proc_comm(p) == name]

    def alive(self):
        return self.proc is None or self.proc.poll() is None

    def stop(self):
        if not self.proc:
            return
        for p in self.ranks():
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def log_tail(self, n=3000):
        if not self.log_path:
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]


# ---------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------
def make_prompts(api, pb, n, p_tokens, metadata, seed):
    """n deterministic prompts of exactly p_tokens ids each."""
    prompts = []
    for i in range(n):
        rng = random.Random(seed * 1000003 + i)
        words = [rng.choice(WORDS) for _ in range(p_tokens * 2 + 8)]
        text = " ".join(words).capitalize() + "."
        ids = list(api.Tokenize(pb.TokenizeRequest(text=text), metadata=metadata, timeout=30).ids)
        if len(ids) < p_tokens:
            raise RuntimeError(f"prompt {i}: only {len(ids)} tokens")
        prompts.append(ids[:p_tokens])
    return prompts


# ---------------------------------------------------------------------------
# one level
# ---------------------------------------------------------------------------
SAMPLING = {}  # extra SamplingParams fields (--temperature, --top-k, --top-p)


async def one_request(stub, pb, rid, ids, g, metadata, timeout):
    req = pb.GenerateRequest(request_id=rid, tokens=pb.TokenIds(ids=ids),
                             sampling=pb.SamplingParams(max_tokens=g, ignore_eos=True,
                                                        **SAMPLING))
    rec = {"id": rid, "t_send": time.perf_counter(), "chunks": [], "final": None, "error": None}
    try:
        call = stub.Generate(req, metadata=metadata, timeout=timeout)
        async for r in call:
            now = time.perf_counter()
            which = r.WhichOneof("kind")
            if which == "chunk":
                n = len(r.chunk.token_ids)
                if n:
                    rec["chunks"].append((now, n))
            elif which == "final":
                f = r.final
                rec["final"] = {"finish": int(f.finish_reason),
                                "prompt_tokens": f.usage.prompt_tokens,
                                "completion_tokens": f.usage.completion_tokens,
                                "queued_s": f.timings.queued_s,
                                "ttft_s": f.timings.time_to_first_token_s,
                                "total_s": f.timings.total_s}
        rec["t_end"] = time.perf_counter()
    except grpc.RpcError as e:
        rec["t_end"] = time.perf_counter()
        rec["error"] = f"{e.code().name}: {e.details()}"
    return rec


async def run_level(stubs, pb, n, args, prompts, metadata, server):
    """N closed-loop clients for args.duration seconds."""
    loop_end = [0.0]
    recs = []

    async def client(ci):
        k = 0
        while True:
            if k >= 1 and time.perf_counter() >= loop_end[0]:
                break
            if args.requests_per_client and k >= args.requests_per_client:
                break
            p = prompts[(ci * 7 + k * 13 + n) % len(prompts)]
            rec = await one_request(stubs[ci % len(stubs)], pb, f"lg-n{n}-c{ci}-r{k}", p,
                                    args.gen_tokens, metadata, args.timeout)
            recs.append(rec)
            k += 1

    ranks = server.ranks()
    cpu0, srv0, (sys0, st0) = self_cpu_s(), proc_cpu_s(ranks), sys_cpu_s()
    t0 = time.perf_counter()
    loop_end[0] = t0 + (args.duration if not args.requests_per_client else 1e18)
    await asyncio.gather(*(client(i) for i in range(n)))
    t1 = time.perf_counter()
    cpu1, srv1, (sys1, st1) = self_cpu_s(), proc_cpu_s(ranks), sys_cpu_s()
    window = args.duration if not args.requests_per_client else t1 - t0
    w_end = t0 + window
    lv = summarize(n, recs, t0, t1, w_end, window, args, cpu1 - cpu0, srv1 - srv0, len(ranks))
    wall = t1 - t0
    # everything else on the machine (other jobs, mpirun's daemon, the kernel)
    lv["machine_busy_frac"] = (sys1 - sys0) / wall
    lv["steal_frac"] = (st1 - st0) / wall
    lv["other_cpu_frac"] = ((sys1 - sys0) - (cpu1 - cpu0) - (srv1 - srv0 if ranks else 0)) / wall
    lv["loadavg_end"] = os.getloadavg()[0]
    return lv


def summarize(n, recs, t0, t1, w_end, window, args, lg_cpu, srv_cpu, n_ranks):
    ok = [r for r in recs if r["error"] is None]
    errors = [r["error"] for r in recs if r["error"] is not None]
    bad_len = [r["id"] for r in ok
               if not r["final"] or r["final"]["completion_tokens"] != args.gen_tokens
               or sum(c[1] for c in r["chunks"]) != args.gen_tokens]
    ttft, itl, total, srv_ttft, queued, tpot = [], [], [], [], [], []
    tok_in_window = 0
    tok_all = 0
    chunks = 0
    for r in ok:
        cs = r["chunks"]
        if not cs:
            continue
        ttft.append(cs[0][0] - r["t_send"])
        total.append(r["t_end"] - r["t_send"])
        for (ta, _), (tb, nb) in zip(cs, cs[1:]):
            itl.extend([(tb - ta) / nb] * nb)
        ntok = sum(c[1] for c in cs)
        if ntok > 1:
            tpot.append((cs[-1][0] - cs[0][0]) / (ntok - 1))
        tok_all += ntok
        chunks += len(cs)
        tok_in_window += sum(c[1] for c in cs if c[0] <= w_end)
        if r["final"]:
            srv_ttft.append(r["final"]["ttft_s"])
            queued.append(r["final"]["queued_s"])
    wall = t1 - t0
    return {
        "n": n,
        "requests": len(ok),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wrong_length": len(bad_len),
        "window_s": window,
        "wall_s": wall,
        "tokens_in_window": tok_in_window,
        "tokens_total": tok_all,
        "tokens_per_chunk": tok_all / chunks if chunks else float("nan"),
        "tok_s": tok_in_window / window,
        "ttft_p50_s": pct(ttft, 50), "ttft_p95_s": pct(ttft, 95), "ttft_max_s": max(ttft, default=float("nan")),
        "itl_p50_s": pct(itl, 50), "itl_p95_s": pct(itl, 95),
        "tpot_mean_s": sum(tpot) / len(tpot) if tpot else float("nan"),
        "total_p50_s": pct(total, 50), "total_p95_s": pct(total, 95),
        "server_ttft_p50_s": pct(srv_ttft, 50), "server_queued_p50_s": pct(queued, 50),
        "loadgen_cpu_s": lg_cpu,
        "loadgen_cpu_frac": lg_cpu / wall,      # of one core
        "server_cpu_s": srv_cpu,
        "server_cpu_frac": srv_cpu / wall if n_ranks else float("nan"),
    }


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------
def markdown(result):
    c = result["config"]
    lines = [f"{result['label']}: P={c['prompt_tokens']} G={c['gen_tokens']}, "
             f"{'%d requests per client' % c['requests_per_client'] if c['requests_per_client'] else '%g s per level' % c['duration_s']}, "
             f"max-seqs {c['max_seqs']}, ctx {c['ctx']}",
             "",
             "| N | requests | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms | tok/s | x N=1 | loadgen CPU | server CPU | other CPU |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lv in result["levels"]:
        srv = "" if lv["server_cpu_frac"] != lv["server_cpu_frac"] else f"{lv['server_cpu_frac'] * 100:.0f}%"
        lines.append(
            f"| {lv['n']} | {lv['requests']}{' (%d err)' % lv['errors'] if lv['errors'] else ''} "
            f"| {lv['ttft_p50_s'] * 1e3:.0f} | {lv['ttft_p95_s'] * 1e3:.0f} "
            f"| {lv['itl_p50_s'] * 1e3:.1f} | {lv['itl_p95_s'] * 1e3:.1f} "
            f"| {lv['tok_s']:.1f} | {lv['ratio']:.2f} "
            f"| {lv['loadgen_cpu_frac'] * 100:.1f}% | {srv} | {lv['other_cpu_frac'] * 100:.0f}% |")
    return "\n".join(lines) + "\n"


async def amain(args, pb, pbg, hpb, hpbg, server):
    metadata = ()
    if args.auth_token_file:
        with open(args.auth_token_file) as f:
            metadata = (("authorization", "Bearer " + f.readline().strip()),)
    # health and prompts over a blocking channel
    chan = grpc.insecure_channel(server.addr)
    health = hpbg.HealthStub(chan)
    api = pbg.TesseraStub(chan)
    t0 = time.time()
    while True:
        if not server.alive():
            raise RuntimeError("the server exited:\n" + server.log_tail())
        try:
            if health.Check(hpb.HealthCheckRequest(), timeout=1).status == \
                    hpb.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        if time.time() - t0 > args.start_timeout:
            raise RuntimeError("the server never became SERVING:\n" + server.log_tail())
        time.sleep(0.1)
    print(f"loadgen: SERVING after {time.time() - t0:.1f} s", file=sys.stderr)
    mi = api.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)
    si = api.GetServerInfo(pb.GetServerInfoRequest(), metadata=metadata, timeout=10)
    prompts = make_prompts(api, pb, args.prompts, args.prompt_tokens, metadata, args.seed)
    chan.close()

    channels = [grpc.aio.insecure_channel(server.addr) for _ in range(args.channels)]
    stubs = [pbg.TesseraStub(ch) for ch in channels]
    levels = [int(x) for x in args.levels.split(",")]
    # warm-up: every KV slot and block the sweep will use is touched once
    if args.warmup:
        nw = max(levels)
        print(f"loadgen: warm-up, {nw} streams", file=sys.stderr)
        await asyncio.gather(*(one_request(stubs[i % len(stubs)], pb, f"lg-warm-{i}",
                                           prompts[i % len(prompts)], args.gen_tokens,
                                           metadata, args.timeout) for i in range(nw)))
    # admission reserves KV blocks for prompt + max_tokens: more streams than fit wait in the queue
    per_req = -(-(args.prompt_tokens + args.gen_tokens) // max(si.kv_block_size, 1))
    kv_fit = si.kv_blocks_total // per_req if per_req else 0
    if kv_fit < max(levels):
        print(f"loadgen: warning: the KV cache holds {si.kv_blocks_total} blocks of "
              f"{si.kv_block_size}, room for {kv_fit} requests of {args.prompt_tokens}+"
              f"{args.gen_tokens} positions; more streams wait in the queue "
              f"(raise the server's --kv-positions)", file=sys.stderr)
    results = []
    for n in levels:
        for attempt in range(args.busy_retries + 1):
            lv = await run_level(stubs, pb, n, args, prompts, metadata, server)
            lv["attempts"] = attempt + 1
            if args.max_other_cpu is None or lv["other_cpu_frac"] <= args.max_other_cpu \
                    or attempt == args.busy_retries:
                break
            # other jobs took CPU during the level: let them go by, then measure again
            print(f"loadgen: N={n}: other processes used {lv['other_cpu_frac'] * 100:.0f}% of a "
                  f"core; waiting {args.busy_wait:g} s and measuring again", file=sys.stderr)
            await asyncio.sleep(args.busy_wait)
        results.append(lv)
        base = results[0]["tok_s"] if results[0]["n"] == 1 else float("nan")
        lv["ratio"] = lv["tok_s"] / base
        print(f"loadgen: N={n:3d} req={lv['requests']:4d} err={lv['errors']} "
              f"ttft p50/p95 {lv['ttft_p50_s'] * 1e3:7.0f}/{lv['ttft_p95_s'] * 1e3:7.0f} ms  "
              f"itl p50/p95 {lv['itl_p50_s'] * 1e3:6.1f}/{lv['itl_p95_s'] * 1e3:6.1f} ms  "
              f"{lv['tok_s']:7.1f} tok/s (x{lv['ratio']:.2f})  "
              f"tok/chunk {lv['tokens_per_chunk']:.2f}  "
              f"loadgen cpu {lv['loadgen_cpu_frac'] * 100:4.1f}%  "
              f"server cpu {lv['server_cpu_frac'] * 100:4.0f}%  "
              f"other cpu {lv['other_cpu_frac'] * 100:4.0f}%", file=sys.stderr)
        if lv["errors"]:
            print(f"loadgen:   errors: {lv['error_samples']}", file=sys.stderr)
        if lv["wrong_length"]:
            print(f"loadgen:   {lv['wrong_length']} requests did not produce {args.gen_tokens} tokens",
                  file=sys.stderr)
    for ch in channels:
        await ch.close()
    one = [lv["tok_s"] for lv in results if lv["n"] == 1]
    for lv in results:
        lv["ratio"] = lv["tok_s"] / one[0] if one else float("nan")
    return {
        "label": args.label or f"tp{mi.tp} pp{mi.pp}",
        "config": {"prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                   "duration_s": args.duration, "requests_per_client": args.requests_per_client,
                   "levels": levels, "channels": args.channels, "max_seqs": args.max_seqs,
                   "ctx": args.ctx, "tp": mi.tp, "pp": mi.pp, "world_size": si.world_size,
                   "kv_blocks_total": si.kv_blocks_total, "kv_block_size": si.kv_block_size,
                   "kv_fits_requests": kv_fit,
                   "server_cmd": getattr(server, "cmd", None), "addr": server.addr,
                   "model_file": None if args.addr else os.path.basename(args.model)},
        "model": {"name": mi.name, "architecture": mi.architecture, "n_layer": mi.n_layer,
                  "n_embd": mi.n_embd, "vocab_size": mi.vocab_size},
        "server_version": si.version,
        "machine": machine(),
        "levels": results,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("server (started unless --addr)")
    g.add_argument("--addr", help="attach to a running server at HOST:PORT instead")
    g.add_argument("--tessera", default=default_tessera(), help="the tessera binary")
    g.add_argument("--model", default=default_model())
    g.add_argument("--tp", type=int, default=1)
    g.add_argument("--pp", type=int, default=1)
    g.add_argument("--np", type=int, default=0, help="ranks (default tp*pp)")
    g.add_argument("--max-seqs", type=int, default=64)
    g.add_argument("--ctx", type=int, default=256)
    g.add_argument("--threads", type=int, default=0, help="--threads for the server (default: its own)")
    g.add_argument("--max-batch-tokens", type=int, default=0)
    g.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable)")
    g.add_argument("--port", type=int, default=0)
    g.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    g.add_argument("--no-mpirun", action="store_true", help="run one rank without mpirun")
    g.add_argument("--server-log", help="server output file (default: a temporary file)")
    g.add_argument("--start-timeout", type=float, default=300)
    g.add_argument("--auth-token-file")
    g = ap.add_argument_group("load")
    g.add_argument("--levels", default="1,2,4,8,16,32,64", help="concurrency levels N")
    g.add_argument("--prompt-tokens", "-P", type=int, default=64)
    g.add_argument("--gen-tokens", "-G", type=int, default=32)
    g.add_argument("--duration", type=float, default=20,
                   help="seconds of load per level (the throughput window)")
    g.add_argument("--requests-per-client", type=int, default=0,
                   help="instead of --duration: this many requests per client")
    g.add_argument("--prompts", type=int, default=256, help="distinct prompts")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature of every request (0: greedy)")
    g.add_argument("--top-k", type=int, default=0, help="top_k of every request (0: off)")
    g.add_argument("--top-p", type=float, default=0.0, help="top_p of every request (0: off)")
    g.add_argument("--channels", type=int, default=1, help="gRPC channels (connections)")
    g.add_argument("--timeout", type=float, default=600, help="per-request deadline, s")
    g.add_argument("--no-warmup", dest="warmup", action="store_false")
    g.add_argument("--max-other-cpu", type=float, default=None, metavar="CORES",
                   help="on a shared machine: measure a level again when processes other than "
                        "the server and the load generator used more than this many cores")
    g.add_argument("--busy-retries", type=int, default=5)
    g.add_argument("--busy-wait", type=float, default=30, help="seconds before measuring again")
    g = ap.add_argument_group("output")
    g.add_argument("--label")
    g.add_argument("--json", help="write the results as JSON here")
    g.add_argument("--markdown", help="write the markdown table here")
    g.add_argument("--plot", help="write a PNG plot here (matplotlib)")
    args = ap.parse_args()
    if args.temperature:
        SAMPLING.update(temperature=args.temperature, seed=args.seed)
    if args.top_k:
        SAMPLING["top_k"] = args.top_k
    if args.top_p:
        SAMPLING["top_p"] = args.top_p
    if not args.addr and not (args.tessera and os.access(args.tessera, os.X_OK)):
        ap.error("no tessera binary: pass --tessera or --addr")

    tmp = tempfile.mkdtemp(prefix="tessera-loadgen-")
    pb, pbg, hpb, hpbg = gen_stubs(tmp)
    server = Server(args, tmp)
    try:
        result = asyncio.run(amain(args, pb, pbg, hpb, hpbg, server))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    md = markdown(result)
    print(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    if args.plot:
        sys.path.insert(0, HERE)
        from plot_loadgen import plot
        plot([result], args.plot)
    bad = sum(lv["errors"] + lv["wrong_length"] for lv in result["levels"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
