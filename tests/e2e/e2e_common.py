"""What the end-to-end gRPC tests (test_serve.py, test_train_api.py) share:
grpcio itself (importing this module ends the test as skipped, exit 77, when
grpcio or grpcio-tools is missing), the environment mpirun needs as root, the
question both ask, a server started on free ports and Python stubs generated from proto/ at test
time (grpcio-tools). It also puts tests/model (default_model, check, fail) on
sys.path.

What it is not: a server fixture; each test starts its own `tessera serve`."""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "model"))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
from check import skip  # noqa: E402
from net import free_port  # noqa: E402

try:
    import grpc  # noqa: F401 (the tests import it from here)
    import grpc_tools  # noqa: F401
except ImportError:
    skip("grpcio / grpcio-tools not installed (scripts/setup.sh installs them)")

# Open MPI refuses root without the first two; the third keeps idle ranks
# from spinning on the test machine's few cores.
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1")
QUESTION = "What is the capital of France?"


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


def start_server(tmp, command, n_ports, ready, timeout, env=None):
    """Starts `command(*ports)` (n_ports distinct free ports) with its output
    in tmp/server.log, and waits up to `timeout` seconds for a log line with
    `ready` (or for the server to end). A port free_port() found may be taken by
    the time the server binds it (MPI's own listeners pick ports too): when the
    log says "cannot listen", starts again on other ports (three tries in all).
    `env`: the server's environment (default ENV). Returns (the Popen, the log
    file, the ports)."""
    for _ in range(3):
        ports = []
        while len(ports) < n_ports:
            p = free_port()
            if p not in ports:
                ports.append(p)
        log = open(os.path.join(tmp, "server.log"), "w+")
        server = subprocess.Popen(command(*ports), stdout=log, stderr=subprocess.STDOUT,
                                  env=env or ENV)
        t0 = time.time()
        while time.time() - t0 < timeout and server.poll() is None:
            out = open(log.name).read()
            if ready in out or "cannot listen" in out:
                break
            time.sleep(0.01)
        if "cannot listen" not in open(log.name).read():
            break
        print(f"ports {ports} taken before the server bound them; starting again")
        try:
            server.wait(30)  # every rank agrees on the failure and exits
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
    return server, log, ports
