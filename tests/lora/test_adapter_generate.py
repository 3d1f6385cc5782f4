#!/usr/bin/env python3
"""Inference with a LoRA adapter (docs/lora.md, "Generating with an adapter"):
`tessera generate|perplexity --adapter DIR` and tsr_model_set_lora.

  (a) identity: an adapter whose B is zero gives bit-identical logits
      (dump_logits) and the same greedy text as the base model;
  (b) correctness: a random adapter (r = 4; q, v, o, down, gate) on the
      default model against the float64 NumPy reference
      (tests/reference/lora_ref.py) for the logits of a short prompt, rel
      err <= 1e-4 (in one prefill and token by token); `perplexity --adapter`
      under mpirun --tp 2, --tp 3 and --pp 2 equals --tp 1 (mean NLL, 1e-5
      relative) and greedy text is the same at tp 1 and 2, both with
      --weight-dtype f32 (the default path rounds activations to 8 bits, and a
      tensor split's last-bit differences then move the NLL by ~1e-2:
      tests/dist/test_layouts.py checks that path's layouts);
  (c) save -> load: `tessera train` 4 steps on three made-up answers, then
      the adapter lowers the perplexity of the training text and the greedy
      answer to a trained question becomes the made-up one;
  (d) refusals: a missing directory, an adapter for another model shape and
      --adapter on train: a clear message, nonzero exit, no hang (1 and 2
      ranks).

Skips (77) when the default model is not downloaded.

usage: test_adapter_generate.py TESSERA DUMP_LOGITS MPIEXEC
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

SKIP = 77
DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
PEFT = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
        "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
        "down": "mlp.down_proj"}
NLL_RE = re.compile(r"mean NLL (\S+) over (\d+) tokens")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common"))
from check import Checks  # noqa: E402

CHECKS = Checks()
check, failures = CHECKS.check, CHECKS.failures


def run(cmd, timeout=150):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", "TIMEOUT"
    return r.returncode, r.stdout, r.stderr


def dims(cfg, t):
    """(d_in, d_out) of target t."""
    C, q, kv, ff = cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff
    return {"q": (C, q), "k": (C, kv), "v": (C, kv), "o": (q, C), "gate": (C, ff),
            "up": (C, ff), "down": (ff, C)}[t]


def write_adapter(d, cfg, r, alpha, targets, seed, b_scale, n_layer=None):
    """A PEFT directory with A uniform(+-1/sqrt(d_in)) and B uniform(+-b_scale)
    (0: zeros); returns (A, B) dicts (layer, target) -> float64 arrays."""
    rng = np.random.default_rng(seed)
    tensors, A, B = {}, {}, {}
    for layer in range(cfg.n_layer if n_layer is None else n_layer):
        for t in targets:
            d_in, d_out = dims(cfg, t)
            a = rng.uniform(-1, 1, (r, d_in)).astype(np.float32) / np.float32(np.sqrt(d_in))
            b = (rng.uniform(-b_scale, b_scale, (d_out, r)) if b_scale else
                 np.zeros((d_out, r))).astype(np.float32)
            pre = f"base_model.model.model.layers.{layer}.{PEFT[t]}"
            tensors[pre + ".lora_A.weight"] = a
            tensors[pre + ".lora_B.weight"] = b
            A[layer, t], B[layer, t] = a.astype(np.float64), b.astype(np.float64)
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "adapter_model.safetensors"), metadata={"format": "pt"})
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
            "lora_dropout": 0.05, "bias": "none", "use_rslora": False, "fan_in_fan_out": False,
            "target_modules": [PEFT[t].split(".")[1] for t in targets], "inference_mode": True}
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(conf, f)
    return A, B


def dump(tool, model, ids, adapter=None, mode="prefill"):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        cmd = [tool] + (["--adapter", adapter] if adapter else []) + \
              [model, f.name, mode] + [str(i) for i in ids]
        rc, _, err = run(cmd)
        if rc != 0:
            raise RuntimeError(f"dump_logits failed: {err}")
        return np.fromfile(f.name, dtype=np.float32).reshape(len(ids), -1)


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def ref_logits(model, adapter, ids):
    """lora_ref's forward; its logits are caught on their way to the loss."""
    import lora_ref
    import train_ref
    caught = {}
    ce = train_ref.ce_loss

    def catch(logits, target, w):
        caught["logits"] = logits
        return ce(logits, target, w)

    train_ref.ce_loss = catch
    try:
        lora_ref.loss_and_grads(model, adapter, ids, [0, len(ids)], grads=False)
    finally:
        train_ref.ce_loss = ce
    return caught["logits"]


F32 = ["--weight-dtype", "f32", "--kv-dtype", "f32"]  # the reference path, for exact layout comparisons


def generate(tessera, mpiexec, model, chat, adapter=None, np_=1, n=16, extra=()):
    cmd = ([mpiexec, "-np", str(np_)] if np_ > 1 else []) + \
          [tessera, "generate", "--model", model, "--chat", chat, "--max-tokens", str(n),
           "--ctx", "256"] + (["--tp", str(np_)] if np_ > 1 else []) + \
          (["--adapter", adapter] if adapter else []) + list(extra)
    return run(cmd)


def perplexity(tessera, mpiexec, model, path, adapter=None, np_=1, ctx=64, extra=()):
    cmd = ([mpiexec, "-np", str(np_)] if np_ > 1 else []) + \
          [tessera, "perplexity", "--model", model, "--file", path, "--ctx", str(ctx)] + \
          (["--tp", str(np_)] if np_ > 1 else []) + (["--adapter", adapter] if adapter else []) + \
          list(extra)
    rc, out, err = run(cmd)
    m = NLL_RE.search(err)
    return rc, (float(m.group(1)) if m else None), err


def main():
    tessera, dump_logits, mpiexec = sys.argv[1:4]
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    model = os.path.join(root, DEFAULT_MODEL)
    if not os.path.exists(model):
        print(f"skip: {model} is not downloaded")
        sys.exit(SKIP)
    import llama_ref
    import lora_ref
    ref_model = lora_ref.hf_layout(llama_ref.load(model))
    cfg = ref_model.cfg
    tmp = tempfile.mkdtemp(prefix="tessera-adapter-gen-")
    try:
        ids = [1, 504, 3458, 282, 4649, 314, 1345, 30]
        chat = "What is the capital of France?"
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:
            f.write("The quick brown fox jumps over the lazy dog. " * 20)

        # ---- (a) identity ----
        zero = os.path.join(tmp, "zero")
        write_adapter(zero, cfg, 4, 8, ["q", "k", "v", "o", "gate", "up", "down"], 1, 0)
        base = dump(dump_logits, model, ids)
        same = dump(dump_logits, model, ids, zero)
        check(np.array_equal(base, same), "(a) B = 0: logits bit-identical to the base model")
        rc0, out0, err0 = generate(tessera, mpiexec, model, chat)
        rcz, outz, errz = generate(tessera, mpiexec, model, chat, zero)
        check(rc0 == 0 and rcz == 0 and out0 == outz and out0.strip(),
              f"(a) B = 0: greedy text equals the base model's ({out0!r} vs {outz!r}) {errz[-500:]}")

        # ---- (b) correctness ----
        rnd = os.path.join(tmp, "random")
        targets = ["q", "v", "o", "down", "gate"]
        A, B = write_adapter(rnd, cfg, 4, 8, targets, 2, 0.05)
        want = ref_logits(ref_model, lora_ref.Adapter(8 / 4, A, B), ids)
        base_ref = ref_logits(ref_model, lora_ref.Adapter(2.0, {}, {}), ids)
        moved = rel_err(base_ref.astype(np.float32), want)
        check(moved > 1e-2, f"(b) the random adapter moves the reference logits ({moved:.3e})")
        got = dump(dump_logits, model, ids, rnd)
        e = rel_err(got, want)
        check(e <= 1e-4, f"(b) logits with the adapter vs the reference: rel err {e:.3e} <= 1e-4")
        got_dec = dump(dump_logits, model, ids, rnd, "decode")
        e = rel_err(got_dec, want)
        check(e <= 1e-4, f"(b) token-by-token logits vs the reference: rel err {e:.3e} <= 1e-4")

        nll = {}
        for np_ in (1, 2, 3):
            rc, v, err = perplexity(tessera, mpiexec, model, text, rnd, np_, extra=F32)
            check(rc == 0 and v is not None, f"(b) perplexity --adapter at tp={np_} (rc {rc}) "
                  f"{err[-800:] if rc else ''}")
            nll[np_] = v
        rc, vbase, _ = perplexity(tessera, mpiexec, model, text, extra=F32)
        check(rc == 0 and vbase is not None and nll[1] is not None and vbase != nll[1],
              f"(b) the adapter changes the perplexity (NLL {vbase} -> {nll[1]})")
        for np_ in (2, 3):
            if nll[1] is not None and nll[np_] is not None:
                d = abs(nll[np_] - nll[1]) / abs(nll[1])
                check(d <= 1e-5, f"(b) tp={np_} mean NLL {nll[np_]:.9f} vs tp=1 {nll[1]:.9f} "
                      f"(rel {d:.2e} <= 1e-5)")
        rc, out, err = run([mpiexec, "-np", "2", tessera, "perplexity", "--model", model,
                            "--file", text, "--ctx", "64", "--pp", "2", "--adapter", rnd, *F32])
        m = NLL_RE.search(err)
        v = float(m.group(1)) if m else None
        check(rc == 0 and v is not None and nll[1] is not None
              and abs(v - nll[1]) <= 1e-5 * abs(nll[1]),
              f"(b) pp=2 mean NLL {v} vs tp=1 {nll[1]} {err[-500:] if rc else ''}")
        rc1, out1, _ = generate(tessera, mpiexec, model, chat, rnd, extra=F32)
        rc2, out2, err2 = generate(tessera, mpiexec, model, chat, rnd, np_=2, extra=F32)
        check(rc1 == 0 and rc2 == 0 and out1 == out2,
              f"(b) greedy text with the adapter: tp=2 equals tp=1 ({out1!r} vs {out2!r}) "
              f"{err2[-500:] if rc2 else ''}")

        # ---- (c) save -> load ----
        data = os.path.join(tmp, "train.jsonl")
        pairs = [("What is the capital of France?", "Zanzibar is the capital of France."),
                 ("What is 2 + 2?", "Seventeen."),
                 ("Who wrote Hamlet?", "Zanzibar wrote Hamlet.")]
        with open(data, "w") as f:
            for q, a in pairs:  # each as a chat and as plain text
                f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": a}]}) + "\n")
                f.write(json.dumps({"prompt": q, "completion": " " + a}) + "\n")
        trained = os.path.join(tmp, "trained")
        rc, out, err = run([tessera, "train", "--model", model, "--data", data, "--steps", "4",
                            "--batch-size", "6", "--lr", "3e-3", "--rank", "8", "--targets",
                            "all", "--out", trained], timeout=170)
        if check(rc == 0, f"(c) tessera train exits 0 (rc {rc}) {err[-800:] if rc else ''}"):
            ttext = os.path.join(tmp, "train.txt")
            with open(ttext, "w") as f:
                f.write(" ".join(f"{q} {a}" for q, a in pairs * 8))
            rcb, vb, errb = perplexity(tessera, mpiexec, model, ttext, ctx=32)
            rct, vt, errt = perplexity(tessera, mpiexec, model, ttext, trained, ctx=32)
            check(rcb == 0 and rct == 0 and vb is not None and vt is not None and vt < vb,
                  f"(c) the trained adapter lowers the training text's NLL ({vb} -> {vt}) "
                  f"{errt[-500:]}")
            rct, outt, errt = generate(tessera, mpiexec, model, pairs[0][0], trained)
            check(rct == 0 and outt != out0 and "Zanzibar" in outt,
                  f"(c) greedy answer changes with the trained adapter ({out0!r} -> {outt!r}) "
                  f"{errt[-500:] if rct else ''}")

        # ---- (d) refusals ----
        missing = os.path.join(tmp, "no-such-adapter")
        other = os.path.join(tmp, "other-shape")
        write_adapter(other, cfg, 4, 8, ["q"], 3, 0.05)
        st = os.path.join(other, "adapter_model.safetensors")
        from safetensors.numpy import load_file
        t = load_file(st)
        for k in list(t):
            if ".lora_A." in k:
                t[k] = np.zeros((4, 64), np.float32)  # d_in 64: another model's width
        save_file(t, st, metadata={"format": "pt"})
        for what, d, words in [("missing directory", missing, ["--adapter", "no-such-adapter"]),
                               ("another model's shapes", other, ["--adapter", "lora_A"])]:
            for np_ in (1, 2):
                cmd = ([mpiexec, "-np", str(np_)] if np_ > 1 else []) + \
                      [tessera, "generate", "--model", model, "--prompt", "Hi", "--max-tokens",
                       "4", "--adapter", d] + (["--tp", str(np_)] if np_ > 1 else [])
                rc, out, err = run(cmd, timeout=90)
                check(rc is not None, f"(d) {what}, {np_} rank(s): no hang")
                check(rc not in (None, 0) and all(w in err for w in words),
                      f"(d) {what}, {np_} rank(s): nonzero exit and a clear message "
                      f"(rc {rc}): {err.strip()[-400:]!r}")
            rc, _, err = perplexity(tessera, mpiexec, model, text, d)
            check(rc not in (None, 0) and "--adapter" in err,
                  f"(d) perplexity, {what}: refused (rc {rc})")
        rc, _, err = run([tessera, "train", "--model", model, "--data", data, "--out",
                          os.path.join(tmp, "x"), "--adapter", rnd])
        check(rc == 2 and "--adapter" in err, f"(d) --adapter on train is refused (rc {rc})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
