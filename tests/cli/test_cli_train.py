#!/usr/bin/env python3
"""Runs `tessera-cli train` against the fake server (tests/cli/fake_server.py):
the requests it sends (adapter, LoRA config, examples as in the JSONL, batch
sizes, shuffle order, AdamW values), its stdout and progress lines, the saved
directory (the adapter's files byte for byte, loss.csv, loss.png decoded
here with zlib), --resume, ALREADY_EXISTS, bad data lines, a refused --out,
Ctrl-C, a step that fails, a step split over several ForwardBackward calls
(the per-call limits of 1024 examples and of the tokens the server names),
--adam-eps, a 65 MiB adapter, auth and usage errors.

  test_cli_train.py --cli build/launcher/tessera-cli [--proto proto]

Exits 0 when everything passed, 1 otherwise, 77 (skipped) when grpcio or
grpcio-tools is missing. Each check prints "ok - name" or "FAIL - name: why".
"""
import argparse
import glob
import json
import math
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
M64 = (1 << 64) - 1

# An independent copy of `tessera train`'s order (runtime/train/epoch.c
# tsr_epoch_shuffle), to check the order the fake saw.


def splitmix64(s):
    s = (s + 0x9E3779B97F4A7C15) & M64
    z = s
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return s, z ^ (z >> 31)


def shuffle_epoch(n, seed, epoch):
    s = seed ^ ((0xD1B54A32D192ED03 * (epoch + 1)) & M64)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        s, r = splitmix64(s)
        j = r % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def plan(n, batch, seed, total, start=0):
    """The example indices of steps start..total-1."""
    per_epoch = (n + batch - 1) // batch
    out = []
    for k in range(start, total):
        first = (k % per_epoch) * batch
        out.append(shuffle_epoch(n, seed, k // per_epoch)[first:first + batch])
    return out


def check_png(path, want_w, want_h):
    """Decodes the PNG at path. Returns (None, info) or (why, None)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "bad signature", None
    pos, chunks = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            return f"truncated chunk at {pos}", None
        (ln,) = struct.unpack(">I", data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + ln]
        (crc,) = struct.unpack(">I", data[pos + 8 + ln:pos + 12 + ln])
        if zlib.crc32(typ + body) & 0xFFFFFFFF != crc:
            return f"bad CRC in {typ!r}", None
        chunks.append((typ, body))
        pos += 12 + ln
    types = [t for t, _ in chunks]
    if types[0] != b"IHDR" or types[-1] != b"IEND" or b"IDAT" not in types:
        return f"chunks {types}", None
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    if (w, h) != (want_w, want_h) or (depth, ctype, comp, filt, inter) != (8, 2, 0, 0, 0):
        return f"IHDR {w}x{h} depth {depth} type {ctype} {comp} {filt} {inter}", None
    raw = zlib.decompress(b"".join(b for t, b in chunks if t == b"IDAT"))
    stride = 1 + 3 * w
    if len(raw) != h * stride:
        return f"{len(raw)} bytes of scanlines, want {h * stride}", None
    rows, prev = [], bytearray(3 * w)
    for y in range(h):
        f, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        if f > 4:
            return f"row {y}: filter type {f}", None
        for i in range(len(line)):  # undo the filters (the encoder uses 0 only)
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], (prev[i - 3] if i >= 3 else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    colors, curve, dark, nonwhite = set(), [], 0, 0
    for y, line in enumerate(rows):
        for x in range(w):
            px = line[3 * x:3 * x + 3]
            colors.add(px)
            if px != b"\xff\xff\xff":
                nonwhite += 1
            if px == bytes((31, 119, 180)):
                curve.append((x, y))
            if max(px) < 90:
                dark += 1
    return None, {"colors": len(colors), "curve": curve, "dark": dark, "nonwhite": nonwhite,
                  "w": w, "h": h}


def check_safetensors(blob):
    """None when blob is a well-formed safetensors file, else why."""
    if len(blob) < 8:
        return "shorter than its header length"
    (n,) = struct.unpack("<Q", blob[:8])
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError as e:
        return f"header is not JSON: {e}"
    end = 0
    for k, v in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                       key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = v["data_offsets"]
        if a != end or b - a != 4 * math.prod(v["shape"]) or v["dtype"] != "F32":
            return f"tensor {k}: offsets {a}..{b} after {end}"
        end = b
    if 8 + n + end != len(blob):
        return f"data ends at {8 + n + end} of {len(blob)} bytes"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--proto", default=os.path.join(ROOT, "proto"))
    opts = ap.parse_args()
    sys.path.insert(0, HERE)
    from cli_common import Fake, free_port, start

    t = start(opts.cli, opts.proto, "tessera-cli-train-test-", 120)
    if t is None:
        return 77
    import fake_server as fs
    cli, tmp, stubs, base_env, run, r = t.cli, t.tmp, t.stubs, t.base_env, t.run, t.r

    def path(*names):
        return os.path.join(tmp, *names)

    def write(p, text):
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        return p

    def read_log(p):
        if not os.path.exists(p):
            return []
        with open(p) as f:
            return [json.loads(line) for line in f]

    counter = [0]

    def fake(expect=None, *extra):
        """A fresh fake server with its own log, dump dir and expectations."""
        counter[0] += 1
        n = counter[0]
        log, dump = path(f"log{n}.jsonl"), path(f"dump{n}")
        args = ["--train-log", log, "--save-dump", dump, *extra]
        if expect is not None:
            args += ["--train-expect", write(path(f"expect{n}.json"), json.dumps(expect))]
        f = Fake(stubs, *args)
        f.log, f.dump = log, dump
        return f

    records = [
        {"prompt": "What is 2+2?", "completion": " 4"},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris."}]},
        {"prompt": "Translate 'chat' to English:", "completion": " cat", "source": "ignored"},
        {"prompt": "héllo wörld ✓", "completion": " 日本語"},
        {"messages": [{"role": "user", "content": "Say hi"},
                      {"role": "assistant", "content": "hi"},
                      {"role": "user", "content": "again"},
                      {"role": "assistant", "content": "hi hi"}]},
        {"prompt": "Q: colour of the sky?\nA:", "completion": " blue"},
        {"prompt": "count", "completion": " 1 2 3", "meta": {"k": [1, 2]}},
    ]
    canon = [fs.canon_record(x) for x in records]
    ntok = [fs.train_example_tokens(c) for c in canon]
    lines = [json.dumps(x, ensure_ascii=False) for x in records]
    data = write(path("data.jsonl"), lines[0] + "\n\n" + "\n".join(lines[1:4]) + "\n   \n"
                 + "\n".join(lines[4:]) + "\n")
    n = len(records)
    step_re = re.compile(r"^step (\d+)/(\d+)  loss (\d+\.\d{4})  grad_norm (\d+\.\d{3})  "
                         r"tokens (\d+)  tok/s (\d+\.\d)$")

    def check_steps(name, out, batches, start, total):
        """stdout has one line per step with the fake's loss, norm and tokens."""
        got = out.splitlines()
        why = []
        if len(got) != len(batches):
            why.append(f"{len(got)} lines for {len(batches)} steps")
        for i, (line, b) in enumerate(zip(got, batches)):
            m = step_re.match(line)
            k = start + i
            want = (str(k + 1), str(total), f"{fs.fake_loss(k):.4f}", f"{fs.fake_grad_norm(k):.3f}",
                    str(sum(ntok[j] for j in b)))
            if not m or m.groups()[:5] != want:
                why.append(f"line {line!r}, want {want}")
        return r.check(name, not why, "; ".join(why) + f" stdout={out!r}")

    def expected_csv(steps):
        rows = ["step,loss,grad_norm,tokens"]
        for k, b in steps:
            rows.append(f"{k + 1},{fs.fake_loss(k):.6f},{fs.fake_grad_norm(k):.6f},"
                        f"{sum(ntok[j] for j in b)}")
        return "\n".join(rows) + "\n"

    def check_saved(name, out_dir, f, steps):
        files = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
        r.check(f"{name}: the directory holds the adapter, loss.csv and loss.png",
                files == ["adapter_config.json", "adapter_model.safetensors", "loss.csv",
                          "loss.png"], repr(files))
        for fname in ("adapter_config.json", "adapter_model.safetensors"):
            a = open(os.path.join(out_dir, fname), "rb").read() if fname in files else b""
            b = open(os.path.join(f.dump, fname), "rb").read()
            r.check(f"{name}: {fname} is byte-equal to what the server sent",
                    a == b and len(a) > 0, f"{len(a)} vs {len(b)} bytes")
        if "adapter_model.safetensors" in files:
            blob = open(os.path.join(out_dir, "adapter_model.safetensors"), "rb").read()
            why = check_safetensors(blob)
            r.check(f"{name}: adapter_model.safetensors is a valid safetensors file", why is None,
                    why)
            cfg = json.load(open(os.path.join(out_dir, "adapter_config.json")))
            r.check(f"{name}: adapter_config.json is PEFT's", cfg.get("peft_type") == "LORA",
                    repr(cfg))
        if "loss.csv" in files:
            csv = open(os.path.join(out_dir, "loss.csv")).read()
            want = expected_csv(steps)
            r.check(f"{name}: loss.csv", csv == want, f"got {csv!r} want {want!r}")
        if "loss.png" in files:
            why, info = check_png(os.path.join(out_dir, "loss.png"), 800, 480)
            ok = why is None
            if ok:
                cv = info["curve"]
                xs = sorted(x for x, _ in cv)
                lo, hi = xs[0], xs[-1]
                left = [y for x, y in cv if x < lo + (hi - lo) * 0.1]
                right = [y for x, y in cv if x > hi - (hi - lo) * 0.1]
                ok = info["colors"] >= 4 and info["dark"] > 300 and (
                    len(cv) > 200 and hi - lo > 400 if len(steps) > 1 else len(cv) > 20)
                why = (f"colors {info['colors']} curve {len(cv)} px from x {lo} to {hi}, "
                       f"dark {info['dark']}")
                if ok and len(steps) > 1:  # the loss falls: the curve goes down the image
                    ok = sum(left) / len(left) < sum(right) / len(right)
                    why += f"; left rows {sum(left) / len(left):.0f} right " \
                           f"{sum(right) / len(right):.0f}"
            r.check(f"{name}: loss.png is a valid, non-blank PNG of the falling loss", ok, why)
        left = glob.glob(out_dir.rstrip("/") + ".tmp-*") + glob.glob(out_dir.rstrip("/") + ".old-*")
        r.check(f"{name}: no temporary directory is left beside it", not left, repr(left))

    def methods(log):
        return [e["method"] for e in log]

    # ---- a full run: every flag reaches the server ----------------------------
    full_cfg = {"rank": 4, "alpha": 8.0, "target_modules": ["q", "k", "v"], "dropout": 0.1,
                "seed": "7"}
    expect = {"adapter": "demo-1", "config": full_cfg, "data": data, "batch_size": 3,
              "lr": 0.001, "weight_decay": 0.01, "max_grad_norm": 0.5}
    out1 = path("out1")
    flags = ["--data", data, "--adapter", "demo-1", "--batch-size", "3", "--lr", "0.001",
             "--rank", "4", "--alpha", "8", "--targets", "q,k,v", "--seed", "7",
             "--max-grad-norm", "0.5", "--weight-decay", "0.01", "--dropout", "0.1"]
    with fake(expect) as f:
        A = ["--addr", f.addr]
        code, so, se = run([*A, "train", *flags, "--epochs", "2", "--out", out1])
        batches = plan(n, 3, 7, 6)
        r.check("train exits 0", code == 0, f"rc={code} stderr={se!r}")
        check_steps("train prints one line per step on stdout", so, batches, 0, 6)
        log = read_log(f.log)
        r.check("the calls: CreateAdapter, then ForwardBackward + OptimStep per step, then "
                "SaveAdapter", methods(log) == ["CreateAdapter"] + ["ForwardBackward",
                                                                    "OptimStep"] * 6
                + ["SaveAdapter"], repr(methods(log)))
        r.check("CreateAdapter carries the name and every LoRA flag",
                log and log[0].get("name") == "demo-1" and log[0].get("config") == full_cfg,
                repr(log[:1]))
        fbs = [e for e in log if e["method"] == "ForwardBackward"]
        r.check("the batches follow tessera train's shuffle (seed 7, two epochs of 3+3+1)",
                [e["examples"] for e in fbs] == batches,
                f"got {[e['examples'] for e in fbs]} want {batches}")
        r.check("each example is the JSONL record (prompt/completion or chat)",
                len(fbs) == 6 and all([_tuplify(x) for x in e["canon"]]
                                      == [canon[j] for j in e["examples"]] for e in fbs),
                repr(fbs[:1]))
        ops = [e for e in log if e["method"] == "OptimStep"]
        r.check("OptimStep carries lr, weight decay and max grad norm",
                len(ops) == 6 and all(abs(e["lr"] - 0.001) < 1e-9 and
                                      abs(e["weight_decay"] - 0.01) < 1e-9 and
                                      abs(e["max_grad_norm"] - 0.5) < 1e-9 for e in ops),
                repr(ops[:1]))
        sv = [e for e in log if e["method"] == "SaveAdapter"]
        r.check("SaveAdapter asks for the files, saving nothing on the server",
                sv and sv[0]["return_files"] and sv[0]["path"] == "", repr(sv))
        prog = [ln for ln in se.splitlines() if re.search(r"\[[#.]{24}\] step \d+/6  loss", ln)]
        r.check("stderr has a progress line per step (not a terminal: one line each)",
                len(prog) == 6 and "[" + "#" * 24 + "] step 6/6" in prog[-1]
                and all(ln.startswith("tessera-cli: ") for ln in prog), repr(se))
        r.check("stderr says where the adapter went",
                f"saved adapter 'demo-1' (step 6) in {out1}" in se, repr(se))
        check_saved("first run", out1, f, list(zip(range(6), batches)))

        # ---- ALREADY_EXISTS, then --resume -----------------------------------
        out2 = path("out2")
        code, so, se = run([*A, "train", *flags, "--epochs", "2", "--out", out2])
        r.check("a second train of the same name fails with ALREADY_EXISTS and a hint",
                code == 1 and "tessera-cli: ALREADY_EXISTS: adapter 'demo-1' already exists" in se
                and "--resume" in se and "DeleteAdapter" in se and "(it is at step 6)" in se
                and so == "", f"rc={code} {so!r} {se!r}")
        r.check("ALREADY_EXISTS writes nothing", not os.path.exists(out2), "out2 exists")

        before = len(read_log(f.log))
        code, so, se = run([*A, "train", *flags, "--epochs", "3", "--rank", "16", "--resume",
                            "--out", out1])
        more = plan(n, 3, 7, 9, start=6)
        r.check("--resume continues the adapter", code == 0, f"rc={code} {se!r}")
        check_steps("--resume prints steps 7..9 of 9", so, more, 6, 9)
        log = read_log(f.log)[before:]
        r.check("--resume finds the adapter with ListAdapters and creates nothing",
                methods(log)[:2] == ["ListAdapters", "ForwardBackward"]
                and "CreateAdapter" not in methods(log), repr(methods(log)))
        r.check("--resume goes on with the third epoch's order",
                [e["examples"] for e in log if e["method"] == "ForwardBackward"] == more,
                repr(log))
        r.check("--resume says it resumes and that a differing --rank is ignored",
                "resuming adapter 'demo-1' at step 6" in se
                and "has rank 4; --rank 16 is ignored" in se, repr(se))
        check_saved("resumed run (replacing the first one's directory)", out1, f,
                    list(zip(range(9), batches + more)))

        before = len(read_log(f.log))
        code, so, se = run([*A, "train", *flags, "--epochs", "3", "--resume", "--out", out1])
        log = read_log(f.log)[before:]
        r.check("--resume of a finished adapter trains nothing and saves it",
                code == 0 and so == "" and "nothing to train" in se
                and methods(log) == ["ListAdapters", "SaveAdapter"], f"rc={code} {so!r} {se!r}")

    with fake({}) as f:
        code, so, se = run(["--addr", f.addr, "train", *flags, "--adapter", "fresh", "--steps",
                            "1", "--resume", "--out", path("out3")])
        r.check("--resume of an adapter the server does not have creates it",
                code == 0 and "no adapter 'fresh' on the server to resume; creating it" in se
                and so.startswith("step 1/1")
                and methods(read_log(f.log))[:2] == ["ListAdapters", "CreateAdapter"],
                f"rc={code} {so!r} {se!r}")

    # ---- defaults, --steps over --epochs ---------------------------------------
    out4 = path("out4")
    expect = {"adapter": "plain", "config": {"rank": 8, "alpha": 16.0,
                                             "target_modules": ["q", "v"]},
              "data": data, "batch_size": 8, "lr": 1e-4, "weight_decay": 0.0,
              "max_grad_norm": 1.0, "adam_eps": 0.0}
    with fake(expect) as f:
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "plain",
                            "--out", out4])
        b = plan(n, 8, 0, 1)
        r.check("defaults: one epoch of batch 8, lr 1e-4, rank 8, alpha 16, q,v, seed 0",
                code == 0 and [e["examples"] for e in read_log(f.log)
                               if e["method"] == "ForwardBackward"] == b,
                f"rc={code} {se!r} {read_log(f.log)!r}")
        check_steps("defaults: one step", so, b, 0, 1)
        check_saved("defaults", out4, f, [(0, b[0])])
    expect = {"adapter": "s4", "data": data, "batch_size": 3}
    with fake(expect) as f:
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "s4",
                            "--out", path("out5"), "--steps", "4", "--epochs", "9",
                            "--batch-size", "3", "--seed", "18446744073709551615"])
        b = plan(n, 3, M64, 4)
        r.check("--steps wins over --epochs and crosses into the next epoch (3, 3, 1, 3)",
                code == 0 and [e["examples"] for e in read_log(f.log)
                               if e["method"] == "ForwardBackward"] == b,
                f"rc={code} {se!r}")
        check_steps("--steps 4", so, b, 0, 4)

    # ---- a step over the server's per-call token limit: several calls ----------
    limit = max(ntok) + 2  # every example fits; most pairs do not
    expect = {"adapter": "split", "data": data, "batch_size": 3, "adam_eps": 0.001}
    with fake(expect, "--max-train-tokens", str(limit)) as f:
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "split",
                            "--out", path("out-split"), "--batch-size", "3", "--epochs", "2",
                            "--adam-eps", "0.001"])
        b = plan(n, 3, 0, 6)
        r.check("a step over the token limit: exit 0", code == 0, f"rc={code} {se!r}")
        check_steps("a split step prints its whole token count", so, b, 0, 6)
        log = read_log(f.log)
        per_step, calls, refused = {}, [], 0
        for e in log:
            if e["method"] == "ForwardBackward":
                per_step.setdefault(e["step"], []).extend(e["examples"])
                calls.append(e["examples"])
            refused += e["method"] == "ForwardBackward(refused)"
        r.check("the split calls carry the step's examples in order, each call within the limit",
                [per_step.get(k) for k in range(6)] == b
                and all(sum(ntok[j] for j in c) <= limit for c in calls),
                f"calls {calls} want steps {b}")
        r.check("some step went out in more than one call after a refusal",
                refused > 0 and len(calls) > 6, f"{len(calls)} calls, {refused} refused")
        ops = [e for e in log if e["method"] == "OptimStep"]
        r.check("one OptimStep a step, with --adam-eps",
                len(ops) == 6 and all(abs(e["eps"] - 0.001) < 1e-9 for e in ops), repr(ops[:1]))
    with fake({}, "--max-train-tokens", str(min(ntok) - 1)) as f:
        out = path("out-toolong")
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "tl",
                            "--out", out])
        r.check("an example alone over the token limit: exit 1 with the server's reason",
                code == 1 and "INVALID_ARGUMENT: the batch has more than" in se
                and "(at example 0)" in se and not os.path.exists(out), f"rc={code} {se!r}")

    many = [{"prompt": f"q{i}", "completion": f" a{i}"} for i in range(1030)]
    mdata = write(path("many.jsonl"), "\n".join(json.dumps(x) for x in many) + "\n")
    with fake({"adapter": "many", "data": mdata, "batch_size": 1030}) as f:
        code, so, se = run(["--addr", f.addr, "train", "--data", mdata, "--adapter", "many",
                            "--out", path("out-many"), "--batch-size", "1030"])
        sizes = [len(e["examples"]) for e in read_log(f.log) if e["method"] == "ForwardBackward"]
        r.check("a step of 1030 examples goes out as 1024 + 6 (the per-call limit)",
                code == 0 and sizes == [1024, 6] and so.startswith("step 1/1"),
                f"rc={code} sizes={sizes} {se[-300:]!r}")

    # ---- local refusals: nothing reaches the server ------------------------------
    with fake({}) as f:
        A = ["--addr", f.addr]
        bad = [
            ("not JSON", lines[0] + "\n" + lines[1] + "\n{\"prompt\": \"a\", \"completion\":\n",
             3, "not valid JSON"),
            ("missing completion", lines[0] + "\n\n{\"prompt\": \"a\"}\n", 3,
             "missing \"completion\""),
            ("no assistant", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", 1,
             "no assistant message"),
            ("not an object", lines[0] + "\n[1, 2]\n", 2, "expected a JSON object, got an array"),
            ("bad role", "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n", 1,
             "has role \"bot\""),
            ("prompt not a string", "{\"prompt\": 1, \"completion\": \"x\"}\n", 1,
             "\"prompt\" must be a string, got an integer"),
            ("both kinds", "{\"prompt\": \"a\", \"completion\": \"b\", \"messages\": []}\n", 1,
             "not both"),
        ]
        for name, text, line, msg in bad:
            p = write(path(f"bad-{len(name)}-{line}.jsonl"), text)
            code, so, se = run([*A, "train", "--data", p, "--adapter", "x", "--out", path("o")])
            r.check(f"bad data ({name}) is refused naming file:line",
                    code == 2 and f"tessera-cli: {p}:{line}: " in se and msg in se,
                    f"rc={code} {se!r}")
        empty = write(path("empty.jsonl"), "\n  \n")
        code, so, se = run([*A, "train", "--data", empty, "--adapter", "x", "--out", path("o")])
        r.check("a data file without examples is refused", code == 2 and "holds no example" in se,
                f"rc={code} {se!r}")
        code, so, se = run([*A, "train", "--data", path("nope.jsonl"), "--adapter", "x",
                            "--out", path("o")])
        r.check("a missing data file is refused", code == 2 and "cannot open the data file" in se,
                f"rc={code} {se!r}")

        other = path("not-an-adapter")
        os.makedirs(other)
        write(os.path.join(other, "notes.txt"), "keep me")
        code, so, se = run([*A, "train", "--data", data, "--adapter", "x", "--out", other])
        r.check("--out: a directory that is not an adapter's is refused",
                code == 2 and "is not an adapter directory" in se
                and os.listdir(other) == ["notes.txt"], f"rc={code} {se!r}")
        afile = write(path("a-file"), "x")
        code, so, se = run([*A, "train", "--data", data, "--adapter", "x", "--out", afile])
        r.check("--out: a file is refused", code == 2 and "is not a directory" in se,
                f"rc={code} {se!r}")
        code, so, se = run([*A, "train", "--data", data, "--adapter", "x", "--out",
                            path("no", "such", "dir")])
        r.check("--out: a missing parent is refused", code == 2 and "No such file" in se,
                f"rc={code} {se!r}")
        r.check("none of the refusals made a call", read_log(f.log) == [],
                repr(read_log(f.log)))
        usage = [
            (["train"], "train needs --data FILE.jsonl, --adapter NAME and --out DIR"),
            (["train", "--data", data, "--out", "o"], "train needs --data"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--batch-size", "0"],
             "--batch-size expects examples per step, >= 1, got '0'"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--rank", "0"],
             "--rank expects a LoRA rank >= 1"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--lr", "0"],
             "--lr expects a learning rate > 0"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--adam-eps", "0"],
             "--adam-eps expects an AdamW epsilon > 0, got '0'"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--lr", "fast"],
             "--lr expects a number, got 'fast'"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--steps", "0"],
             "--steps expects a number of steps >= 1"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--epochs", "1.5"],
             "--epochs expects an integer"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--seed", "-1"],
             "--seed expects an unsigned integer"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--targets", "q,,v"],
             "--targets expects modules separated by commas"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--resume=1"],
             "--resume takes no value"),
            (["train", "--data", data, "--adapter", "x", "--out", "o", "--prompt", "p"],
             "--prompt does not apply to 'train'"),
            (["generate", "--prompt", "p", "--data", data], "--data does not apply to 'generate'"),
        ]
        for args, msg in usage:
            code, so, se = run([*A, *args])
            r.check(f"usage error exit 2: {' '.join(a if a != data else 'D' for a in args)}",
                    code == 2 and msg in se and "Try 'tessera-cli --help'" in se,
                    f"rc={code} {se!r}")
        r.check("usage errors made no call", read_log(f.log) == [], repr(read_log(f.log)))
    code, so, se = run(["--help"])
    r.check("--help lists train", code == 0 and "  train       --data F.jsonl" in so, so)

    # ---- server errors during training -----------------------------------------
    with fake({}, "--fail-at-step", "2") as f:
        out = path("out-fail")
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "f",
                            "--batch-size", "2", "--out", out])
        r.check("a refused step: exit 1 with the status, nothing saved",
                code == 1 and so.startswith("step 1/4") and "step 2/4: OptimStep failed" in se
                and "tessera-cli: FAILED_PRECONDITION: step 2: the loss is not finite" in se
                and "nothing was saved" in se and not os.path.exists(out)
                and "SaveAdapter" not in methods(read_log(f.log)), f"rc={code} {so!r} {se!r}")
    refuse = records[:4] + [{"prompt": "__refuse__", "completion": "x"}] + records[4:]
    rdata = write(path("refuse.jsonl"), "\n".join(json.dumps(x) for x in refuse) + "\n")
    with fake({}) as f:
        code, so, se = run(["--addr", f.addr, "train", "--data", rdata, "--adapter", "rf",
                            "--out", path("out-rf")])
        pos = plan(len(refuse), 8, 0, 1)[0].index(4)
        r.check("a refused example is traced to its line of the data file",
                code == 1 and f"INVALID_ARGUMENT: examples[{pos}].prompt_completion" in se
                and f"examples[{pos}] of that batch is {rdata}:5" in se,
                f"rc={code} pos={pos} {se!r}")
    dead = f"127.0.0.1:{free_port()}"
    code, so, se = run(["--addr", dead, "train", "--data", data, "--adapter", "x",
                        "--out", path("out-dead")])
    r.check("an unreachable server: exit 1, 'cannot reach'",
            code == 1 and f"cannot reach {dead}" in se, f"rc={code} {se!r}")
    with Fake(stubs, "--auth-token", "tok") as f:
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "x",
                            "--out", path("out-auth")])
        r.check("no token: UNAUTHENTICATED with the hint",
                code == 1 and "UNAUTHENTICATED" in se and "no token was sent" in se, repr(se))
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "x",
                            "--out", path("out-auth")], env={"TESSERA_AUTH_TOKEN": "tok"})
        r.check("with the token it trains", code == 0 and so.startswith("step 1/1"), repr(se))

    # ---- Ctrl-C: stop after the step in flight, save what exists ------------------
    with fake({}, "--step-delay", "0.4") as f:
        out = path("out-int")
        p = subprocess.Popen([cli, "--addr", f.addr, "train", "--data", data, "--adapter", "int",
                              "--batch-size", "2", "--steps", "30", "--out", out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=base_env)
        seen, t0 = "", time.monotonic()
        while "step 2/30" not in seen and time.monotonic() - t0 < 30:
            ready, _, _ = select.select([p.stdout], [], [], 30)
            if not ready:
                break
            line = p.stdout.readline()
            if not line:
                break
            seen += line
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=60)
        so = seen + rest
        k = len(so.splitlines())
        log = read_log(f.log)
        saves = [e for e in log if e["method"] == "SaveAdapter"]
        csv = open(os.path.join(out, "loss.csv")).read() if os.path.isdir(out) else ""
        r.check("Ctrl-C stops after the current step, saves and exits 130",
                p.returncode == 130 and 2 <= k < 30 and f"interrupted after step {k} of 30" in err
                and f"saved adapter 'int' (step {k})" in err and "--resume continues it" in err
                and saves and saves[0]["step"] == k and len(csv.splitlines()) == k + 1,
                f"rc={p.returncode} k={k} stdout={so!r} stderr={err!r} csv={csv!r}")

    # ---- a 65 MiB adapter comes back in one message -------------------------------
    with fake({}, "--adapter-mib", "65") as f:
        out = path("out-big")
        code, so, se = run(["--addr", f.addr, "train", "--data", data, "--adapter", "big",
                            "--steps", "1", "--out", out])
        size = os.path.getsize(os.path.join(out, "adapter_model.safetensors")) if code == 0 else 0
        same = code == 0 and open(os.path.join(out, "adapter_model.safetensors"), "rb").read() == \
            open(os.path.join(f.dump, "adapter_model.safetensors"), "rb").read()
        r.check("a 65 MiB adapter is received and saved whole",
                code == 0 and size > 65 << 20 and same, f"rc={code} size={size} {se!r}")

    # ---- the progress line on a terminal ---------------------------------------
    with fake({}) as f:
        master, slave = pty.openpty()
        p = subprocess.Popen([cli, "--addr", f.addr, "train", "--data", data, "--adapter", "tty",
                              "--batch-size", "3", "--out", path("out-tty")],
                             stdout=subprocess.PIPE, stderr=slave, env=base_env)
        os.close(slave)
        got = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        p.wait(30)
        os.close(master)
        text = got.decode(errors="replace")
        r.check("on a terminal the progress line is rewritten in place",
                p.returncode == 0 and text.count("\rtessera-cli: [") >= 3 and "\x1b[K" in text
                and "step 3/3" in text, repr(text))

    return t.finish()


def _tuplify(x):
    """JSON lists back into the tuples of fake_server.canon_record."""
    if isinstance(x, list):
        return tuple(_tuplify(v) for v in x)
    return x


if __name__ == "__main__":
    sys.exit(main())
