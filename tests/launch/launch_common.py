"""Shared helpers of the tessera-launch tests (test-only).

A synthetic Llama-shaped GGUF whose layout admits the example configs' TP=8 and
TP=8 x PP=2 (32 attention heads / 8 KV heads, 32 layers, tiny widths), the
default model, /proc lookups of rank processes, and ctest's skip code 77.
"""

import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
from check import SKIP, check, fail, skip  # noqa: E402,F401 (the tests import them from here)
from net import free_port  # noqa: E402,F401 (the tests import it from here)
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Open MPI refuses root without these; the launcher sets them itself when root,
# the tests need them only for direct tessera runs.
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def default_model(required=True):
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    path = os.path.join(root, DEFAULT_MODEL_NAME)
    if not os.path.isfile(path):
        if required:
            skip(f"model not found at {path} (run scripts/fetch-model.sh)")
        return None
    return path


def write_model(path, n_layer=32, n_head=32, n_kv=8, n_embd=64, n_ff=128, vocab=128):
    """A GGUF with the given shape and constant weights: enough for the
    launcher's header and layout checks (it never reads the weights)."""
    try:
        import numpy as np
        import gguf
    except ImportError:
        skip("numpy / gguf not installed (scripts/setup.sh installs them in .venv)")
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import tiny_gguf
    w = gguf.GGUFWriter(path, "llama")
    tiny_gguf.add_header(w, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_kv=n_kv, n_ff=n_ff)
    tiny_gguf.add_byte_vocab(w, vocab)
    for name, kind, rows, cols in tiny_gguf.tensors(n_layer=n_layer, n_embd=n_embd,
                                                    n_head=n_head, n_kv=n_kv, n_ff=n_ff,
                                                    vocab=vocab):
        if kind in ("norm", "bias"):
            w.add_tensor(name, np.ones(rows, dtype=np.float32))
        else:
            w.add_tensor(name, np.full((rows, cols), 0.01, dtype=np.float16))
    tiny_gguf.write(w)
    return path


def clean_env(**extra):
    """The environment without anything that changes the launcher's command
    (NCCL_*, CUDA_VISIBLE_DEVICES, Slurm's variables)."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("NCCL_") or k.startswith("SLURM_") or k.startswith("SLURMD_")
                   or k == "CUDA_VISIBLE_DEVICES")}
    env.update(extra)
    return env


def which(name):
    p = shutil.which(name)
    return os.path.abspath(p) if p else None


def procs_running(exe):
    """pids of the processes whose /proc/PID/exe is `exe` (a real path)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/exe") == exe:
                out.append(int(d))
        except OSError:
            pass
    return out


def descendants(pid):
    """All processes below pid (by parent links in /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            parent[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p:
                out.append(c)
                todo.append(c)
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def cli_health(cli, addr, wait_s):
    r = subprocess.run([cli, "--addr", addr, "health", "--wait", str(wait_s)],
                       capture_output=True, text=True)
    return r.returncode == 0 and "SERVING" in r.stdout
