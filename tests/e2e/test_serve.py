#!/usr/bin/env python3
"""End to end: `mpirun -np 2 tessera serve --tp 2` on the default model, driven by
grpcio (stubs generated from proto/ at test time) and by tessera-cli.

  * health goes NOT_SERVING (loading) -> SERVING;
  * a greedy stream equals `tessera generate` for the same chat request, through
    grpcio and through tessera-cli;
  * 32 concurrent streams all complete and each equals its single-stream answer;
  * every bad input gets the right status and the server keeps serving;
  * a cancelled stream, an expired deadline and Abort free their resources
    (GetServerInfo: nothing active, no KV block in use);
  * bearer-token auth (health stays open); TLS on a second, one-rank server;
  * SIGTERM to the ranks while a stream is in flight: the stream completes, every
    rank exits 0 (so mpirun exits 0).

usage: test_serve.py TESSERA TESSERA_CLI MPIEXEC
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "model"))
from common import check, default_model, fail  # noqa: E402

try:
    import grpc
    import grpc_tools  # noqa: F401
except ImportError:
    print("SKIP: grpcio / grpcio-tools not installed (scripts/setup.sh installs them)")
    sys.exit(77)

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1")
TOKEN = "s3cret-token"
QUESTION = "What is the capital of France?"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def stubs(tmp):
    out = os.path.join(tmp, "stubs")
    os.makedirs(out)
    for sub, name in (("tessera/v1", "tessera.proto"), ("grpc/health/v1", "health.proto")):
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I",
                        os.path.join(ROOT, "proto", sub), "--python_out=" + out,
                        "--grpc_python_out=" + out, name], check=True)
    sys.path.insert(0, out)
    import tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc  # noqa: E401
    return tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc


def main():
    tessera, cli, mpiexec = sys.argv[1:4]
    model = default_model()
    tmp = tempfile.mkdtemp(prefix="tessera-e2e-")
    pb, pbg, hpb, hpbg = stubs(tmp)
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    log = open(os.path.join(tmp, "server.log"), "w+")
    server = subprocess.Popen([mpiexec, "-np", "2", "--oversubscribe", "--bind-to", "none",
                               tessera, "serve", "--model", model, "--tp", "2", "--port", str(port),
                               "--auth-token-file", token_file, "--max-seqs", "16",
                               "--ctx", "1024", "--grace", "20"],
                              stdout=log, stderr=subprocess.STDOUT, env=ENV)
    auth = [("authorization", "Bearer " + TOKEN)]
    try:
        chan = grpc.insecure_channel(addr)
        health = hpbg.HealthStub(chan)
        api = pbg.TesseraStub(chan)

        # -- health: NOT_SERVING while loading, then SERVING
        seen, t0, loaded_at_first = [], time.time(), None
        while time.time() - t0 < 120:
            try:
                st = health.Check(hpb.HealthCheckRequest(), timeout=1).status
                if loaded_at_first is None:
                    # was the model already loaded when health first answered?
                    log.flush()
                    loaded_at_first = "tessera: ready" in open(log.name).read()
                if not seen or seen[-1] != st:
                    seen.append(st)
                if st == hpb.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.01)
        names = [hpb.HealthCheckResponse.ServingStatus.Name(s) for s in seen]
        print("health:", names)
        check(names and names[-1] == "SERVING", f"server never became SERVING: {names}")
        # NOT_SERVING while loading (unless loading won the race with the first probe;
        # tests/server checks the transition deterministically)
        check(names[0] == "NOT_SERVING" or loaded_at_first,
              f"health was not NOT_SERVING while loading: {names}")

        def chat_req(q, max_tokens=32, **samp):
            return pb.GenerateRequest(chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=q)]),
                                      sampling=pb.SamplingParams(max_tokens=max_tokens, **samp))

        def stream(req, metadata=auth, timeout=120):
            text, ids, final = [], [], None
            for r in api.Generate(req, metadata=metadata, timeout=timeout):
                if r.HasField("chunk"):
                    text.append(r.chunk.text)
                    ids.extend(r.chunk.token_ids)
                else:
                    final = r.final
            return "".join(text), ids, final

        def server_info():
            return api.GetServerInfo(pb.GetServerInfoRequest(), metadata=auth)

        def wait_idle(what):
            t = time.time()
            while time.time() - t < 10:
                si = server_info()
                if si.active_requests == 0 and si.kv_blocks_used == 0 and si.queued_requests == 0:
                    return
                time.sleep(0.05)
            fail(f"{what}: resources not freed: {si}")

        # -- greedy stream equals `tessera generate`
        text, ids, final = stream(chat_req(QUESTION))
        ref = subprocess.run([tessera, "generate", "--model", model, "--chat", QUESTION,
                              "--max-tokens", "32"], capture_output=True, text=True, env=ENV,
                             stdin=subprocess.DEVNULL)
        print(f"stream: {text!r}; generate: {ref.stdout.strip()!r}")
        check(text == ref.stdout.rstrip("\n"), "the greedy stream differs from `tessera generate`")
        check(final.finish_reason == pb.FINISH_REASON_STOP and final.usage.completion_tokens == len(ids),
              f"bad final message: {final}")
        check(final.timings.time_to_first_token_s > 0 and final.timings.total_s >= final.timings.time_to_first_token_s,
              f"bad timings: {final.timings}")

        # -- tessera-cli gives the same stream; tokenize agrees with `tessera tokenize`
        c = subprocess.run([cli, "--addr", addr, "--auth-token-file", token_file, "generate",
                            "--chat", QUESTION, "--max-tokens", "32"], capture_output=True, text=True)
        check(c.returncode == 0 and c.stdout.rstrip("\n") == text, f"tessera-cli: {c.returncode} {c.stdout!r} {c.stderr!r}")
        t1 = subprocess.run([cli, "--addr", addr, "--auth-token-file", token_file, "tokenize",
                             "--text", "<|im_start|>user\nHi there", "--parse-special"],
                            capture_output=True, text=True)
        t2 = subprocess.run([tessera, "tokenize", "--model", model, "--text", "<|im_start|>user\nHi there"],
                            capture_output=True, text=True, env=ENV)
        check(t1.returncode == 0 and t1.stdout.split() == t2.stdout.split(),
              f"tokenize differs: {t1.stdout!r} {t1.stderr!r} vs {t2.stdout!r}")

        # -- 32 concurrent streams equal their single-stream answers
        topics = ["the sea", "Paris", "a cat", "music", "rain", "trees", "bread", "stars"]
        qs = [f"Tell me one fact about {topics[i % 8]}." + " Be brief." * (i % 3) for i in range(32)]
        alone = [stream(chat_req(q, 12 + i % 5))[0] for i, q in enumerate(qs)]
        together = [None] * 32
        errors = []

        def worker(i):
            try:
                together[i] = stream(chat_req(qs[i], 12 + i % 5))[0]
            except Exception as e:  # noqa: BLE001
                errors.append((i, e))

        th = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
        t0 = time.time()
        for t in th:
            t.start()
        for t in th:
            t.join()
        print(f"32 concurrent streams in {time.time() - t0:.1f} s")
        check(not errors, f"concurrent streams failed: {errors[:3]}")
        diff = [i for i in range(32) if together[i] != alone[i]]
        check(not diff, f"streams {diff} differ from their single-stream answers: "
                        f"{[(together[i], alone[i]) for i in diff[:2]]}")
        wait_idle("after 32 streams")

        # -- bad input: the right status, and the server keeps serving
        C = grpc.StatusCode
        long_prompt = "word " * 3000
        bad = [
            (pb.GenerateRequest(text=long_prompt), C.INVALID_ARGUMENT, "context"),
            (pb.GenerateRequest(text="hi", sampling=pb.SamplingParams(max_tokens=-1)), C.INVALID_ARGUMENT, "max_tokens"),
            (pb.GenerateRequest(text="hi", sampling=pb.SamplingParams(max_tokens=5000)), C.INVALID_ARGUMENT, "max_tokens"),
            (pb.GenerateRequest(text="hi", sampling=pb.SamplingParams(temperature=-0.5)), C.INVALID_ARGUMENT, "temperature"),
            (pb.GenerateRequest(text="hi", sampling=pb.SamplingParams(top_p=1.5)), C.INVALID_ARGUMENT, "top_p"),
            (pb.GenerateRequest(text=""), C.INVALID_ARGUMENT, "empty"),
            (pb.GenerateRequest(), C.INVALID_ARGUMENT, "input"),
            (pb.GenerateRequest(tokens=pb.TokenIds(ids=[1, 99999999])), C.INVALID_ARGUMENT, "99999999"),
            (pb.GenerateRequest(text="hi", adapter="nope"), None, "nope"),
        ]
        for req, code, word in bad:
            try:
                stream(req)
                fail(f"accepted a bad request: {req}")
            except grpc.RpcError as e:
                ok = (e.code() == code) if code else e.code() in (C.INVALID_ARGUMENT, C.NOT_FOUND)
                check(ok and word.lower() in e.details().lower(),
                      f"{word}: got {e.code()} {e.details()!r}")
                print(f"bad input ({word}): {e.code().name}: {e.details()}")
        # invalid UTF-8 can only be sent as raw bytes: build the message by hand
        raw = pb.GenerateRequest(text="x").SerializeToString().replace(b"\x12\x01x", b"\x12\x02\xc3\x28")
        gen_raw = chan.unary_stream("/tessera.v1.Tessera/Generate", request_serializer=lambda b: b,
                                    response_deserializer=pb.GenerateResponse.FromString)
        try:
            list(gen_raw(raw, metadata=auth, timeout=30))
            fail("invalid UTF-8 was accepted")
        except grpc.RpcError as e:
            check(e.code() in (C.INVALID_ARGUMENT, C.INTERNAL), f"invalid UTF-8: {e.code()} {e.details()}")
            print(f"bad input (utf-8): {e.code().name}: {e.details()}")
        again, _, _ = stream(chat_req(QUESTION))
        check(again == text, "the server answers differently after bad input")

        # -- auth: missing or wrong token refused; health open
        for md in (None, [("authorization", "Bearer wrong")]):
            try:
                stream(pb.GenerateRequest(text="hi"), metadata=md)
                fail("a call without the right token was served")
            except grpc.RpcError as e:
                check(e.code() == C.UNAUTHENTICATED, f"auth: got {e.code()}")
        check(health.Check(hpb.HealthCheckRequest()).status == hpb.HealthCheckResponse.SERVING,
              "health must not need the token")

        # -- cancellation, deadline and Abort free resources
        long_req = lambda rid="": pb.GenerateRequest(  # noqa: E731
            request_id=rid, text="Once upon a time",
            sampling=pb.SamplingParams(max_tokens=900, ignore_eos=True))
        it = api.Generate(long_req(), metadata=auth, timeout=120)
        for _ in range(3):
            next(it)
        it.cancel()
        wait_idle("client cancel")
        try:
            stream(long_req(), timeout=0.5)
            fail("a 900-token stream finished within a 0.5 s deadline")
        except grpc.RpcError as e:
            check(e.code() == C.DEADLINE_EXCEEDED, f"deadline: got {e.code()}")
        wait_idle("deadline")
        it = api.Generate(long_req("abort-me"), metadata=auth, timeout=120)
        next(it)
        check(api.Abort(pb.AbortRequest(request_id="abort-me"), metadata=auth).found, "Abort did not find it")
        finals = []
        try:
            for r in it:
                if r.HasField("final"):
                    finals.append(r.final.finish_reason)
        except grpc.RpcError as e:
            finals.append(e.code())
        check(finals and finals[-1] in (pb.FINISH_REASON_CANCELLED, C.CANCELLED), f"Abort ended with {finals}")
        wait_idle("abort")
        check(not api.Abort(pb.AbortRequest(request_id="no-such"), metadata=auth).found, "Abort of nothing")

        # -- SIGTERM with a stream in flight: it completes, every rank exits 0
        result = {}

        def inflight():
            try:
                result["r"] = stream(pb.GenerateRequest(text="Once upon a time",
                                                        sampling=pb.SamplingParams(max_tokens=40, ignore_eos=True)))
            except grpc.RpcError as e:
                result["e"] = e

        t = threading.Thread(target=inflight)
        t.start()
        time.sleep(0.3)
        # SIGTERM to every rank, as Slurm's scancel or a process manager does
        # (mpirun itself reports a signalled job as failed whatever the ranks
        # return; tessera-launch forwards the signal to the ranks instead)
        ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                                text=True).stdout.split()]
        check(len(ranks) == 2, f"expected 2 ranks under mpirun, found {ranks}")
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)
        t.join(60)
        rc = server.wait(60)
        check("r" in result and result["r"][2].usage.completion_tokens == 40,
              f"the in-flight stream did not complete: {result}")
        check(rc == 0, f"mpirun exited {rc} after SIGTERM")
        print("SIGTERM: in-flight stream completed, job exited 0")
    finally:
        if server.poll() is None:
            server.kill()
        log.seek(0)
        out = log.read()
        print("---- server log (tail) ----\n" + out[-3000:])

    # -- TLS on a one-rank server
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True)
    check(r.returncode == 0, f"openssl failed: {r.stderr}")
    port = free_port()
    srv = subprocess.Popen([tessera, "serve", "--model", model, "--port", str(port), "--tls-cert", cert,
                            "--tls-key", key, "--ctx", "512"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=ENV)
    try:
        creds = grpc.ssl_channel_credentials(open(cert, "rb").read())
        ch = grpc.secure_channel(f"localhost:{port}", creds)
        grpc.channel_ready_future(ch).result(timeout=60)
        tapi = pbg.TesseraStub(ch)
        t0 = time.time()
        while hpbg.HealthStub(ch).Check(hpb.HealthCheckRequest()).status != hpb.HealthCheckResponse.SERVING:
            check(time.time() - t0 < 60, "TLS server never became SERVING")
            time.sleep(0.1)
        out = "".join(r.chunk.text for r in tapi.Generate(
            pb.GenerateRequest(chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=QUESTION)]),
                               sampling=pb.SamplingParams(max_tokens=32)), timeout=60) if r.HasField("chunk"))
        check(out == text, f"TLS answer differs: {out!r}")
        c = subprocess.run([cli, "--addr", f"localhost:{port}", "--tls-ca", cert, "health"],
                           capture_output=True, text=True)
        check(c.returncode == 0 and "SERVING" in c.stdout, f"tessera-cli over TLS: {c.stdout} {c.stderr}")
        plain = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            hpbg.HealthStub(plain).Check(hpb.HealthCheckRequest(), timeout=3)
            fail("a plaintext client talked to the TLS server")
        except grpc.RpcError:
            pass
        srv.send_signal(signal.SIGTERM)
        check(srv.wait(30) == 0, "the TLS server did not exit 0 on SIGTERM")
    finally:
        if srv.poll() is None:
            srv.kill()
    print("PASS")


if __name__ == "__main__":
    main()
