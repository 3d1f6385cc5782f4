#!/usr/bin/env python3
"""Limits instead of crashes (issue 16 item 5), on a one-rank `tessera serve`
of the default model with a small context (128), a small KV pool request
(--kv-positions 16, raised to one context), 4 sequences and a queue of 16:

  * a burst of 1,000 Generate calls at once: every call ends OK or
    RESOURCE_EXHAUSTED ("the request queue is full"), none hangs (one overall
    timeout), some of each; afterwards nothing is active or queued, no KV block
    is in use (GetServerInfo and /metrics), health is SERVING and a new call
    is answered;
  * a request whose prompt + max_tokens exceeds the context (so its KV need
    exceeds what any sequence may hold) is refused at admission with
    INVALID_ARGUMENT naming both numbers; so is a prompt as long as the context;
  * --kv-positions below the context is raised to one context (the log says
    so), and four requests that each need the whole pool all complete, one
    after the other, instead of waiting forever;
  * with --adapter-memory 1 (MiB): CreateAdapter and LoadAdapter of an
    adapter that would take the held adapters past the cap are refused with
    RESOURCE_EXHAUSTED naming the sizes; after DeleteAdapter the load works.

The timeouts are generous (minutes) on purpose: on a loaded 2-core machine
an engine step can take far longer than alone; what is checked is that every
call ends, and how, not how fast.

usage: test_limits.py TESSERA
"""

import asyncio
import http.client
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import grpc, start_server, stubs  # noqa: E402
from common import check, default_model  # noqa: E402

CTX, QUEUE, SEQS, BURST = 128, 16, 4, 1000


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()[:2]
            out[name] = float(value)
    return out


async def burst(addr, pb, pbg):
    """BURST Generate calls at once on one channel: [(code, details, n_chunks)]."""
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = pbg.TesseraStub(ch)

        async def one(i):
            req = pb.GenerateRequest(
                tokens=pb.TokenIds(ids=[100 + i % 50, 200, 300, 400]),
                sampling=pb.SamplingParams(max_tokens=8, ignore_eos=True))
            n = 0
            try:
                async for m in stub.Generate(req, timeout=200):
                    n += m.WhichOneof("kind") == "chunk"
                return grpc.StatusCode.OK, "", n
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details(), n

        return await asyncio.gather(*(one(i) for i in range(BURST)))


def main():
    tessera = sys.argv[1]
    model = default_model()
    tmp = tempfile.mkdtemp(prefix="tsr-limits-")
    pb, pbg, hpb, hpbg = stubs(tmp)
    srv, log, (port, mport) = start_server(
        tmp, lambda p, m: [tessera, "serve", "--model", model, "--port", str(p), "--metrics-port",
                           str(m), "--ctx", str(CTX), "--kv-positions", "16", "--max-seqs",
                           str(SEQS), "--queue", str(QUEUE), "--adapter-memory", "1"],
        2, "tessera: ready", 120)
    try:
        text = open(log.name).read()
        check("tessera: ready" in text, f"the server did not start:\n{text[-3000:]}")
        check("--kv-positions 16 is below the context (128); the KV pool holds 128" in text,
              f"no note that --kv-positions was raised:\n{text[-2000:]}")
        addr = f"127.0.0.1:{port}"
        ch = grpc.insecure_channel(addr)
        api = pbg.TesseraStub(ch)
        si = api.GetServerInfo(pb.GetServerInfoRequest())
        check(si.kv_blocks_total * si.kv_block_size == CTX,
              f"the pool is not one context: {si.kv_blocks_total} x {si.kv_block_size}")

        # -- 1. the burst
        t0 = time.time()
        res = asyncio.run(asyncio.wait_for(burst(addr, pb, pbg), timeout=220))
        dt = time.time() - t0
        codes = {}
        for code, det, n in res:
            codes[code] = codes.get(code, 0) + 1
            if code == grpc.StatusCode.OK:
                check(n >= 1, "an OK call streamed nothing")
            elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                check("queue is full" in det, f"RESOURCE_EXHAUSTED without the reason: {det!r}")
            else:
                check(False, f"a burst call ended {code}: {det!r}")
        n_ok = codes.get(grpc.StatusCode.OK, 0)
        n_re = codes.get(grpc.StatusCode.RESOURCE_EXHAUSTED, 0)
        print(f"burst of {BURST}: {n_ok} OK, {n_re} RESOURCE_EXHAUSTED in {dt:.1f} s")
        check(n_ok + n_re == BURST and n_ok >= QUEUE and n_re > 0,
              f"burst: {n_ok} OK, {n_re} RESOURCE_EXHAUSTED")

        end = time.time() + 10
        while True:
            si = api.GetServerInfo(pb.GetServerInfoRequest())
            idle = si.active_requests == 0 and si.queued_requests == 0 and si.kv_blocks_used == 0
            if idle or time.time() > end:
                break
            time.sleep(0.05)
        check(idle, f"after the burst: {si.active_requests} active, {si.queued_requests} "
                    f"queued, {si.kv_blocks_used} KV blocks")
        m = metrics(mport)
        check(m.get("tessera_requests_queued") == 0 and m.get("tessera_requests_running") == 0
              and m.get("tessera_kv_blocks_used") == 0,
              f"metrics after the burst: queued {m.get('tessera_requests_queued')} running "
              f"{m.get('tessera_requests_running')} kv {m.get('tessera_kv_blocks_used')}")
        h = hpbg.HealthStub(ch).Check(hpb.HealthCheckRequest(), timeout=10)
        check(h.status == hpb.HealthCheckResponse.SERVING, "health after the burst")
        out = list(api.Generate(pb.GenerateRequest(
            tokens=pb.TokenIds(ids=[1, 2, 3]), sampling=pb.SamplingParams(max_tokens=4)),
            timeout=30))
        check(out and out[-1].WhichOneof("kind") == "final", "no answer after the burst")

        # -- 2. more than the context: refused at admission
        def refused(ids, max_tokens):
            try:
                list(api.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=ids),
                                                     sampling=pb.SamplingParams(
                                                         max_tokens=max_tokens)), timeout=30))
                return None, ""
            except grpc.RpcError as e:
                return e.code(), e.details()

        code, det = refused(list(range(100, 200)), 29)
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "100 tokens" in det and "29" in det
              and "128" in det, f"prompt 100 + max_tokens 29 > ctx 128: {code} {det!r}")
        code, det = refused(list(range(100, 100 + CTX)), 1)
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "context holds 128" in det,
              f"a prompt of the whole context: {code} {det!r}")

        # -- 3. requests that need the whole pool run one after the other
        streams = [api.Generate(pb.GenerateRequest(
            tokens=pb.TokenIds(ids=list(range(100 + k, 200 + k))),
            sampling=pb.SamplingParams(max_tokens=28, ignore_eos=True)), timeout=200)
            for k in range(4)]
        for k, s in enumerate(streams):
            msgs = list(s)
            fin = msgs[-1].final if msgs and msgs[-1].WhichOneof("kind") == "final" else None
            check(fin is not None and fin.usage.completion_tokens == 28,
                  f"whole-pool request {k}: {fin}")

        # -- 4. adapters past --adapter-memory 1 (MiB): refused, the server keeps serving.
        # rank 1 on q of the 135M model: 30 layers x (576 + 576) x 1 = 34,560
        # parameters, 16 bytes each (parameters, gradients, AdamW m and v) = 0.53 MiB
        def call(fn, req):
            try:
                fn(req, timeout=60)
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                return e.code(), e.details()

        small = pb.LoraConfig(rank=1, target_modules=["q"])
        code, det = call(api.CreateAdapter, pb.CreateAdapterRequest(name="a", config=small))
        check(code == grpc.StatusCode.OK, f"CreateAdapter rank 1 under the cap: {code} {det}")
        code, det = call(api.CreateAdapter, pb.CreateAdapterRequest(
            name="big", config=pb.LoraConfig(rank=8, target_modules=["all"])))
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--adapter-memory allows 1.0 MiB"
              in det, f"CreateAdapter past the cap: {code} {det!r}")
        adir = os.path.join(tmp, "adapter-a")
        code, det = call(api.SaveAdapter, pb.SaveAdapterRequest(adapter="a", path=adir))
        check(code == grpc.StatusCode.OK, f"SaveAdapter: {code} {det}")
        code, det = call(api.LoadAdapter, pb.LoadAdapterRequest(name="a2", path=adir))
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "0.5 MiB" in det and "held" in det,
              f"LoadAdapter of a second copy past the cap: {code} {det!r}")
        code, det = call(api.DeleteAdapter, pb.DeleteAdapterRequest(name="a"))
        check(code == grpc.StatusCode.OK, f"DeleteAdapter: {code} {det}")
        code, det = call(api.LoadAdapter, pb.LoadAdapterRequest(name="a2", path=adir))
        check(code == grpc.StatusCode.OK, f"LoadAdapter once the memory is free: {code} {det}")
        out = list(api.Generate(pb.GenerateRequest(
            tokens=pb.TokenIds(ids=[1, 2, 3]), adapter="a2",
            sampling=pb.SamplingParams(max_tokens=4)), timeout=30))
        check(out and out[-1].WhichOneof("kind") == "final", "no answer with the loaded adapter")

        srv.send_signal(signal.SIGTERM)
        check(srv.wait(30) == 0, "the server did not exit 0 on SIGTERM")
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        print("---- server log (tail) ----\n" + open(log.name).read()[-1500:])
    print("PASS")


if __name__ == "__main__":
    main()
