#!/usr/bin/env python3
"""A fake Tessera server for testing clients without a model.

It implements tessera.v1.Tessera and grpc.health.v1.Health with grpcio,
deterministically:

* Generate echoes its input back, streamed piece by piece (each word with the
  whitespace after it, so the pieces join to the input exactly). Text input is
  echoed as is, token ids are read as bytes (the fake vocabulary is the 256
  bytes plus <s>=256 and </s>=257), chat echoes the last user message. A stop
  string cuts the echo (finish STOP), max_tokens caps the number of pieces
  (finish LENGTH). Usage counts bytes; timings are fixed (ttft 0.05 s, total
  0.3 s). Prompts "__error__" and "__unavailable__" end in a FINISH_REASON_ERROR
  final message and an UNAVAILABLE status respectively.
* It validates a few fields as the real server does (top_p outside (0, 1],
  temperature < 0, max_tokens < 0, top_logprobs > 20, empty input, unknown
  token ids, unknown adapter: INVALID_ARGUMENT) and checks the bearer token
  when started with one (Health stays open).
* Abort cancels a running Generate by request id (its final message says
  CANCELLED); GetServerInfo counts the Generate calls in flight, so a test can
  see that a cancelled or timed-out call has gone.
* The LoRA adapter calls (CreateAdapter, ForwardBackward, OptimStep,
  SaveAdapter, ListAdapters, DeleteAdapter) keep adapters in memory with the
  real server's statuses (ALREADY_EXISTS, NOT_FOUND, FAILED_PRECONDITION for
  an OptimStep with nothing accumulated). A step's loss is
  fake_loss(step) = 0.3 + 2.7 * 0.9**step and its gradient norm
  fake_grad_norm(step) = 2 * 0.95**step (step = the adapter's count before
  it); an example counts train_example_tokens() tokens. SaveAdapter with
  return_files sends peft_files(): a PEFT adapter_config.json and a valid
  safetensors file of lora_A/lora_B tensors.
  --train-expect FILE.json makes it check every training request against
  {"adapter", "config" (CreateAdapter's LoraConfig as JSON), "data" (the
  JSONL file: every example must be one of its records), "batch_size" (each
  batch's size, the last of an epoch holding the rest), "lr",
  "weight_decay", "max_grad_norm"}, any of them optional; a mismatch is
  INVALID_ARGUMENT "fake_server: ...". --train-log FILE appends one JSON line
  per training call (the examples as indices into "data"), --save-dump DIR
  keeps a copy of the files SaveAdapter sent. --adapter-mib M makes the
  safetensors file at least M MiB; --step-delay S slows each OptimStep;
  --fail-at-step K refuses the OptimStep that would reach step K
  (FAILED_PRECONDITION, as for a non-finite loss). A prompt "__refuse__"
  is refused as examples[k] (INVALID_ARGUMENT).

What it is not: a model of the real server's scheduling, tokenizer or
training.

  fake_server.py --stubs DIR [--port 0] [--auth-token T] [--tls-cert F --tls-key F]
                 [--serving-after S] [--word-delay S] [--record FILE]
                 [--train-expect F] [--train-log F] [--save-dump DIR]
                 [--adapter-mib M] [--step-delay S] [--fail-at-step K]

Prints "PORT <n>" on stdout once it listens; runs until SIGTERM or SIGINT.
"""
import argparse
import array
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent import futures

VOCAB = 258
BOS, EOS = 256, 257
SPECIAL = {BOS: "<s>", EOS: "</s>"}


def gen_stubs(proto_root, out_dir):
    """Compiles tessera.proto and health.proto with grpc_tools.protoc into
    out_dir as flat modules (tessera_pb2, health_pb2, ...), so that the
    'grpc.health.v1' package path cannot shadow grpcio's own 'grpc'."""
    os.makedirs(out_dir, exist_ok=True)
    for sub, name in (("tessera/v1", "tessera.proto"), ("grpc/health/v1", "health.proto")):
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(proto_root, sub),
               "--python_out=" + out_dir, "--grpc_python_out=" + out_dir, name]
        subprocess.run(cmd, check=True)


def load_stubs(stubs_dir):
    sys.path.insert(0, stubs_dir)
    import tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc  # noqa: E401
    return tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc


# ---- training: shared with the tests, which predict what the fake answers ----

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
LORA_MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                "down": "mlp.down_proj"}


def fake_loss(step):
    return 0.3 + 2.7 * 0.9 ** step


def fake_grad_norm(step):
    return 2.0 * 0.95 ** step


def canon_record(rec):
    """A JSONL record ({"prompt","completion"} or {"messages"}) as a tuple that
    compares equal to canon_example() of the TrainExample sent for it."""
    if "messages" in rec:
        return ("chat", tuple((m["role"], m["content"]) for m in rec["messages"]))
    return ("pc", rec["prompt"], rec["completion"])


def canon_example(ex):
    which = ex.WhichOneof("input")
    if which == "prompt_completion":
        return ("pc", ex.prompt_completion.prompt, ex.prompt_completion.completion)
    if which == "chat":
        return ("chat", tuple((m.role, m.content) for m in ex.chat.messages))
    return (which,)


def train_example_tokens(c):
    """The fake's token count of a canonical example: its bytes, plus BOS and
    EOS (prompt/completion) or BOS (a chat rendered as <|role|>content)."""
    if c[0] == "pc":
        return len((c[1] + c[2]).encode()) + 2
    return len("".join(f"<|{r}|>{t}\n" for r, t in c[1]).encode()) + 1


def lora_targets(names):
    """Short names in canonical order; raises ValueError for an unknown one."""
    bits = set()
    for n in names:
        n = n[:-5] if n.endswith("_proj") else n
        if n == "all":
            bits.update(LORA_TARGETS)
        elif n in LORA_TARGETS:
            bits.add(n)
        else:
            raise ValueError(n)
    return [t for t in LORA_TARGETS if t in bits] or ["q", "v"]


def peft_files(name, rank, alpha, dropout, targets, step, mib=0.0):
    """(adapter_config.json, adapter_model.safetensors) bytes of a PEFT-looking
    adapter: lora_A (rank, d) and lora_B (d, rank) F32 tensors for each layer
    and target, values that depend on the step."""
    cfg = {"base_model_name_or_path": "fake-llama", "bias": "none", "fan_in_fan_out": False,
           "inference_mode": True, "init_lora_weights": True, "lora_alpha": alpha,
           "lora_dropout": dropout, "peft_type": "LORA", "r": rank,
           "target_modules": [t + "_proj" for t in targets], "task_type": "CAUSAL_LM",
           "use_rslora": False, "revision": None, "tessera_adapter": name}
    config_json = (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()
    d, layers = 64, 2
    if mib > 0:
        d = 4096
        per_layer = len(targets) * 2 * rank * d * 4
        layers = max(1, math.ceil(mib * (1 << 20) / per_layer))
    header, chunks, off = {"__metadata__": {"format": "pt"}}, [], 0
    for layer in range(layers):
        for t in targets:
            for ab, shape in (("A", [rank, d]), ("B", [d, rank])):
                key = f"base_model.model.model.layers.{layer}.{LORA_MODULES[t]}.lora_{ab}.weight"
                pattern = array.array("f", [((i * 7 + layer + len(t)) % 13 - 6) * 0.01 * (step + 1)
                                            for i in range(64)])
                n = shape[0] * shape[1]
                data = (pattern * (n // 64 + 1))[:n]
                if sys.byteorder != "little":
                    data.byteswap()
                raw = data.tobytes()
                header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
                chunks.append(raw)
                off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return config_json, struct.pack("<Q", len(h)) + h + b"".join(chunks)


def pieces_of(text):
    """Splits text into pieces that join back to it exactly: leading
    whitespace, then each word with the whitespace that follows it."""
    return re.findall(r"^\s+|\S+\s*", text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--auth-token")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--serving-after", type=float, default=0.0)
    ap.add_argument("--word-delay", type=float, default=0.0)
    ap.add_argument("--record")
    ap.add_argument("--train-expect")
    ap.add_argument("--train-log")
    ap.add_argument("--save-dump")
    ap.add_argument("--adapter-mib", type=float, default=0.0)
    ap.add_argument("--step-delay", type=float, default=0.0)
    ap.add_argument("--fail-at-step", type=int, default=0)
    ap.add_argument("--max-train-tokens", type=int, default=0,
                    help="refuse a ForwardBackward over this many tokens, as the server "
                         "refuses one over 65536")
    args = ap.parse_args()

    import grpc
    from google.protobuf import json_format
    pb, pb_grpc, hpb, hpb_grpc = load_stubs(args.stubs)
    started = time.monotonic()
    serving_at = started + args.serving_after

    lock = threading.Lock()
    active = {}  # request id -> threading.Event set by Abort or by the call ending
    counter = [0]

    def check_auth(context):
        if args.auth_token is None:
            return
        md = dict(context.invocation_metadata())
        if md.get("authorization") != "Bearer " + args.auth_token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong bearer token (send 'authorization: Bearer <token>')")

    def record(method, request, context):
        if not args.record:
            return
        md = dict(context.invocation_metadata())
        rec = {"method": method,
               "request": json_format.MessageToDict(request, preserving_proto_field_name=True),
               "authorization": md.get("authorization"),
               "user_agent": md.get("user-agent")}
        tmp = args.record + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.replace(tmp, args.record)

    expect = {}
    if args.train_expect:
        with open(args.train_expect) as f:
            expect = json.load(f)
    expect_data = None
    if "data" in expect:
        with open(expect["data"], encoding="utf-8") as f:
            expect_data = [canon_record(json.loads(line)) for line in f if line.strip()]
    adapters = {}  # name -> {"rank", "alpha", "dropout", "seed", "targets", "step", "pending"}

    def train_log(entry):
        if args.train_log:
            with lock, open(args.train_log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def mismatch(context, what, got, want):
        msg = f"fake_server: {what} is {got!r}, expected {want!r}"
        train_log({"method": "error", "error": msg})
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)

    def expect_eq(context, what, key, got):
        if key in expect:
            want = expect[key]
            same = (abs(got - want) <= 1e-6 * max(1.0, abs(want))
                    if isinstance(want, float) else got == want)
            if not same:
                mismatch(context, what, got, want)

    def adapter_of(name, context):
        expect_eq(context, "the adapter name", "adapter", name)
        a = adapters.get(name)
        if a is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no adapter '{name}'")
        return a

    def adapter_info(name, a):
        cfg = pb.LoraConfig(rank=a["rank"], alpha=a["alpha"], dropout=a["dropout"],
                            seed=a["seed"], target_modules=a["targets"])
        return pb.AdapterInfo(name=name, config=cfg, step=a["step"],
                              n_params=2 * 2 * len(a["targets"]) * a["rank"] * 64,
                              pending_batches=len(a["pending"]), source="created")

    def ids_to_bytes(ids, context, skip_special=False):
        out = bytearray()
        for i in ids:
            if i < 0 or i >= VOCAB:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"unknown token id {i} (vocab size {VOCAB})")
            if i in SPECIAL:
                if not skip_special:
                    out += SPECIAL[i].encode()
            else:
                out.append(i)
        return bytes(out)

    def render_chat(chat):
        return "".join(f"<|{m.role}|>{m.content}\n" for m in chat.messages) + "<|assistant|>"

    class Tessera(pb_grpc.TesseraServicer):
        def Generate(self, request, context):
            check_auth(context)
            record("Generate", request, context)
            sp = request.sampling
            which = request.WhichOneof("input")
            if which == "text":
                prompt = request.text
                prompt_tokens = len(prompt.encode())
            elif which == "tokens":
                prompt = ids_to_bytes(request.tokens.ids, context).decode("utf-8", "replace")
                prompt_tokens = len(request.tokens.ids)
            elif which == "chat":
                users = [m.content for m in request.chat.messages if m.role == "user"]
                prompt = users[-1] if users else ""
                prompt_tokens = len(render_chat(request.chat).encode())
            else:
                prompt, prompt_tokens = "", 0
            if not prompt:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "empty input: give text, tokens or chat")
            if not (0.0 <= sp.top_p <= 1.0):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "top_p must be in (0, 1]")
            if sp.temperature < 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "temperature must be >= 0")
            if sp.max_tokens < 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_tokens must be > 0")
            if not (0 <= sp.top_logprobs <= 20):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "top_logprobs must be in 0..20")
            if request.adapter not in ("", "known"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"unknown adapter '{request.adapter}' (loaded: known)")
            if prompt == "__unavailable__":
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is loading")

            with lock:
                counter[0] += 1
                rid = request.request_id or f"fake-{counter[0]}"
                if rid in active:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"request id '{rid}' is already in use")
                stop_ev = threading.Event()
                active[rid] = stop_ev
            context.add_callback(stop_ev.set)  # the call ended: cancelled, deadline, done
            try:
                yield from self._stream(rid, prompt, prompt_tokens, sp, stop_ev, context)
            finally:
                with lock:
                    active.pop(rid, None)

        def _stream(self, rid, prompt, prompt_tokens, sp, stop_ev, context):
            if prompt == "__error__":
                yield pb.GenerateResponse(request_id=rid, final=pb.GenerateFinal(
                    finish_reason=pb.FINISH_REASON_ERROR, error="fake engine failure",
                    usage=pb.Usage(prompt_tokens=prompt_tokens)))
                return
            text, finish = prompt, pb.FINISH_REASON_STOP
            for s in sp.stop:
                if s and s in text:
                    text = text[:text.index(s)]
            pieces = pieces_of(text)
            if sp.max_tokens > 0 and len(pieces) > sp.max_tokens:
                pieces, finish = pieces[:sp.max_tokens], pb.FINISH_REASON_LENGTH
            completion = 0
            for i, piece in enumerate(pieces):
                if i > 0 and args.word_delay > 0:
                    stop_ev.wait(args.word_delay)
                if stop_ev.is_set():
                    if not context.is_active():
                        return  # the client is gone (cancelled or past its deadline)
                    finish = pb.FINISH_REASON_CANCELLED  # aborted
                    break
                ids = list(piece.encode())
                chunk = pb.GenerateChunk(token_ids=ids, text=piece)
                if sp.logprobs:
                    for t in ids:
                        top = [pb.TopLogprob(token_id=(t + k) % 256, text=chr((t + k) % 256),
                                             logprob=-0.5 - k) for k in range(sp.top_logprobs)]
                        chunk.logprobs.append(pb.TokenLogprob(token_id=t, logprob=-0.5, top=top))
                completion += len(ids)
                yield pb.GenerateResponse(request_id=rid, chunk=chunk)
            yield pb.GenerateResponse(request_id=rid, final=pb.GenerateFinal(
                finish_reason=finish,
                usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion),
                timings=pb.Timings(queued_s=0.001, time_to_first_token_s=0.05, total_s=0.3)))

        def Tokenize(self, request, context):
            check_auth(context)
            record("Tokenize", request, context)
            which = request.WhichOneof("input")
            if which == "chat":
                text, parse_special = render_chat(request.chat), True
            elif which == "text":
                text, parse_special = request.text, request.parse_special
            else:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty input: give text or chat")
            ids = [BOS] if request.add_special else []
            parts = re.split(r"(<s>|</s>)", text) if parse_special else [text]
            for part in parts:
                if parse_special and part == "<s>":
                    ids.append(BOS)
                elif parse_special and part == "</s>":
                    ids.append(EOS)
                else:
                    ids.extend(part.encode())
            return pb.TokenizeResponse(ids=ids)

        def Detokenize(self, request, context):
            check_auth(context)
            raw = ids_to_bytes(request.ids, context, request.skip_special)
            return pb.DetokenizeResponse(text=raw.decode("utf-8", "replace"))

        def GetModelInfo(self, request, context):
            check_auth(context)
            return pb.ModelInfo(name="fake-llama", architecture="llama", format="gguf",
                                n_layer=2, n_embd=64, n_head=4, n_head_kv=2, head_dim=16,
                                n_ff=128, vocab_size=VOCAB, context_length=512,
                                train_context_length=2048, tp=2, pp=1,
                                bos_token_id=BOS, eos_token_id=EOS)

        def GetServerInfo(self, request, context):
            check_auth(context)
            with lock:
                n = len(active)
            return pb.ServerInfo(active_requests=n, queued_requests=0, kv_blocks_used=4 * n,
                                 kv_blocks_total=64, kv_block_size=16,
                                 uptime_s=time.monotonic() - started, version="fake-0.1",
                                 world_size=2)

        def Abort(self, request, context):
            check_auth(context)
            with lock:
                ev = active.get(request.request_id)
            if ev is not None:
                ev.set()
            return pb.AbortResponse(found=ev is not None)

        # ---- LoRA adapters ----

        def CreateAdapter(self, request, context):
            check_auth(context)
            cfg = json_format.MessageToDict(request.config, preserving_proto_field_name=True)
            train_log({"method": "CreateAdapter", "name": request.name, "config": cfg})
            if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", request.name):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"name '{request.name}': want 1..64 of A-Z a-z 0-9 . _ -")
            expect_eq(context, "the adapter name", "adapter", request.name)
            if "config" in expect and cfg != expect["config"]:
                mismatch(context, "CreateAdapter's config", cfg, expect["config"])
            c = request.config
            try:
                targets = lora_targets(list(c.target_modules))
            except ValueError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"config.target_modules: unknown module '{e}'")
            if c.rank < 0 or c.alpha < 0 or not (0 <= c.dropout < 1):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config: out of range")
            with lock:
                if request.name in adapters:
                    context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                  f"adapter '{request.name}' already exists")
                a = {"rank": c.rank or 8, "alpha": c.alpha or 16.0, "dropout": c.dropout,
                     "seed": c.seed, "targets": targets, "step": 0, "pending": []}
                adapters[request.name] = a
            return adapter_info(request.name, a)

        def ForwardBackward(self, request, context):
            check_auth(context)
            a = adapter_of(request.adapter, context)
            if not request.examples:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "the batch is empty: give at least one example")
            canon = [canon_example(ex) for ex in request.examples]
            idx = []
            for k, c in enumerate(canon):
                if c[0] not in ("pc", "chat"):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"examples[{k}] has no prompt_completion or chat input")
                if c[0] == "pc" and c[1] == "__refuse__":
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"examples[{k}].prompt_completion: refused by the fake")
                if expect_data is not None:
                    if c not in expect_data:
                        mismatch(context, f"examples[{k}]", c, "a record of the data file")
                    idx.append(expect_data.index(c))
            step = a["step"]
            n_tok = [train_example_tokens(c) for c in canon]
            if args.max_train_tokens:
                total = 0
                for k, t in enumerate(n_tok):
                    total += t
                    if total > args.max_train_tokens:
                        train_log({"method": "ForwardBackward(refused)", "adapter": request.adapter,
                                   "step": step, "examples": idx})
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"the batch has more than {args.max_train_tokens} tokens "
                                      f"(at example {k}): split it over several calls "
                                      "(gradients accumulate)")
            loss = fake_loss(step)
            n_loss = sum(n_tok) // 2
            train_log({"method": "ForwardBackward", "adapter": request.adapter, "step": step,
                       "examples": idx, "canon": canon})
            with lock:
                a["pending"].append((loss, n_loss))
                a["pending_examples"] = a.get("pending_examples", 0) + len(canon)
                pending = len(a["pending"])
            return pb.ForwardBackwardResponse(loss=loss, loss_sum=loss * n_loss, weight_sum=n_loss,
                                              n_tokens=sum(n_tok), n_loss_tokens=n_loss,
                                              pending_batches=pending, example_tokens=n_tok)

        def OptimStep(self, request, context):
            check_auth(context)
            a = adapter_of(request.adapter, context)
            h = request.adamw
            train_log({"method": "OptimStep", "adapter": request.adapter, "step": a["step"],
                       "lr": h.lr, "weight_decay": h.weight_decay, "eps": h.eps,
                       "max_grad_norm": request.max_grad_norm})
            expect_eq(context, "adamw.lr", "lr", h.lr)
            expect_eq(context, "adamw.weight_decay", "weight_decay", h.weight_decay)
            expect_eq(context, "max_grad_norm", "max_grad_norm", request.max_grad_norm)
            expect_eq(context, "adamw.eps", "adam_eps", h.eps)
            if not h.lr > 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"adamw.lr {h.lr}: the learning rate must be finite and > 0")
            if not a["pending"]:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"adapter '{request.adapter}' has nothing accumulated: "
                              "call ForwardBackward first")
            if expect_data is not None and "batch_size" in expect:
                # a step's examples, over however many ForwardBackward calls
                n, b = len(expect_data), expect["batch_size"]
                per_epoch = (n + b - 1) // b
                want = min(b, n - (a["step"] % per_epoch) * b)
                got = a.get("pending_examples", 0)
                if got != want:
                    mismatch(context, f"the batch size of step {a['step'] + 1}", got, want)
            if args.step_delay > 0:
                time.sleep(args.step_delay)
            if args.fail_at_step and a["step"] + 1 == args.fail_at_step:
                a["pending"].clear()
                a["pending_examples"] = 0
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"step {args.fail_at_step}: the loss is not finite; the adapter "
                              "keeps its last good state")
            with lock:
                w = sum(n for _, n in a["pending"])
                loss = sum(l * n for l, n in a["pending"]) / w if w else 0.0
                gn = fake_grad_norm(a["step"])
                a["step"] += 1
                a["pending"].clear()
                a["pending_examples"] = 0
                step = a["step"]
            return pb.OptimStepResponse(step=step, grad_norm=gn, loss=loss, weight_sum=w,
                                        n_loss_tokens=w)

        def SaveAdapter(self, request, context):
            check_auth(context)
            a = adapter_of(request.adapter, context)
            train_log({"method": "SaveAdapter", "adapter": request.adapter, "path": request.path,
                       "return_files": request.return_files, "step": a["step"]})
            if request.path or not request.return_files:
                mismatch(context, "SaveAdapter (path, return_files)",
                         (request.path, request.return_files), ("", True))
            cfg, st = peft_files(request.adapter, a["rank"], a["alpha"], a["dropout"],
                                 a["targets"], a["step"], args.adapter_mib)
            if args.save_dump:
                os.makedirs(args.save_dump, exist_ok=True)
                for fname, data in (("adapter_config.json", cfg),
                                    ("adapter_model.safetensors", st)):
                    with open(os.path.join(args.save_dump, fname), "wb") as f:
                        f.write(data)
            return pb.SaveAdapterResponse(path="", step=a["step"], adapter_config_json=cfg,
                                          adapter_model_safetensors=st)

        def ListAdapters(self, request, context):
            check_auth(context)
            train_log({"method": "ListAdapters"})
            with lock:
                infos = [adapter_info(n, a) for n, a in sorted(adapters.items())]
            return pb.ListAdaptersResponse(adapters=infos, max_adapters=8)

        def DeleteAdapter(self, request, context):
            check_auth(context)
            train_log({"method": "DeleteAdapter", "name": request.name})
            with lock:
                if adapters.pop(request.name, None) is None:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"no adapter '{request.name}'")
            return pb.DeleteAdapterResponse()

    def health_status(service, context):
        if service not in ("", "tessera.v1.Tessera"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{service}'")
        S = hpb.HealthCheckResponse
        return S.SERVING if time.monotonic() >= serving_at else S.NOT_SERVING

    class Health(hpb_grpc.HealthServicer):
        def Check(self, request, context):
            return hpb.HealthCheckResponse(status=health_status(request.service, context))

        def Watch(self, request, context):
            last = None
            while context.is_active():
                now = health_status(request.service, context)
                if now != last:
                    yield hpb.HealthCheckResponse(status=now)
                    last = now
                time.sleep(0.05)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                         options=[("grpc.max_send_message_length", -1),
                                  ("grpc.max_receive_message_length", 64 << 20)])
    pb_grpc.add_TesseraServicer_to_server(Tessera(), server)
    hpb_grpc.add_HealthServicer_to_server(Health(), server)
    addr = f"127.0.0.1:{args.port}"
    if args.tls_cert:
        with open(args.tls_key, "rb") as f:
            key = f.read()
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        port = server.add_secure_port(addr, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(addr)
    if port == 0:
        print(f"fake_server: cannot bind {addr}", file=sys.stderr)
        return 1
    server.start()
    print(f"PORT {port}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(grace=0.5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
