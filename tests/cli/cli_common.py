"""tests/cli/cli_common.py - what the tessera-cli tests against the fake server
(test_cli.py, test_cli_train.py) share: their Checks with the name first, the
fake server (fake_server.py) as a subprocess, and the setup each main begins
with (grpcio present, stubs generated into a fresh directory, a runner for
tessera-cli without the caller's TESSERA_AUTH_TOKEN).

What it is not: the fake server itself (fake_server.py) or any check.
"""
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
sys.path.insert(0, HERE)
from check import Checks  # noqa: E402
from net import free_port  # noqa: E402,F401 (the tests import it from here)


class Results(Checks):
    """tests/common/check.py's Checks with the name first, as these tests
    call it, and a count of skipped checks."""

    def __init__(self):
        super().__init__()
        self.skipped = 0

    @property
    def failed(self):
        return len(self.failures)

    def check(self, name, cond, why=""):
        return super().check(cond, name, why)

    def skip(self, name, why):
        self.skipped += 1
        print(f"skip - {name}: {why}", flush=True)


class Fake:
    """The fake server as a subprocess; use with `with`."""

    def __init__(self, stubs, *extra, port=0):
        self.cmd = [sys.executable, os.path.join(HERE, "fake_server.py"), "--stubs", stubs,
                    "--port", str(port), *extra]
        self.proc = None
        self.port = None

    def __enter__(self):
        env = dict(os.environ, GRPC_VERBOSITY="NONE")  # no gRPC chatter in the test log
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.addr = f"127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Session:
    """A test's setup: tessera-cli's absolute path (cli), a fresh temporary
    directory (tmp) holding the generated stubs (stubs), the environment
    without TESSERA_AUTH_TOKEN (base_env) and run(); the Results (r)."""

    def __init__(self, cli, proto, prefix, timeout):
        import fake_server
        self.cli = os.path.abspath(cli)
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.stubs = os.path.join(self.tmp, "stubs")
        fake_server.gen_stubs(proto, self.stubs)
        self.base_env = {k: v for k, v in os.environ.items() if k != "TESSERA_AUTH_TOKEN"}
        self.timeout = timeout
        self.r = Results()

    def run(self, args, env=None, timeout=None):
        """(exit code, stdout, stderr) of tessera-cli ARGS with env added."""
        e = dict(self.base_env)
        e.update(env or {})
        p = subprocess.run([self.cli, *args], capture_output=True, text=True, env=e,
                           timeout=timeout or self.timeout)
        return p.returncode, p.stdout, p.stderr

    def finish(self):
        """Removes tmp, prints the counts; returns the exit status."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        r = self.r
        line = f"{r.passed} passed, {r.failed} failed"
        if r.skipped:
            line += f", {r.skipped} skipped"
        print(line, flush=True)
        return 1 if r.failed else 0


def start(cli, proto, prefix, timeout):
    """The Session, or None (after saying why: the test exits 77) when grpcio
    or grpcio-tools is missing."""
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as e:
        print(f"skipping: grpcio / grpcio-tools are not installed ({e}); "
              "scripts/setup.sh installs them", flush=True)
        return None
    return Session(cli, proto, prefix, timeout)
