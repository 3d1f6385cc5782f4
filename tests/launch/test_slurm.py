#!/usr/bin/env python3
"""The Slurm scripts on a real Slurm: slurm/local-slurm.sh starts munged,
slurmctld and slurmd (Debian's packages) in a temporary folder, then

  * `sbatch -n 1 slurm/tessera-serve.sbatch --tp 2 ...` is refused by the
    launcher inside the job (exit 2, the allocation's task count named);
  * `--runner mpirun` inside the allocation (the fallback when srun has no
    pmix) runs a 2-rank generate to completion;
  * `sbatch -n 2 slurm/tessera-serve.sbatch --model M --tp 2 --port P` starts
    2 ranks with srun --mpi=pmix, logs where it listens, becomes SERVING and
    answers tessera-cli; `scancel` stops it gracefully: rank 0 drains, the
    script ends with tessera-launch's exit 0, Slurm records ExitCode=0:0, and no
    rank is left.

The Slurm daemons are stopped at the end whatever happens. Skips (77) when not
root, when slurm-wlm/munge are not installed, or when the daemons cannot start
here (the reason and the daemons' logs are printed).

usage: test_slurm.py TESSERA_LAUNCH TESSERA TESSERA_CLI
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_common import (ROOT, alive, check, cli_health, default_model, fail,  # noqa: E402
                           free_port, procs_running, skip, wait_gone)

HARNESS = os.path.join(ROOT, "slurm", "local-slurm.sh")


def free_port_pair():
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p >= 65535:
            continue
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", p + 1))
            t.close()
            return p
        except OSError:
            pass
    fail("no free pair of ports")


class Slurm:
    def __init__(self, tmp):
        self.env = dict(os.environ, TESSERA_SLURM_DIR=os.path.join(tmp, "slurm"),
                        TESSERA_SLURM_PORT=str(free_port_pair()))

    def start(self):
        r = subprocess.run(["bash", HARNESS, "start"], capture_output=True, text=True,
                           env=self.env, timeout=180)
        if r.returncode == 77:
            skip(f"local Slurm cannot run here: {r.stderr.strip()}")
        if r.returncode != 0:
            skip(f"the Slurm daemons did not start on this machine (local-slurm.sh exit "
                 f"{r.returncode}):\n{r.stderr}")
        line = r.stdout.strip().splitlines()[-1]
        check(line.startswith("export SLURM_CONF="), f"harness: unexpected output {r.stdout!r}")
        self.env["SLURM_CONF"] = line.split("=", 1)[1]
        st = subprocess.run(["bash", HARNESS, "status"], capture_output=True, text=True, env=self.env)
        check(st.returncode == 0 and "idle" in st.stdout, f"status after start: {st.stdout}")
        # start is idempotent: a second start finds it running
        again = subprocess.run(["bash", HARNESS, "start"], capture_output=True, text=True, env=self.env)
        check(again.returncode == 0 and "already running" in again.stderr,
              f"a second start: {again.returncode} {again.stderr}")
        print(f"local Slurm up ({self.env['SLURM_CONF']})")

    def stop(self):
        r = subprocess.run(["bash", HARNESS, "stop"], capture_output=True, text=True, env=self.env,
                           timeout=120)
        st = subprocess.run(["bash", HARNESS, "status"], capture_output=True, text=True, env=self.env)
        return r.returncode == 0 and st.returncode == 3

    def run(self, cmd, **kw):
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, **kw)

    def job_state(self, job):
        r = self.run(["squeue", "-h", "-j", job, "-o", "%T"])
        return r.stdout.strip()

    def jobcomp(self, job):
        path = os.path.join(self.env["TESSERA_SLURM_DIR"], "log", "jobcomp.log")
        try:
            for line in open(path):
                if line.startswith(f"JobId={job} "):
                    return line
        except OSError:
            pass
        return ""


def main():
    launch, tessera, cli = sys.argv[1:4]
    if os.geteuid() != 0:
        skip("the local Slurm harness needs root")
    for tool in ("sbatch", "squeue", "scancel", "srun"):
        if not shutil.which(tool):
            skip(f"{tool} not found (scripts/setup.sh installs slurm-wlm and munge)")
    model = default_model()
    real = os.path.realpath(tessera)
    tmp = tempfile.mkdtemp(prefix="tessera-slurm-test-")
    slurm = Slurm(tmp)
    slurm.env["TESSERA_LAUNCH"] = os.path.abspath(launch)
    slurm.env.pop("SLURM_JOB_ID", None)
    serve = os.path.join(ROOT, "slurm", "tessera-serve.sbatch")
    slurm.start()
    ok = False
    try:
        # -- the world size comes from the allocation: -n 1 with --tp 2 is refused
        log1 = os.path.join(tmp, "bad-%j.out")
        r = slurm.run(["sbatch", "--parsable", "--wait", "-n", "1", "-o", log1, serve,
                       "--tessera", real, "--model", model, "--tp", "2"], timeout=120)
        job = r.stdout.strip().split(";")[0]
        out = open(log1.replace("%j", job)).read() if job else ""
        check(r.returncode == 2 and "the Slurm allocation has 1 tasks" in out,
              f"sbatch -n 1 with --tp 2: exit {r.returncode}, log:\n{out}\n{r.stderr}")
        print(f"ok  job {job}: sbatch -n 1 --tp 2 refused (exit 2)")

        # -- mpirun under the allocation (the fallback when srun has no pmix)
        log3 = os.path.join(tmp, "mpirun-%j.out")
        r = slurm.run(["sbatch", "--parsable", "--wait", "-n", "2", "-o", log3, "--wrap",
                       f"{os.path.abspath(launch)} --runner mpirun --tessera {real} --model {model} "
                       "--tp 2 generate --chat 'What is the capital of France?' --max-tokens 6"],
                      timeout=300)
        job = r.stdout.strip().split(";")[0]
        out = open(log3.replace("%j", job)).read() if job else ""
        check(r.returncode == 0 and "with mpirun: " in out and "completion 6 tokens" in out,
              f"generate with mpirun inside the allocation: exit {r.returncode}, log:\n{out}\n{r.stderr}")
        print(f"ok  job {job}: mpirun inside the allocation ran generate (exit 0)")

        # -- a 2-rank server, through tessera-cli, then scancel
        port = free_port()
        log2 = os.path.join(tmp, "serve-%j.out")
        r = slurm.run(["sbatch", "--parsable", "-n", "2", "-o", log2, serve, "--tessera", real,
                       "--model", model, "--tp", "2", "--port", str(port), "--ctx", "256",
                       "--max-seqs", "2", "--grace", "30"], timeout=60)
        check(r.returncode == 0, f"sbatch failed: {r.stderr}")
        job = r.stdout.strip().split(";")[0]
        logpath = log2.replace("%j", job)
        print(f"submitted job {job}; log {logpath}")

        def log():
            try:
                return open(logpath).read()
            except OSError:
                return ""

        if not cli_health(cli, f"127.0.0.1:{port}", 240):
            fail(f"the job never became SERVING (state {slurm.job_state(job)!r}):\n{log()[-4000:]}")
        check(f"gRPC at 127.0.0.1:{port}" in log() and "rank 0 on" in log(),
              f"the log does not say where it listens:\n{log()}")
        check("with srun: " in log() and "--mpi=pmix" in log(),
              f"the job was not started with srun --mpi=pmix:\n{log()}")
        ranks = [p for p in procs_running(real)
                 if f"--port\0{port}\0" in open(f"/proc/{p}/cmdline").read()]
        check(len(ranks) == 2, f"expected 2 ranks of the job, found {ranks}")
        g = subprocess.run([cli, "--addr", f"127.0.0.1:{port}", "generate", "--chat",
                            "What is the capital of France?", "--max-tokens", "8"],
                           capture_output=True, text=True, timeout=180)
        check(g.returncode == 0 and g.stdout.strip(), f"tessera-cli generate: {g.returncode} "
                                                      f"{g.stdout!r} {g.stderr!r}")
        print(f"ok  job {job}: SERVING, tessera-cli answered {g.stdout.strip()!r}")

        # scancel with a stream in flight: it completes within serve's --grace
        inflight = subprocess.Popen([cli, "--addr", f"127.0.0.1:{port}", "generate", "--prompt",
                                     "Once upon a time", "--max-tokens", "16", "--ignore-eos"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = inflight.stdout.read(1)  # the first streamed character: it is running
        t0 = time.time()
        check(slurm.run(["scancel", job]).returncode == 0, "scancel failed")
        rest, err = inflight.communicate(timeout=120)
        check(inflight.returncode == 0 and "completion 16 tokens" in err,
              f"the in-flight stream did not complete: {inflight.returncode} {first + rest!r} {err!r}")
        print(f"ok  job {job}: the stream in flight at scancel completed ({err.strip()})")
        while slurm.job_state(job) and time.time() - t0 < 120:
            time.sleep(0.5)
        check(not slurm.job_state(job), f"job {job} still {slurm.job_state(job)} 120 s after scancel")
        time.sleep(0.5)  # the log's last lines
        out = log()
        check("tessera: stopped" in out, f"rank 0 did not stop gracefully:\n{out[-4000:]}")
        check("tessera-serve: tessera-launch exited 0" in out,
              f"the job did not end with exit 0:\n{out[-4000:]}")
        comp = slurm.jobcomp(job)
        check("JobState=CANCELLED" in comp and "ExitCode=0:0" in comp,
              f"Slurm's record of job {job}: {comp!r}")
        check(wait_gone(ranks, 10), f"ranks left after scancel: {[p for p in ranks if alive(p)]}")
        print("---- the job's log (tail)\n" + "\n".join(out.splitlines()[-12:]) + "\n----")
        print(f"ok  job {job}: scancel -> graceful stop in {time.time() - t0:.1f} s, exit 0, "
              f"no rank left")
        ok = True
    finally:
        stopped = slurm.stop()
        if not ok:
            print("---- slurmd / slurmctld logs are in the harness folder (removed on stop)")
    check(stopped, "local-slurm.sh stop did not stop every daemon")
    shutil.rmtree(tmp, ignore_errors=True)
    print("4 passed, 0 failed")


if __name__ == "__main__":
    main()
