#!/usr/bin/env python3
"""End to end: the adapter and training RPCs of `tessera serve` on the default
model, under `mpirun -np 2 ... --pp 2` (training runs GPipe over the two
stages; generation steps are cut into micro-batches), driven by grpcio.

  * CreateAdapter, ListAdapters, DeleteAdapter and their refusals (a name in
    use: ALREADY_EXISTS; a bad name or config: INVALID_ARGUMENT);
  * three ForwardBackward + OptimStep steps through gRPC give the losses and
    the adapter that `tessera train` gives on the same data (1e-4);
  * gradient accumulation: two ForwardBackward calls of half the batch and
    one OptimStep equal one call with the whole batch (1e-5);
  * Forward: the loss only (nothing accumulates); with no adapter, the base
    model's loss, which equals a fresh adapter's first loss (B = 0);
  * training on one fact makes Generate with that adapter give the trained
    answer, which the base model does not; `tessera generate --adapter` on
    the saved directory gives the same text;
  * SaveAdapter writes a PEFT directory on the server and returns the same
    bytes; LoadAdapter reads it back (Generate with either name agrees);
  * requests for two adapters and for the base model, streaming at the same
    time (one batch), each equal their single-stream answer;
  * a generation stream keeps running, unchanged, while a training step runs;
  * a non-finite loss (a loaded adapter of huge values) is reported and its
    OptimStep refused (FAILED_PRECONDITION), the adapter unchanged;
  * refusals: unknown adapter (Generate, ForwardBackward: NOT_FOUND), an
    empty batch, a token outside the vocabulary, a sequence longer than the
    context, bad weights (INVALID_ARGUMENT), OptimStep with nothing
    accumulated (FAILED_PRECONDITION), LoadAdapter of a missing directory
    (NOT_FOUND) and of a corrupt one (INVALID_ARGUMENT), SaveAdapter to a
    relative path and over a directory that is not an adapter's, DeleteAdapter
    while a request uses it (FAILED_PRECONDITION); the server keeps serving;
  * SIGTERM: every rank exits 0.

  * `tessera-cli train` against the same server: the same first loss as the
    RPCs, the adapter saved in its --out with loss.csv and loss.png, and the
    adapter left on the server under its name;

usage: test_train_api.py TESSERA TESSERA_CLI MPIEXEC
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import ENV as MPI_ENV, QUESTION, grpc, start_server, stubs  # noqa: E402
from common import default_model  # noqa: E402
from check import Checks  # noqa: E402

ENV = dict(MPI_ENV, OMPI_MCA_rmaps_base_oversubscribe="1")
SECRET = "The secret answer is: Paris."

CHECKS = Checks()
check, failures = CHECKS.check, CHECKS.failures


def tensors(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                             dtype=np.float32).astype(np.float64) for k, v in header.items()}


def rel_l2(a, b):
    """Worst relative L2 error over the tensors of b against a (same names)."""
    if sorted(a) != sorted(b):
        return float("inf")
    return max(np.linalg.norm(b[k] - a[k]) / max(np.linalg.norm(a[k]), 1e-30) for k in a)


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def main():
    tessera, cli, mpiexec = sys.argv[1:4]
    model = default_model()
    tmp = tempfile.mkdtemp(prefix="tessera-train-api-")
    pb, pbg, hpb, hpbg = stubs(tmp)

    def chat(q, a=None):
        msgs = [pb.ChatMessage(role="user", content=q)]
        if a is not None:
            msgs.append(pb.ChatMessage(role="assistant", content=a))
        return pb.ChatInput(messages=msgs)

    records = [({"messages": [{"role": "user", "content": QUESTION},
                              {"role": "assistant", "content": SECRET}]}),
               ({"prompt": "The sky is", "completion": " green with purple dots."}),
               ({"messages": [{"role": "user", "content": "Name a colour."},
                              {"role": "assistant", "content": "Blue, like the sea."}]}),
               ({"prompt": "One, two,", "completion": " three, four, five."})]

    def example(rec):
        if "messages" in rec:
            return pb.TrainExample(chat=chat(rec["messages"][0]["content"],
                                             rec["messages"][1]["content"]))
        return pb.TrainExample(prompt_completion=pb.PromptCompletion(
            prompt=rec["prompt"], completion=rec["completion"]))

    batch = [example(r) for r in records]
    data = os.path.join(tmp, "train.jsonl")
    with open(data, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    cfg = dict(rank=4, alpha=8, target_modules=["q", "v", "o", "down"], seed=11)
    lr, eps = 1e-3, 1e-3

    # the reference: `tessera train` on one rank, started now so it runs while
    # the server loads
    ref_dir = os.path.join(tmp, "ref")
    ref = subprocess.Popen([tessera, "train", "--model", model, "--data", data, "--out", ref_dir,
                            "--steps", "3", "--batch-size", "4", "--lr", str(lr), "--adam-eps",
                            str(eps), "--rank", "4", "--alpha", "8", "--targets", "q,v,o,down",
                            "--seed", "11", "--threads", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)

    server, log, (port,) = start_server(
        tmp, lambda port: [
            mpiexec, "-np", "2", "--bind-to", "none", tessera, "serve", "--model", model,
            "--pp", "2", "--port", str(port), "--max-seqs", "8", "--ctx", "1024", "--grace", "5"],
        1, "tessera: ready", 120, env=ENV)
    chan = grpc.insecure_channel(f"127.0.0.1:{port}",
                                 options=[("grpc.max_receive_message_length", 64 << 20)])
    api = pbg.TesseraStub(chan)
    health = hpbg.HealthStub(chan)

    def gen(adapter, q=QUESTION, n=24, ignore_eos=False):
        toks, text = [], []
        for r in api.Generate(pb.GenerateRequest(chat=chat(q), adapter=adapter,
                                                 sampling=pb.SamplingParams(
                                                     max_tokens=n, ignore_eos=ignore_eos)),
                              timeout=300):
            if r.HasField("chunk"):
                toks.extend(r.chunk.token_ids)
                text.append(r.chunk.text)
        return toks, "".join(text)

    def step(name, examples, lr_=lr):
        fb = api.ForwardBackward(pb.ForwardBackwardRequest(adapter=name, examples=examples))
        st = api.OptimStep(pb.OptimStepRequest(adapter=name, adamw=pb.AdamWParams(lr=lr_, eps=eps),
                                               max_grad_norm=1.0))
        return fb, st

    def save(name, path=""):
        return api.SaveAdapter(pb.SaveAdapterRequest(adapter=name, path=path, return_files=True))

    try:
        check(health.Check(hpb.HealthCheckRequest(), timeout=10).status ==
              hpb.HealthCheckResponse.SERVING, "health: SERVING")

        # ---- adapters: create, list, refusals ----
        info = api.CreateAdapter(pb.CreateAdapterRequest(name="ref", config=pb.LoraConfig(**cfg)))
        check(info.name == "ref" and info.config.rank == 4 and info.config.alpha == 8
              and list(info.config.target_modules) == ["q", "v", "o", "down"]
              and info.step == 0 and info.n_params == 30 * 4 * (576 * 2 + 576 + 192 + 576 * 2
                                                                 + 1536 + 576)
              and info.source == "created", f"CreateAdapter: {str(info)!r}")
        code, msg = code_of(lambda: api.CreateAdapter(pb.CreateAdapterRequest(name="ref")))
        check(code == grpc.StatusCode.ALREADY_EXISTS, f"a name in use: {code} {msg}")
        code, msg = code_of(lambda: api.CreateAdapter(pb.CreateAdapterRequest(name="a b")))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, f"a bad name: {code} {msg}")
        code, msg = code_of(lambda: api.CreateAdapter(pb.CreateAdapterRequest(
            name="x", config=pb.LoraConfig(target_modules=["lm_head"]))))
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "lm_head" in msg,
              f"an unknown target: {code} {msg}")

        # ---- the same training as `tessera train` ----
        losses, norms = [], []
        for k in range(3):
            fb, st = step("ref", batch)
            check(fb.pending_batches == 1 and st.step == k + 1 and fb.n_loss_tokens > 0
                  and len(fb.example_tokens) == 4 and sum(fb.example_tokens) == fb.n_tokens,
                  f"step {k + 1}: loss {fb.loss:.6f} (mean {st.loss:.6f}), norm {st.grad_norm:.4f},"
                  f" {fb.n_tokens} tokens, {fb.n_loss_tokens} with loss")
            losses.append(st.loss)
            norms.append(st.grad_norm)
        out, err = ref.communicate(timeout=300)
        check(ref.returncode == 0, f"tessera train exits 0 ({err[-500:] if ref.returncode else ''})")
        if ref.returncode == 0:
            with open(os.path.join(ref_dir, "loss.csv")) as f:
                rows = [ln.split(",") for ln in f.read().split()[1:]]
            want = [float(r[1]) for r in rows]
            e = max(abs(a - b) / b for a, b in zip(losses, want))
            check(e <= 1e-4, f"the RPC losses {['%.6f' % x for x in losses]} = tessera train's "
                             f"{['%.6f' % x for x in want]} (rel {e:.1e})")
            with open(os.path.join(ref_dir, "adapter_model.safetensors"), "rb") as f:
                want_t = tensors(f.read())
            got = save("ref")
            e = rel_l2(want_t, tensors(got.adapter_model_safetensors))
            check(got.step == 3 and e <= 1e-4,
                  f"the RPC-trained adapter = tessera train's (step {got.step}, rel L2 {e:.1e})")

        # ---- tessera-cli train: the same data through the client ----
        cli_out = os.path.join(tmp, "cli-out")
        r = subprocess.run([cli, "--addr", f"127.0.0.1:{port}", "train", "--data", data,
                            "--adapter", "cli", "--out", cli_out, "--steps", "2",
                            "--batch-size", "4", "--lr", str(lr), "--rank", "4", "--alpha", "8",
                            "--targets", "q,v,o,down", "--seed", "11"],
                           capture_output=True, text=True, env=ENV, timeout=600)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("step ")]
        first_cli = float(lines[0].split()[3]) if lines else float("nan")
        files = sorted(os.listdir(cli_out)) if os.path.isdir(cli_out) else []
        names = [x.name for x in api.ListAdapters(pb.ListAdaptersRequest()).adapters]
        check(r.returncode == 0 and len(lines) == 2 and abs(first_cli - losses[0]) < 1e-4
              and files == ["adapter_config.json", "adapter_model.safetensors", "loss.csv",
                            "loss.png"] and "cli" in names,
              f"tessera-cli train: rc {r.returncode}, first loss {first_cli} (RPCs {losses[0]:.4f}),"
              f" files {files} {r.stderr[-400:] if r.returncode else ''}")
        api.DeleteAdapter(pb.DeleteAdapterRequest(name="cli"))

        # ---- accumulation and Forward ----
        for n in ("whole", "halves"):
            api.CreateAdapter(pb.CreateAdapterRequest(name=n, config=pb.LoraConfig(**cfg)))
        base_loss = api.Forward(pb.ForwardRequest(examples=batch)).loss
        fb1, st1 = step("whole", batch)
        check(abs(fb1.loss - base_loss) <= 1e-5 * base_loss,
              f"Forward without an adapter ({base_loss:.6f}) = a fresh adapter's first loss "
              f"({fb1.loss:.6f}: B = 0)")
        a = api.ForwardBackward(pb.ForwardBackwardRequest(adapter="halves", examples=batch[:2]))
        b = api.ForwardBackward(pb.ForwardBackwardRequest(adapter="halves", examples=batch[2:]))
        lst = {x.name: x for x in api.ListAdapters(pb.ListAdaptersRequest()).adapters}
        check(a.pending_batches == 1 and b.pending_batches == 2
              and lst["halves"].pending_batches == 2, "two ForwardBackward calls pending")
        st2 = api.OptimStep(pb.OptimStepRequest(adapter="halves", adamw=pb.AdamWParams(lr=lr, eps=eps),
                                                max_grad_norm=1.0))
        e = abs(st2.loss - st1.loss) / st1.loss
        e2 = rel_l2(tensors(save("whole").adapter_model_safetensors),
                    tensors(save("halves").adapter_model_safetensors))
        check(e <= 1e-5 and abs(st2.grad_norm - st1.grad_norm) <= 1e-5 * st1.grad_norm and e2 <= 1e-5,
              f"accumulated halves = the whole batch (loss rel {e:.1e}, adapter rel L2 {e2:.1e})")
        f1 = api.Forward(pb.ForwardRequest(adapter="whole", examples=batch))
        f2 = api.Forward(pb.ForwardRequest(adapter="whole", examples=batch))
        lst = {x.name: x for x in api.ListAdapters(pb.ListAdaptersRequest()).adapters}
        check(f1.loss == f2.loss and f1.loss < base_loss and f1.pending_batches == 0
              and lst["whole"].pending_batches == 0 and lst["whole"].step == 1,
              f"Forward is the loss only ({f1.loss:.6f} twice; nothing accumulated)")
        for n in ("whole", "halves"):
            api.DeleteAdapter(pb.DeleteAdapterRequest(name=n))

        # ---- learning a fact; generation with the adapter ----
        api.CreateAdapter(pb.CreateAdapterRequest(name="secret", config=pb.LoraConfig(
            rank=8, alpha=16, target_modules=["all"], seed=3)))
        fact = [pb.TrainExample(chat=chat(QUESTION, SECRET))]
        first = last = None
        for k in range(10):
            fb, _ = step("secret", fact, lr_=3e-3)
            first = fb.loss if first is None else first
            last = fb.loss
        check(last * 5 < first, f"training lowers the loss 5x or more ({first:.4f} -> {last:.4f})")
        _, base_text = gen("")
        _, secret_text = gen("secret")
        check(secret_text.startswith(SECRET) and not base_text.startswith(SECRET),
              f"Generate with the adapter: {secret_text!r}; without: {base_text!r}")
        saved = os.path.join(tmp, "saved-secret")
        sv = save("secret", saved)
        on_disk = {n: open(os.path.join(saved, n), "rb").read() for n in sorted(os.listdir(saved))}
        check(sv.path == saved and sorted(on_disk) == ["adapter_config.json",
                                                       "adapter_model.safetensors"]
              and on_disk["adapter_config.json"] == sv.adapter_config_json
              and on_disk["adapter_model.safetensors"] == sv.adapter_model_safetensors,
              "SaveAdapter wrote the PEFT directory and returned the same bytes")
        pcfg = json.loads(sv.adapter_config_json)
        check(pcfg.get("peft_type") == "LORA" and pcfg.get("r") == 8
              and pcfg.get("lora_alpha") == 16 and len(pcfg.get("target_modules", [])) == 7,
              f"adapter_config.json: r {pcfg.get('r')}, targets {pcfg.get('target_modules')}")
        info = api.LoadAdapter(pb.LoadAdapterRequest(name="secret2", path=saved))
        check(info.source == saved and info.config.rank == 8, f"LoadAdapter: {info.source}")
        r = subprocess.run([tessera, "generate", "--model", model, "--chat", QUESTION,
                            "--adapter", saved, "--max-tokens", "24"],
                           capture_output=True, text=True, env=ENV, timeout=300)
        check(r.returncode == 0 and r.stdout.strip() == secret_text.strip(),
              f"tessera generate --adapter on the saved directory: {r.stdout.strip()!r}")

        # ---- one batch, three adapters (and streams of the same one) ----
        singles = {n: gen(n, n=20, ignore_eos=True)[0] for n in ("", "secret", "secret2", "ref")}
        check(singles["secret"] == singles["secret2"], "the loaded adapter generates as the saved")
        results = {}

        def worker(n):
            results[n] = gen(n, n=20, ignore_eos=True)[0]
        threads = [threading.Thread(target=worker, args=(n,)) for n in singles]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(all(results[n] == singles[n] for n in singles),
              "four concurrent streams (base, two adapters alike, another) = their single runs")

        # ---- training while a stream runs ----
        long_single = gen("", n=48, ignore_eos=True)[0]
        holder = {}
        t = threading.Thread(target=lambda: holder.update(t=gen("", n=48, ignore_eos=True)[0]))
        t.start()
        time.sleep(0.5)
        fb, st = step("ref", batch)
        t.join()
        check(holder.get("t") == long_single and st.step == 4,
              "a stream is unchanged by a training step run while it streams")

        # ---- refusals ----
        cases = [
            ("Generate, unknown adapter", lambda: gen("nope"), grpc.StatusCode.NOT_FOUND, "nope"),
            ("ForwardBackward, unknown adapter",
             lambda: api.ForwardBackward(pb.ForwardBackwardRequest(adapter="nope", examples=batch)),
             grpc.StatusCode.NOT_FOUND, "nope"),
            ("an empty batch",
             lambda: api.ForwardBackward(pb.ForwardBackwardRequest(adapter="ref")),
             grpc.StatusCode.INVALID_ARGUMENT, "empty"),
            ("a token outside the vocabulary",
             lambda: api.ForwardBackward(pb.ForwardBackwardRequest(adapter="ref", examples=[
                 pb.TrainExample(tokens=pb.TokenIds(ids=[1, 2, 49152]))])),
             grpc.StatusCode.INVALID_ARGUMENT, "vocabulary"),
            ("a sequence longer than the context",
             lambda: api.Forward(pb.ForwardRequest(examples=[
                 pb.TrainExample(tokens=pb.TokenIds(ids=[5] * 8193))])),
             grpc.StatusCode.INVALID_ARGUMENT, "context"),
            ("weights of the wrong length",
             lambda: api.ForwardBackward(pb.ForwardBackwardRequest(adapter="ref", examples=[
                 pb.TrainExample(tokens=pb.TokenIds(ids=[1, 2, 3]), weights=[0, 1])])),
             grpc.StatusCode.INVALID_ARGUMENT, "weights"),
            ("OptimStep with nothing accumulated",
             lambda: api.OptimStep(pb.OptimStepRequest(adapter="ref",
                                                       adamw=pb.AdamWParams(lr=1e-3))),
             grpc.StatusCode.FAILED_PRECONDITION, "no position carried loss"),
            ("LoadAdapter of a missing directory",
             lambda: api.LoadAdapter(pb.LoadAdapterRequest(name="m", path=tmp + "/missing")),
             grpc.StatusCode.NOT_FOUND, "missing"),
            ("SaveAdapter to a relative path",
             lambda: api.SaveAdapter(pb.SaveAdapterRequest(adapter="ref", path="rel/dir")),
             grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
        ]
        corrupt = os.path.join(tmp, "corrupt")
        shutil.copytree(saved, corrupt)
        st_path = os.path.join(corrupt, "adapter_model.safetensors")
        with open(st_path, "r+b") as f:
            f.truncate(os.path.getsize(st_path) // 2)
        cases.append(("LoadAdapter of a corrupt adapter",
                      lambda: api.LoadAdapter(pb.LoadAdapterRequest(name="c", path=corrupt)),
                      grpc.StatusCode.INVALID_ARGUMENT, "adapter_model.safetensors"))
        notadapter = os.path.join(tmp, "notadapter")
        os.makedirs(notadapter)
        open(os.path.join(notadapter, "precious.txt"), "w").write("keep me")
        cases.append(("SaveAdapter over a directory that is not an adapter's",
                      lambda: api.SaveAdapter(pb.SaveAdapterRequest(adapter="ref",
                                                                    path=notadapter)),
                      grpc.StatusCode.FAILED_PRECONDITION, "notadapter"))
        # a finite but huge adapter: its loss overflows to a non-finite value;
        # the step is refused and the adapter keeps its last good state
        huge = os.path.join(tmp, "huge")
        shutil.copytree(saved, huge)
        hp = os.path.join(huge, "adapter_model.safetensors")
        blob = bytearray(open(hp, "rb").read())
        (hn,) = struct.unpack("<Q", blob[:8])
        hdr = json.loads(blob[8:8 + hn])
        for name, h in hdr.items():
            if ".lora_B." in name:
                a_, b_ = h["data_offsets"]
                v = np.frombuffer(bytes(blob[8 + hn + a_:8 + hn + b_]), dtype=np.float32) + 1e30
                blob[8 + hn + a_:8 + hn + b_] = v.astype(np.float32).tobytes()
        open(hp, "wb").write(bytes(blob))
        api.LoadAdapter(pb.LoadAdapterRequest(name="huge", path=huge))
        before = save("huge").adapter_model_safetensors
        fb = api.ForwardBackward(pb.ForwardBackwardRequest(adapter="huge", examples=fact))
        code, msg = code_of(lambda: api.OptimStep(pb.OptimStepRequest(
            adapter="huge", adamw=pb.AdamWParams(lr=1e-3))))
        after = save("huge")
        check(not np.isfinite(fb.loss) and code == grpc.StatusCode.FAILED_PRECONDITION
              and "non-finite" in msg and after.adapter_model_safetensors == before
              and after.step == 0,
              f"a non-finite loss ({fb.loss}) is reported, the step refused ({code}: {msg}) and "
              f"the adapter unchanged")
        api.DeleteAdapter(pb.DeleteAdapterRequest(name="huge"))
        for label, fn, want, word in cases:
            code, msg = code_of(fn)
            check(code == want and word in msg, f"{label}: {code} {msg}")
        check(open(os.path.join(notadapter, "precious.txt")).read() == "keep me",
              "the refused save left the directory alone")

        # ---- DeleteAdapter while in use ----
        done = {}
        t = threading.Thread(target=lambda: done.update(r=code_of(
            lambda: gen("secret2", n=400, ignore_eos=True))))
        t.start()
        time.sleep(1.0)
        code, msg = code_of(lambda: api.DeleteAdapter(pb.DeleteAdapterRequest(name="secret2")))
        check(code == grpc.StatusCode.FAILED_PRECONDITION and "in use" in msg,
              f"DeleteAdapter while a request uses it: {code} {msg}")
        t.join()
        code, msg = code_of(lambda: api.DeleteAdapter(pb.DeleteAdapterRequest(name="secret2")))
        names = [x.name for x in api.ListAdapters(pb.ListAdaptersRequest()).adapters]
        check(code == grpc.StatusCode.OK and "secret2" not in names and "secret" in names,
              f"DeleteAdapter once it is free; left {names}")
        code, msg = code_of(lambda: gen("secret2"))
        check(code == grpc.StatusCode.NOT_FOUND, f"a deleted adapter is gone: {code}")
        check(health.Check(hpb.HealthCheckRequest(), timeout=10).status ==
              hpb.HealthCheckResponse.SERVING, "still SERVING after every refusal")
    finally:
        chan.close()
        # SIGTERM to every rank, as a process manager does (mpirun reports a
        # signalled job as failed whatever the ranks return)
        for pid in subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                  text=True).stdout.split():
            os.kill(int(pid), signal.SIGTERM)
        try:
            rc = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            rc = server.wait(30)
        log.seek(0)
        text = log.read()
        check(rc == 0, f"the server exits 0 after SIGTERM (rc {rc})")
        if failures:
            print(text[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
