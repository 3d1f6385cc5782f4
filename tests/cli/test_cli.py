#!/usr/bin/env python3
"""Runs tessera-cli (and the Python example client) against the fake server
(tests/cli/fake_server.py): streaming, every command, exit codes and messages,
auth (file and environment), health --wait, deadlines, Ctrl-C, TLS.

  test_cli.py --cli build/launcher/tessera-cli [--proto proto]
              [--example examples/python/tessera_client.py]

Exits 0 when everything passed, 1 otherwise, 77 (skipped) when grpcio or
grpcio-tools is missing. Each check prints "ok   name" or "FAIL name: why";
the last line counts them.
"""
import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from cli_common import Fake, free_port, start  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--proto", default=os.path.join(ROOT, "proto"))
    ap.add_argument("--example", default=None)
    opts = ap.parse_args()

    t = start(opts.cli, opts.proto, "tessera-cli-test-", 60)
    if t is None:
        return 77
    cli, tmp, stubs, base_env, run, r = t.cli, t.tmp, t.stubs, t.base_env, t.run, t.r

    def expect(name, res, rc, out=None, err_has=(), out_has=()):
        code, so, se = res
        why = f"rc={code} stdout={so!r} stderr={se!r}"
        ok = code == rc and (out is None or so == out)
        ok = ok and all(s in se for s in err_has) and all(s in so for s in out_has)
        return r.check(name, ok, why)

    record = os.path.join(tmp, "record.json")

    # ---- generate: streaming, inputs, flags --------------------------------
    with Fake(stubs, "--record", record) as f:
        A = ["--addr", f.addr]
        text = "The quick brown fox jumps over the lazy dog."
        expect("generate echoes the prompt and a final newline",
               run([*A, "generate", "--prompt", text]), 0, out=text + "\n",
               err_has=["tessera-cli: prompt 44 tokens, completion 44 tokens, finish stop, "
                        "ttft 0.05 s, total 0.3 s"])
        tricky = "  héllo\twörld  ✓ 日本語 \n line two  "
        expect("generate reassembles whitespace and UTF-8 exactly",
               run(["generate", "--prompt=" + tricky, "--addr=" + f.addr]), 0, out=tricky + "\n")
        expect("generate --chat --system", run([*A, "generate", "--chat", "Hello there",
                                                "--system", "Be brief."]), 0, out="Hello there\n")
        rec = json.load(open(record))
        msgs = rec["request"].get("chat", {}).get("messages", [])
        r.check("chat request carries the system and user messages",
                msgs == [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hello there"}], repr(rec))
        r.check("user agent names tessera-cli", "tessera-cli/" in (rec.get("user_agent") or ""),
                repr(rec.get("user_agent")))
        expect("generate --tokens", run([*A, "generate", "--tokens", "72, 105"]), 0, out="Hi\n")
        expect("generate --quiet prints no statistics",
               run([*A, "generate", "--prompt", "a b", "--quiet"]), 0, out="a b\n")
        code, so, se = run([*A, "generate", "--prompt", "a b", "--quiet"])
        r.check("--quiet leaves stderr empty", se == "", repr(se))

        code, so, se = run([*A, "generate", "--prompt", "one two three", "--max-tokens", "5",
                            "--temperature", "0.7", "--top-k", "40", "--top-p", "0.9",
                            "--min-p", "0.05", "--seed", "18446744073709551615",
                            "--repeat-penalty", "1.1", "--frequency-penalty", "-0.5",
                            "--presence-penalty", "0.3", "--stop", "xyz", "--stop", "q r",
                            "--stop-id", "2", "--stop-id", "3,4", "--min-tokens", "1",
                            "--ignore-eos", "--logprobs", "2", "--request-id", "req-7",
                            "--adapter", "known"])
        rec = json.load(open(record))
        sp = rec["request"].get("sampling", {})
        want = {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
                "seed": "18446744073709551615", "repetition_penalty": 1.1,
                "frequency_penalty": -0.5, "presence_penalty": 0.3, "max_tokens": 5,
                "min_tokens": 1, "stop": ["xyz", "q r"], "stop_token_ids": [2, 3, 4],
                "ignore_eos": True, "logprobs": True, "top_logprobs": 2}
        bad = {k: (sp.get(k), v) for k, v in want.items()
               if not (sp.get(k) == v or (isinstance(v, float) and sp.get(k) is not None
                                          and abs(sp.get(k) - v) < 1e-6))}
        r.check("every sampling flag reaches the request", code == 0 and not bad,
                f"rc={code} mismatches={bad} stderr={se!r}")
        r.check("request id and adapter reach the request",
                rec["request"].get("request_id") == "req-7"
                and rec["request"].get("adapter") == "known", repr(rec["request"]))
        r.check("--logprobs prints per-token logprobs to stderr",
                "logprobs:" in se and "token 111  logprob -0.5000  | top: 111 'o' -0.5000, "
                "112 'p' -1.5000" in se, repr(se))
        expect("--max-tokens caps the output (finish length)",
               run([*A, "generate", "--prompt", "one two three four", "--max-tokens", "2"]), 0,
               out="one two \n", err_has=["finish length"])
        expect("--stop cuts the output", run([*A, "generate", "--prompt", "say hello STOP here",
                                              "--stop", "STOP"]), 0, out="say hello \n")

        # ---- errors from the server -----------------------------------------
        expect("top_p > 1 is INVALID_ARGUMENT with the server's message",
               run([*A, "generate", "--prompt", "x", "--top-p", "1.5"]), 1, out="",
               err_has=["tessera-cli: INVALID_ARGUMENT: top_p must be in (0, 1]"])
        expect("negative temperature is INVALID_ARGUMENT",
               run([*A, "generate", "--prompt", "x", "--temperature", "-1"]), 1,
               err_has=["INVALID_ARGUMENT: temperature must be >= 0"])
        expect("unknown adapter is INVALID_ARGUMENT",
               run([*A, "generate", "--prompt", "x", "--adapter", "nope"]), 1,
               err_has=["INVALID_ARGUMENT: unknown adapter 'nope'"])
        expect("an empty prompt is INVALID_ARGUMENT",
               run([*A, "generate", "--prompt", ""]), 1, err_has=["INVALID_ARGUMENT: empty input"])
        expect("FINISH_REASON_ERROR fails with the engine's message",
               run([*A, "generate", "--prompt", "__error__"]), 1,
               err_has=["finish error", "tessera-cli: generation failed: fake engine failure"])
        code, so, se = run([*A, "generate", "--prompt", "__unavailable__"])
        r.check("UNAVAILABLE from a live server is not 'cannot reach'",
                code == 1 and "tessera-cli: UNAVAILABLE: the server is loading" in se
                and "cannot reach" not in se, f"rc={code} {se!r}")

        # ---- the other commands ---------------------------------------------
        code, so, se = run([*A, "info"])
        r.check("info prints the model and server",
                code == 0 and "fake-llama (llama, gguf)" in so and "tp 2 x pp 1 on 2 ranks" in so
                and "version fake-0.1" in so and "258 tokens" in so, f"rc={code} {so!r} {se!r}")
        code, so, se = run([*A, "info", "--json"])
        try:
            j = json.loads(so)
            ok = (j["model"]["vocab_size"] == 258 and j["model"]["name"] == "fake-llama"
                  and j["model"]["tp"] == 2 and j["server"]["version"] == "fake-0.1"
                  and j["server"]["kv_blocks_total"] == 64)
        except (ValueError, KeyError) as e:
            ok = False
            so += f" ({e})"
        r.check("info --json is JSON with every field", code == 0 and ok, so)
        expect("tokenize --text", run([*A, "tokenize", "--text", "Hi <s>"]), 0,
               out="72 105 32 60 115 62\n")
        expect("tokenize --parse-special", run([*A, "tokenize", "--text", "Hi <s>",
                                                "--parse-special"]), 0, out="72 105 32 256\n")
        expect("tokenize --add-special", run([*A, "tokenize", "--text", "A", "--add-special"]), 0,
               out="256 65\n")
        want_chat = " ".join(str(b) for b in "<|system|>S\n<|user|>Hi\n<|assistant|>".encode())
        expect("tokenize --chat --system", run([*A, "tokenize", "--chat", "Hi", "--system", "S"]),
               0, out=want_chat + "\n")
        code, ids, _ = run([*A, "tokenize", "--text", "round trip"])
        expect("tokenize output feeds detokenize --ids", run([*A, "detokenize", "--ids", ids]), 0,
               out="round trip\n")
        expect("tokenize output feeds generate --tokens",
               run([*A, "generate", "--tokens", ids, "--quiet"]), 0, out="round trip\n")
        expect("detokenize", run([*A, "detokenize", "--ids", "72,105,256"]), 0, out="Hi<s>\n")
        expect("detokenize --skip-special",
               run([*A, "detokenize", "--ids", "72 105 256", "--skip-special"]), 0, out="Hi\n")
        expect("detokenize of an unknown id is INVALID_ARGUMENT",
               run([*A, "detokenize", "--ids", "999"]), 1,
               err_has=["INVALID_ARGUMENT: unknown token id 999 (vocab size 258)"])
        expect("health", run([*A, "health"]), 0, out="SERVING\n")
        expect("health --service tessera.v1.Tessera",
               run([*A, "health", "--service", "tessera.v1.Tessera"]), 0, out="SERVING\n")
        expect("health of an unknown service is NOT_FOUND",
               run([*A, "health", "--service", "nope"]), 1, err_has=["NOT_FOUND: unknown service"])
        expect("abort of an unknown id", run([*A, "abort", "--request-id", "nope"]), 1, out="",
               err_has=["no request 'nope' is queued or running"])

    # ---- slow streams: streaming, abort, deadline, Ctrl-C ----------------------
    with Fake(stubs, "--word-delay", "0.4") as f:
        A = ["--addr", f.addr]
        words = "w1 w2 w3 w4 w5 w6"

        def start_slow(*extra):
            p = subprocess.Popen([cli, *A, "generate", "--prompt", words, *extra],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env)
            t0 = time.monotonic()
            ready, _, _ = select.select([p.stdout], [], [], 10)
            first = os.read(p.stdout.fileno(), 100) if ready else b""
            return p, t0, time.monotonic() - t0, first

        p, t0, t_first, first = start_slow()
        rest, err = p.communicate(timeout=30)
        total = time.monotonic() - t0
        r.check("generate streams: the first words arrive before the end",
                p.returncode == 0 and first.startswith(b"w1") and t_first < total - 1.0
                and (first + rest).decode() == words + "\n",
                f"rc={p.returncode} first={first!r} after {t_first:.2f}s of {total:.2f}s")

        p, _, _, first = start_slow("--request-id", "slow-1")
        ab = run([*A, "abort", "--request-id", "slow-1"])
        rest, err = p.communicate(timeout=30)
        expect("abort of a running request", ab, 0, out="aborted slow-1\n")
        r.check("the aborted stream ends with finish cancelled and exit 1",
                p.returncode == 1 and b"finish cancelled" in err
                and b"the server cancelled the request" in err
                and (first + rest).decode().endswith("\n"),
                f"rc={p.returncode} out={(first + rest)!r} err={err!r}")

        t0 = time.monotonic()
        code, so, se = run([*A, "--timeout", "1", "generate", "--prompt", words])
        el = time.monotonic() - t0
        r.check("--timeout ends a slow stream with DEADLINE_EXCEEDED",
                code == 1 and "tessera-cli: DEADLINE_EXCEEDED" in se and "(--timeout 1 s)" in se
                and so.startswith("w1") and so.endswith("\n") and el < 3.5,
                f"rc={code} after {el:.2f}s out={so!r} err={se!r}")

        p, _, _, first = start_slow()
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=10)
        r.check("Ctrl-C cancels the call and exits 130",
                p.returncode == 130 and b"interrupted" in err,
                f"rc={p.returncode} err={err!r}")
        active = None
        for _ in range(40):  # the server sees the cancellation promptly
            code, so, se = run([*A, "info", "--json"])
            active = json.loads(so)["server"]["active_requests"] if code == 0 else None
            if active == 0:
                break
            time.sleep(0.1)
        r.check("the server saw the cancelled and timed-out calls go", active == 0,
                f"active_requests={active}")

    # ---- auth ----------------------------------------------------------------
    with Fake(stubs, "--auth-token", "s3cret-token", "--record", record) as f:
        A = ["--addr", f.addr]
        good = os.path.join(tmp, "good.token")
        bad = os.path.join(tmp, "bad.token")
        spaced = os.path.join(tmp, "spaced.token")
        open(good, "w").write("s3cret-token\n")
        open(bad, "w").write("wrong")
        open(spaced, "w").write("two words\n")
        expect("no token: UNAUTHENTICATED with a hint", run([*A, "generate", "--prompt", "x"]), 1,
               err_has=["tessera-cli: UNAUTHENTICATED: missing or wrong bearer token",
                        "no token was sent"])
        code, so, se = run([*A, "--auth-token-file", bad, "generate", "--prompt", "x"])
        r.check("wrong token: UNAUTHENTICATED without the no-token hint",
                code == 1 and "UNAUTHENTICATED" in se and "no token was sent" not in se,
                f"rc={code} {se!r}")
        expect("token from --auth-token-file (trailing newline trimmed)",
               run([*A, "--auth-token-file", good, "generate", "--prompt", "hi there"]), 0,
               out="hi there\n")
        rec = json.load(open(record))
        r.check("the token is sent as 'authorization: Bearer <token>'",
                rec.get("authorization") == "Bearer s3cret-token", repr(rec.get("authorization")))
        expect("token from TESSERA_AUTH_TOKEN",
               run([*A, "tokenize", "--text", "A"], env={"TESSERA_AUTH_TOKEN": "s3cret-token"}), 0,
               out="65\n")
        expect("--auth-token-file wins over TESSERA_AUTH_TOKEN",
               run([*A, "--auth-token-file", good, "info"], env={"TESSERA_AUTH_TOKEN": "wrong"}), 0,
               out_has=["fake-llama"])
        expect("wrong TESSERA_AUTH_TOKEN", run([*A, "info"], env={"TESSERA_AUTH_TOKEN": "nope"}), 1,
               err_has=["UNAUTHENTICATED"])
        expect("health needs no token", run([*A, "health"]), 0, out="SERVING\n")
        expect("a token with a space is a usage error",
               run([*A, "--auth-token-file", spaced, "health"]), 2,
               err_has=["printable ASCII without spaces"])

    # ---- health: NOT_SERVING -> SERVING, and a server that starts late --------
    with Fake(stubs, "--serving-after", "2") as f:
        A = ["--addr", f.addr]
        expect("health while loading: NOT_SERVING, exit 1", run([*A, "health"]), 1,
               out="NOT_SERVING\n")
        expect("health --wait 0.3 gives up", run([*A, "health", "--wait", "0.3"]), 1,
               out="NOT_SERVING\n", err_has=["not SERVING after 0.3 s"])
        t0 = time.monotonic()
        code, so, se = run([*A, "health", "--wait", "15"])
        el = time.monotonic() - t0
        r.check("health --wait polls until SERVING", code == 0 and so == "SERVING\n" and el > 1.0,
                f"rc={code} after {el:.2f}s {so!r} {se!r}")

    port = free_port()
    t0 = time.monotonic()
    waiter = subprocess.Popen([cli, "--addr", f"127.0.0.1:{port}", "health", "--wait", "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=base_env)
    time.sleep(2.0)
    with Fake(stubs, port=port):
        so, se = waiter.communicate(timeout=30)
        el = time.monotonic() - t0
    r.check("health --wait waits for a server that is not up yet",
            waiter.returncode == 0 and so == "SERVING\n" and el < 8,
            f"rc={waiter.returncode} after {el:.2f}s {so!r} {se!r}")

    # ---- unreachable and bad flags ------------------------------------------
    dead = f"127.0.0.1:{free_port()}"
    expect("unreachable server: exit 1, 'cannot reach'",
           run(["--addr", dead, "generate", "--prompt", "x"]), 1,
           err_has=[f"tessera-cli: cannot reach {dead}: UNAVAILABLE"])
    expect("unreachable server with health", run(["--addr", dead, "health"]), 1,
           err_has=[f"cannot reach {dead}"])
    expect("health --wait against nothing gives up",
           run(["--addr", dead, "health", "--wait", "1"]), 1,
           err_has=["not SERVING after 1 s", "cannot reach"])
    usage_cases = [
        ([], "no command"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["generate", "--prompt", "x", "--bogus"], "unknown flag '--bogus'"),
        (["generate", "-x"], "unknown flag '-x'"),
        (["generate"], "exactly one of --prompt, --chat and --tokens"),
        (["generate", "--prompt", "a", "--chat", "b"], "exactly one of"),
        (["generate", "--prompt", "a", "--system", "s"], "--system goes with --chat"),
        (["generate", "--prompt", "a", "--top-p", "abc"], "--top-p expects a number, got 'abc'"),
        (["generate", "--prompt", "a", "--max-tokens", "1.5"], "--max-tokens expects an integer"),
        (["generate", "--prompt", "a", "--seed", "-1"], "--seed expects an unsigned integer"),
        (["generate", "--prompt", "a", "--logprobs", "-2"], "--logprobs expects"),
        (["generate", "--tokens", "1,,2"], "--tokens expects token ids"),
        (["generate", "--prompt", "a", "--stop-id", "x"], "--stop-id expects token ids"),
        (["generate", "--prompt"], "--prompt needs a value"),
        (["generate", "--prompt", "a", "--ignore-eos=1"], "--ignore-eos takes no value"),
        (["generate", "--prompt", "a", "extra"], "unexpected argument 'extra'"),
        (["health", "--prompt", "x"], "--prompt does not apply to 'health'"),
        (["health", "--wait", "soon"], "--wait expects seconds"),
        (["--timeout", "0", "health"], "--timeout must be > 0"),
        (["--timeout", "-3", "health"], "--timeout expects seconds"),
        (["--auth-token-file", "/nonexistent/token", "health"], "No such file or directory"),
        (["--tls-ca", "/nonexistent/ca.pem", "health"], "--tls-ca /nonexistent/ca.pem"),
        (["--tls-server-name", "x", "health"], "--tls-server-name goes with --tls-ca"),
        (["tokenize"], "exactly one of --text and --chat"),
        (["detokenize"], "detokenize needs --ids"),
        (["detokenize", "--ids", "1 x"], "--ids expects token ids"),
        (["abort"], "abort needs --request-id"),
    ]
    for args, msg in usage_cases:
        code, so, se = run(["--addr", dead, *args])
        r.check(f"usage error exit 2: {' '.join(args) or '(nothing)'}",
                code == 2 and msg in se and "Try 'tessera-cli --help'" in se,
                f"rc={code} stderr={se!r}")
    code, so, se = run(["--help"])
    r.check("--help prints usage on stdout, exit 0", code == 0 and "usage: tessera-cli" in so
            and "generate" in so, f"rc={code}")
    code, so, se = run(["--version"])
    r.check("--version", code == 0 and so.startswith("tessera-cli "), f"rc={code} {so!r}")

    # ---- TLS -----------------------------------------------------------------
    openssl = shutil.which("openssl")
    if not openssl:
        r.skip("TLS", "the openssl command is not installed, so no test certificate can be made")
    else:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=tessera-test",
                        "-addext", "subjectAltName=DNS:localhost,DNS:tessera.test,IP:127.0.0.1"],
                       check=True, capture_output=True)
        with Fake(stubs, "--tls-cert", cert, "--tls-key", key, "--auth-token", "tok") as f:
            A = ["--addr", f.addr, "--tls-ca", cert]
            env = {"TESSERA_AUTH_TOKEN": "tok"}
            expect("TLS generate with the server's certificate",
                   run([*A, "generate", "--prompt", "secure hello"], env=env), 0,
                   out="secure hello\n")
            expect("TLS health", run([*A, "health"]), 0, out="SERVING\n")
            expect("TLS with --tls-server-name",
                   run([*A, "--tls-server-name", "tessera.test", "info"], env=env), 0,
                   out_has=["fake-llama"])
            code, so, se = run([*A, "--tls-server-name", "wrong.example", "health"])
            r.check("TLS refuses a certificate for another name",
                    code == 1 and "UNAVAILABLE" in se, f"rc={code} {se!r}")
            code, so, se = run(["--addr", f.addr, "health"])
            r.check("plaintext against a TLS server fails with exit 1",
                    code == 1 and "UNAVAILABLE" in se, f"rc={code} {se!r}")
            other = os.path.join(tmp, "other.pem")
            subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                            os.path.join(tmp, "other.key"), "-out", other, "-days", "2",
                            "-subj", "/CN=other", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True)
            code, so, se = run(["--addr", f.addr, "--tls-ca", other, "health"])
            r.check("TLS refuses a server whose certificate the CA did not sign",
                    code == 1 and f"cannot reach {f.addr}" in se, f"rc={code} {se!r}")

    # ---- the Python example client -------------------------------------------
    if opts.example:
        ex = os.path.abspath(opts.example)
        ex_stubs = os.path.join(tmp, "example-stubs")
        g = subprocess.run(["bash", os.path.join(os.path.dirname(ex), "gen_stubs.sh"), ex_stubs],
                           capture_output=True, text=True,
                           env=dict(base_env, PYTHON=sys.executable))
        r.check("python example: gen_stubs.sh writes the stubs",
                g.returncode == 0 and os.path.exists(os.path.join(ex_stubs, "tessera_pb2_grpc.py"))
                and os.path.exists(os.path.join(ex_stubs, "health_pb2_grpc.py")),
                f"rc={g.returncode} {g.stderr!r}")
        ex_env = dict(base_env, TESSERA_STUBS_DIR=ex_stubs)

        def py(args, env=None):
            e = dict(ex_env)
            e.update(env or {})
            p = subprocess.run([sys.executable, ex, *args], capture_output=True, text=True,
                               env=e, timeout=60)
            return p.returncode, p.stdout, p.stderr

        with Fake(stubs, "--auth-token", "tok") as f:
            A = ["--addr", f.addr]
            env = {"TESSERA_AUTH_TOKEN": "tok"}
            code, so, se = py([*A, "generate", "The answer is 42."], env=env)
            r.check("python example: generate streams the text",
                    code == 0 and so.startswith("The answer is 42.") and "finish" in se,
                    f"rc={code} {so!r} {se!r}")
            code, so, se = py([*A, "chat", "--system", "S", "Hi there"], env=env)
            r.check("python example: chat", code == 0 and so.startswith("Hi there"),
                    f"rc={code} {so!r} {se!r}")
            code, so, se = py([*A, "tokenize", "Hi"], env=env)
            r.check("python example: tokenize", code == 0 and "72, 105" in so, f"{so!r} {se!r}")
            code, so, se = py([*A, "health"])
            r.check("python example: health", code == 0 and "SERVING" in so, f"{so!r} {se!r}")
            code, so, se = py([*A, "info"], env=env)
            r.check("python example: info", code == 0 and "fake-llama" in so, f"{so!r} {se!r}")
            code, so, se = py([*A, "generate", "x", "--top-p", "2"], env=env)
            r.check("python example: errors show the status",
                    code == 1 and "INVALID_ARGUMENT" in se and "top_p" in se, f"{so!r} {se!r}")
            code, so, se = py([*A, "info"])
            r.check("python example: no token -> UNAUTHENTICATED",
                    code == 1 and "UNAUTHENTICATED" in se, f"{so!r} {se!r}")
        if openssl:
            with Fake(stubs, "--tls-cert", cert, "--tls-key", key) as f:
                code, so, se = py(["--addr", f.addr, "--tls-ca", cert, "generate", "tls ok"])
                r.check("python example: TLS", code == 0 and so.startswith("tls ok"),
                        f"rc={code} {so!r} {se!r}")

    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
