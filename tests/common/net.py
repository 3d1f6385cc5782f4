"""tests/common/net.py - a free TCP port on 127.0.0.1 for a test's server.

Standard library only. Import it as tests/common/check.py is imported:
    sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
    from net import free_port

What it is not: a reservation. The port is free when returned; another process
may take it before the server binds it (the tests accept that race).
"""
import socket


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
