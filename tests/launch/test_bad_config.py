#!/usr/bin/env python3
"""Bad configs and flags: tessera-launch refuses them with one clear message and
exit 2 before anything starts (a stand-in mpirun records whether it was run).

Also: the layout message is the runtime's own (the same shard plan): an
impossible --pp-layers is refused by the launcher with the text that
`mpirun -np 2 tessera generate` prints for it.

usage: test_bad_config.py TESSERA_LAUNCH TESSERA
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_common import (ROOT_ENV, check, clean_env, default_model, fail,  # noqa: E402
                           which, write_model)


def main():
    launch, tessera = sys.argv[1:3]
    tmp = tempfile.mkdtemp(prefix="tessera-launch-bad-")
    syn = write_model(os.path.join(tmp, "syn.gguf"))
    marker = os.path.join(tmp, "started")
    fake_mpirun = os.path.join(tmp, "mpirun")
    with open(fake_mpirun, "w") as f:
        f.write(f"#!/bin/sh\necho \"$@\" > {marker}\nexit 0\n")
    os.chmod(fake_mpirun, 0o755)
    n = 0

    def cfg(name, text):
        p = os.path.join(tmp, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def refused(name, args, words, env=None, pre=()):
        """args must exit 2, print every one of `words` on stderr, start nothing."""
        nonlocal n
        if os.path.exists(marker):
            os.unlink(marker)
        r = subprocess.run(list(pre) + [launch, "--mpirun", fake_mpirun] + args, capture_output=True,
                           text=True, env=env or clean_env(), stdin=subprocess.DEVNULL, timeout=60)
        err = r.stderr.strip()
        if r.returncode != 2:
            fail(f"{name}: exit {r.returncode}, expected 2; stderr: {err!r}")
        for w in words:
            if w not in err:
                fail(f"{name}: message lacks {w!r}: {err!r}")
        check(not os.path.exists(marker), f"{name}: mpirun was started")
        check(r.stdout == "", f"{name}: printed on stdout: {r.stdout!r}")
        print(f"ok  {name}: {err.splitlines()[0]}")
        n += 1

    good = f"model: {syn}\ntp: 2\n"
    # -- the four the issue names
    refused("tp*pp != --np", ["--config", cfg("np.yaml", good + "np: 3\n"), "serve"],
            ["tp=2 x pp=1 needs 2 ranks", "--np asks for 3"])
    refused("tp*pp != the Slurm allocation's tasks", ["--config", cfg("slurm.yaml", good), "serve"],
            ["tp=2 x pp=1 needs 2 ranks", "the Slurm allocation has 4 tasks", "sbatch -n 2"],
            env=clean_env(SLURM_JOB_ID="7", SLURM_NTASKS="4"))
    refused("tp*pp > the hosts' slots",
            ["--config", cfg("hosts.yaml", good + "hosts: [a:1]\n"), "serve"],
            ["needs 2 ranks", "the hosts give 1 slots"])
    refused("missing model", ["--config", cfg("nomodel.yaml", "model: /nonexistent/m.gguf\ntp: 2\n"),
                               "serve"],
            ["model '/nonexistent/m.gguf'", "No such file or directory"])
    refused("no model at all", ["--tp", "2", "serve"], ["no model"])
    refused("bad syntax (line number)",
            ["--config", cfg("syntax.yaml", f"model: {syn}\ntp: 2\npp: [1, 2\nport: 5\n"), "serve"],
            ["syntax.yaml:", "YAML syntax error"])
    r = subprocess.run([launch, "--config", os.path.join(tmp, "syntax.yaml"), "serve"],
                       capture_output=True, text=True)
    line = r.stderr.split("syntax.yaml:")[1].split(":")[0]
    check(line in ("3", "4"), f"the syntax error names line {line}, not 3 or 4: {r.stderr!r}")
    refused("bad indentation", ["--config", cfg("indent.yaml", f"model: {syn}\n  tp: 2\n"), "serve"],
            ["indent.yaml:2:", "YAML syntax error"])
    refused("unknown key (line number)",
            ["--config", cfg("unknown.yaml", f"# a comment\nmodel: {syn}\ntpp: 2\n"), "serve"],
            ["unknown.yaml:3: unknown key 'tpp'", "known keys:"])
    refused("unknown key in tls", ["--config", cfg("tls.yaml", good + "tls:\n  cert: a\n  chain: b\n"),
                                   "serve"],
            ["tls.yaml:5: unknown key 'tls.chain'"])
    # -- more refusals, each before anything starts
    refused("wrong type", ["--config", cfg("type.yaml", f"model: {syn}\ntp: two\n"), "serve"],
            ["type.yaml:2: tp must be an integer", "'two'"])
    refused("duplicate key", ["--config", cfg("dup.yaml", good + "tp: 4\n"), "serve"],
            ["dup.yaml:3: duplicate key 'tp' (first at line 2)"])
    refused("launcher key inside a command section",
            ["--config", cfg("section.yaml", good + "serve:\n  port: 5\n"), "serve"],
            ["section.yaml:4:", "'port' is a top-level key"])
    refused("not a mapping", ["--config", cfg("list.yaml", "- model\n- tp\n"), "serve"],
            ["list.yaml:1: the config must be a mapping"])
    refused("bad command in the file", ["--config", cfg("cmd.yaml", good + "command: chat\n")],
            ["cmd.yaml:3: command must be serve, generate, perplexity or train"])
    refused("no command", ["--config", cfg("nocmd.yaml", good)], ["no command"])
    refused("unknown command", ["--model", syn, "chat"], ["unknown command 'chat'"])
    refused("unknown option", ["--model", syn, "--tpp", "2", "serve"], ["unknown option '--tpp'"])
    refused("config file missing", ["--config", os.path.join(tmp, "nope.yaml"), "serve"],
            ["nope.yaml", "No such file or directory"])
    refused("impossible tp", ["--model", syn, "--tp", "12", "serve"],
            ["tp=12 is impossible for 32 attention heads / 8 KV heads"])
    refused("pp-layers not summing to the layers",
            ["--model", syn, "--pp", "2", "--pp-layers", "10,10", "generate", "--chat", "hi"],
            ["sum to 20 layers for pp=2, the model has 32 layers"])
    refused("TLS without a key", ["--model", syn, "serve", "--tls-cert", "/etc/hostname"],
            ["TLS needs both"])
    refused("auth token file missing", ["--model", syn, "serve", "--auth-token-file", "/nope/token"],
            ["auth token file '/nope/token'"])
    refused("runner srun outside Slurm", ["--model", syn, "--runner", "srun", "serve"],
            ["runner srun needs a Slurm allocation"])
    refused("hosts inside Slurm", ["--model", syn, "--hosts", "a:2", "--tp", "2", "serve"],
            ["--hosts/--hostfile are for runs outside Slurm"],
            env=clean_env(SLURM_JOB_ID="7", SLURM_NTASKS="2"))
    refused("bad host entry", ["--model", syn, "--hosts", "a:x", "serve"], ["bad host 'a:x'"])
    refused("bad --env", ["--model", syn, "--env", "1BAD=x", "serve"], ["bad --env '1BAD=x'"])
    if which("taskset"):
        refused("oversubscribe: false with more ranks than CPUs",
                ["--config", cfg("over.yaml", good + "oversubscribe: false\n"), "serve"],
                ["needs 2 ranks, this machine has 1 slots"], pre=[which("taskset"), "-c", "0"])

    # -- the same layout message as the runtime, for a real model under mpirun
    model = default_model(required=False)
    mpirun = which("mpirun")
    if model and mpirun:
        args = ["--pp", "2", "--pp-layers", "20,20"]
        rl = subprocess.run([launch, "--model", model] + args + ["generate", "--chat", "hi"],
                            capture_output=True, text=True, env=clean_env())
        rt = subprocess.run([mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none", tessera,
                             "generate", "--model", model] + args + ["--chat", "hi"],
                            capture_output=True, text=True, env=clean_env(**ROOT_ENV),
                            stdin=subprocess.DEVNULL, timeout=120)
        lmsg = rl.stderr.strip().split("tessera-launch: error: ", 1)[-1]
        check(rl.returncode == 2 and lmsg and lmsg in rt.stderr,
              f"the launcher's layout message differs from the runtime's:\n  launcher: "
              f"{rl.stderr!r}\n  runtime: {rt.stderr!r}")
        print(f"ok  same message as the runtime: {lmsg}")
        n += 1
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{n} passed, 0 failed")


if __name__ == "__main__":
    main()
