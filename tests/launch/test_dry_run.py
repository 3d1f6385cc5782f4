#!/usr/bin/env python3
"""tessera-launch --dry-run: the exact command for each example config in configs/,
outside and inside a (simulated) Slurm allocation, and how flags override the file.

Each expected line is written out in full below; only the paths of this build
(tessera, mpirun, the test model) and Open MPI's root variables (present when the
test runs as root) are filled in. The local CPU count is pinned with taskset, so
the binding choices are the same on every machine.

usage: test_dry_run.py TESSERA_LAUNCH TESSERA
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_common import ROOT, check, clean_env, fail, which, write_model  # noqa: E402

CONFIGS = os.path.join(ROOT, "configs")


def main():
    launch, tessera = sys.argv[1:3]
    tessera = os.path.realpath(tessera)
    mpirun = which("mpirun")
    if not mpirun:
        print("SKIP: mpirun not found")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="tessera-launch-dry-")
    syn = write_model(os.path.join(tmp, "llama-32h-8kv-32l.gguf"))
    rootenv = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " if os.geteuid() == 0 else ""
    subst = {"ROOTENV": rootenv, "MPIRUN": mpirun, "TESSERA": tessera, "MODEL": syn}
    taskset = which("taskset")
    n_checked = 0

    def dry(args, env=None, cpus="0"):
        cmd = [launch] + args + ["--dry-run"]
        if taskset and cpus:
            cmd = [taskset, "-c", cpus] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, env=env or clean_env(),
                              stdin=subprocess.DEVNULL)

    def expect(name, args, want, env=None, cpus="0", note=None):
        nonlocal n_checked
        r = dry(args, env, cpus)
        want = want.format(**subst)
        got = r.stdout.rstrip("\n")
        if r.returncode != 0 or got != want:
            fail(f"{name}: exit {r.returncode}\n  want: {want}\n  got:  {got}\n  stderr: {r.stderr}")
        if note and note not in r.stderr:
            fail(f"{name}: stderr lacks {note!r}: {r.stderr!r}")
        # the printed line is a valid shell command for the same argv
        words = shlex.split(got)
        check(all(w for w in words), f"{name}: empty word in {words}")
        print(f"ok  {name}: {got}")
        n_checked += 1

    if not taskset:
        print("SKIP: taskset not found (util-linux)")
        sys.exit(77)

    # -- the example configs (model overridden by the synthetic one: the
    #    configs name models this machine does not have)
    expect("cpu-tp2 (1 CPU: oversubscribed)",
           ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn],
           "{ROOTENV}{MPIRUN} -np 2 --map-by slot --bind-to none --oversubscribe {TESSERA} serve "
           "--model {MODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 --max-seqs 16 --ctx 2048 "
           "--grace 20",
           note="2 ranks on 1 CPUs: oversubscribing")
    ncpu = len(os.sched_getaffinity(0))
    if ncpu >= 2:
        cpus = "0,1"
        expect("cpu-tp2 (2 CPUs: one core per rank)",
               ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn],
               "{ROOTENV}{MPIRUN} -np 2 --map-by slot --bind-to core {TESSERA} serve "
               "--model {MODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 --max-seqs 16 "
               "--ctx 2048 --grace 20", cpus=cpus)
    if ncpu >= 4:
        expect("cpu-tp2 (4 CPUs: two cores per rank)",
               ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn],
               "{ROOTENV}{MPIRUN} -np 2 --map-by slot:PE=2 --bind-to core {TESSERA} serve "
               "--model {MODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 --max-seqs 16 "
               "--ctx 2048 --grace 20", cpus="0-3")
    expect("gpu-1node-tp8",
           ["--config", f"{CONFIGS}/gpu-1node-tp8.yaml", "--model", syn],
           "{ROOTENV}{MPIRUN} -np 8 --map-by slot --bind-to none --oversubscribe "
           "-x NCCL_DEBUG=WARN -x OMP_NUM_THREADS=4 {TESSERA} serve --model {MODEL} --tp 8 --pp 1 "
           "--host 0.0.0.0 --port 50051 --auth-token-file /etc/tessera/token --device cuda "
           "--comm nccl --max-seqs 64 --ctx 8192 --grace 30")
    # NCCL_* and CUDA_VISIBLE_DEVICES are forwarded; the config's NCCL_DEBUG=WARN
    # wins over the environment's, in the environment's (sorted) place
    expect("gpu-1node-tp8 with NCCL_* and CUDA_VISIBLE_DEVICES set",
           ["--config", f"{CONFIGS}/gpu-1node-tp8.yaml", "--model", syn],
           "{ROOTENV}{MPIRUN} -np 8 --map-by slot --bind-to none --oversubscribe "
           "-x NCCL_DEBUG=WARN -x NCCL_IB_DISABLE -x CUDA_VISIBLE_DEVICES -x OMP_NUM_THREADS=4 "
           "{TESSERA} serve --model {MODEL} --tp 8 --pp 1 --host 0.0.0.0 --port 50051 "
           "--auth-token-file /etc/tessera/token --device cuda --comm nccl --max-seqs 64 "
           "--ctx 8192 --grace 30",
           env=clean_env(NCCL_IB_DISABLE="1", NCCL_DEBUG="INFO",
                         CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7"))
    expect("gpu-2node-tp8-pp2",
           ["--config", f"{CONFIGS}/gpu-2node-tp8-pp2.yaml", "--model", syn],
           "{ROOTENV}{MPIRUN} -np 16 --host node1:8,node2:8 --map-by slot --bind-to core "
           "-x NCCL_SOCKET_IFNAME=eth0 -x NCCL_IB_HCA=mlx5 -x OMP_NUM_THREADS=4 "
           "--mca btl_tcp_if_include eth0 {TESSERA} serve --model {MODEL} --tp 8 --pp 2 "
           "--host 0.0.0.0 --port 50051 --auth-token-file /etc/tessera/token --device cuda "
           "--comm nccl --max-seqs 64 --ctx 8192")
    expect("lora-train",
           ["--config", f"{CONFIGS}/lora-train.yaml", "--model", syn],
           "{ROOTENV}{MPIRUN} -np 2 --map-by slot --bind-to none --oversubscribe {TESSERA} train "
           "--model {MODEL} --tp 2 --pp 1 --data data/train.jsonl --out adapters/smollm2-demo "
           "--steps 200 --batch-size 8 --lr 2e-4 --rank 8 --alpha 16 --targets q,k,v,o --seed 0")

    # -- flags override the file: --tp, --port and a serve flag; the file's
    #    other serve flags stay; a hostfile replaces nothing else
    expect("cpu-tp2 with flags",
           ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn, "--tp", "1", "serve",
            "--port", "6000", "--max-seqs", "4", "--log-prompts", "--host-sampling",
            "--stop-id=7"],
           "{ROOTENV}{MPIRUN} -np 1 --map-by slot --bind-to core {TESSERA} serve --model {MODEL} "
           "--tp 1 --pp 1 --host 127.0.0.1 --port 6000 --ctx 2048 --grace 20 --max-seqs 4 "
           "--log-prompts --host-sampling --stop-id 7")
    hostfile = os.path.join(tmp, "hosts")
    with open(hostfile, "w") as f:
        f.write("# two nodes\nnodeA slots=4\nnodeB slots=4 max_slots=8\n")
    expect("hostfile, pp-layers, env",
           ["--model", syn, "--tp", "4", "--pp", "2", "--pp-layers", "20,12", "--hostfile", hostfile,
            "--env", "GREETING=hello world", "--env", "HOME", "generate", "--chat", "it's me"],
           "{ROOTENV}{MPIRUN} -np 8 --hostfile " + hostfile + " --map-by slot --bind-to core "
           "-x 'GREETING=hello world' -x HOME {TESSERA} generate --model {MODEL} --tp 4 --pp 2 "
           "--pp-layers 20,12 --chat 'it'\"'\"'s me'")

    # -- inside a Slurm allocation: srun --mpi=pmix when srun offers pmix, else
    #    mpirun under the allocation (Open MPI reads it)
    fake = os.path.join(tmp, "bin")
    os.makedirs(fake)
    srun = os.path.join(fake, "srun")

    def fake_srun(plugins):
        with open(srun, "w") as f:
            f.write("#!/bin/sh\n[ \"$1\" = --mpi=list ] || exit 3\n"
                    f"printf 'MPI plugin types are...\\n%s' '{plugins}'\n")
        os.chmod(srun, 0o755)

    slurm = clean_env(SLURM_JOB_ID="42", SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="1",
                      SLURMD_NODENAME="node7", PATH=fake + os.pathsep + os.environ["PATH"],
                      GREETING="x")
    fake_srun("\\tnone\\n\\tpmi2\\n\\tpmix\\nspecific pmix plugin versions available: pmix_v4\\n")
    subst["SRUN"] = srun
    expect("cpu-tp2 under Slurm (srun offers pmix)",
           ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn, "--env", "GREETING=hi there",
            "--env", "GREETING"],
           "{SRUN} --mpi=pmix -n 2 --export=ALL --kill-on-bad-exit=1 {TESSERA} serve "
           "--model {MODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 --max-seqs 16 --ctx 2048 "
           "--grace 20", env=slurm)
    expect("lora-train under Slurm with a NAME=VALUE variable",
           ["--config", f"{CONFIGS}/lora-train.yaml", "--model", syn, "--env", "GREETING=hi there"],
           "GREETING='hi there' {SRUN} --mpi=pmix -n 2 --export=ALL --kill-on-bad-exit=1 "
           "{TESSERA} train --model {MODEL} --tp 2 --pp 1 --data data/train.jsonl "
           "--out adapters/smollm2-demo --steps 200 --batch-size 8 --lr 2e-4 --rank 8 --alpha 16 "
           "--targets q,k,v,o --seed 0", env=slurm)
    fake_srun("\\tnone\\n\\tpmi2\\n")
    expect("cpu-tp2 under Slurm (no pmix: mpirun in the allocation)",
           ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn],
           "{ROOTENV}{MPIRUN} -np 2 --map-by slot --bind-to core {TESSERA} serve "
           "--model {MODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 --max-seqs 16 --ctx 2048 "
           "--grace 20", env=slurm, note="srun offers no pmix")
    expect("runner mpirun inside Slurm",
           ["--config", f"{CONFIGS}/cpu-tp2.yaml", "--model", syn, "--runner", "mpirun"],
           "{ROOTENV}{MPIRUN} -np 2 --map-by slot --bind-to core {TESSERA} serve "
           "--model {MODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 --max-seqs 16 --ctx 2048 "
           "--grace 20", env=slurm)

    # -- the CPU config as shipped (its model is the default one) when present
    home_model = os.path.expanduser("~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.isfile(home_model):
        subst["HOMEMODEL"] = home_model
        expect("cpu-tp2 as shipped (~ expanded)", ["--config", f"{CONFIGS}/cpu-tp2.yaml"],
               "{ROOTENV}{MPIRUN} -np 2 --map-by slot --bind-to none --oversubscribe {TESSERA} "
               "serve --model {HOMEMODEL} --tp 2 --pp 1 --host 127.0.0.1 --port 50051 "
               "--max-seqs 16 --ctx 2048 --grace 20")

    # a build without `tessera train` would get a note on the dry run
    r = dry(["--config", f"{CONFIGS}/lora-train.yaml", "--model", syn])
    has_train = subprocess.run([tessera, "train", "--help"], capture_output=True,
                               env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                                        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")).returncode == 0
    check(has_train or "no train command yet" in r.stderr,
          f"dry run of train without `tessera train`: no note: {r.stderr!r}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{n_checked} passed, 0 failed")


if __name__ == "__main__":
    main()
