"""Shared helpers for the model-level tests (test-only).

Locates the default model and the reference implementation, and turns
"cannot run here" into ctest's skip code 77 with a message saying why.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
from check import SKIP, check, fail, skip  # noqa: E402,F401 (the tests import them from here)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model():
    """Path of the default GGUF model, or exit 77 (skip) when it is absent."""
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    path = os.path.join(root, DEFAULT_MODEL_NAME)
    if not os.path.isfile(path):
        skip(f"model not found at {path} (run scripts/fetch-model.sh)")
    return path


def run(cmd, **kw):
    """Runs cmd, failing the test with its stderr when it exits non-zero."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}")
    return r
