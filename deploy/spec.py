"""The deployment bundle's on-disk layout and its JSON spec; torch-free, so the runtime can read it.

Layout (format ``imitlab-bundle``, version 1)::

    <bundle>/
      bundle.json          this spec: inputs/outputs, spaces, camera settings, normalisation, validation, versions
      model.onnx           fp32 policy: inputs ``state`` + one uint8 image per camera key, output ``action``
      model.int8.onnx      optional int8 (QDQ) model, present only if it passed the same gate
      README.md            what was validated and how to run it
      validation/          the closed-loop validation report: report.json, report.md, report.html, videos/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imitlab.errors import ImitlabError
from imitlab.formats import read_format_document

FORMAT = "imitlab-bundle"
FORMAT_VERSION = 1
SPEC_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model.int8.onnx"
VALIDATION_DIR = "validation"
#: Model variants a bundle may hold, by name (``--model`` / ``load_bundle(model=...)``).
MODEL_FILES = {"fp32": MODEL_FILE, "int8": INT8_MODEL_FILE}

_REQUIRED = ("env_id", "env_kwargs", "image_keys", "image_size", "state_dim", "action_dim", "models",
             "observation_space", "action_space")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a folder holding a bundle spec."""
    return (Path(path) / SPEC_FILE).is_file()


def read_spec(bundle: Path) -> dict[str, Any]:
    """The bundle's spec, checked for the fields the runtime, server and evaluator rely on."""
    path = Path(bundle) / SPEC_FILE
    if not path.is_file():
        raise ImitlabError(f"{bundle}: not a deployment bundle (no {SPEC_FILE})")
    spec = read_format_document(path, FORMAT, FORMAT_VERSION)
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ImitlabError(f"{path}: missing fields {missing}")
    return spec


def model_path(bundle: Path, spec: dict[str, Any], model: str = "fp32") -> Path:
    """The ONNX file of variant ``model`` ("fp32" or "int8"), which must be listed in the spec and exist."""
    if model not in MODEL_FILES:
        raise ImitlabError(f"unknown model variant {model!r}; choose one of {', '.join(MODEL_FILES)}")
    if model not in spec["models"]:
        raise ImitlabError(f"bundle {bundle} has no {model} model (it has {', '.join(spec['models'])})")
    path = Path(bundle) / spec["models"][model]["file"]
    if not path.is_file():
        raise ImitlabError(f"{path}: model file missing from the bundle")
    return path
