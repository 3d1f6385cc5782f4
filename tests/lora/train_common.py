"""tests/lora/train_common.py - what the `tessera train` tests of this folder
(test_train_cli.py, test_train_layouts.py) share: the environment mpirun
needs as root (oversubscribed: layouts of up to 4 ranks on a smaller
machine), the step line's pattern, the default model (or a skip, exit 77)
and a reader of an adapter's safetensors file.

What it is not: a check; the tests use tests/common/check.py's Checks, which
this module puts on sys.path.
"""
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "common"))
from check import skip  # noqa: E402

DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
STEP_RE = re.compile(r"^step (\d+)/(\d+)  loss (\S+)  grad_norm (\S+)  tokens (\d+)  tok/s (\S+)$")


def default_model():
    """The default model in $TESSERA_MODELS (or ~/.cache/tessera/models); ends
    the test as skipped when it is not downloaded."""
    root = os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models"))
    model = os.path.join(root, DEFAULT_MODEL)
    if not os.path.exists(model):
        skip(f"{model} is not downloaded", prefix="skip: ")
    return model


def safetensors_header(path):
    """(header without "__metadata__", the data section's bytes) of a
    safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return header, data
