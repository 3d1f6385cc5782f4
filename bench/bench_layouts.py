#!/usr/bin/env python3
"""bench/bench_layouts.py - tsr_bench_dist over tensor- and pipeline-parallel layouts.

For each (tp, pp) layout it runs, one after the other under mpirun with tp*pp ranks:
  * tsr_bench_dist at batch 1: prefill of P ids in one step, then G decode steps;
  * tsr_bench_dist at each further batch (default 8): G decode steps of B tokens
    (one per sequence), prefill skipped (--prompt-tokens 0);
and prints one markdown table (or, with --json, one JSON object holding every
run's own JSON report). RSS columns come from the batch-1 run: the largest rank's
peak RSS and the sum over ranks.

  python3 bench/bench_layouts.py [--bench build-bench/bench/tsr_bench_dist]
      [--model M] [--layouts 1x1,2x1,3x1,1x2,1x3,2x2,3x2] [--batches 1,8]
      [--prompt-tokens 256] [--gen-tokens 64] [--reps 3] [--threads N]
      [--bench-args '--micro-batches 1'] [--busy-poll] [--json]
  python3 bench/bench_layouts.py --from-json RESULTS.json   # the tables of a saved --json run

Environment given to mpirun: OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1 and
OMPI_MCA_mpi_yield_when_idle=1 (=0 with --busy-poll): Open MPI's blocking calls
then sched_yield() between polls, so that a rank waiting for a message gives its
core to a rank that is computing when there are more ranks than cores (Open MPI
4.1 does this by itself once a node has more ranks than slots; the variable makes
it explicit). mpirun gets --oversubscribe --bind-to none. A layout is
"oversubscribed" when a host has more ranks than online cores (as tsr_bench_dist
reports it).

Each run first waits (up to --max-wait s) for a second in which other processes
use under --noise of the CPU, and is repeated (up to --retries times) when other
processes used more than that while it ran (from /proc/stat less this run's own
CPU time); the quietest attempt is kept and still-noisy cells are marked.

What it is not: a correctness test (tests/dist/test_layouts.py is), nor part of
the tests or CI. Plain python3, standard library only.
"""
import argparse
import glob
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(
    os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
DEFAULT_LAYOUTS = "1x1,2x1,3x1,1x2,1x3,2x2,3x2"


def find_bench():
    """The newest tsr_bench_dist under ROOT/build*/bench/, or None."""
    found = glob.glob(os.path.join(ROOT, "build*", "bench", "tsr_bench_dist"))
    found = [p for p in found if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def parse_layouts(s):
    out = []
    for item in s.split(","):
        tp, _, pp = item.strip().partition("x")
        if not tp.isdigit() or not pp.isdigit() or int(tp) < 1 or int(pp) < 1:
            raise argparse.ArgumentTypeError(f"layout '{item}' is not TPxPP, e.g. 2x1")
        out.append((int(tp), int(pp)))
    return out


def parse_batches(s):
    try:
        out = [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batches expects integers, got '{s}'")
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("--batches expects integers >= 1")
    return out


def machine():
    info = {"cores": os.cpu_count(), "cpu": "?", "python": platform.python_version(),
            "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_busy_s():
    """Seconds of CPU time all processes have used since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_quiet(a):
    """Waits (up to --max-wait s) until other processes use less than
    --noise of the machine's CPU over one second; returns that fraction."""
    cores, t_end, frac = os.cpu_count() or 1, time.time() + a.max_wait, 1.0
    while True:
        b0, t0 = cpu_busy_s(), time.time()
        time.sleep(1.0)
        frac = (cpu_busy_s() - b0) / ((time.time() - t0) * cores)
        if frac < a.noise or time.time() > t_end:
            return frac
        time.sleep(2.0)


def run_once(a, env, tp, pp, batch):
    """Runs tsr_bench_dist once; returns its JSON object (plus wall time and the
    share of the machine's CPU that other processes used meanwhile), or
    {'error': ...}."""
    cmd = [a.mpirun, "-np", str(tp * pp), "--oversubscribe", "--bind-to", "none", a.bench,
           "--model", a.model, "--tp", str(tp), "--pp", str(pp), "--batch", str(batch),
           "--prompt-tokens", str(a.prompt_tokens if batch == a.batches[0] else 0),
           "--gen-tokens", str(a.gen_tokens), "--reps", str(a.reps), "--json"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    cmd += shlex.split(a.bench_args)
    idle_before = wait_quiet(a) if a.noise < 1 else None
    busy0, child0, t0 = cpu_busy_s(), children_cpu_s(), time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {a.timeout} s", "cmd": cmd}
    wall = time.time() - t0
    # CPU seconds used by everything but this run (mpirun and its ranks are
    # waited-for descendants, so RUSAGE_CHILDREN counts them)
    foreign = (cpu_busy_s() - busy0) - (children_cpu_s() - child0)
    if r.returncode != 0:
        return {"error": f"exit {r.returncode}: stderr {r.stderr.strip()[-2000:]!r} "
                         f"stdout {r.stdout.strip()[-500:]!r}", "cmd": cmd}
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no JSON on stdout: {r.stdout[-500:]!r}", "cmd": cmd}
    out["wall_s"] = round(wall, 2)
    out["foreign_cpu_frac"] = round(max(foreign, 0.0) / (wall * (os.cpu_count() or 1)), 3)
    out["foreign_cpu_frac_before"] = None if idle_before is None else round(idle_before, 3)
    return out


def run_one(a, env, tp, pp, batch):
    """run_once, repeated (up to --retries more times) while other processes
    took more than --noise of the CPU or the run failed; keeps the quietest."""
    best = None
    for attempt in range(a.retries + 1):
        r = run_once(a, env, tp, pp, batch)
        r["attempts"] = attempt + 1
        if "error" not in r and (best is None or "error" in best
                                 or r["foreign_cpu_frac"] < best["foreign_cpu_frac"]):
            best = r
        elif best is None:
            best = r
        if attempt == a.retries or ("error" not in best and best["foreign_cpu_frac"] < a.noise):
            break
        print(f"(retry: {r.get('error') or 'other processes used %.0f%% of the CPU' % (100 * r['foreign_cpu_frac'])})",
              end=" ", file=sys.stderr, flush=True)
    best["attempts"] = attempt + 1
    return best


def noisy(a, r):
    return "error" not in r and r.get("foreign_cpu_frac", 0) >= a.noise


def rate(s):
    """'median [min-max]' of a tsr_bench_dist series, or '-'."""
    if not s:
        return "-"
    return f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"


def table(a, results):
    """The markdown tables: rates and memory, then the communication detail."""
    b1 = a.batches[0]
    head = ["layout", "ranks", "oversubscribed?", "threads/rank", f"prefill tok/s (pp{a.prompt_tokens})"]
    head += [f"decode tok/s b={b}" for b in a.batches]
    head += ["max per-rank peak RSS MiB", "sum peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---:|---|---:|" + "---:|" * (len(head) - 4)]
    for tp, pp in a.layouts:
        runs = results[(tp, pp)]
        first = runs.get(b1, {})
        ok = next((r for r in runs.values() if "error" not in r), None)
        over = ("**yes**" if ok["oversubscribed"] else "no") if ok else "?"
        mark = lambda r: " †" if noisy(a, r) else ""  # noqa: E731
        row = [f"tp={tp} pp={pp}", str(tp * pp), over, str(ok["threads"]) if ok else "?",
               rate(first.get("prefill_tok_s")) + mark(first) if "error" not in first else "failed"]
        for b in a.batches:
            r = runs.get(b, {})
            row.append("failed" if "error" in r else rate(r.get("decode_tok_s")) + mark(r))
        if "error" in first:
            row += ["-", "-"]
        else:
            row += [f"{first['max_peak_rss_mib']:.0f}", f"{first['sum_peak_rss_mib']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    if any(noisy(a, r) for runs in results.values() for r in runs.values()):
        lines.append(f"\n† other processes used at least {100 * a.noise:.0f}% of the machine's CPU "
                     "during this run (after retries): read it as a lower bound.")

    bl = a.batches[-1]
    bs = f"b={b1} / b={bl}" if bl != b1 else f"b={b1}"
    lines += ["", f"| layout | f32 weights per rank MiB | end RSS per rank MiB | load s | "
              f"TP all-reduce us ({bs}) | PP send us ({bs}) | "
              f"decode ms/step b={b1} |",
              "|---|---|---|---:|---:|---:|---:|"]
    for tp, pp in a.layouts:
        runs = results[(tp, pp)]
        first, last = runs.get(b1, {}), runs.get(a.batches[-1], {})
        if "error" in first:
            lines.append(f"| tp={tp} pp={pp} | failed | | | | | |")
            continue

        def us(key):
            x, y = first.get(key), last.get(key) if "error" not in last else None
            if x is None:
                return "-"
            return f"{x:.1f} / {y:.1f}" if y is not None and bl != b1 else f"{x:.1f}"

        wts = " ".join(f"{w:.0f}" for w in first["weight_mib_f32"])
        end = " ".join(f"{w:.0f}" for w in first["end_rss_mib"])
        lines.append(f"| tp={tp} pp={pp} | {wts} | {end} | {first['load_s']:.2f} | "
                     f"{us('tp_allreduce_us')} | {us('pp_send_us')} | {first['decode_step_ms']:.1f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", default=find_bench(), help="tsr_bench_dist binary (default: newest build*/bench/)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--mpirun", default="mpirun")
    p.add_argument("--layouts", type=parse_layouts, default=parse_layouts(DEFAULT_LAYOUTS),
                   help=f"comma-separated TPxPP (default {DEFAULT_LAYOUTS})")
    p.add_argument("--batches", type=parse_batches, default=[1, 8],
                   help="decode batch sizes; prefill is measured with the first (default 1,8)")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="per rank (default: tsr_bench_dist's)")
    p.add_argument("--bench-args", default="",
                   help="more tsr_bench_dist options for every run, e.g. '--micro-batches 1'")
    p.add_argument("--timeout", type=int, default=900, help="seconds per run")
    p.add_argument("--noise", type=float, default=0.10,
                   help="a run is noisy when other processes used this share of all cores "
                        "meanwhile; each run first waits for such a quiet second (default 0.10; "
                        "1 turns both off)")
    p.add_argument("--retries", type=int, default=2, help="reruns of a noisy or failed run (default 2)")
    p.add_argument("--max-wait", type=float, default=300, help="seconds to wait for a quiet machine")
    p.add_argument("--busy-poll", action="store_true",
                   help="OMPI_MCA_mpi_yield_when_idle=0: Open MPI polls without yielding")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--from-json", metavar="FILE", help="print the tables of a saved --json run")
    a = p.parse_args()
    if a.from_json:
        return print_saved(a.from_json)
    if not a.bench or not os.access(a.bench, os.X_OK):
        p.error("tsr_bench_dist not found: build it (cmake --build BUILD --target tsr_bench_dist) "
                "or pass --bench")
    if not os.path.exists(a.model):
        p.error(f"model not found: {a.model} (scripts/fetch-model.sh)")

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # Open MPI 4.1 already yields when a node has more ranks than slots; --busy-poll
    # turns that off explicitly, to show what yielding is worth
    env["OMPI_MCA_mpi_yield_when_idle"] = "0" if a.busy_poll else "1"

    results, failed = {}, 0
    for tp, pp in a.layouts:
        results[(tp, pp)] = {}
        for b in a.batches:
            print(f"tp={tp} pp={pp} batch={b} ...", end=" ", file=sys.stderr, flush=True)
            r = run_one(a, env, tp, pp, b)
            results[(tp, pp)][b] = r
            if "error" in r:
                failed += 1
                print(f"FAILED: {r['error']}", file=sys.stderr)
            else:
                print(f"decode {r['decode_tok_s']['median']:.1f} tok/s ({r['wall_s']:.0f} s)",
                      file=sys.stderr)

    out = {
        "machine": machine(),
        "bench": a.bench,
        "model": a.model,
        "yield_when_idle": not a.busy_poll,
        "prompt_tokens": a.prompt_tokens,
        "gen_tokens": a.gen_tokens,
        "reps": a.reps,
        "batches": a.batches,
        "bench_args": a.bench_args,
        "noise": a.noise,
        "runs": [dict(r, tp=tp, pp=pp, batch=b)
                 for (tp, pp), runs in results.items() for b, r in runs.items()],
    }
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print_report(out, a.layouts, results)
    return 1 if failed else 0


def print_report(out, layouts, results):
    m = out["machine"]
    print(f"{m['cpu']}, {m['cores']} cores; OMPI_MCA_mpi_yield_when_idle="
          f"{'1' if out['yield_when_idle'] else '0 (busy polling)'}; pp{out['prompt_tokens']} "
          f"at batch {out['batches'][0]}, tg{out['gen_tokens']}, median [min-max] of "
          f"{out['reps']} reps\n")
    a = argparse.Namespace(layouts=layouts, batches=out["batches"],
                           prompt_tokens=out["prompt_tokens"], noise=out.get("noise", 1.0))
    print(table(a, results))


def print_saved(path):
    """The tables of a JSON object written by --json."""
    with open(path) as f:
        out = json.load(f)
    layouts, results = [], {}
    for r in out["runs"]:
        key = (r["tp"], r["pp"])
        if key not in results:
            layouts.append(key)
            results[key] = {}
        results[key][r["batch"]] = r
    print_report(out, layouts, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
