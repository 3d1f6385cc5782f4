#!/usr/bin/env python3
"""tessera-launch running real jobs on this machine (2 ranks under mpirun):

  * serve, then SIGTERM to the launcher: every rank stops (drain, exit 0), the
    launcher exits 0, no tessera process of the job is left;
  * serve, then SIGINT to the launcher's process group, as Ctrl-C at a terminal
    does (mpirun has its own group and is not hit): the same clean stop;
  * generate (which does not trap SIGTERM) stopped by SIGTERM: the ranks die,
    the launcher exits 128+15 and leaves nothing behind;
  * generate that finishes: the answer on stdout, the job's exit code 0.

usage: test_sigterm.py TESSERA_LAUNCH TESSERA TESSERA_CLI
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_common import (alive, check, clean_env, cli_health, default_model,  # noqa: E402
                           descendants, fail, free_port, skip, wait_gone, which)


def main():
    launch, tessera, cli = sys.argv[1:4]
    real = os.path.realpath(tessera)
    model = default_model()
    if not which("mpirun"):
        skip("mpirun not found")
    tmp = tempfile.mkdtemp(prefix="tessera-launch-sig-")
    env = clean_env(OMPI_MCA_mpi_yield_when_idle="1")

    def ranks_of(pid):
        out = []
        for p in descendants(pid):
            try:
                if os.readlink(f"/proc/{p}/exe") == real:
                    out.append(p)
            except OSError:
                pass
        return out

    def start(args, log):
        return subprocess.Popen([launch, "--model", model, "--tp", "2"] + args,
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ranks(p, n=2, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = ranks_of(p.pid)
            if len(r) >= n:
                return r
            if p.poll() is not None:
                break
            time.sleep(0.1)
        fail(f"expected {n} ranks below the launcher, found {ranks_of(p.pid)}")

    def serve_then(signame, deliver):
        port = free_port()
        logpath = os.path.join(tmp, f"serve-{signame}.log")
        with open(logpath, "w+") as log:
            p = start(["serve", "--port", str(port), "--ctx", "256", "--max-seqs", "2",
                       "--grace", "10"], log)
            try:
                if not cli_health(cli, f"127.0.0.1:{port}", 180):
                    fail(f"the server never became SERVING:\n{open(logpath).read()[-3000:]}")
                ranks = wait_ranks(p)
                deliver(p)
                rc = p.wait(90)
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            out = open(logpath).read()
        check(rc == 0, f"{signame}: the launcher exited {rc}, expected 0:\n{out[-3000:]}")
        check(out.count("tessera: stopped") == 1, f"{signame}: rank 0 did not stop cleanly:\n{out[-3000:]}")
        check(wait_gone(ranks, 5), f"{signame}: ranks left running: {[r for r in ranks if alive(r)]}")
        check(not ranks_of(p.pid), f"{signame}: processes left below the launcher")
        print(f"ok  serve + {signame}: exit 0, ranks {ranks} gone")

    serve_then("SIGTERM", lambda p: os.kill(p.pid, signal.SIGTERM))
    # Ctrl-C: the terminal signals the foreground process group (the launcher's)
    serve_then("SIGINT", lambda p: os.killpg(p.pid, signal.SIGINT))

    # generate does not trap SIGTERM: the ranks die, the job fails, 128+15
    logpath = os.path.join(tmp, "gen-kill.log")
    with open(logpath, "w+") as log:
        p = start(["generate", "--prompt", "Once upon a time", "--max-tokens", "4000",
                   "--ignore-eos", "--ctx", "4096"], log)
        try:
            ranks = wait_ranks(p)
            time.sleep(1)
            os.kill(p.pid, signal.SIGTERM)
            rc = p.wait(60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    out = open(logpath).read()
    check(rc == 128 + signal.SIGTERM, f"generate + SIGTERM: exit {rc}, expected 143:\n{out[-2000:]}")
    check(wait_gone(ranks, 5), f"generate + SIGTERM: ranks left: {[r for r in ranks if alive(r)]}")
    print(f"ok  generate + SIGTERM: exit {rc}, ranks {ranks} gone")

    # a job that ends by itself: its exit code and its output
    r = subprocess.run([launch, "--model", model, "--tp", "2", "generate", "--chat",
                        "What is the capital of France?", "--max-tokens", "6"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       timeout=300)
    check(r.returncode == 0 and r.stdout.strip(),
          f"generate: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr[-2000:]!r}")
    print(f"ok  generate: exit 0, {r.stdout.strip()!r}")
    shutil.rmtree(tmp, ignore_errors=True)
    print("4 passed, 0 failed")


if __name__ == "__main__":
    main()
