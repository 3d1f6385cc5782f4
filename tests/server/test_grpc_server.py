#!/usr/bin/env python3
"""tests/server/test_grpc_server.py - the gRPC front end, end to end over a
real network socket, against fake_engine_server (the real server and
tokenizer in front of a fake engine that echoes the prompt; see its header).

Client: grpcio, with stubs generated at test time by grpc_tools.protoc from
proto/ into a temporary folder. Checks: streaming round trip (text, token
ids, chat, logprobs, merged chunks), every validation refusal with its code
and message, auth (missing, wrong, right token; health stays open), TLS
(self-signed certificate from the openssl CLI), Abort, deadlines, client
cancellation, a full queue, an oversize message, health NOT_SERVING ->
SERVING -> NOT_SERVING (engine failure) by Check and Watch, concurrency,
the access log, a second bind on a used port, and SIGTERM (in-flight stream
completes, new calls refused, exit 0; after the grace period the rest is
cancelled).

  test_grpc_server.py --server build/tests/server/fake_engine_server \
                      --proto-dir proto [--only NAME,...]

Exit status: 0 pass, 1 failure, 77 skipped (grpcio or the model absent).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common"))
from check import Checks, skip  # noqa: E402

CHECKS = Checks(width=6)
check, FAILS = CHECKS.check, CHECKS.failures


try:
    import grpc
    import grpc_tools  # noqa: F401  (the stub generator)
except ImportError:
    skip("grpcio / grpcio-tools not installed in this Python (scripts/setup.sh installs them)")


def gen_stubs(proto_dir, out):
    """tessera_pb2 from proto/ as is; the health proto is compiled under a
    different file name, since a module path grpc.health.v1 would collide
    with the grpc package itself. The wire names stay grpc.health.v1.*."""
    os.makedirs(out)
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
                           f"--python_out={out}", f"--grpc_python_out={out}",
                           "tessera/v1/tessera.proto"])
    hdir = os.path.join(out, "_health")
    os.makedirs(hdir)
    shutil.copy(os.path.join(proto_dir, "grpc/health/v1/health.proto"),
                os.path.join(hdir, "tsr_health.proto"))
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", f"-I{hdir}",
                           f"--python_out={out}", f"--grpc_python_out={out}",
                           "tsr_health.proto"])
    sys.path.insert(0, out)


class Server:
    """One fake_engine_server process; stderr goes to a file we can grep."""

    def __init__(self, binary, tmp, name, *args):
        self.name = name
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE,
                                     stderr=self.logf)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            rc = self.proc.wait(timeout=30)
            if rc == 77:
                skip(line.strip() or "fake_engine_server skipped")
            raise RuntimeError(f"{name}: server did not start (rc {rc}): {line!r}\n"
                               + self.log())
        self.port = int(line.split()[1])
        self.addr = f"127.0.0.1:{self.port}"

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, text, timeout=3.0):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.log():
                return True
            time.sleep(0.02)
        return False

    def channel(self):
        return grpc.insecure_channel(self.addr)

    def terminate(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.logf.close()


def rpc_error(fn):
    """(code, details) of the RpcError fn raises, or (None, result)."""
    try:
        return None, fn()
    except grpc.RpcError as e:
        return e.code(), e.details()


def collect(stream):
    """Messages of a Generate stream and the final status: (msgs, code, details)."""
    msgs = []
    try:
        for m in stream:
            msgs.append(m)
        return msgs, grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return msgs, e.code(), e.details()


def stream_ids(msgs):
    ids, text = [], ""
    for m in msgs:
        if m.WhichOneof("kind") == "chunk":
            ids += list(m.chunk.token_ids)
            text += m.chunk.text
    return ids, text


def final_of(msgs):
    return msgs[-1].final if msgs and msgs[-1].WhichOneof("kind") == "final" else None


SLOW = 1000000  # fake engine: seed SLOW + ms = one token every ms


# ---------------------------------------------------------------------------------


def t_basic(S, pb, pbg, hp, hpg):
    with S.channel() as ch:
        stub = pbg.TesseraStub(ch)
        health = hpg.HealthStub(ch)
        r = health.Check(hp.HealthCheckRequest())
        check(r.status == hp.HealthCheckResponse.SERVING, "health: SERVING when ready")
        r = health.Check(hp.HealthCheckRequest(service="tessera.v1.Tessera"))
        check(r.status == hp.HealthCheckResponse.SERVING, "health: tessera.v1.Tessera SERVING")
        code, det = rpc_error(lambda: health.Check(hp.HealthCheckRequest(service="nope")))
        check(code == grpc.StatusCode.NOT_FOUND and "nope" in det,
              f"health: unknown service NOT_FOUND ({code}, {det})")

        mi = stub.GetModelInfo(pb.GetModelInfoRequest())
        check(mi.vocab_size == 49152 and mi.context_length == 512 and mi.architecture == "llama"
              and mi.format == "gguf" and mi.tp == 1 and mi.pp == 1 and mi.n_layer == 30,
              f"GetModelInfo: {mi.architecture} {mi.format} vocab {mi.vocab_size} "
              f"ctx {mi.context_length} layers {mi.n_layer}")

        si = stub.GetServerInfo(pb.GetServerInfoRequest())
        check(si.version == "0.1.0" and si.world_size == 1 and si.uptime_s > 0
              and si.kv_blocks_total == 1024 and si.kv_block_size == 16,
              f"GetServerInfo: version {si.version!r} world {si.world_size} "
              f"uptime {si.uptime_s:.2f}")

        text = "Hello world, this is a streaming test: ünïcödé ✓ 漢字."
        tk = stub.Tokenize(pb.TokenizeRequest(text=text, parse_special=True, add_special=True))
        ids = list(tk.ids)
        dt = stub.Detokenize(pb.DetokenizeRequest(ids=ids))
        check(len(ids) > 5 and dt.text.endswith(text), f"Tokenize/Detokenize round trip "
              f"({len(ids)} ids)")
        im = stub.Tokenize(pb.TokenizeRequest(text="<|im_start|>", parse_special=True))
        check(len(im.ids) == 1, "Tokenize parse_special: <|im_start|> is one token")
        im2 = stub.Tokenize(pb.TokenizeRequest(text="<|im_start|>"))
        check(len(im2.ids) > 1, "Tokenize without parse_special: <|im_start|> is plain text")
        sk = stub.Detokenize(pb.DetokenizeRequest(ids=list(im.ids) + ids, skip_special=True))
        check(not sk.text.startswith("<|im_start|>"), "Detokenize skip_special")

        # streaming echo of a text prompt; the server picks the id
        msgs, code, det = collect(stub.Generate(pb.GenerateRequest(text=text), timeout=30))
        got, got_text = stream_ids(msgs)
        fin = final_of(msgs)
        check(code == grpc.StatusCode.OK and got == ids, f"Generate(text): echo of the "
              f"prompt ids ({len(got)} tokens, {code})")
        check(got_text == dt.text, f"Generate(text): streamed text equals Detokenize "
              f"({got_text!r})")
        check(fin is not None and fin.finish_reason == pb.FINISH_REASON_STOP
              and fin.usage.prompt_tokens == len(ids)
              and fin.usage.completion_tokens == len(ids)
              and fin.timings.total_s > 0 and fin.timings.time_to_first_token_s > 0,
              "Generate(text): final STOP with usage and timings")
        rid = {m.request_id for m in msgs}
        check(len(rid) == 1 and next(iter(rid)).startswith("req-"),
              f"Generate: every message carries the server-picked id {rid}")

        # max_tokens
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
            text=text, request_id="len-3", sampling=pb.SamplingParams(max_tokens=3)), timeout=30))
        got, _ = stream_ids(msgs)
        fin = final_of(msgs)
        check(code == grpc.StatusCode.OK and got == ids[:3] and fin.finish_reason
              == pb.FINISH_REASON_LENGTH and msgs[0].request_id == "len-3",
              "Generate: max_tokens=3 -> 3 tokens, LENGTH, client id kept")

        # token input
        tid = [1, 2, 3, 100, 2000, 49151]
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
            tokens=pb.TokenIds(ids=tid)), timeout=30))
        check(code == grpc.StatusCode.OK and stream_ids(msgs)[0] == tid,
              "Generate(tokens): echo of the ids")

        # chat input
        chat = pb.ChatInput(messages=[pb.ChatMessage(role="user", content="What is 2+2?")])
        tk_chat = stub.Tokenize(pb.TokenizeRequest(chat=chat))
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(chat=chat), timeout=30))
        got, got_text = stream_ids(msgs)
        check(code == grpc.StatusCode.OK and got == list(tk_chat.ids)
              and "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n" in got_text,
              f"Generate(chat): rendered with the template ({got_text[-60:]!r})")
        chat_c = pb.ChatInput(messages=[pb.ChatMessage(role="user", content="Say hi"),
                                        pb.ChatMessage(role="assistant", content="Hi the")],
                              continue_final_message=True)
        dt_c = stub.Detokenize(pb.DetokenizeRequest(
            ids=stub.Tokenize(pb.TokenizeRequest(chat=chat_c)).ids))
        check(dt_c.text.endswith("<|im_start|>assistant\nHi the"),
              f"chat continue_final_message ends inside the assistant turn ({dt_c.text[-40:]!r})")

        # logprobs
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
            tokens=pb.TokenIds(ids=[10, 20, 30]),
            sampling=pb.SamplingParams(logprobs=True, top_logprobs=2)), timeout=30))
        lps = [lp for m in msgs if m.WhichOneof("kind") == "chunk" for lp in m.chunk.logprobs]
        check(code == grpc.StatusCode.OK and [lp.token_id for lp in lps] == [10, 20, 30]
              and abs(lps[0].logprob + 0.125) < 1e-6 and all(len(lp.top) == 2 for lp in lps)
              and lps[0].top[0].token_id == 11 and lps[0].top[0].text != "",
              "Generate: logprobs and top_logprobs per token")

        # the engine's error: stream ends OK with an ERROR final
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
            text="x", sampling=pb.SamplingParams(seed=666)), timeout=30))
        fin = final_of(msgs)
        check(code == grpc.StatusCode.OK and fin is not None
              and fin.finish_reason == pb.FINISH_REASON_ERROR and "fake engine" in fin.error,
              "Generate: engine error -> final ERROR with the message, status OK")

        # a merged chunk: a slow client and a fast engine
        long_ids = list(range(1000, 1200))
        stream = stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=long_ids)), timeout=30)
        time.sleep(0.5)
        msgs, code, _ = collect(stream)
        check(code == grpc.StatusCode.OK and stream_ids(msgs)[0] == long_ids,
              f"Generate: 200 tokens intact ({len(msgs)} messages)")


def t_validation(S, pb, pbg, hp, hpg):
    with S.channel() as ch:
        stub = pbg.TesseraStub(ch)
        raw_gen = ch.unary_stream("/tessera.v1.Tessera/Generate",
                                  request_serializer=lambda b: b,
                                  response_deserializer=pb.GenerateResponse.FromString)
        INV = grpc.StatusCode.INVALID_ARGUMENT
        SP = pb.SamplingParams
        long_text = " ".join(f"word{i}" for i in range(400))  # > 512 tokens
        cases = [
            ("no input", pb.GenerateRequest(), INV, "no input"),
            ("empty text", pb.GenerateRequest(text=""), INV, "text is empty"),
            ("prompt too long", pb.GenerateRequest(text=long_text), INV,
             "but the context holds 512"),
            ("max_tokens < 0", pb.GenerateRequest(text="hi", sampling=SP(max_tokens=-1)), INV,
             "max_tokens must be > 0"),
            ("prompt + max_tokens > context",
             pb.GenerateRequest(tokens=pb.TokenIds(ids=list(range(1, 11))),
                                sampling=SP(max_tokens=600)), INV,
             "reduce max_tokens to at most 502"),
            ("temperature < 0", pb.GenerateRequest(text="hi", sampling=SP(temperature=-1)), INV,
             "temperature must be >= 0"),
            ("temperature NaN",
             pb.GenerateRequest(text="hi", sampling=SP(temperature=float("nan"))), INV,
             "temperature"),
            ("top_p > 1", pb.GenerateRequest(text="hi", sampling=SP(top_p=1.5)), INV,
             "top_p must be in (0, 1]"),
            ("top_p < 0", pb.GenerateRequest(text="hi", sampling=SP(top_p=-0.1)), INV, "top_p"),
            ("min_p = 1", pb.GenerateRequest(text="hi", sampling=SP(min_p=1.0)), INV, "min_p"),
            ("top_k < 0", pb.GenerateRequest(text="hi", sampling=SP(top_k=-1)), INV, "top_k"),
            ("repetition_penalty < 0",
             pb.GenerateRequest(text="hi", sampling=SP(repetition_penalty=-1)), INV,
             "repetition_penalty"),
            ("frequency_penalty inf",
             pb.GenerateRequest(text="hi", sampling=SP(frequency_penalty=float("inf"))), INV,
             "frequency_penalty"),
            ("top_logprobs 21", pb.GenerateRequest(text="hi", sampling=SP(top_logprobs=21)), INV,
             "top_logprobs must be in 0..20"),
            ("min_tokens > max_tokens",
             pb.GenerateRequest(text="hi", sampling=SP(max_tokens=2, min_tokens=5)), INV,
             "min_tokens (5) is larger than max_tokens (2)"),
            ("empty stop string", pb.GenerateRequest(text="hi", sampling=SP(stop=["a", ""])),
             INV, "stop[1] is empty"),
            ("stop id out of range",
             pb.GenerateRequest(text="hi", sampling=SP(stop_token_ids=[49152])), INV,
             "stop_token_ids[0] = 49152"),
            ("empty token list", None, INV, "tokens.ids is empty"),
            ("token id >= vocab",
             pb.GenerateRequest(tokens=pb.TokenIds(ids=[5, 49152])), INV,
             "tokens.ids[1] = 49152 is not a token id of this model (valid ids are 0..49151)"),
            ("negative token id", pb.GenerateRequest(tokens=pb.TokenIds(ids=[-1])), INV,
             "tokens.ids[0] = -1"),
            ("empty chat", None, INV, "chat.messages is empty"),
            ("chat without role",
             pb.GenerateRequest(chat=pb.ChatInput(messages=[pb.ChatMessage(content="x")])),
             INV, "chat.messages[0].role is empty"),
            ("unknown adapter", pb.GenerateRequest(text="hi", adapter="french"),
             grpc.StatusCode.NOT_FOUND, "no adapter named 'french'"),
            ("request_id too long", pb.GenerateRequest(text="hi", request_id="x" * 200), INV,
             "request_id is 200 bytes long"),
            ("request_id with newline", pb.GenerateRequest(text="hi", request_id="a\nb"), INV,
             "control character"),
        ]
        for name, req, want, msg in cases:
            if req is None and name == "empty token list":
                req = pb.GenerateRequest()
                req.tokens.SetInParent()
            elif req is None and name == "empty chat":
                req = pb.GenerateRequest()
                req.chat.SetInParent()
            msgs, code, det = collect(stub.Generate(req, timeout=10))
            check(code == want and msg in det and not msgs,
                  f"refused: {name} -> {code.name if code else code}: {det}")

        # invalid UTF-8 cannot be built by the Python API: patch the bytes
        marker = "XXXXINVALIDXXXX"
        wire = pb.GenerateRequest(text=marker).SerializeToString()
        bad = wire.replace(marker.encode(), b"abc\xff\xfe" + b"x" * 10)
        msgs, code, det = collect(raw_gen(bad, timeout=10))
        check(code == INV and "UTF-8" in det, f"refused: invalid UTF-8 text -> {code}: {det}")
        wire = pb.GenerateRequest(chat=pb.ChatInput(messages=[pb.ChatMessage(
            role="user", content=marker)])).SerializeToString()
        msgs, code, det = collect(raw_gen(wire.replace(marker.encode(),
                                                        b"ab\xc3" + b"y" * 12), timeout=10))
        check(code == INV and "UTF-8" in det, f"refused: invalid UTF-8 chat -> {code}: {det}")
        msgs, code, det = collect(raw_gen(b"\xff\xff\xff\xff", timeout=10))
        check(code == INV and "malformed" in det, f"refused: garbage bytes -> {code}: {det}")

        code, det = rpc_error(lambda: stub.Detokenize(pb.DetokenizeRequest(ids=[1, 50000])))
        check(code == INV and "ids[1] = 50000" in det, f"Detokenize: id out of range -> {det}")
        raw_tok = ch.unary_unary("/tessera.v1.Tessera/Tokenize", request_serializer=lambda b: b,
                                 response_deserializer=pb.TokenizeResponse.FromString)
        wire = pb.TokenizeRequest(text=marker).SerializeToString()
        code, det = rpc_error(lambda: raw_tok(wire.replace(marker.encode(),
                                                           b"\xc0\xaf" + b"z" * 13)))
        check(code == INV and "UTF-8" in det, f"Tokenize: invalid UTF-8 -> {det}")
        code, det = rpc_error(lambda: stub.Tokenize(pb.TokenizeRequest()))
        check(code == INV and "no input" in det, f"Tokenize: no input -> {det}")

        unknown = ch.unary_unary("/tessera.v1.Tessera/Nope", request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
        code, det = rpc_error(lambda: unknown(b""))
        check(code == grpc.StatusCode.UNIMPLEMENTED, f"unknown method -> {code}")

        # still serving after all that
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(text="still here"), timeout=10))
        check(code == grpc.StatusCode.OK and final_of(msgs) is not None,
              "the server still serves after the refusals")


def slow_req(pb, rid, ms, n=200, **kw):
    return pb.GenerateRequest(request_id=rid, tokens=pb.TokenIds(ids=list(range(100, 100 + n))),
                              sampling=pb.SamplingParams(seed=SLOW + ms, **kw))


def wait_idle(stub, pb, timeout=3.0):
    end = time.time() + timeout
    while time.time() < end:
        si = stub.GetServerInfo(pb.GetServerInfoRequest())
        if si.active_requests == 0 and si.queued_requests == 0 and si.kv_blocks_used == 0:
            return True
        time.sleep(0.02)
    return False


def t_control(S, pb, pbg, hp, hpg):
    with S.channel() as ch:
        stub = pbg.TesseraStub(ch)
        # Abort
        stream = stub.Generate(slow_req(pb, "ab-1", 20), timeout=30)
        first = next(stream)
        dup = collect(stub.Generate(slow_req(pb, "ab-1", 20), timeout=10))
        check(dup[1] == grpc.StatusCode.ALREADY_EXISTS and "ab-1" in dup[2],
              f"duplicate active request_id -> {dup[1]}: {dup[2]}")
        r = stub.Abort(pb.AbortRequest(request_id="ab-1"))
        msgs, code, det = collect(stream)
        fin = final_of([first] + msgs)
        check(r.found and code == grpc.StatusCode.CANCELLED and "aborted" in det
              and fin is not None and fin.finish_reason == pb.FINISH_REASON_CANCELLED,
              f"Abort: found, stream ends CANCELLED with a CANCELLED final ({code}: {det})")
        check(S.wait_log("fake-engine: cancelled id=ab-1"), "Abort: the engine saw cancelled")
        check(not stub.Abort(pb.AbortRequest(request_id="ab-1")).found,
              "Abort of a finished request: found=false")
        check(not stub.Abort(pb.AbortRequest(request_id="nobody")).found,
              "Abort of an unknown id: found=false")
        code, det = rpc_error(lambda: stub.Abort(pb.AbortRequest()))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, f"Abort without id -> {code}")
        # the id is free again
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
            request_id="ab-1", text="again"), timeout=10))
        check(code == grpc.StatusCode.OK, "a finished request's id can be reused")

        # deadline
        t0 = time.time()
        msgs, code, det = collect(stub.Generate(slow_req(pb, "dl-1", 50), timeout=0.2))
        el = time.time() - t0
        check(code == grpc.StatusCode.DEADLINE_EXCEEDED and el < 1.0,
              f"deadline 200 ms on a slow stream -> {code} after {el:.2f} s")
        check(S.wait_log("fake-engine: cancelled id=dl-1"), "deadline: the engine saw cancelled")

        # client cancel
        stream = stub.Generate(slow_req(pb, "cc-1", 20), timeout=30)
        next(stream)
        stream.cancel()
        check(S.wait_log("fake-engine: cancelled id=cc-1"),
              "client cancel: the engine saw cancelled")
        check(wait_idle(stub, pb), "after cancel/deadline/abort: no active request, KV back to 0")

        # 32 concurrent streams
        results = {}

        def one(i):
            ids = [(i * 37 + k) % 49152 for k in range(1, 25)]
            with S.channel() as c2:
                st = pbg.TesseraStub(c2)
                m, cd, _ = collect(st.Generate(pb.GenerateRequest(
                    request_id=f"par-{i}", tokens=pb.TokenIds(ids=ids)), timeout=60))
                results[i] = (cd == grpc.StatusCode.OK and stream_ids(m)[0] == ids
                              and all(x.request_id == f"par-{i}" for x in m))

        th = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        check(len(results) == 32 and all(results.values()),
              f"32 concurrent streams all complete and match "
              f"({sum(results.values())}/32)")

        # oversize message (this instance allows 64 KiB)
        big = "a " * 50000
        msgs, code, det = collect(stub.Generate(pb.GenerateRequest(text=big), timeout=10))
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED,
              f"oversize message -> {code}: {det}")
        msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(text="ok"), timeout=10))
        check(code == grpc.StatusCode.OK, "still serving after an oversize message")
        collect(stub.Generate(pb.GenerateRequest(
            request_id="log-3", text="count to three", sampling=pb.SamplingParams(
                max_tokens=3)), timeout=10))

    log = S.log()
    lines = [ln for ln in log.splitlines() if ln.startswith("access: ")]
    gen = [ln for ln in lines if "method=Generate" in ln and "id=log-3" in ln]
    check(len(gen) == 1 and "status=OK" in gen[0] and "finish=length" in gen[0]
          and "completion_tokens=3" in gen[0] and "peer=ipv" in gen[0],
          f"access log line for a finished Generate: {gen[:1]}")
    dl = [ln for ln in lines if "id=dl-1" in ln]
    check(len(dl) == 1 and "status=DEADLINE_EXCEEDED" in dl[0], f"access log deadline: {dl}")
    ab = [ln for ln in lines if "id=ab-1" in ln and "status=CANCELLED" in ln]
    check(len(ab) == 1, "access log: the aborted request is CANCELLED")
    check("count to three" not in log and "streaming test" not in log,
          "access log: no prompt text without --log-prompts")
    check(not any("Health" in ln for ln in lines), "access log: health checks are not logged")


def t_auth(binary, tmp, pb, pbg, hp, hpg):
    tok = os.path.join(tmp, "token")
    with open(tok, "w") as f:
        f.write("s3cret-token\n")
    S = Server(binary, tmp, "auth", "--auth-token-file", tok, "--log-prompts")
    try:
        with S.channel() as ch:
            stub = pbg.TesseraStub(ch)
            code, det = rpc_error(lambda: stub.GetModelInfo(pb.GetModelInfoRequest()))
            check(code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in det,
                  f"auth: no token -> {code}: {det}")
            code, _ = rpc_error(lambda: stub.GetModelInfo(
                pb.GetModelInfoRequest(), metadata=[("authorization", "Bearer wrong")]))
            check(code == grpc.StatusCode.UNAUTHENTICATED, f"auth: wrong token -> {code}")
            code, _ = rpc_error(lambda: stub.GetModelInfo(
                pb.GetModelInfoRequest(), metadata=[("authorization", "Bearer s3cret-tokenX")]))
            check(code == grpc.StatusCode.UNAUTHENTICATED, f"auth: longer token -> {code}")
            msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(text="hi"), timeout=10))
            check(code == grpc.StatusCode.UNAUTHENTICATED and not msgs,
                  f"auth: Generate without token -> {code}")
            md = [("authorization", "Bearer s3cret-token")]
            code, mi = rpc_error(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(),
                                                           metadata=md))
            check(code is None and mi.vocab_size == 49152, "auth: right token -> OK")
            msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
                text="secret prompt words"), timeout=10, metadata=md))
            check(code == grpc.StatusCode.OK and final_of(msgs) is not None,
                  "auth: Generate with the right token streams")
            h = hpg.HealthStub(ch).Check(hp.HealthCheckRequest())
            check(h.status == hp.HealthCheckResponse.SERVING, "auth: health needs no token")
        check('prompt="secret prompt words"' in S.log(),
              "access log: --log-prompts logs the prompt text")
    finally:
        check(S.terminate() == 0, "auth server: exit 0 on SIGTERM")


def t_tls(binary, tmp, pb, pbg, hp, hpg):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    if not shutil.which("openssl"):
        print("skip  TLS: no openssl CLI to make a self-signed certificate")
        return
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"], capture_output=True)
    if r.returncode != 0:
        print("skip  TLS: openssl could not make a certificate: " + r.stderr.decode()[-200:])
        return
    S = Server(binary, tmp, "tls", "--tls-cert", cert, "--tls-key", key)
    try:
        with open(cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        opts = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(S.addr, creds, options=opts) as ch:
            stub = pbg.TesseraStub(ch)
            msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(text="over TLS"),
                                                  timeout=10))
            check(code == grpc.StatusCode.OK and final_of(msgs) is not None,
                  "TLS: Generate over a verified TLS channel")
        with S.channel() as ch:
            code, _ = rpc_error(lambda: pbg.TesseraStub(ch).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=3))
            check(code == grpc.StatusCode.UNAVAILABLE, f"TLS: a plaintext client fails ({code})")
    finally:
        check(S.terminate() == 0, "tls server: exit 0 on SIGTERM")
    # a certificate without its key is refused at start
    p = subprocess.run([binary, "--tls-cert", cert], capture_output=True)
    check(p.returncode != 0 and b"TLS needs both" in p.stderr,
          "TLS: a certificate without a key is refused at start")


def t_queue(binary, tmp, pb, pbg, hp, hpg):
    S = Server(binary, tmp, "queue", "--queue", "2", "--max-active", "1")
    try:
        with S.channel() as ch:
            stub = pbg.TesseraStub(ch)
            s1 = stub.Generate(slow_req(pb, "q-1", 20), timeout=30)
            next(s1)  # the engine holds q-1
            s2 = stub.Generate(slow_req(pb, "q-2", 20), timeout=30)
            s3 = stub.Generate(slow_req(pb, "q-3", 20), timeout=30)
            end = time.time() + 3
            while time.time() < end and stub.GetServerInfo(
                    pb.GetServerInfoRequest()).queued_requests < 2:
                time.sleep(0.02)
            si = stub.GetServerInfo(pb.GetServerInfoRequest())
            check(si.active_requests == 1 and si.queued_requests == 2,
                  f"queue: 1 active, 2 queued ({si.active_requests}, {si.queued_requests})")
            msgs, code, det = collect(stub.Generate(slow_req(pb, "q-4", 20), timeout=10))
            check(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in det,
                  f"queue full -> {code}: {det}")
            for rid in ("q-1", "q-2", "q-3"):
                stub.Abort(pb.AbortRequest(request_id=rid))
            for s in (s1, s2, s3):
                collect(s)
            check(wait_idle(stub, pb), "queue: drained after Abort")
    finally:
        check(S.terminate() == 0, "queue server: exit 0 on SIGTERM")


def t_health(binary, tmp, pb, pbg, hp, hpg):
    S = Server(binary, tmp, "health", "--ready-after-ms", "1500")
    try:
        with S.channel() as ch:
            stub, health = pbg.TesseraStub(ch), hpg.HealthStub(ch)
            watch = health.Watch(hp.HealthCheckRequest(), timeout=20)
            seen = []

            def reader():
                try:
                    for r in watch:
                        seen.append(r.status)
                except grpc.RpcError:
                    pass

            th = threading.Thread(target=reader)
            th.start()
            r = health.Check(hp.HealthCheckRequest())
            check(r.status == hp.HealthCheckResponse.NOT_SERVING,
                  "health: NOT_SERVING while loading")
            msgs, code, det = collect(stub.Generate(pb.GenerateRequest(text="hi"), timeout=10))
            check(code == grpc.StatusCode.UNAVAILABLE and "loading" in det,
                  f"Generate while loading -> {code}: {det}")
            end = time.time() + 5
            while time.time() < end and health.Check(hp.HealthCheckRequest()).status != \
                    hp.HealthCheckResponse.SERVING:
                time.sleep(0.05)
            check(health.Check(hp.HealthCheckRequest()).status == hp.HealthCheckResponse.SERVING,
                  "health: SERVING once ready")
            msgs, code, _ = collect(stub.Generate(pb.GenerateRequest(
                text="x", sampling=pb.SamplingParams(seed=667)), timeout=10))
            check(code == grpc.StatusCode.OK and final_of(msgs).finish_reason
                  == pb.FINISH_REASON_ERROR, "engine failure reported in the final message")
            time.sleep(0.3)
            check(health.Check(hp.HealthCheckRequest()).status
                  == hp.HealthCheckResponse.NOT_SERVING, "health: NOT_SERVING after engine failure")
            msgs, code, det = collect(stub.Generate(pb.GenerateRequest(text="hi"), timeout=10))
            check(code == grpc.StatusCode.UNAVAILABLE and "failed" in det,
                  f"Generate after engine failure -> {code}: {det}")
            watch.cancel()
            th.join()
            S_ = hp.HealthCheckResponse
            check(seen[:3] == [S_.NOT_SERVING, S_.SERVING, S_.NOT_SERVING],
                  f"health Watch: NOT_SERVING -> SERVING -> NOT_SERVING ({seen})")
            w2 = health.Watch(hp.HealthCheckRequest(service="nope"), timeout=2)
            first = next(w2)
            check(first.status == S_.SERVICE_UNKNOWN, "health Watch of an unknown service: "
                  "SERVICE_UNKNOWN")
            w2.cancel()
    finally:
        check(S.terminate() == 0, "health server: exit 0 on SIGTERM")


def t_shutdown(binary, tmp, pb, pbg, hp, hpg):
    S = Server(binary, tmp, "shutdown", "--grace-s", "10")
    with S.channel() as ch:
        stub, health = pbg.TesseraStub(ch), hpg.HealthStub(ch)
        watch = health.Watch(hp.HealthCheckRequest(), timeout=20)
        check(next(watch).status == hp.HealthCheckResponse.SERVING, "shutdown: watching SERVING")
        ids = list(range(200, 240))
        stream = stub.Generate(pb.GenerateRequest(request_id="inflight", tokens=pb.TokenIds(
            ids=ids), sampling=pb.SamplingParams(seed=SLOW + 25)), timeout=30)
        first = next(stream)
        S.proc.send_signal(signal.SIGTERM)
        check(S.wait_log("fake-engine: draining"), "shutdown: SIGTERM seen")
        check(next(watch).status == hp.HealthCheckResponse.NOT_SERVING,
              "shutdown: health Watch turns NOT_SERVING")
        check(health.Check(hp.HealthCheckRequest()).status == hp.HealthCheckResponse.NOT_SERVING,
              "shutdown: health Check NOT_SERVING while draining")
        msgs, code, det = collect(stub.Generate(pb.GenerateRequest(text="late"), timeout=5))
        check(code == grpc.StatusCode.UNAVAILABLE and "shutting down" in det,
              f"shutdown: a new call is refused -> {code}: {det}")
        msgs, code, _ = collect(stream)
        got = stream_ids([first] + msgs)[0]
        check(code == grpc.StatusCode.OK and got == ids,
              f"shutdown: the in-flight stream completes ({len(got)}/{len(ids)} tokens, {code})")
        watch.cancel()
    rc = S.terminate()
    check(rc == 0, f"shutdown: exit status {rc}")
    check("fake-engine: exit 0" in S.log(), "shutdown: clean exit")

    # the grace period runs out: the rest is cancelled, still exit 0
    S = Server(binary, tmp, "grace", "--grace-s", "0.3")
    with S.channel() as ch:
        stub = pbg.TesseraStub(ch)
        stream = stub.Generate(slow_req(pb, "too-long", 50), timeout=30)
        next(stream)
        t0 = time.time()
        S.proc.send_signal(signal.SIGTERM)
        msgs, code, det = collect(stream)
        check(code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
              and time.time() - t0 < 3, f"grace over: the stream is cut ({code}: {det})")
    rc = S.terminate()
    check(rc == 0 and "cancelled id=too-long" in S.log(),
          f"grace over: engine cancelled the rest, exit {rc}")


def t_bind(binary, tmp, S):
    p = subprocess.run([binary, "--listen", S.addr], capture_output=True, timeout=60)
    check(p.returncode == 1 and b"cannot listen on" in p.stderr,
          f"a second server on a used port fails to start: {p.stderr.decode().strip()[-120:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))

    def want(name):
        return not only or name in only

    tmp = tempfile.mkdtemp(prefix="tsr-grpc-test-")
    try:
        gen_stubs(os.path.abspath(a.proto_dir), os.path.join(tmp, "stubs"))
        from tessera.v1 import tessera_pb2 as pb, tessera_pb2_grpc as pbg
        import tsr_health_pb2 as hp
        import tsr_health_pb2_grpc as hpg
        mods = (pb, pbg, hp, hpg)
        main_srv = None
        if want("basic") or want("validation") or want("control") or want("bind"):
            main_srv = Server(a.server, tmp, "main", "--max-message-bytes", "65536")
        for name, fn in [("basic", t_basic), ("validation", t_validation),
                         ("control", t_control)]:
            if want(name):
                print(f"-- {name}", flush=True)
                try:
                    fn(main_srv, *mods)
                except Exception:
                    traceback.print_exc()
                    check(False, f"{name}: raised")
        if want("bind"):
            print("-- bind", flush=True)
            t_bind(a.server, tmp, main_srv)
        if main_srv:
            check(main_srv.terminate() == 0, "main server: exit 0 on SIGTERM")
        for name, fn in [("auth", t_auth), ("tls", t_tls), ("queue", t_queue),
                         ("health", t_health), ("shutdown", t_shutdown)]:
            if want(name):
                print(f"-- {name}", flush=True)
                try:
                    fn(a.server, tmp, *mods)
                except Exception:
                    traceback.print_exc()
                    check(False, f"{name}: raised")
        for f in sorted(os.listdir(tmp)):
            if f.endswith(".log"):
                text = open(os.path.join(tmp, f), errors="replace").read()
                if "ERROR: AddressSanitizer" in text or "runtime error:" in text or \
                        "ERROR: LeakSanitizer" in text:
                    print(text[-4000:])
                    check(False, f"sanitizer report in {f}")
    finally:
        if FAILS:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAILED' if FAILS else 'PASSED'}: {len(FAILS)} failure(s)")
    for f in FAILS:
        print("  " + f)
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
