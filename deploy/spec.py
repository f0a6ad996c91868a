"""The deployment bundle's on-disk layout and its JSON spec; torch-free, so the runtime can read it.

Layout (format ``imitlab-bundle``, version 1)::

    <bundle>/
      bundle.json          this spec: inputs/outputs, spaces, camera settings, normalisation, validation, versions
      model.onnx           fp32 policy: inputs ``state`` + one uint8 image per camera key + one int64 per category
                           key (``categories``, e.g. the route command), output ``action``
      model.int8.onnx      optional int8 (QDQ) model, present only if it passed the same gate
      README.md            what was validated and how to run it
      validation/          the closed-loop validation report: report.json, report.md, report.html, videos/
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from imitlab.core.documents import read_format_document
from imitlab.core.errors import ImitlabError
from imitlab.core.limits import (MAX_ACTION_DIM, MAX_IMAGE_KEYS, MAX_IMAGE_SIZE, MAX_OBJECT_KEYS, MAX_STATE_DIM,
                                 size_problem)
from imitlab.core.observation_check import Category

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
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a folder holding a bundle spec."""
    return (Path(path) / SPEC_FILE).is_file()


def read_spec(bundle: Path) -> dict[str, Any]:
    """The bundle's spec, checked for the fields the runtime, server and evaluator rely on, every size bounded."""
    path = Path(bundle) / SPEC_FILE
    if not path.is_file():
        raise ImitlabError(f"{bundle}: not a deployment bundle (no {SPEC_FILE})")
    spec = read_format_document(path, FORMAT, FORMAT_VERSION)
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ImitlabError(f"{path}: missing fields {missing}")
    problems = _spec_problems(spec)
    if problems:
        raise ImitlabError(f"{path}: {'; '.join(problems[:3])}")
    return spec


def _spec_problems(spec: dict[str, Any]) -> list[str]:
    """What makes ``spec`` unusable or unsafe to allocate from (absurd sizes, malformed model entries)."""
    problems = [size_problem("image_size", spec["image_size"], MAX_IMAGE_SIZE),
                size_problem("state_dim", spec["state_dim"], MAX_STATE_DIM, minimum=0),
                size_problem("action_dim", spec["action_dim"], MAX_ACTION_DIM)]
    keys = spec["image_keys"]
    if not isinstance(keys, list) or not all(isinstance(k, str) and k and k != "state" for k in keys):
        problems.append("image_keys must be a list of names other than 'state'")
    else:
        problems.append(size_problem("number of image_keys", len(keys), MAX_IMAGE_KEYS))
        if len(set(keys)) != len(keys):
            problems.append("image_keys must be unique")
    if not isinstance(spec["env_id"], str) or not isinstance(spec["env_kwargs"], dict):
        problems.append("env_id must be a string and env_kwargs an object")
    elif len(spec["env_kwargs"]) > MAX_OBJECT_KEYS:
        problems.append(f"env_kwargs has {len(spec['env_kwargs'])} keys, more than {MAX_OBJECT_KEYS}")
    models = spec["models"]
    if not isinstance(models, dict) or not models or set(models) - set(MODEL_FILES):
        problems.append(f"models must map some of {', '.join(MODEL_FILES)} to files")
    else:
        for name, entry in models.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                    and isinstance(entry.get("sha256"), str) and _SHA256_HEX.fullmatch(entry["sha256"])):
                problems.append(f"models.{name} must have a file name and a sha256 hex digest")
    problems.append(_state_bounds_problem(spec))
    problems.append(_categories_problem(spec))
    return [p for p in problems if p]


def spec_categories(spec: dict[str, Any]) -> tuple[Category, ...]:
    """The bundle's category inputs (``categories``: key, n, start each); none for bundles made before them."""
    return tuple(Category(c["key"], int(c["n"]), int(c["start"])) for c in spec.get("categories", []))


def _categories_problem(spec: dict[str, Any]) -> str | None:
    """``categories``, when present: a list of {key, n, start}, keys unique and distinct from the other inputs."""
    entries = spec.get("categories", [])
    if not isinstance(entries, list) or len(entries) > MAX_OBJECT_KEYS or not all(
            isinstance(c, dict) and set(c) == {"key", "n", "start"} and isinstance(c["key"], str) and c["key"]
            and not size_problem("n", c["n"], MAX_STATE_DIM) and not size_problem("start", c["start"], 2**31, -2**31)
            for c in entries):
        return "categories must be a list of {key, n, start} with integer n >= 1 and start"
    keys = [c["key"] for c in entries]
    others = {"state", *spec["image_keys"]} if isinstance(spec["image_keys"], list) else {"state"}
    if len(set(keys)) != len(keys) or set(keys) & others:
        return "category keys must be unique and differ from 'state' and the image keys"
    return None


def _state_bounds_problem(spec: dict[str, Any]) -> str | None:
    """The state box bounds the server checks requests against: absent, one number, or one per state entry."""
    space = spec["observation_space"]
    box = ((space.get("spaces") or {}).get("state") if isinstance(space, dict) else None) or {}
    if not isinstance(box, dict):
        return "observation_space.spaces.state must be an object"
    for side in ("low", "high"):
        bound = box.get(side)
        numbers = bound if isinstance(bound, list) else [bound]
        if bound is None:
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers) or (
                isinstance(bound, list) and len(bound) != spec["state_dim"]):
            return f"observation_space state {side} must be a number or {spec['state_dim']} numbers"
    return None


def bundle_file(bundle: Path, name: Any) -> Path:
    """The file ``name`` (as written in bundle.json) inside ``bundle``: relative, no ``..``, no link out of it."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise ImitlabError(f"{bundle}: invalid file name {name!r} in {SPEC_FILE}")
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or PureWindowsPath(name).drive:
        raise ImitlabError(f"{bundle}: {SPEC_FILE} names {name!r}, a path outside the bundle folder")
    root = Path(bundle).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ImitlabError(f"{bundle}: {name!r} leads outside the bundle folder (a link to {path})")
    return path


def read_model(bundle: Path, spec: dict[str, Any], model: str = "fp32") -> tuple[Path, bytes]:
    """The ONNX file of variant ``model`` ("fp32" or "int8") and its bytes, checked against the spec's sha256.

    The bytes returned are the ones hashed, so what runs is exactly what was verified.
    """
    if model not in MODEL_FILES:
        raise ImitlabError(f"unknown model variant {model!r}; choose one of {', '.join(MODEL_FILES)}")
    if model not in spec["models"]:
        raise ImitlabError(f"bundle {bundle} has no {model} model (it has {', '.join(spec['models'])})")
    entry = spec["models"][model]
    path = bundle_file(bundle, entry["file"])
    if not path.is_file():
        raise ImitlabError(f"{path}: model file missing from the bundle")
    size = path.stat().st_size
    if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
        raise ImitlabError(f"{path}: {size} bytes, {SPEC_FILE} says {entry['bytes']}; "
                           "the model was modified or damaged after deployment")
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if digest != entry["sha256"]:
        raise ImitlabError(f"{path}: sha256 {digest[:12]}... does not match {SPEC_FILE}'s {entry['sha256'][:12]}...; "
                           "the model was modified or damaged after deployment")
    return path, content


#: Spec fields a server may show to its clients; the rest (source_policy, train_config, dataset_summary) name
#: folders on the machine that built the bundle.
_PUBLIC_FIELDS = ("format", "format_version", "created_utc", "env_id", "env_kwargs", "camera", "image_keys",
                  "image_size", "state_dim", "action_dim", "categories", "observation_space", "action_space", "inputs",
                  "outputs",
                  "normalisation", "policy_config", "models", "versions", "validation", "latency_ms_batch1")


def public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without local paths: an allow-list of fields, so a field added later stays private by default."""
    return {k: spec[k] for k in _PUBLIC_FIELDS if k in spec}
