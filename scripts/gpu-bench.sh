#!/usr/bin/env bash
# scripts/gpu-bench.sh - the CUDA backend's benchmarks on the GPU machine, each
# next to the ceiling the same GPU measures (docs/benchmarks.md, "GPU (CUDA
# backend)"). Run from the repository root there:
#
#   LD_LIBRARY_PATH=.gpu/lib scripts/gpu-bench.sh
#   BIN=build-gpu OUT=/tmp/gpu-out MODEL=path/to/model.gguf scripts/gpu-bench.sh
#
# Steps, in order (one failing step is recorded and the others still run):
#  1. cuda_roofline --json: device-to-device copy bandwidth, bf16 cuBLASLt GEMM
#     rate at 8192^3 and at the model's step shapes;
#  2. tsr_bench --device cuda --act-dtype bf16, then f32: prefill of 512
#     tokens and decode of 128 steps at batch 1; then bf16 decode at
#     --batch 64 (BATCHES adds more sizes);
#  3. tessera serve --device cuda (one rank, no mpirun) driven by
#     bench/loadgen.py with 1 and 64 concurrent streams (P = 64, G = 32): TTFT
#     p50/p95, ITL, aggregate tokens/s;
#  4. a summary (python3, standard library) with each measurement next to its
#     roofline: decode batch 1 = bandwidth / weight bytes per token; prefill =
#     GEMM rate / (2 x matmul params) FLOPs per token.
#
# Writes $OUT/bench.json (everything, machine-readable), $OUT/bench.txt (the
# log and the table) and $OUT/server.log (the server's output during step 3).
#
# Environment:
#   BIN     folder with tsr_bench, cuda_roofline and tessera, flat (.gpu/bin,
#           the default) or a build tree (build-gpu: bench/, runtime/)
#   OUT     output folder (default /tmp/gpu-out)
#   MODEL   the .gguf (default: .gpu/models/*.gguf, then
#           ~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   GPU     CUDA device index for tsr_bench and cuda_roofline (default 0)
#   PYDIR   loadgen's message classes and protobuf, made by
#           scripts/gpu-bench-prep.sh (default .gpu/py); without it, loadgen
#           needs grpcio-tools on this machine
#   BATCHES extra decode batch sizes beyond 1 and 64, e.g. "8 16 32"
#   SERVER_ARGS  `tessera serve` flags beyond the load's (default: --device cuda;
#           empty: the CPU backend)
#   LG_DURATION  seconds per loadgen level (default 10)
#   TOTAL_S time budget of the whole script (default 225, under the 240 s that
#           scripts/gpu-test.sh gives it): each step's timeout is cut to what
#           is left, keeping 15 s for the summary; a step with no time left is
#           not run (rc 125 in the summary). About 2 minutes when all is well.
#   SKIP    steps to skip, any of: roofline bench serve
#
# Under scripts/gpu-test.sh (bench step) the libraries, the model and BIN are
# set up already; alone, set LD_LIBRARY_PATH so that .gpu/bin's programs find
# theirs (gpu-test.sh unpacks .gpu/lib.tar.gz).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

BIN=${BIN:-.gpu/bin}
OUT=${OUT:-/tmp/gpu-out}
GPU=${GPU:-0}
PYDIR=${PYDIR:-.gpu/py}
BATCHES=${BATCHES:-}
SERVER_ARGS=${SERVER_ARGS---device cuda}
LG_DURATION=${LG_DURATION:-10}
TOTAL_S=${TOTAL_S:-225}
SKIP=${SKIP:-}
deadline=$((SECONDS + TOTAL_S))

mkdir -p "$OUT"
work=$(mktemp -d /tmp/gpu-bench.XXXXXX)
txt=$OUT/bench.txt
: >"$txt"
: >"$work/steps.tsv"

log() { printf '%s\n' "$*" | tee -a "$txt"; }
skipped() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }

# A binary from BIN, flat or as a build tree.
find_bin() {
    local d
    for d in "$BIN" "$BIN/bench" "$BIN/runtime"; do
        if [ -x "$d/$1" ]; then
            printf '%s\n' "$d/$1"
            return 0
        fi
    done
    return 1
}

# run_step NAME LIMIT_S OUTFILE CMD...: stdout to OUTFILE, stderr's tail into
# bench.txt, "name rc seconds cmd" into steps.tsv. Never fails the script. The
# timeout sends $step_signal (TERM unless set), then KILL 15 s later.
run_step() {
    local name=$1 limit=$2 out=$3
    shift 3
    log ""
    local left=$((deadline - SECONDS - 15))
    if [ "$left" -lt 10 ]; then
        log "== $name: not run, the time budget (TOTAL_S=$TOTAL_S) is spent"
        printf '%s\t%s\t%s\t%s\n' "$name" 125 0 "$*" >>"$work/steps.tsv"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "== $name (timeout ${limit} s): $*"
    local t0=$SECONDS rc
    timeout -s "${step_signal:-TERM}" --kill-after=15 "$limit" "$@" >"$out" 2>"$work/$name.err"
    rc=$?
    tail -n 40 "$work/$name.err" | tee -a "$txt"
    [ "$rc" -eq 124 ] && log "   (timed out after $limit s)"
    log "   -> rc $rc in $((SECONDS - t0)) s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >>"$work/steps.tsv"
    return 0
}

log "gpu-bench: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), repo $root"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit+dirty"
fi
log "commit $commit, BIN=$BIN OUT=$OUT GPU=$GPU"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit \
        --format=csv,noheader 2>&1 | tee "$work/nvidia-smi.txt" | tee -a "$txt"
fi

model=${MODEL:-}
if [ -z "$model" ]; then
    for m in .gpu/models/SmolLM2-135M-Instruct.Q4_1.gguf .gpu/models/*.gguf \
        "$HOME/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf"; do
        if [ -f "$m" ]; then
            model=$m
            break
        fi
    done
fi
if [ -z "$model" ] || [ ! -f "$model" ]; then
    log "gpu-bench: no model (set MODEL=path.gguf); the model steps will fail"
    model=${model:-missing.gguf}
fi
log "model $model"

tsr_bench=$(find_bin tsr_bench) || log "gpu-bench: no tsr_bench in $BIN"
roofline=$(find_bin cuda_roofline) || log "gpu-bench: no cuda_roofline in $BIN"
tessera=$(find_bin tessera) || log "gpu-bench: no tessera in $BIN"
for b in ${tsr_bench:-} ${roofline:-} ${tessera:-}; do
    if ldd "$b" 2>/dev/null | grep -q "not found"; then
        log "gpu-bench: $b lacks libraries ($(ldd "$b" | awk '/not found/ {print $1}' | tr '\n' ' '));" \
            "set LD_LIBRARY_PATH (scripts/gpu-test.sh bench does)"
    fi
done

# ---- 1. roofline ----
if ! skipped roofline; then
    run_step roofline 90 "$work/roofline.json" "${roofline:-cuda_roofline}" --gpu "$GPU" --json
fi

# ---- 2. tsr_bench on CUDA ----
if ! skipped bench; then
    bench() { # NAME ACT BATCH
        run_step "bench_$1" 90 "$work/bench_$1.json" "${tsr_bench:-tsr_bench}" --model "$model" \
            --device cuda --gpu "$GPU" --act-dtype "$2" --batch "$3" \
            --prompt-tokens 512 --gen-tokens 128 --reps 3 --json
    }
    bench bf16_b1 bf16 1
    bench f32_b1 f32 1
    bench bf16_b64 bf16 64
    for b in $BATCHES; do
        bench "bf16_b$b" bf16 "$b"
    done
fi

# ---- 3. serving: TTFT, ITL, aggregate tokens/s under 1 and 64 streams ----
# loadgen.py imports grpc_tools and generates its stubs at run time; this
# driver gives it the message classes from PYDIR and hand-written stubs
# instead when PYDIR has them (scripts/gpu-bench-prep.sh), so only grpcio is
# needed here.
if ! skipped serve; then
    server_args=()
    for a in $SERVER_ARGS; do
        server_args+=("--server-arg=$a")
    done
    # one rank without mpirun: a singleton MPI process that starts no daemon
    export OMPI_MCA_ess_singleton_isolated=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export TSR_PYDIR=$PYDIR
    # SIGINT on timeout: loadgen then stops the server it started (its finally)
    step_signal=INT run_step serve 180 "$work/loadgen.out" python3 - \
        --tessera "${tessera:-tessera}" --model "$model" --no-mpirun --max-seqs 64 --ctx 256 \
        --levels 1,64 -P 64 -G 32 --duration "$LG_DURATION" --start-timeout 90 \
        --server-log "$OUT/server.log" --json "$work/loadgen.json" --label "cuda tp1" \
        ${server_args[@]+"${server_args[@]}"} <<'PY'
import os
import sys
import types

root = os.getcwd()
pydir = os.path.abspath(os.environ.get("TSR_PYDIR", ".gpu/py"))
have_stubs = os.path.isfile(os.path.join(pydir, "tessera_pb2.py"))
if have_stubs:
    sys.path.insert(0, pydir)
try:
    import grpc_tools  # noqa: F401
except ImportError:
    if not have_stubs:
        sys.exit(f"gpu-bench: neither grpcio-tools nor {pydir}/tessera_pb2.py here; "
                 "run scripts/gpu-bench-prep.sh before packing")
    sys.modules["grpc_tools"] = types.ModuleType("grpc_tools")  # loadgen only checks the import
sys.path.insert(0, os.path.join(root, "bench"))
import loadgen  # noqa: E402


def gen_stubs(tmp):
    import tessera_pb2 as pb
    import health_pb2 as hpb

    def unary(ch, method, req, resp):
        return ch.unary_unary(method, request_serializer=req.SerializeToString,
                              response_deserializer=resp.FromString)

    class TesseraStub:
        def __init__(self, ch):
            svc = "/tessera.v1.Tessera/"
            self.Generate = ch.unary_stream(svc + "Generate",
                                            request_serializer=pb.GenerateRequest.SerializeToString,
                                            response_deserializer=pb.GenerateResponse.FromString)
            self.Tokenize = unary(ch, svc + "Tokenize", pb.TokenizeRequest, pb.TokenizeResponse)
            self.Detokenize = unary(ch, svc + "Detokenize", pb.DetokenizeRequest,
                                    pb.DetokenizeResponse)
            self.GetModelInfo = unary(ch, svc + "GetModelInfo", pb.GetModelInfoRequest, pb.ModelInfo)
            self.GetServerInfo = unary(ch, svc + "GetServerInfo", pb.GetServerInfoRequest,
                                       pb.ServerInfo)
            self.Abort = unary(ch, svc + "Abort", pb.AbortRequest, pb.AbortResponse)

    class HealthStub:
        def __init__(self, ch):
            self.Check = unary(ch, "/grpc.health.v1.Health/Check", hpb.HealthCheckRequest,
                               hpb.HealthCheckResponse)

    return (pb, types.SimpleNamespace(TesseraStub=TesseraStub), hpb,
            types.SimpleNamespace(HealthStub=HealthStub))


if have_stubs:
    loadgen.gen_stubs = gen_stubs
sys.argv = ["loadgen.py"] + sys.argv[1:]
sys.exit(loadgen.main())
PY
fi

# ---- 4. summary ----
log ""
log "== summary"
python3 - "$work" "$OUT/bench.json" "$model" "$commit" >>"$work/summary.txt" 2>&1 <<'PY'
import glob
import json
import os
import sys

work, out_json, model, commit = sys.argv[1:5]


def load(name):
    p = os.path.join(work, name)
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"{name}: {e}"}


steps = []
with open(os.path.join(work, "steps.tsv")) as f:
    for line in f:
        name, rc, secs, cmd = line.rstrip("\n").split("\t", 3)
        steps.append({"name": name, "rc": int(rc), "seconds": int(secs), "cmd": cmd})
roof = load("roofline.json")
benches = {os.path.basename(p)[6:-5]: load(os.path.basename(p))
           for p in glob.glob(os.path.join(work, "bench_*.json"))}
# batch 1 first, bf16 before f32, then the larger batches
benches = dict(sorted(benches.items(), key=lambda kv: (kv[1].get("batch", 0),
                                                      kv[1].get("act_dtype") != "bf16", kv[0])))
lg = load("loadgen.json")
smi = ""
if os.path.exists(os.path.join(work, "nvidia-smi.txt")):
    with open(os.path.join(work, "nvidia-smi.txt")) as f:
        smi = f.read().strip()

bw = roof.get("bandwidth", {}).get("gbs")            # GB/s, read + write
peak = roof.get("gemm_peak", {}).get("tflops")       # TFLOP/s, bf16 8192^3
step_gemm = {s["m"]: s for s in roof.get("step_gemm", [])}
rows = []


def row(test, measured, unit, roofline, basis):
    pct = 100.0 * measured / roofline if measured and roofline else None
    rows.append({"test": test, "measured": measured, "unit": unit, "roofline": roofline,
                 "pct_of_roofline": pct, "basis": basis})


def med(b, key):
    v = b.get(key)
    return v.get("median") if isinstance(v, dict) else v


for name, b in benches.items():
    if "error" in b:
        rows.append({"test": name, "error": b["error"]})
        continue
    act, batch = b.get("act_dtype", "?"), b.get("batch", 1)
    wpt, params = b.get("weight_bytes_per_token"), b.get("matmul_params")
    p, g = b.get("prompt_tokens"), b.get("gen_tokens")
    if batch == 1:
        pp = med(b, "prefill_tok_s")
        row(f"prefill {p} tok, act {act}", pp, "tok/s",
            peak * 1e12 / (2 * params) if peak and params else None,
            "bf16 GEMM peak (8192^3) / (2 x matmul params) FLOPs per token")
        sg = step_gemm.get(512)
        if sg and p == 512:
            row(f"prefill {p} tok, act {act}", pp, "tok/s", sg.get("tok_s_graph"),
                "the step's cuBLASLt GEMMs at m=512, CUDA graph (no attention)")
        row(f"decode b1 {g} steps, act {act}", med(b, "decode_tok_s"), "tok/s",
            bw * 1e9 / wpt if bw and wpt else None,
            f"bandwidth / {wpt / 2**20:.1f} MiB of {b.get('weight_dtype')} weights per token"
            if wpt else "bandwidth / weight bytes per token")
        sg = step_gemm.get(1)
        if sg:
            row(f"decode b1 {g} steps, act {act}", med(b, "decode_tok_s"), "tok/s", sg["tok_s"],
                "the step's cuBLASLt GEMMs at m=1, launched back to back")
            row(f"decode b1 {g} steps, act {act}", med(b, "decode_tok_s"), "tok/s",
                sg.get("tok_s_graph"), "the step's cuBLASLt GEMMs at m=1, CUDA graph")
    else:
        agg = med(b, "decode_tok_s")
        lim_bw = batch * bw * 1e9 / wpt if bw and wpt else None
        lim_fl = peak * 1e12 / (2 * params) if peak and params else None
        lims = [x for x in (lim_bw, lim_fl) if x]
        row(f"decode b{batch} {g} steps, act {act} (aggregate)", agg, "tok/s",
            min(lims) if lims else None,
            "min(batch x bandwidth / weight bytes, GEMM peak / 2 x params)")
        sg = step_gemm.get(batch)
        if sg:
            row(f"decode b{batch} {g} steps, act {act} (aggregate)", agg, "tok/s", sg["tok_s"],
                f"the step's cuBLASLt GEMMs at m={batch}, launched back to back")
            row(f"decode b{batch} {g} steps, act {act} (aggregate)", agg, "tok/s",
                sg.get("tok_s_graph"), f"the step's cuBLASLt GEMMs at m={batch}, CUDA graph")
    rows.append({"test": f"  step time b{batch}, act {act}", "measured": med(b, "decode_step_ms"),
                 "unit": "ms", "roofline": None, "pct_of_roofline": None, "basis": ""})

serving = []
if "levels" in lg:
    ref = benches.get("bf16_b1", {})
    for lv in lg["levels"]:
        serving.append({k: lv.get(k) for k in ("n", "requests", "errors", "wrong_length",
                                                "ttft_p50_s", "ttft_p95_s", "itl_p50_s",
                                                "itl_p95_s", "tok_s", "server_ttft_p50_s")})

summary = {"schema": "tessera-gpu-bench/1", "commit": commit, "model": model,
           "nvidia_smi": smi, "steps": steps, "roofline": roof, "tsr_bench": benches,
           "loadgen": lg, "summary": rows, "serving": serving}
with open(out_json, "w") as f:
    json.dump(summary, f, indent=1)


def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


dev = roof.get("device", {})
print(f"GPU: {dev.get('name', '?')} (sm {dev.get('sm', '?')}); "
      f"copy bandwidth {fmt(bw)} GB/s (read+write), bf16 GEMM {fmt(peak)} TFLOP/s at 8192^3")
print()
print(f"{'test':<44} {'measured':>12} {'unit':<6} {'roofline':>12} {'%':>6}  basis")
for r in rows:
    if "error" in r:
        print(f"{r['test']:<44} failed: {r['error']}")
        continue
    print(f"{r['test']:<44} {fmt(r['measured'], 2):>12} {r['unit']:<6} {fmt(r['roofline']):>12} "
          f"{fmt(r['pct_of_roofline']):>6}  {r['basis']}")
print()
if serving:
    c = lg.get("config", {})
    print(f"serving (tessera serve, one rank; P={c.get('prompt_tokens')} G={c.get('gen_tokens')}, "
          f"{c.get('duration_s')} s per level)")
    print(f"{'N':>4} {'req':>5} {'err':>4} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} "
          f"{'ITL p50 ms':>11} {'ITL p95 ms':>11} {'tok/s':>9}")
    for s in serving:
        ms = lambda k: fmt(s[k] * 1e3 if s[k] is not None else None)  # noqa: E731
        print(f"{s['n']:>4} {s['requests']:>5} {s['errors'] + s['wrong_length']:>4} "
              f"{ms('ttft_p50_s'):>12} {ms('ttft_p95_s'):>12} {ms('itl_p50_s'):>11} "
              f"{ms('itl_p95_s'):>11} {fmt(s['tok_s']):>9}")
    b1 = benches.get("bf16_b1", {})
    b64 = benches.get("bf16_b64", {})
    if med(b1, "decode_step_ms"):
        print(f"reference: tsr_bench decode step at batch 1 {fmt(med(b1, 'decode_step_ms'), 2)} ms "
              f"(ITL floor), aggregate decode at batch 64 {fmt(med(b64, 'decode_tok_s'))} tok/s "
              f"(no prompts, no serving layer)")
else:
    print(f"serving: no results ({lg.get('error', 'loadgen did not finish')})")
failed = [s for s in steps if s["rc"] != 0]
if failed:
    print()
    print("failed steps: " + ", ".join(f"{s['name']} (rc {s['rc']})" for s in failed))
PY
tee -a "$txt" <"$work/summary.txt"
log ""
log "gpu-bench: wrote $OUT/bench.json, $OUT/bench.txt, $OUT/server.log"
rm -rf "$work"
