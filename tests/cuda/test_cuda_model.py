#!/usr/bin/env python3
"""The default model on the CUDA backend against the CPU backend, and the CUDA
backend under mpirun (tensor and pipeline parallel on one GPU, NCCL with two).

Two kinds of comparison, each for every run below:

 * Perplexity (teacher-forced, `tessera perplexity --ctx 128` over a fixed
   text of ~990 tokens): every position's logits count and no earlier choice
   steers later ones, so this is the gate for numerical agreement. Limits on
   |ppl - ppl_ref| / ppl_ref are in PPL_LIMIT.
 * Greedy generation of 32 tokens (--temperature 0 is the default,
   --ignore-eos so every run makes all 32) on 4 prompts, compared as text.

  run           flags                               reference     ppl    greedy
  cuda ref      --device cuda --act-dtype f32       cpu           1e-5   exact (32 tokens)
                --weight-dtype f32
  cuda f32      --device cuda --act-dtype f32       cpu           1e-3   first 4 tokens
  cuda bf16     --device cuda --act-dtype bf16      cpu           1e-2   first 4 tokens
  tp2 mpi       mpirun -np 2 ... --tp 2, each mode  cuda, same    ref 1e-5 exact;
                                                    mode          f32 2e-3, bf16 1e-2,
                                                                  first 4 tokens
  pp2 mpi       mpirun -np 2 ... --pp 2, each mode  cuda, same    1e-4 (ref 1e-5), exact
  tp2 nccl      as tp2 mpi with --comm nccl         as tp2 mpi    (>= 2 GPUs only)

Two ranks under --comm mpi share the one GPU, their activations staged
through the host.

The reference-precision mode ("ref": f32 weights, f32 activations, full f32
GEMMs) computes what the CPU computes, up to f32 summation order, so its
greedy tokens must equal the CPU's for all 32 tokens of every prompt. This is
the check that the GPU path is the same model.

Why greedy text may part from the CPU's in the bf16-weight modes: the CUDA
backend then keeps weights in bf16 (the CPU in f32) and its GEMMs run on bf16
inputs with f32 accumulation in both activation types, so its logits differ
from the CPU's by ~1e-3 relative (test_cuda_ops measures it). Greedy decoding
takes the argmax; where the two best tokens are that close (a near tie: "a
wise old wizard" vs "a wise old woman"), the runs pick different tokens and
the texts differ from there on. That is expected, not a bug, and can happen
at any step; a real bug (a wrong kernel, a wrong layout) garbles the first
tokens and moves the perplexity. So in those modes the greedy check only
requires the first 4 tokens to agree (on an H100 the first differences came
at tokens 5, 9 and 24), reports where each text parts, and leaves the
precise verdict to the perplexity. The same holds for tp=2 (see PPL_LIMIT's
comment: the bf16 rounding of GEMM inputs turns tiny reorderings into
bf16-sized differences); pp=2 runs the very same arithmetic as one rank and
must match exactly in every mode.

Generated token ids are not printed by `tessera generate`, so outputs are
compared as text (exactly), and "token index of the first difference" is the
length of the common prefix of `tessera tokenize` of the two texts
(re-tokenized text: the usual token boundaries, not necessarily the sampled
ones).

Skips (exit 77) when the model file is missing, or when `tessera generate
--device cuda` says there is no CUDA device or backend (or the binary has no
--device option yet). Only the standard library: this runs with the system
python3 on GPU machines without the test venv.

usage: test_cuda_model.py [TESSERA [MPIEXEC]]
  TESSERA  the tessera binary (default: $TESSERA_BIN, else build/runtime/tessera)
  MPIEXEC  mpirun (default: $MPIEXEC, else mpirun on PATH)
environment:
  TESSERA_MODEL      the model file (default: $TESSERA_MODELS or
                     ~/.cache/tessera/models, + SmolLM2-135M-Instruct.Q4_1.gguf)
  TSR_GPU_COUNT      GPUs on this machine (default: lines of `nvidia-smi -L`)
  TSR_TEST_TIMEOUT   seconds per tessera run (default 300)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
import check  # noqa: E402
from check import SKIP, fail  # noqa: E402

MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_TOKENS = 32  # greedy tokens per prompt
MIN_SAME = 4     # tokens that must agree where a near tie may part the texts
PPL_CTX = 128    # perplexity window

# Measured on an H100 (2026-11-25): cuda f32 vs cpu 5.8e-6, cuda bf16 vs cpu
# 2.2e-3, tp2 bf16 vs cuda bf16 3.5e-4, tp2 f32 vs cuda f32 4.5e-4, pp2 0
# (identical) in both types. tp2 moves f32 sums only by ~1e-7, but the GEMMs
# take bf16 inputs even with f32 activations: a 1e-7 change flips the bf16
# rounding of a few inputs, each by 2^-9, so any two layouts differ at the
# level of bf16 input rounding. The reference-precision mode (f32 weights,
# full f32 GEMMs) has no such step and must agree with the CPU and across
# layouts to f32 round-off.
PPL_LIMIT = {"cuda ref": 1e-5, "cuda f32": 1e-3, "cuda bf16": 1e-2,
             "tp2 ref": 1e-5, "tp2 f32": 2e-3, "tp2 bf16": 1e-2,
             "pp2 ref": 1e-5, "pp2 f32": 1e-4, "pp2 bf16": 1e-4}

# The CPU reference: f32 weights and an f32 KV cache (the CPU's defaults, the
# file's quantized blocks and an f16 cache, round where CUDA does not).
CPU_REF = ["--device", "cpu", "--weight-dtype", "f32", "--kv-dtype", "f32"]

# The CUDA modes: activations f32 or bf16 over bf16 weights, and "ref", the
# reference-precision mode (f32 weights and activations, full f32 GEMMs).
MODES = {"ref": ["--act-dtype", "f32", "--weight-dtype", "f32"],
         "f32": ["--act-dtype", "f32"],
         "bf16": ["--act-dtype", "bf16"]}

# Varied prose (repetitive text has a perplexity near 1, where nothing shows).
PPL_TEXT = """The lighthouse keeper of Skerry Point kept a logbook for forty-one years. \
Every evening he wrote the wind, the state of the sea, the ships that passed, and one \
sentence about something he had noticed that day: a seal asleep on the slipway, the \
smell of rain arriving before the rain, a letter from his sister in Glasgow.

When the light was automated in 1987 the logbooks went to the county archive, where \
they sat in three cardboard boxes until a graduate student looking for storm records \
opened the first one. She found the weather she wanted, but she also found the \
sentences, and she began to copy them into a notebook of her own.

Photosynthesis converts light energy into chemical energy. In the light-dependent \
reactions, water is split and oxygen is released, while ATP and NADPH carry energy to \
the Calvin cycle, which fixes carbon dioxide into three-carbon sugars. The enzyme that \
performs the fixation, RuBisCO, is probably the most abundant protein on Earth.

To make a simple tomato sauce, warm olive oil in a wide pan, add two sliced cloves of \
garlic and let them turn golden at the edges. Pour in a can of whole tomatoes, crush \
them with a wooden spoon, season with salt, and simmer for twenty minutes, stirring \
now and then, until the sauce is thick enough to coat the back of the spoon.

The committee met on Tuesday to discuss the budget for the coming year. Several members \
argued that the library's opening hours should be extended on weekends, while others \
pointed out that the heating system needed repairs before the winter. In the end they \
agreed to postpone the decision until the engineer's report arrived.

def merge_sorted(a, b):
    result = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            result.append(a[i])
            i += 1
        else:
            result.append(b[j])
            j += 1
    return result + a[i:] + b[j:]

Mount Erebus, on Ross Island in Antarctica, is the southernmost active volcano on \
Earth. Its summit crater holds one of the few long-lived lava lakes in the world, and \
the gases it releases form crystals that the wind carries across the surrounding ice.
"""

PROMPTS = [
    ["--prompt", "The capital of France is"],
    ["--prompt", "Once upon a time, in a small village by the sea,"],
    ["--chat", "Write a haiku about graphics cards."],
    ["--prompt", "def fibonacci(n):\n"],
]

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1")
TIMEOUT = int(os.environ.get("TSR_TEST_TIMEOUT", "300"))
NO_CUDA = re.compile(r"\bno (usable )?cuda\b|cuda driver version is insufficient", re.I)


def skip(msg):
    check.skip(msg, prefix="skipped: ")


def model_path():
    m = os.environ.get("TESSERA_MODEL")
    if not m:
        root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
        m = os.path.join(root, MODEL_NAME)
    if not os.path.isfile(m):
        skip(f"model not found at {m} (scripts/fetch-model.sh, or set TESSERA_MODEL)")
    return m


def gpu_count():
    if os.environ.get("TSR_GPU_COUNT"):
        return int(os.environ["TSR_GPU_COUNT"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return sum(1 for line in r.stdout.splitlines() if line.startswith("GPU "))


class Runner:
    def __init__(self, tessera, mpiexec, model):
        self.tessera, self.mpiexec, self.model = tessera, mpiexec, model

    def cmd(self, prompt, extra, ranks=1):
        c = [self.tessera, "generate", "--model", self.model, *prompt,
             "--max-tokens", str(MAX_TOKENS), "--ignore-eos", *extra]
        if ranks > 1:
            c = [self.mpiexec, "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + c
        return c

    def run(self, cmd):
        t0 = time.time()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=TIMEOUT,
                               stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            fail(f"timed out after {TIMEOUT} s: {' '.join(cmd)}")
        return r, time.time() - t0

    def generate(self, prompt, extra, ranks=1):
        cmd = self.cmd(prompt, extra, ranks)
        r, dt = self.run(cmd)
        if r.returncode != 0:
            fail(f"exit {r.returncode}: {' '.join(cmd)}\n{r.stderr.strip()}")
        m = re.search(r"completion (\d+) tokens", r.stderr)
        if m and int(m.group(1)) != MAX_TOKENS:
            fail(f"{' '.join(cmd)}: {m.group(1)} tokens generated, expected {MAX_TOKENS} "
                 f"(--ignore-eos)")
        if ranks > 1 and r.stderr.count("completion") > 1:
            fail(f"{' '.join(cmd)}: statistics printed by more than one rank:\n{r.stderr}")
        return r.stdout, dt

    def perplexity(self, path, extra, ranks=1):
        cmd = [self.tessera, "perplexity", "--model", self.model, "--file", path,
               "--ctx", str(PPL_CTX), *extra]
        if ranks > 1:
            cmd = [self.mpiexec, "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
        r, dt = self.run(cmd)
        if r.returncode != 0:
            fail(f"exit {r.returncode}: {' '.join(cmd)}\n{r.stderr.strip()}")
        lines = r.stdout.strip().splitlines()
        m = re.fullmatch(r"Final estimate: PPL = (\d+\.\d+)", lines[-1] if lines else "")
        if not m:
            fail(f"{' '.join(cmd)}: no 'Final estimate: PPL = X' line in {r.stdout!r}")
        return float(m.group(1)), dt

    def tokens(self, text):
        if not text:
            return []
        r, _ = self.run([self.tessera, "tokenize", "--model", self.model, f"--text={text}"])
        if r.returncode != 0:
            fail(f"tessera tokenize failed: {r.stderr.strip()}")
        return r.stdout.split()


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n if len(a) != len(b) else None


def main():
    tessera = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "TESSERA_BIN", os.path.join(ROOT, "build", "runtime", "tessera"))
    mpiexec = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("MPIEXEC") or shutil.which("mpirun")
    if not os.access(tessera, os.X_OK):
        fail(f"no tessera binary at {tessera}")
    model = model_path()
    R = Runner(tessera, mpiexec, model)

    # Probe: one short CUDA run decides between skip and test.
    r, _ = R.run([tessera, "generate", "--model", model, "--prompt", "Hi", "--max-tokens", "1",
                  "--device", "cuda"])
    if r.returncode != 0:
        err = r.stderr.strip()
        if re.search(r"unrecognized option '--device", err):
            skip("this tessera has no --device option")
        if NO_CUDA.search(err):
            line = next((l for l in err.splitlines() if NO_CUDA.search(l)), err)
            skip(f"no CUDA device ({line.strip()})")
        fail(f"tessera generate --device cuda failed:\n{err}")
    ngpu = gpu_count()
    print(f"tessera: {tessera}\nmodel:   {model}\nGPUs:    {ngpu}\nmpiexec: {mpiexec}")

    failures = []

    def compare(label, prompt_i, got, want, rule):
        """rule: 'exact', or 'near' (the first MIN_SAME tokens must agree)."""
        if got == want:
            print(f"  [{label}] prompt {prompt_i}: identical")
            return
        ti = first_diff(R.tokens(got), R.tokens(want))
        ci = first_diff(got, want)
        ok = rule == "near" and ti is not None and ti >= MIN_SAME
        verdict = "ok (a near tie parts greedy texts; see the perplexity)" if ok else "FAIL"
        print(f"  [{label}] prompt {prompt_i}: differs from token {ti} (char {ci}): {verdict}\n"
              f"      got:  {got!r}\n      want: {want!r}")
        if not ok:
            why = ("must match exactly" if rule == "exact"
                   else f"the first {MIN_SAME} tokens must match")
            failures.append(f"{label} prompt {prompt_i}: first difference at token {ti} ({why})")

    def compare_ppl(label, key, got, want):
        rel = abs(got - want) / want
        ok = rel <= PPL_LIMIT[key]
        print(f"  [{label}] perplexity {got:.4f} vs {want:.4f}: relative difference {rel:.2e} "
              f"(limit {PPL_LIMIT[key]:.0e}) {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{label}: perplexity {got:.4f} vs {want:.4f} (relative {rel:.2e}, "
                            f"limit {PPL_LIMIT[key]:.0e})")

    text = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    # twice: ~990 tokens, 7 chunks; the repeat is 496 tokens back, out of any
    # 128-token window's sight
    text.write(PPL_TEXT + "\n" + PPL_TEXT)
    text.close()
    try:
        run_all(R, ngpu, mpiexec, text.name, compare, compare_ppl)
    finally:
        os.unlink(text.name)

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("PASS")


def run_all(R, ngpu, mpiexec, text, compare, compare_ppl):
    ppl_cpu, dt = R.perplexity(text, CPU_REF)
    print(f"perplexity, --ctx {PPL_CTX}: cpu {ppl_cpu:.4f} ({dt:.1f} s)")
    ppl = {}
    for act, flags in MODES.items():
        ppl[act], dt = R.perplexity(text, ["--device", "cuda", *flags])
        compare_ppl(f"cuda {act} vs cpu", f"cuda {act}", ppl[act], ppl_cpu)

    cpu, cuda = {}, {act: {} for act in MODES}
    for i, p in enumerate(PROMPTS):
        cpu[i], dt = R.generate(p, CPU_REF)
        print(f"prompt {i} {p[1]!r}\n  [cpu] ({dt:.1f} s): {cpu[i]!r}")
        for act, flags in MODES.items():
            cuda[act][i], dt = R.generate(p, ["--device", "cuda", *flags])
            print(f"  [cuda {act}] ({dt:.1f} s)")
            # the reference-precision mode must give the CPU's 32 tokens
            compare(f"cuda {act} vs cpu", i, cuda[act][i], cpu[i],
                    "exact" if act == "ref" else "near")

    if not mpiexec:
        fail("mpirun not found (pass MPIEXEC as the second argument)")
    layouts = [("tp2 mpi", "tp2", ["--tp", "2", "--comm", "mpi"]),
               ("pp2 mpi", "pp2", ["--tp", "1", "--pp", "2", "--comm", "mpi"])]
    if ngpu >= 2:
        layouts.append(("tp2 nccl", "tp2", ["--tp", "2", "--comm", "nccl"]))
    else:
        print("(one GPU: --comm nccl --tp 2 not run; NCCL needs a GPU per rank)")
    for label, kind, extra in layouts:
        for act, flags in MODES.items():
            dev = ["--device", "cuda", *flags, *extra]
            got, dt = R.perplexity(text, dev, ranks=2)
            compare_ppl(f"{label} {act} vs cuda {act}", f"{kind} {act}", got, ppl[act])
            rule = "near" if act != "ref" and kind == "tp2" else "exact"
            for i, p in enumerate(PROMPTS):
                out, dt = R.generate(p, dev, ranks=2)
                print(f"  [{label} {act}] prompt {i} ({dt:.1f} s)")
                compare(f"{label} {act} vs cuda {act}", i, out, cuda[act][i], rule)


if __name__ == "__main__":
    main()
