#!/usr/bin/env python3
"""`tessera` under mpirun: the same answers as one rank, and clean failures.

  * `mpirun -np 2 tessera generate --tp 2` and `-np 2 --pp 2` print exactly the
    single-rank greedy answer, once (only rank 0 prints), on the exact path
    (--weight-dtype f32 --kv-dtype f32: the default path rounds activations to 8
    bits, so a tensor split's last-bit differences can flip a near-tie, as
    tests/dist/test_layouts.py explains); on the default path --pp 2 prints
    exactly one rank's answer too (a pipeline split adds no sum); `perplexity`
    under --tp 3 matches one rank (exact path too: on the default path this
    text's tiny NLL moves by ~1e-3 with the split).
  * Misconfigurations end every rank with a non-zero exit within seconds and one
    message naming the numbers: tp*pp != ranks, an impossible head split (tp=4
    for 9 heads / 3 KV heads), the model missing on one rank.
  * Device flags: --device cuda where no GPU can be used (a build without the
    CUDA backend, or CUDA_VISIBLE_DEVICES="" in one with it) ends 1 and 2 rank
    jobs within seconds, non-zero, with a message saying which; --comm nccl
    without --device cuda, a bad --act-dtype and bf16 on the CPU are usage
    errors (exit 2); the explicit defaults (--device cpu --comm mpi
    --act-dtype f32) give the single-rank answer.
  * A rank killed with SIGKILL mid-generation ends the whole job within 10 s.
  * A rank stopped with SIGSTOP mid-generation (hung, not dead) is found at the
    deadline: with --comm-timeout 3 the job ends within 3 + 10 s, non-zero,
    with a message naming world rank 1 as not answering, and no rank left;
    a bad --comm-timeout is a usage error.
  * An idle two-rank server uses under 5% of a core per rank.

usage: test_cli.py TESSERA MPIEXEC
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model"))
from common import check, default_model, fail  # noqa: E402
from net import free_port  # noqa: E402 (tests/common, on the path through common)

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1")
QUESTION = "What is the capital of France?"


def mpi(mpiexec, n):
    return [mpiexec, "-np", str(n), "--oversubscribe", "--bind-to", "none"]


def run(cmd, timeout=300):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r, time.time() - t0


def rank_pids(tessera, n):
    """The pids of world ranks 0..n-1 of a running `tessera` job (None if missing)."""
    pids = [None] * n
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if tessera.encode() not in cmdline:
            continue
        for r in range(n):
            if f"OMPI_COMM_WORLD_RANK={r}".encode() in env:
                pids[r] = int(pid)
    return pids


def alive(pid):
    try:
        return "zombie" not in open(f"/proc/{pid}/status").read().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return False


def hung_rank(tessera, mpiexec, model):
    """SIGSTOP rank 1 mid-generation: the deadline finds it and the job ends."""
    limit = 3
    long = ["generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "100000",
            "--ignore-eos", "--tp", "2", "--ctx", "8192", "--comm-timeout", str(limit)]
    p = subprocess.Popen(mpi(mpiexec, 2) + [tessera, *long], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV, stdin=subprocess.DEVNULL)
    pids = []
    try:
        out = p.stdout.read(64)  # generation has started once text flows
        check(len(out) > 0, "generation did not start")
        pids = rank_pids(tessera, 2)
        check(None not in pids, f"could not find both ranks: {pids}")
        t0 = time.time()
        os.kill(pids[1], signal.SIGSTOP)
        _, err = p.communicate(timeout=limit + 30)
        dt = time.time() - t0
        err = err.decode(errors="replace")
        line = next((x for x in err.splitlines() if "aborting the job" in x), "")
        print(f"rank 1 stopped: job ended with exit {p.returncode} after {dt:.1f} s: {line[:300]}")
        check(p.returncode != 0, "the job reported success with a stopped rank")
        check(dt < limit + 10, f"the job took {dt:.1f} s to end (deadline {limit} s)")
        check("past the deadline of 3 s" in line, f"no deadline message: {err!r}")
        silent = line.split("Not answering", 1)[-1].split(". Waiting:")[0]
        check("world rank 1 (" in silent, f"the message does not name world rank 1: {line!r}")
        time.sleep(1)
        left = [q for q in pids if alive(q)]
        check(not left, f"processes left after the job ended: {left}")
    finally:
        for q in pids:
            if q and alive(q):
                os.kill(q, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            fail("the job hung with a stopped rank")


def device_flags(tessera, mpiexec, gen, single):
    """--device / --comm / --act-dtype / --gpu: refusals that need no GPU."""
    r, _ = run([tessera, *gen, "--device", "cpu", "--comm", "mpi", "--act-dtype", "f32"])
    check(r.returncode == 0 and r.stdout == single.stdout,
          f"explicit CPU defaults changed the answer: {r.stdout!r} vs {single.stdout!r}\n{r.stderr}")
    usage = [
        (["--comm", "nccl"], "--comm nccl needs --device cuda"),
        (["--act-dtype", "fp8", "--device", "cuda"], "--act-dtype expects bf16 or f32"),
        (["--act-dtype", "bf16"], "--act-dtype bf16 needs --device cuda"),
        (["--device", "gpu"], "--device expects cpu or cuda"),
        (["--comm", "gloo"], "want mpi or nccl"),
        (["--gpu", "0"], "--gpu needs --device cuda"),
        (["--comm-timeout", "2e6"], "--comm-timeout must be a number of seconds"),
        (["--comm-timeout", "soon"], "--comm-timeout expects a number"),
    ]
    for n in (1, 2):
        for extra, words in usage:
            r, dt = run(mpi(mpiexec, n) + [tessera, *gen, "--tp", str(n), *extra], timeout=60)
            print(f"{extra} on {n} rank(s): exit {r.returncode} in {dt:.1f} s")
            check(r.returncode == 2, f"{extra}: exit {r.returncode}, want 2 (usage)\n{r.stderr}")
            check(words in r.stderr, f"{extra}: message does not say {words!r}: {r.stderr!r}")
            check(r.stderr.count(words) == 1, f"{extra}: reported more than once: {r.stderr!r}")

    # No usable GPU: a build without the CUDA backend (or NCCL) says so; a CUDA
    # build with no visible device names the host. Never a hang or a crash.
    env = dict(ENV, CUDA_VISIBLE_DEVICES="")
    no_gpu = ("this build has no CUDA backend", "no CUDA device is visible on host",
              "this build has no NCCL")
    for n in (1, 2):
        for extra in (["--device", "cuda"], ["--device", "cuda", "--act-dtype", "f32"],
                      ["--device", "cuda", "--comm", "nccl"]):
            plain = [a for a in gen if a not in ("--weight-dtype", "--kv-dtype", "f32")]
            cmd = mpi(mpiexec, n) + [tessera, *plain, "--tp", str(n), *extra]
            t0 = time.time()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120,
                               stdin=subprocess.DEVNULL)
            dt = time.time() - t0
            err = r.stderr.strip().splitlines()
            print(f"{extra} on {n} rank(s), no GPU: exit {r.returncode} in {dt:.1f} s: "
                  f"{err[0][:160] if err else ''!r}")
            check(r.returncode not in (0, -11, 139, 134),
                  f"{extra} on {n} rank(s) without a GPU: exit {r.returncode}\n{r.stderr}")
            check(any(w in r.stderr for w in no_gpu),
                  f"{extra} on {n} rank(s): no clear message: {r.stderr!r}")
            check("Segmentation" not in r.stderr and "core dumped" not in r.stderr,
                  f"{extra} on {n} rank(s) crashed: {r.stderr!r}")
            check(dt < 30, f"{extra} on {n} rank(s): took {dt:.1f} s to fail")


def main():
    tessera, mpiexec = sys.argv[1], sys.argv[2]
    model = default_model()
    default = ["generate", "--model", model, "--chat", QUESTION, "--max-tokens", "24"]
    gen = default + ["--weight-dtype", "f32", "--kv-dtype", "f32"]

    single, _ = run([tessera, *gen])
    check(single.returncode == 0, f"single rank failed: {single.stderr}")
    for tp, pp in ((2, 1), (1, 2)):
        r, dt = run(mpi(mpiexec, tp * pp) + [tessera, *gen, "--tp", str(tp), "--pp", str(pp)])
        check(r.returncode == 0, f"tp={tp} pp={pp} failed:\n{r.stderr}")
        print(f"tp={tp} pp={pp} ({dt:.1f} s): {r.stdout.strip()!r}")
        check(r.stdout == single.stdout,
              f"tp={tp} pp={pp} answer differs from one rank: {r.stdout!r} vs {single.stdout!r}")
        check(r.stderr.count("completion") == 1, f"statistics printed more than once:\n{r.stderr}")
    one, _ = run([tessera, *default])
    two, _ = run(mpi(mpiexec, 2) + [tessera, *default, "--pp", "2"])
    print(f"default path, one rank and pp=2: {one.stdout.strip()!r}, {two.stdout.strip()!r}")
    check(one.returncode == 0 and two.returncode == 0 and one.stdout == two.stdout,
          f"default path: pp=2 answer differs from one rank: {two.stdout!r} vs {one.stdout!r}")

    device_flags(tessera, mpiexec, default, one)

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("The Eiffel Tower is a wrought-iron lattice tower in Paris, France. " * 30)
        text = f.name
    try:
        ppl = ["perplexity", "--model", model, "--file", text, "--ctx", "128", "--weight-dtype",
               "f32", "--kv-dtype", "f32"]  # the exact path: a tensor split moves 8-bit rounding
        a, _ = run([tessera, *ppl])
        b, _ = run(mpi(mpiexec, 3) + [tessera, *ppl, "--tp", "3"])
        check(a.returncode == 0 and b.returncode == 0, f"perplexity failed:\n{a.stderr}\n{b.stderr}")
        pa = float(a.stdout.strip().splitlines()[-1].split("=")[1])
        pb = float(b.stdout.strip().splitlines()[-1].split("=")[1])
        print(f"perplexity: one rank {pa}, tp=3 {pb}")
        check(abs(pa - pb) <= 1e-3 * pa, f"perplexity differs: {pa} vs {pb}")
    finally:
        os.unlink(text)

    bad = [
        (3, ["--tp", "2"], "needs 2 ranks, the job has 3"),
        (4, ["--tp", "4"], "tp=4"),
        (2, ["--tp", "2", "--pp-layers", "10,20"], "--pp-layers"),
    ]
    for n, extra, words in bad:
        r, dt = run(mpi(mpiexec, n) + [tessera, *gen, *extra], timeout=60)
        print(f"{extra} on {n} ranks: exit {r.returncode} in {dt:.1f} s: {r.stderr.strip()[:200]!r}")
        check(r.returncode != 0, f"{extra} on {n} ranks should fail")
        check(words in r.stderr, f"{extra}: message does not say {words!r}: {r.stderr!r}")
        check(dt < 30, f"{extra}: took {dt:.1f} s to fail")

    # the model missing on rank 1 only (MPMD launch)
    missing = "/nonexistent/model.gguf"
    cmd = [mpiexec, "--oversubscribe", "--bind-to", "none",
           "-np", "1", tessera, "generate", "--model", model, "--chat", "hi", "--tp", "2", ":",
           "-np", "1", tessera, "generate", "--model", missing, "--chat", "hi", "--tp", "2"]
    r, dt = run(cmd, timeout=60)
    print(f"model missing on rank 1: exit {r.returncode} in {dt:.1f} s")
    check(r.returncode != 0 and missing in r.stderr and "[rank 1/2]" in r.stderr,
          f"missing model on one rank not reported by that rank: {r.stderr!r}")

    # SIGKILL one rank mid-generation: the job must end within 10 s
    long = ["generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "100000",
            "--ignore-eos", "--tp", "2", "--ctx", "8192"]
    p = subprocess.Popen(mpi(mpiexec, 2) + [tessera, *long], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV, stdin=subprocess.DEVNULL)
    try:
        out = p.stdout.read(64)  # generation has started once text flows
        check(len(out) > 0, "generation did not start")
        victim = None
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"OMPI_COMM_WORLD_RANK=1" in env and tessera.encode() in cmdline:
                victim = int(pid)
        check(victim is not None, "could not find rank 1")
        t0 = time.time()
        os.kill(victim, signal.SIGKILL)
        p.wait(timeout=30)
        dt = time.time() - t0
        print(f"rank 1 killed: job ended with exit {p.returncode} after {dt:.1f} s")
        check(p.returncode != 0, "the job reported success after losing a rank")
        check(dt < 10, f"the job took {dt:.1f} s to end after a rank died")
    finally:
        if p.poll() is None:
            p.kill()
            fail("the job hung after a rank was killed")
    hung_rank(tessera, mpiexec, model)
    # an idle server does not spin: under 5% of a core per rank
    cli = os.path.join(os.path.dirname(os.path.dirname(tessera)), "launcher", "tessera-cli")
    if os.path.exists(cli):
        port = free_port()
        srv = subprocess.Popen(mpi(mpiexec, 2) + [tessera, "serve", "--model", model, "--tp", "2",
                                                  "--port", str(port), "--ctx", "512"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        try:
            r, _ = run([cli, "--addr", f"127.0.0.1:{port}", "health", "--wait", "120"], timeout=150)
            check(r.returncode == 0, f"server did not come up: {r.stdout} {r.stderr}")
            ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(srv.pid)], capture_output=True,
                                                    text=True).stdout.split()]
            check(len(ranks) == 2, f"expected 2 ranks, found {ranks}")
            tick = os.sysconf("SC_CLK_TCK")

            def cpu(pid):
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                return (int(f[11]) + int(f[12])) / tick

            time.sleep(1)
            before = [cpu(p) for p in ranks]
            t0 = time.time()
            time.sleep(4)
            used = [(cpu(p) - b) / (time.time() - t0) for p, b in zip(ranks, before)]
            print("idle server CPU per rank: " + ", ".join(f"{u * 100:.1f}%" for u in used))
            check(all(u < 0.05 for u in used), f"an idle rank uses more than 5% of a core: {used}")
            for p in ranks:
                os.kill(p, signal.SIGTERM)
            check(srv.wait(60) == 0, "the idle server did not exit 0 on SIGTERM")
        finally:
            if srv.poll() is None:
                srv.kill()
    print("PASS")


if __name__ == "__main__":
    main()
