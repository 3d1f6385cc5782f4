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

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Open MPI refuses root without these; the launcher sets them itself when root,
# the tests need them only for direct tessera runs.
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def skip(msg):
    print(f"SKIP: {msg}")
    sys.exit(SKIP)


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
    hd = n_embd // n_head
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([chr(0x21 + i) if i < 94 else f"<t{i}>" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges([])

    def mat(name, rows, cols):
        w.add_tensor(name, np.full((rows, cols), 0.01, dtype=np.float16))

    def vec(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    mat("token_embd.weight", vocab, n_embd)
    vec("output_norm.weight", n_embd)
    for l in range(n_layer):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", n_embd)
        vec(p + "ffn_norm.weight", n_embd)
        mat(p + "attn_q.weight", n_head * hd, n_embd)
        mat(p + "attn_k.weight", n_kv * hd, n_embd)
        mat(p + "attn_v.weight", n_kv * hd, n_embd)
        mat(p + "attn_output.weight", n_embd, n_head * hd)
        mat(p + "ffn_gate.weight", n_ff, n_embd)
        mat(p + "ffn_up.weight", n_ff, n_embd)
        mat(p + "ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
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
