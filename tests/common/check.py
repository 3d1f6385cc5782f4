"""tests/common/check.py - the check helpers every Python test shares.

Two kinds of check, as the tests use them:
  check(cond, msg)      ends the test at once ("FAIL: msg", exit 1): for a
                        test whose later steps mean nothing after a failure
  Checks().check(...)   prints "ok   msg" or "FAIL msg", counts, goes on; the
                        test ends with sys.exit(checks.finish(name))
and skip(msg) (exit 77, which ctest reports as skipped).

Standard library only: the GPU tests run it with the system python3.
Import it the way the tests import tests/reference:
    sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
    from check import check, fail, skip, Checks

What it is not: a test framework (no discovery, no fixtures).
"""
import sys

SKIP = 77


def fail(msg):
    """Ends the test: prints "FAIL: msg" and exits 1."""
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    """Ends the test with "FAIL: msg" when cond is false."""
    if not cond:
        fail(msg)


def skip(msg, prefix="SKIP: "):
    """Ends the test as skipped (exit 77)."""
    print(f"{prefix}{msg}", flush=True)
    sys.exit(SKIP)


class Checks:
    """Checks that report and go on: every check prints one line ("ok" or
    "FAIL", padded to `width`), failures are kept for the summary."""

    def __init__(self, width=5):
        self.width = width
        self.passed = 0
        self.failures = []

    def check(self, cond, msg, why=""):
        """Prints "ok   msg" or "FAIL msg[: why]"; returns cond."""
        if cond:
            self.passed += 1
            print("ok".ljust(self.width) + msg, flush=True)
        else:
            self.failures.append(msg)
            print("FAIL".ljust(self.width) + msg + (f": {why}" if why else ""), flush=True)
        return cond

    def close(self, err, tol, msg):
        """A check that err <= tol, both shown."""
        return self.check(err <= tol, f"{msg}: err {err:.3e} (tol {tol:.0e})")

    def finish(self, name):
        """Prints the summary; returns the exit status (0: all passed)."""
        if self.failures:
            print(f"{name}: {len(self.failures)} check(s) FAILED:")
            for f in self.failures:
                print(f"  {f}")
            return 1
        print(f"{name}: all {self.passed} checks passed")
        return 0
