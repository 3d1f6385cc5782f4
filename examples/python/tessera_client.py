#!/usr/bin/env python3
"""A small Python client for a Tessera server, using grpcio.

It shows every piece a real client needs, one function each:

* connecting, in plaintext or with TLS (``--tls-ca``);
* the bearer token (``--auth-token-file`` or ``$TESSERA_AUTH_TOKEN``);
* streaming ``Generate`` from a prompt, and from chat messages;
* ``Tokenize``, ``GetModelInfo`` / ``GetServerInfo`` and the standard
  ``grpc.health.v1.Health/Check``;
* turning a gRPC error into a message a person can act on.

First generate the stubs (once, and again whenever the .proto files change):

    examples/python/gen_stubs.sh

then, with a server running (see docs/usage.md):

    python examples/python/tessera_client.py health
    python examples/python/tessera_client.py generate "The capital of France is"
    python examples/python/tessera_client.py chat --system "Be brief." "Why is the sky blue?"
    python examples/python/tessera_client.py tokenize "Hello world"
    python examples/python/tessera_client.py info

docs/python-client.md walks through it. The command-line client in C,
tessera-cli, does the same things with more flags (docs/cli.md).
"""
import argparse
import os
import sys
import time

import grpc

# ---------------------------------------------------------------------------
# The generated stubs. gen_stubs.sh writes them to examples/python/gen;
# TESSERA_STUBS_DIR points elsewhere (the tests use a temporary directory).
# ---------------------------------------------------------------------------
_STUBS = os.environ.get("TESSERA_STUBS_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
sys.path.insert(0, _STUBS)
try:
    import tessera_pb2 as pb             # messages of tessera.v1
    import tessera_pb2_grpc as pb_grpc   # the Tessera service's client stub
    import health_pb2                    # grpc.health.v1 messages
    import health_pb2_grpc               # the Health service's client stub
except ImportError as e:
    sys.exit(f"cannot import the gRPC stubs from {_STUBS} ({e}); "
             "run examples/python/gen_stubs.sh first")


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------
def open_channel(addr, tls_ca=None, tls_server_name=None):
    """Returns a grpc.Channel to addr ("host:port").

    Without tls_ca the channel is plaintext: fine on 127.0.0.1, where the
    server listens by default. With tls_ca (a PEM file holding the server's
    certificate or the CA that signed it) the channel is TLS and the server's
    certificate must name the host in addr, or tls_server_name if given.
    """
    if tls_ca is None:
        return grpc.insecure_channel(addr)
    with open(tls_ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = []
    if tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls_server_name))
    return grpc.secure_channel(addr, creds, options=options)


def auth_metadata(token_file=None):
    """The call metadata that carries the bearer token, or () without one.

    The server wants "authorization: Bearer <token>" on every Tessera call
    when it runs with --auth-token-file (Health needs none). Sending it as
    plain metadata works over plaintext and TLS alike; grpc's
    access_token_call_credentials would insist on TLS.
    """
    token = None
    if token_file:
        with open(token_file) as f:
            token = f.read().strip()
    elif os.environ.get("TESSERA_AUTH_TOKEN"):
        token = os.environ["TESSERA_AUTH_TOKEN"].strip()
    return (("authorization", f"Bearer {token}"),) if token else ()


# ---------------------------------------------------------------------------
# Generation: one request, a stream of responses
# ---------------------------------------------------------------------------
def sampling_from_args(args):
    """SamplingParams from the command line. Fields left at 0 take the
    server's defaults (greedy, no top-k/top-p, max_tokens 256)."""
    return pb.SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop or [],
    )


def stream_generate(stub, request, metadata, timeout):
    """Sends one GenerateRequest and prints the answer as it streams in.

    The server sends GenerateResponse messages whose `kind` is either a
    `chunk` (new token ids and the text they complete; print it at once) or,
    last, a `final` (why it stopped, token counts, timings). Returns the
    final message.
    """
    final = None
    # A server-streaming call returns an iterator; iterating blocks until the
    # next message arrives. `timeout` is the deadline for the whole stream.
    for response in stub.Generate(request, metadata=metadata, timeout=timeout):
        kind = response.WhichOneof("kind")
        if kind == "chunk":
            sys.stdout.write(response.chunk.text)
            sys.stdout.flush()
        elif kind == "final":
            final = response.final
    sys.stdout.write("\n")
    if final is None:
        raise RuntimeError("the stream ended without a final message")
    reason = pb.FinishReason.Name(final.finish_reason).removeprefix("FINISH_REASON_").lower()
    print(f"[finish {reason}; prompt {final.usage.prompt_tokens} tokens, "
          f"completion {final.usage.completion_tokens} tokens, "
          f"ttft {final.timings.time_to_first_token_s:.3f} s, "
          f"total {final.timings.total_s:.3f} s]", file=sys.stderr)
    if final.finish_reason == pb.FINISH_REASON_ERROR:
        raise RuntimeError(f"generation failed: {final.error}")
    return final


def cmd_generate(stub, args, metadata):
    request = pb.GenerateRequest(text=args.prompt, sampling=sampling_from_args(args))
    stream_generate(stub, request, metadata, args.timeout)


def cmd_chat(stub, args, metadata):
    # Chat input is a list of messages; the server renders them with the
    # model's chat template and answers as the assistant.
    messages = []
    if args.system:
        messages.append(pb.ChatMessage(role="system", content=args.system))
    messages.append(pb.ChatMessage(role="user", content=args.message))
    request = pb.GenerateRequest(chat=pb.ChatInput(messages=messages),
                                 sampling=sampling_from_args(args))
    stream_generate(stub, request, metadata, args.timeout)


# ---------------------------------------------------------------------------
# Unary calls: one request, one response
# ---------------------------------------------------------------------------
def cmd_tokenize(stub, args, metadata):
    response = stub.Tokenize(pb.TokenizeRequest(text=args.text), metadata=metadata,
                             timeout=args.timeout)
    print(list(response.ids))


def cmd_info(stub, args, metadata):
    model = stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=args.timeout)
    server = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=metadata,
                                timeout=args.timeout)
    print(f"model:    {model.name} ({model.architecture}, {model.format}), "
          f"{model.n_layer} layers, vocab {model.vocab_size}, context {model.context_length}")
    print(f"layout:   tp {model.tp} x pp {model.pp} on {server.world_size} ranks")
    print(f"server:   version {server.version}, up {server.uptime_s:.1f} s, "
          f"{server.active_requests} active / {server.queued_requests} queued requests, "
          f"KV blocks {server.kv_blocks_used}/{server.kv_blocks_total}")


def cmd_health(channel, args, metadata):
    # The standard health service: "" asks about the whole server. It needs
    # no token. NOT_SERVING means loading (or failed); wait and ask again.
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=args.timeout)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(name)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def parse_args():
    ap = argparse.ArgumentParser(description="Example Tessera client (grpcio).")
    ap.add_argument("--addr", default="127.0.0.1:50051", help="server host:port")
    ap.add_argument("--auth-token-file", help="bearer token file (else $TESSERA_AUTH_TOKEN)")
    ap.add_argument("--tls-ca", help="server certificate / CA (PEM): use TLS")
    ap.add_argument("--tls-server-name", help="name to check the certificate against")
    ap.add_argument("--timeout", type=float, default=None, help="deadline per call, seconds")
    sub = ap.add_subparsers(dest="command", required=True)

    def sampling_flags(p):
        p.add_argument("--max-tokens", type=int, default=0)
        p.add_argument("--temperature", type=float, default=0.0)
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=0.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--stop", action="append", help="stop string (repeatable)")

    p = sub.add_parser("generate", help="complete a prompt, streaming")
    p.add_argument("prompt")
    sampling_flags(p)
    p = sub.add_parser("chat", help="answer a chat message, streaming")
    p.add_argument("message")
    p.add_argument("--system", help="system message")
    sampling_flags(p)
    p = sub.add_parser("tokenize", help="text to token ids")
    p.add_argument("text")
    sub.add_parser("info", help="model and server information")
    sub.add_parser("health", help="SERVING or NOT_SERVING")
    return ap.parse_args()


def main():
    args = parse_args()
    metadata = auth_metadata(args.auth_token_file)
    # A channel is cheap to keep and reconnects by itself; one per program.
    with open_channel(args.addr, args.tls_ca, args.tls_server_name) as channel:
        stub = pb_grpc.TesseraStub(channel)
        try:
            if args.command == "health":
                return cmd_health(channel, args, metadata)
            {"generate": cmd_generate, "chat": cmd_chat, "tokenize": cmd_tokenize,
             "info": cmd_info}[args.command](stub, args, metadata)
            return 0
        except grpc.RpcError as e:
            # Every failure carries a status code and a message from the
            # server (INVALID_ARGUMENT: top_p must be in (0, 1], ...) or from
            # grpc itself (UNAVAILABLE: failed to connect ...).
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # Leaving the `with` closes the channel, which cancels the call
            # on the server too.
            print("\ninterrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
