#!/usr/bin/env python3
"""LoRA adapters in PEFT's on-disk format (shard/peft.h), checked from the
outside with the `safetensors` Python package and json.

(a) C-written files: peft_driver saves random adapters (synthetic config,
    every target and subsets, rsLoRA, dropout, a base model name; the default
    model's config when it is present). The raw layout is checked byte by
    byte (8-byte little-endian header length, a multiple of 8; JSON header
    padded with spaces; "__metadata__" {"format": "pt"}; F32; data_offsets
    contiguous from 0 and covering the file), then safetensors.numpy reads
    the file: tensor names (PEFT's, computed here independently), shapes,
    dtypes and values (bit-exact against the matrices the driver dumped) and
    adapter_config.json's keys and values.
(b) Python-written files: adapters written with safetensors.numpy.save_file
    in F16, BF16 (ml_dtypes, when installed) and a mix with F32, with configs
    as PEFT writes them (including keys of newer PEFT versions, target_modules
    as short names, suffixes, "all-linear" and a regular expression), loaded
    by the driver and compared bit-exactly with their f32 values.
(c) Corrupt or unsupported inputs: each refused with exit code 2 (no crash)
    and a message containing the expected words.
(d) kill -9 during a save, at every stage of the swap (both the exchange and
    the fallback path): the previous adapter stays complete and loadable (or,
    after the swap, the new one is), never a half-written directory.
(e) PEFT itself, when `import peft` works (it needs torch; not installed by
    scripts/setup.sh): a tiny Llama's LoRA adapter saved by PEFT loads in C
    with the same values, and a C-saved adapter loads in PEFT with the same
    values. Otherwise this part is skipped with a message.

usage: test_peft.py PEFT_DRIVER
Exits 0 when all pass, 1 on any failure, 77 when `safetensors` is missing.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from check import Checks, skip  # noqa: E402

try:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except ImportError:
    skip("the safetensors Python package is missing (scripts/setup.sh installs it)")
try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHORT = ["q", "k", "v", "o", "gate", "up", "down"]
PREFIX = "base_model.model.model.layers."

# The driver's synthetic config (peft_driver.c).
SYNTH = dict(n_embd=48, n_layer=3, n_head=4, n_head_kv=2, head_dim=16, n_ff=80)

# The keys PEFT's PeftConfig + LoraConfig write for a LoRA adapter, as the
# driver writes them (peft/config.py, peft/tuners/lora/config.py).
CONFIG_KEYS = {
    "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out",
    "inference_mode", "init_lora_weights", "layers_pattern", "layers_to_transform",
    "loftq_config", "lora_alpha", "lora_dropout", "megatron_config", "megatron_core",
    "modules_to_save", "peft_type", "r", "rank_pattern", "revision", "target_modules",
    "task_type", "use_dora", "use_rslora",
}

rng = np.random.default_rng(20250301)


def dims(cfg, t):
    """(d_in, d_out) of target t (0..6)."""
    q, kv = cfg["n_head"] * cfg["head_dim"], cfg["n_head_kv"] * cfg["head_dim"]
    e, f = cfg["n_embd"], cfg["n_ff"]
    return [(e, q), (e, kv), (e, kv), (q, e), (e, f), (e, f), (f, e)][t]


def tname(layer, t, ab):
    block = "self_attn" if t < 4 else "mlp"
    return f"{PREFIX}{layer}.{block}.{TARGETS[t]}.lora_{'AB'[ab]}.weight"


def expected_shapes(cfg, r, targets):
    out = {}
    for layer in range(cfg["n_layer"]):
        for t in targets:
            d_in, d_out = dims(cfg, t)
            out[tname(layer, t, 0)] = (r, d_in)
            out[tname(layer, t, 1)] = (d_out, r)
    return out


def read_raw(path, cfg, r, targets):
    """The driver's raw dump -> {name: f32 array}, canonical order."""
    flat = np.fromfile(path, dtype="<f4")
    out, pos = {}, 0
    for layer in range(cfg["n_layer"]):
        for t in targets:
            d_in, d_out = dims(cfg, t)
            for ab, shape in ((0, (r, d_in)), (1, (d_out, r))):
                n = shape[0] * shape[1]
                out[tname(layer, t, ab)] = flat[pos:pos + n].reshape(shape)
                pos += n
    assert pos == flat.size, f"raw dump has {flat.size} floats, expected {pos}"
    return out


def bits_equal(a, b):
    a32, b32 = np.ascontiguousarray(a, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32)
    return a32.shape == b32.shape and np.array_equal(a32.view(np.uint32), b32.view(np.uint32))


class Driver:
    def __init__(self, path):
        self.path = path

    def run(self, *args, env=None):
        e = dict(os.environ)
        if env:
            e.update(env)
        return subprocess.run([self.path, *map(str, args)], capture_output=True, text=True,
                              env=e, timeout=120)

    def save(self, d, config, seed, r, alpha, targets, *opts):
        return self.run("save", d, config, seed, r, alpha, targets, *opts)

    def load(self, d, config, raw=None):
        return self.run("load", d, config, *(["--raw", raw] if raw else []))


def model_config(path):
    """Dims of a GGUF model from its metadata (the gguf package), or None."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    rd = GGUFReader(path)

    def val(key):
        f = rd.fields[key]
        return int(f.parts[f.data[0]][0])

    arch = bytes(rd.fields["general.architecture"].parts[-1]).decode()
    e, h = val(f"{arch}.embedding_length"), val(f"{arch}.attention.head_count")
    key_len = f"{arch}.attention.key_length"
    return dict(n_embd=e, n_layer=val(f"{arch}.block_count"), n_head=h,
                n_head_kv=val(f"{arch}.attention.head_count_kv"),
                head_dim=val(key_len) if key_len in rd.fields else e // h,
                n_ff=val(f"{arch}.feed_forward_length"))


def default_model():
    m = os.environ.get("TESSERA_MODEL")
    if m:
        return m
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    return os.path.join(root, "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- (a) C-written files ------------------------------------------------------

def check_raw_layout(rep, path, what):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    rep.check(n % 8 == 0, f"{what}: header length {n} is a multiple of 8")
    hdr_bytes = data[8:8 + n]
    text = hdr_bytes.decode("utf-8")
    stripped = text.rstrip(" ")
    rep.check(len(text) - len(stripped) < 8 and stripped.endswith("}"),
              f"{what}: header padded with fewer than 8 spaces")
    hdr = json.loads(text)
    keys = list(hdr)
    rep.check(keys[0] == "__metadata__" and hdr["__metadata__"] == {"format": "pt"},
              f"{what}: __metadata__ first and {{'format': 'pt'}}", str(hdr.get("__metadata__")))
    tensors = {k: v for k, v in hdr.items() if k != "__metadata__"}
    rep.check(keys[1:] == sorted(tensors), f"{what}: tensors in name order in the header")
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in tensors.items())
    pos, ok = 0, True
    for begin, end, k in spans:
        v = tensors[k]
        ok &= v["dtype"] == "F32" and begin == pos and end - begin == 4 * int(np.prod(v["shape"]))
        pos = end
    rep.check(ok, f"{what}: F32 tensors contiguous from offset 0")
    rep.check(8 + n + pos == len(data), f"{what}: data section ends at the end of the file",
              f"{8 + n + pos} vs {len(data)}")
    rep.check([s[2] for s in spans] == sorted(tensors), f"{what}: data laid out in name order")


def check_c_written(rep, drv, tmp, config, cfg, r, alpha, targets, opts, what):
    d = os.path.join(tmp, "c_" + re.sub(r"\W", "_", what))
    raw = d + ".raw"
    short = ",".join(SHORT[t] for t in targets)
    res = drv.save(d, config, 7, r, alpha, short, *opts, "--raw", raw)
    if not rep.check(res.returncode == 0, f"{what}: driver save", res.stderr):
        return
    st_path = os.path.join(d, "adapter_model.safetensors")
    check_raw_layout(rep, st_path, what)
    want = read_raw(raw, cfg, r, targets)
    shapes = expected_shapes(cfg, r, targets)
    got = load_file(st_path)
    rep.check(set(got) == set(shapes), f"{what}: tensor names are PEFT's",
              f"extra {sorted(set(got) - set(shapes))[:3]} missing {sorted(set(shapes) - set(got))[:3]}")
    bad = [k for k in shapes if k in got and (got[k].shape != shapes[k] or got[k].dtype != np.float32)]
    rep.check(not bad, f"{what}: shapes (r, d_in)/(d_out, r) and dtype float32", str(bad[:3]))
    bad = [k for k in shapes if k in got and not bits_equal(got[k], want[k])]
    rep.check(not bad, f"{what}: values bit-exact", str(bad[:3]))
    with safe_open(st_path, framework="np") as f:
        rep.check(f.metadata() == {"format": "pt"}, f"{what}: metadata via safe_open",
                  str(f.metadata()))

    conf = json.load(open(os.path.join(d, "adapter_config.json")))
    rep.check(set(conf) == CONFIG_KEYS, f"{what}: config keys",
              f"extra {set(conf) - CONFIG_KEYS} missing {CONFIG_KEYS - set(conf)}")
    base = opts[opts.index("--base") + 1] if "--base" in opts else None
    dropout = float(opts[opts.index("--dropout") + 1]) if "--dropout" in opts else 0.0
    expect = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "lora_dropout": dropout, "bias": "none", "use_rslora": "--rslora" in opts,
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "base_model_name_or_path": base, "modules_to_save": None, "layers_to_transform": None,
        "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
        "revision": None,
    }
    for k, v in expect.items():
        rep.check(conf.get(k) == v and type(conf.get(k)) is type(v),
                  f"{what}: config {k} = {v!r}", f"got {conf.get(k)!r}")
    rep.check(sorted(conf["target_modules"]) == sorted(TARGETS[t] for t in targets),
              f"{what}: config target_modules", str(conf["target_modules"]))
    # The driver reads back what it wrote.
    res = drv.load(d, config, raw + ".back")
    if rep.check(res.returncode == 0, f"{what}: driver load", res.stderr):
        back = read_raw(raw + ".back", cfg, r, targets)
        rep.check(all(bits_equal(back[k], want[k]) for k in want), f"{what}: C load bit-exact")


def part_a(rep, drv, tmp):
    allt = list(range(7))
    check_c_written(rep, drv, tmp, "synthetic", SYNTH, 4, 8, allt, [], "synthetic all")
    check_c_written(rep, drv, tmp, "synthetic", SYNTH, 2, 16, [0, 2],
                    ["--rslora", "--dropout", "0.05", "--base", "HuggingFaceTB/SmolLM2-135M"],
                    "synthetic q,v rslora")
    check_c_written(rep, drv, tmp, "synthetic", SYNTH, 3, 1.5, [3, 4, 5, 6],
                    ["--dropout", "0.1"], "synthetic o,gate,up,down alpha 1.5")
    model = default_model()
    mcfg = model_config(model) if os.path.isfile(model) else None
    if mcfg:
        check_c_written(rep, drv, tmp, model, mcfg, 8, 16, allt,
                        ["--dropout", "0.05", "--base", "HuggingFaceTB/SmolLM2-135M-Instruct"],
                        "default model")
    else:
        print(f"skipped: (a) with the default model's config ({model}: absent, or no gguf package)")


# ---- (b) Python-written files ---------------------------------------------------

def peft_config(r, alpha, target_modules, **over):
    """adapter_config.json as a recent PEFT writes it (including keys the C
    writer does not emit)."""
    c = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "some/model",
        "bias": "none", "corda_config": None, "eva_config": None, "exclude_modules": None,
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": None,
        "loftq_config": {}, "lora_alpha": alpha, "lora_bias": False, "lora_dropout": 0.05,
        "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "peft_version": "0.17.1", "qalora_group_size": 16, "r": r,
        "rank_pattern": {}, "revision": None, "target_modules": target_modules,
        "target_parameters": None, "task_type": "CAUSAL_LM", "trainable_token_indices": None,
        "use_dora": False, "use_qalora": False, "use_rslora": False,
    }
    c.update(over)
    return c


def random_tensors(cfg, r, targets, dtype_of):
    """{name: array} with values in the given dtype (a function of the name)."""
    out = {}
    for name, shape in expected_shapes(cfg, r, targets).items():
        dt = dtype_of(name)
        x = rng.uniform(-1, 1, size=shape).astype(np.float32)
        out[name] = x.astype(dt)
    return out


def write_adapter(d, tensors, config, config_text=None):
    os.makedirs(d, exist_ok=True)
    if tensors is not None:
        save_file(tensors, os.path.join(d, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        f.write(config_text if config_text is not None else json.dumps(config, indent=2, sort_keys=True))


def header_dtypes(d):
    data = open(os.path.join(d, "adapter_model.safetensors"), "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    return {v["dtype"] for k, v in json.loads(data[8:8 + n]).items() if k != "__metadata__"}


def load_and_compare(rep, drv, d, config, cfg, r, targets, tensors, what, expect=None):
    raw = d + ".raw"
    res = drv.load(d, config, raw)
    if not rep.check(res.returncode == 0, f"{what}: C load", res.stderr):
        return None
    info = json.loads(res.stdout)
    rep.check(info["targets"] == [TARGETS[t] for t in targets] and info["r"] == r
              and info["n_layers"] == cfg["n_layer"], f"{what}: r, layers, targets", res.stdout)
    got = read_raw(raw, cfg, r, targets)
    bad = [k for k in tensors if not bits_equal(got[k], tensors[k].astype(np.float32))]
    rep.check(not bad, f"{what}: values equal the f32 conversion", str(bad[:3]))
    for k, v in (expect or {}).items():
        rep.check(abs(info[k] - v) < 1e-6 if isinstance(v, float) else info[k] == v,
                  f"{what}: {k} = {v!r}", f"got {info[k]!r}")
    return info


def part_b(rep, drv, tmp):
    allt = list(range(7))
    d = os.path.join(tmp, "py_f16")
    t16 = random_tensors(SYNTH, 4, allt, lambda n: np.float16)
    write_adapter(d, t16, peft_config(4, 8, ["q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"]))
    rep.check(header_dtypes(d) == {"F16"}, "F16 file holds F16", str(header_dtypes(d)))
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 4, allt, t16, "F16 all targets",
                     {"alpha": 8.0, "dropout": 0.05, "scaling": 2.0, "base_model": "some/model",
                      "use_rslora": False})

    if ml_dtypes is None:
        print("skipped: BF16 adapters (ml_dtypes is not installed)")
        bf16 = np.float16
    else:
        bf16 = ml_dtypes.bfloat16
    d = os.path.join(tmp, "py_bf16")
    tb = random_tensors(SYNTH, 3, [1, 6], lambda n: bf16)
    write_adapter(d, tb, peft_config(3, 6, ["down_proj", "k_proj"], use_rslora=True,
                                     lora_dropout=0.0))
    rep.check(header_dtypes(d) == {"BF16" if ml_dtypes else "F16"}, "BF16 file holds BF16",
              str(header_dtypes(d)))
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 3, [1, 6], tb, "BF16 k,down rslora",
                     {"alpha": 6.0, "use_rslora": True,
                      "scaling": float(np.float32(6) / np.sqrt(np.float32(3)))})

    # Mixed dtypes, suffix forms of target_modules, a float alpha.
    d = os.path.join(tmp, "py_mixed")
    dts = [np.float32, np.float16, bf16]
    tm = random_tensors(SYNTH, 2, [0, 3, 5], lambda n: dts[sum(map(ord, n)) % 3])
    write_adapter(d, tm, peft_config(2, 3.5, ["self_attn.q_proj", "o_proj", "mlp.up_proj"]))
    rep.check(header_dtypes(d) == ({"F32", "F16", "BF16"} if ml_dtypes else {"F32", "F16"}),
              "mixed file holds F32, F16 and BF16", str(header_dtypes(d)))
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 2, [0, 3, 5], tm, "mixed dtypes, suffixes",
                     {"alpha": 3.5, "scaling": 1.75})

    # "all-linear" and a regular expression; no base model name; minimal config.
    d = os.path.join(tmp, "py_all_linear")
    ta = random_tensors(SYNTH, 1, allt, lambda n: np.float32)
    write_adapter(d, ta, peft_config(1, 2, "all-linear", base_model_name_or_path=None))
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 1, allt, ta, "all-linear",
                     {"base_model": ""})
    d = os.path.join(tmp, "py_regex")
    tr = random_tensors(SYNTH, 2, [0, 2], lambda n: np.float16)
    write_adapter(d, tr, peft_config(2, 4, r".*\.(q_proj|v_proj)$"))
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 2, [0, 2], tr, "regex target_modules")
    d = os.path.join(tmp, "py_minimal")
    write_adapter(d, tr, {"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 2, [0, 2], tr, "minimal config",
                     {"dropout": 0.0, "use_rslora": False})

    # The default model's config, F16, q and v (PEFT's default targets for llama).
    model = default_model()
    mcfg = model_config(model) if os.path.isfile(model) else None
    if mcfg:
        d = os.path.join(tmp, "py_model")
        t = random_tensors(mcfg, 8, [0, 2], lambda n: np.float16)
        write_adapter(d, t, peft_config(8, 16, ["q_proj", "v_proj"]))
        load_and_compare(rep, drv, d, model, mcfg, 8, [0, 2], t, "default model F16 q,v")
    else:
        print(f"skipped: (b) with the default model's config ({model}: absent, or no gguf package)")


# ---- (c) corrupt inputs ---------------------------------------------------------------

def part_c(rep, drv, tmp):
    allt = list(range(7))
    good_t = random_tensors(SYNTH, 4, allt, lambda n: np.float32)
    good_c = peft_config(4, 8, TARGETS)
    cases = []

    def case(name, subs, tensors=None, config=None, config_text=None, edit=None):
        cases.append((name, subs, tensors, config, config_text, edit))

    def without(*names):
        return {k: v for k, v in good_t.items() if k not in names}

    def with_(**kv):
        t = dict(good_t)
        t.update({k.replace("__", "."): v for k, v in kv.items()})
        return t

    def cfg(**over):
        c = dict(good_c)
        c.update(over)
        return c

    def truncate(n):
        def f(d):
            p = os.path.join(d, "adapter_model.safetensors")
            data = open(p, "rb").read()
            open(p, "wb").write(data[:n if n >= 0 else len(data) + n])
        return f

    def replace_weights(data):
        def f(d):
            open(os.path.join(d, "adapter_model.safetensors"), "wb").write(data)
        return f

    def to_bin(d):
        os.rename(os.path.join(d, "adapter_model.safetensors"), os.path.join(d, "adapter_model.bin"))

    def rm_config(d):
        os.remove(os.path.join(d, "adapter_config.json"))

    a1q = tname(1, 0, 0)
    case("truncated data", ["format error", "adapter_model.safetensors"], edit=truncate(-100))
    case("truncated header", ["format error", "adapter_model.safetensors"], edit=truncate(5))
    case("truncated in the header", ["format error"], edit=truncate(40))
    case("garbage weights", ["format error"], edit=replace_weights(os.urandom(64)))
    case("empty weights file", ["format error"], edit=replace_weights(b""))
    case("no tensors", ["holds no tensors"], tensors={})
    case("wrong shape", [a1q, "shape [4, 49]", "expected [4, 48]", "lora_A of q_proj"],
         tensors=with_(**{a1q.replace(".", "__"): np.ones((4, 49), np.float32)}))
    case("transposed B", [tname(0, 6, 1), "shape [4, 48]", "expected [48, 4]"],
         tensors=with_(**{tname(0, 6, 1).replace(".", "__"): np.ones((4, 48), np.float32)}))
    case("3-D tensor", [a1q, "shape [4, 48, 1]"],
         tensors=with_(**{a1q.replace(".", "__"): np.ones((4, 48, 1), np.float32)}))
    case("r mismatch", ["has shape [4, 80], expected [8, 80]", "r = 8"], config=cfg(r=8))
    case("missing lora_B", ["missing tensor", tname(2, 2, 1)], tensors=without(tname(2, 2, 1)))
    case("missing lora_A", ["missing tensor", tname(0, 5, 0)], tensors=without(tname(0, 5, 0)))
    case("target missing in a layer", ["missing tensor", tname(1, 4, 0), "every layer"],
         tensors=without(tname(1, 4, 0), tname(1, 4, 1)))
    case("layer out of range", ["layer 3", "3 layers"],
         tensors=with_(**{tname(3, 0, 0).replace(".", "__"): np.ones((4, 48), np.float32)}))
    case("unknown tensor", ["unknown tensor", "lora_A.default.weight"],
         tensors=with_(**{(PREFIX + "0.self_attn.q_proj.lora_A.default.weight").replace(".", "__"):
                          np.ones((4, 48), np.float32)}))
    case("q_proj under mlp", ["unknown tensor"],
         tensors=with_(**{(PREFIX + "0.mlp.q_proj.lora_A.weight").replace(".", "__"):
                          np.ones((4, 48), np.float32)}))
    case("leading-zero layer", ["unknown tensor"],
         tensors=with_(**{(PREFIX + "01.self_attn.q_proj.lora_A.weight").replace(".", "__"):
                          np.ones((4, 48), np.float32)}))
    case("bias tensor", ["is a bias"],
         tensors=with_(**{(PREFIX + "0.self_attn.q_proj.bias").replace(".", "__"):
                          np.ones((64,), np.float32)}))
    case("DoRA magnitude", ["DoRA"],
         tensors=with_(**{(PREFIX + "0.self_attn.q_proj.lora_magnitude_vector").replace(".", "__"):
                          np.ones((64,), np.float32)}))
    case("I32 tensor", ["unsupported", a1q, "I32"],
         tensors=with_(**{a1q.replace(".", "__"): np.ones((4, 48), np.int32)}))
    nan_t = dict(good_t)
    nan_t[a1q] = good_t[a1q].copy()
    nan_t[a1q][2, 5] = np.nan
    case("NaN value", ["non-finite", a1q, "row 2, column 5"], tensors=nan_t)
    inf_t = dict(good_t)
    inf_t[a1q] = good_t[a1q].astype(np.float16)
    inf_t[a1q][0, 0] = np.inf
    case("F16 inf", ["non-finite", a1q], tensors=inf_t)
    case("bad JSON", ["format error", "adapter_config.json", "not valid JSON"],
         config_text='{"peft_type": "LORA", "r": 4,')
    case("JSON list", ["not an object"], config_text="[1, 2]")
    case("duplicate key", ["not valid JSON"], config_text='{"peft_type": "LORA", "r": 4, "r": 4}')
    case("peft_type IA3", ["unsupported", 'peft_type "IA3"', "LORA"], config=cfg(peft_type="IA3"))
    case("no peft_type", ["peft_type"], config={k: v for k, v in good_c.items() if k != "peft_type"})
    case("r a string", ["\"r\" is a string"], config=cfg(r="4"))
    case("r zero", ["\"r\" = 0"], config=cfg(r=0))
    case("alpha a string", ["lora_alpha"], config=cfg(lora_alpha="8"))
    case("dropout 1.5", ["lora_dropout"], config=cfg(lora_dropout=1.5))
    case("use_dora", ["unsupported", "use_dora"], config=cfg(use_dora=True))
    case("fan_in_fan_out", ["unsupported", "fan_in_fan_out"], config=cfg(fan_in_fan_out=True))
    case("lora_bias", ["unsupported", "lora_bias"], config=cfg(lora_bias=True))
    case("rank_pattern", ["unsupported", "rank_pattern"],
         config=cfg(rank_pattern={"model.layers.0.self_attn.q_proj": 8}))
    case("alpha_pattern", ["unsupported", "alpha_pattern"], config=cfg(alpha_pattern={"q_proj": 2}))
    case("modules_to_save", ["unsupported", "modules_to_save", "lm_head"],
         config=cfg(modules_to_save=["lm_head"]))
    case("layers_to_transform", ["unsupported", "layers_to_transform"],
         config=cfg(layers_to_transform=[0, 1]))
    case("layer_replication", ["unsupported", "layer_replication"],
         config=cfg(layer_replication=[[0, 2]]))
    case("init pissa", ["unsupported", "pissa"], config=cfg(init_lora_weights="pissa_niter_4"))
    case("init lora_ga", ["unsupported", "lora_ga"], config=cfg(init_lora_weights="lora_ga"))
    case("use_qalora", ["unsupported", "use_qalora"], config=cfg(use_qalora=True))
    case("kasa_config", ["unsupported", "kasa_config"], config=cfg(kasa_config={"r": 4}))
    case("target_parameters", ["unsupported", "target_parameters"],
         config=cfg(target_parameters=["mlp.experts.down_proj"]))
    case("target lm_head", ["unsupported", "lm_head"], config=cfg(target_modules=TARGETS + ["lm_head"]))
    case("listed, no tensors", ["lists gate_proj", "no gate_proj tensors"],
         tensors={k: v for k, v in good_t.items() if "gate_proj" not in k})
    case("tensors, not listed", ["has k_proj tensors", "does not list k_proj"],
         config=cfg(target_modules=[t for t in TARGETS if t != "k_proj"]))
    case("target_modules a number", ["target_modules"], config=cfg(target_modules=3))
    case("bin only", ["unsupported", "adapter_model.bin", "only"], edit=to_bin)
    case("no config", ["I/O error", "adapter_config.json"], edit=rm_config)

    for i, (name, subs, tensors, config, config_text, edit) in enumerate(cases):
        d = os.path.join(tmp, f"bad_{i:02d}")
        write_adapter(d, good_t if tensors is None else tensors,
                      good_c if config is None else config, config_text)
        if edit:
            edit(d)
        res = drv.load(d, "synthetic")
        ok = res.returncode == 2 and res.stderr.startswith("error: ")
        missing = [s for s in subs if s not in res.stderr]
        rep.check(ok and not missing, f"refused: {name}",
                  f"exit {res.returncode}, stderr {res.stderr.strip()!r}, lacks {missing}")
    # The messages, for the log.
    print(f"{len(cases)} corrupt or unsupported adapters refused; e.g.:")
    for i in (6, 10, 25):
        res = drv.load(os.path.join(tmp, f"bad_{i:02d}"), "synthetic")
        print("   ", res.stderr.strip().replace(tmp, "$TMP"))


# ---- (d) kill -9 during a save ---------------------------------------------------------

def saved_values(rep, drv, d, r, targets, what):
    raw = d.rstrip("/") + ".check.raw"
    res = drv.load(d, "synthetic", raw)
    if not rep.check(res.returncode == 0, f"{what}: {os.path.basename(d)} loads", res.stderr):
        return None
    v = read_raw(raw, SYNTH, r, targets)
    os.remove(raw)
    return v


def same(a, b):
    return a is not None and b is not None and all(bits_equal(a[k], b[k]) for k in a)


def kill_at(drv, d, stage, env_extra, seed, raw):
    """Starts a save that pauses at `stage`, kills it with SIGKILL there."""
    env = dict(os.environ, TSR_PEFT_SAVE_PAUSE=stage, **env_extra)
    p = subprocess.Popen([drv.path, "save", d, "synthetic", str(seed), "4", "8", "all", "--raw", raw],
                         stderr=subprocess.PIPE, text=True, env=env)
    line = ""
    t0 = time.time()
    while time.time() - t0 < 30:
        line = p.stderr.readline()
        if not line or "paused at" in line:
            break
    if "paused at" not in line:
        p.kill()
        p.wait()
        return f"the saver did not pause at {stage} ({line.strip()!r}, exit {p.returncode})"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    return None if p.returncode == -signal.SIGKILL else f"exit {p.returncode}"


def part_d(rep, drv, tmp):
    allt = list(range(7))
    root = os.path.join(tmp, "atomic")
    for mode, env, stages in (("exchange", {}, ["tensors", "files", "swapped"]),
                              ("fallback", {"TSR_PEFT_SAVE_NO_EXCHANGE": "1"},
                               ["tensors", "files", "aside", "swapped"])):
        for stage in stages:
            what = f"kill -9 at {stage} ({mode})"
            shutil.rmtree(root, ignore_errors=True)
            os.makedirs(root)
            d = os.path.join(root, "adapter")
            raw_old, raw_new = d + ".old.raw", d + ".new.raw"
            res = drv.save(d, "synthetic", 1, 4, 8, "all", "--raw", raw_old)
            if not rep.check(res.returncode == 0, f"{what}: first save", res.stderr):
                continue
            old = read_raw(raw_old, SYNTH, 4, allt)
            err = kill_at(drv, d, stage, env, 2, raw_new)
            if not rep.check(err is None, f"{what}: killed at the stage", err or ""):
                continue
            new = read_raw(raw_new, SYNTH, 4, allt)
            # "adapter.tmp-XXXXXX" -> side["tmp"], "adapter.old-XXXXXX" -> side["old"]
            side = {n.split(".")[-1].split("-")[0]: os.path.join(root, n)
                    for n in os.listdir(root)
                    if n.startswith("adapter.") and os.path.isdir(os.path.join(root, n))}
            if stage == "aside":
                # The one window of the fallback: no `adapter`, the old one
                # complete under .old-*, the new one complete under .tmp-*.
                rep.check(not os.path.exists(d), f"{what}: adapter dir absent in this window")
                rep.check("old" in side and same(saved_values(rep, drv, side["old"], 4, allt, what), old),
                          f"{what}: previous adapter complete in adapter.old-*", str(os.listdir(root)))
                rep.check("tmp" in side and same(saved_values(rep, drv, side["tmp"], 4, allt, what), new),
                          f"{what}: new adapter complete in adapter.tmp-*", str(os.listdir(root)))
                continue
            got = saved_values(rep, drv, d, 4, allt, what)
            if stage == "swapped":
                rep.check(same(got, new), f"{what}: the new adapter is in place, complete")
            else:
                rep.check(same(got, old), f"{what}: the previous adapter is intact and loadable")
                rep.check("tmp" in side, f"{what}: the partial save is only in adapter.tmp-*",
                          str(os.listdir(root)))
            # A later save still works beside the leftovers.
            res = drv.save(d, "synthetic", 3, 4, 8, "all")
            rep.check(res.returncode == 0 and saved_values(rep, drv, d, 4, allt, what) is not None,
                      f"{what}: a later save succeeds", res.stderr)
    # A save killed before its first rename, with no previous adapter: no dir.
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    d = os.path.join(root, "fresh")
    err = kill_at(drv, d, "files", {}, 4, d + ".raw")
    rep.check(err is None and not os.path.exists(d), "kill -9 before a first save completes: no dir",
              err or str(os.listdir(root)))


# ---- (e) PEFT itself ----------------------------------------------------------------------

def part_e(rep, drv, tmp):
    try:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        print(f"skipped: the PEFT round trip (peft/torch/transformers not installed: {e})")
        return
    torch.manual_seed(0)
    lc = LlamaConfig(hidden_size=SYNTH["n_embd"], intermediate_size=SYNTH["n_ff"],
                     num_attention_heads=SYNTH["n_head"], num_key_value_heads=SYNTH["n_head_kv"],
                     head_dim=SYNTH["head_dim"], num_hidden_layers=SYNTH["n_layer"], vocab_size=100,
                     max_position_embeddings=128)
    model = LlamaForCausalLM(lc)
    conf = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM", lora_dropout=0.0)
    pm = get_peft_model(model, conf)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.rand_like(p) * 2 - 1)
    d = os.path.join(tmp, "peft_saved")
    pm.save_pretrained(d)
    want = load_file(os.path.join(d, "adapter_model.safetensors"))
    rep.check(set(want) == set(expected_shapes(SYNTH, 4, range(7))),
              "PEFT: tensor names of save_pretrained are the ones Tessera writes",
              str(sorted(want)[:3]))
    load_and_compare(rep, drv, d, "synthetic", SYNTH, 4, list(range(7)), want, "PEFT-saved adapter")

    # C-saved -> PeftModel.from_pretrained.
    d2 = os.path.join(tmp, "c_for_peft")
    raw = d2 + ".raw"
    res = drv.save(d2, "synthetic", 9, 4, 8, "all", "--raw", raw)
    if not rep.check(res.returncode == 0, "PEFT: C save", res.stderr):
        return
    vals = read_raw(raw, SYNTH, 4, list(range(7)))
    pm2 = PeftModel.from_pretrained(LlamaForCausalLM(lc), d2)
    sd = {k.replace(".default", ""): v.detach().numpy() for k, v in pm2.state_dict().items() if "lora_" in k}
    bad = [k for k in vals if k not in sd or not bits_equal(sd[k], vals[k])]
    rep.check(not bad, "PEFT: from_pretrained of a C-saved adapter has the same values", str(bad[:3]))
    print("PEFT round trip: done")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    drv = Driver(sys.argv[1])
    t = time.time()
    rep = Checks()
    tmp = tempfile.mkdtemp(prefix="tsr_peft_test_")
    try:
        part_a(rep, drv, tmp)
        part_b(rep, drv, tmp)
        part_c(rep, drv, tmp)
        part_d(rep, drv, tmp)
        part_e(rep, drv, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{time.time() - t:.1f} s")
    sys.exit(rep.finish("test_peft"))


if __name__ == "__main__":
    main()
