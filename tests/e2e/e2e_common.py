"""What the end-to-end gRPC tests share: a free port and Python stubs generated
from proto/ at test time (grpcio-tools)."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def stubs(tmp):
    """(tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc), generated into tmp."""
    out = os.path.join(tmp, "stubs")
    os.makedirs(out)
    for sub, name in (("tessera/v1", "tessera.proto"), ("grpc/health/v1", "health.proto")):
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I",
                        os.path.join(ROOT, "proto", sub), "--python_out=" + out,
                        "--grpc_python_out=" + out, name], check=True)
    sys.path.insert(0, out)
    import tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc  # noqa: E401
    return tessera_pb2, tessera_pb2_grpc, health_pb2, health_pb2_grpc
