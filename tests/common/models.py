"""tests/common/models.py - where the tests find the default model.

Standard library only (the GPU tests import it with the system python3).
Import it as tests/common/check.py is imported:
    sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
    from models import default_model_path

What it is not: a downloader (scripts/fetch-model.sh fetches the model).
"""
import os

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path():
    """$TESSERA_MODEL when set, else the default model's file in
    $TESSERA_MODELS (or ~/.cache/tessera/models); it may not exist."""
    return os.environ.get("TESSERA_MODEL") or os.path.join(
        os.environ.get("TESSERA_MODELS", os.path.expanduser("~/.cache/tessera/models")),
        DEFAULT_MODEL_NAME)
