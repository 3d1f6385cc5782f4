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

What it is not: a model of the real server's scheduling or tokenizer.

  fake_server.py --stubs DIR [--port 0] [--auth-token T] [--tls-cert F --tls-key F]
                 [--serving-after S] [--word-delay S] [--record FILE]

Prints "PORT <n>" on stdout once it listens; runs until SIGTERM or SIGINT.
"""
import argparse
import json
import os
import re
import signal
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

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
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
