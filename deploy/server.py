"""HTTP inference server for a deployment bundle (FastAPI + uvicorn; the model runs in onnxruntime).

    POST /act     {"obs": {...}} -> {"action": [...], "model": "fp32", "inference_ms": 0.9}   (see deploy/wire.py)
    GET  /health  {"status": "ok", "model": "fp32", "requests": n}
    GET  /spec    the bundle spec (bundle.json): inputs, spaces, camera settings, validation results

Every request is checked before it reaches the model: body size (413), content type (415), JSON syntax (400),
then keys, shapes, types and value ranges (422); each refusal carries a one-line ``detail``. It binds to
127.0.0.1 unless told otherwise: the API has no authentication.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imitlab.deploy.runtime import ObservationError, load_bundle
from imitlab.deploy.wire import WireError, parse_observation
from imitlab.errors import ImitlabError

#: Bytes of JSON text allowed per image value (a nested list spends up to ~6 per value, e.g. "255, ") + slack.
_BYTES_PER_VALUE = 8
_BODY_SLACK = 16 * 1024

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_ACT_SCHEMA = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["obs"], "additionalProperties": False,
        "properties": {"obs": {"type": "object", "description": "\"state\": list of numbers; each image key: "
                               "base64 of raw uint8 HxWx3 bytes, or a nested HxWx3 list of integers 0..255"}},
    }}}},
}


def default_body_limit(spec: dict[str, Any]) -> int:
    """Largest request accepted: room for every image as a nested list plus the state."""
    size = int(spec["image_size"])
    return _BODY_SLACK + _BYTES_PER_VALUE * (size * size * 3 * len(spec["image_keys"]) + int(spec["state_dim"]))


def create_app(bundle: Path, model: str = "fp32", max_body_bytes: int | None = None, threads: int = 1) -> FastAPI:
    """The FastAPI app serving ``bundle``'s ``model`` ("fp32" or "int8")."""
    policy = load_bundle(Path(bundle), model, threads)
    spec = policy.spec
    limit = max_body_bytes or default_body_limit(spec)
    app = FastAPI(title="imitlab policy server", version=str(spec["format_version"]),
                  description=f"Policy for {spec['env_id']} from {spec['source_policy']}.")
    counter = {"requests": 0}

    def refuse(status: int, detail: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": detail})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model, "requests": counter["requests"]}

    @app.get("/spec")
    def get_spec() -> dict[str, Any]:
        return spec

    @app.post("/act", openapi_extra=_ACT_SCHEMA)
    async def act(request: Request) -> JSONResponse:
        counter["requests"] += 1
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return refuse(415, "Content-Type must be application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return refuse(413, f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return refuse(413, f"body larger than {limit} bytes")
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            return refuse(400, f"body is not valid JSON ({str(error)[:120]})")
        try:
            obs = parse_observation(payload, spec)
        except (WireError, RecursionError) as error:
            return refuse(422, str(error)[:300])
        try:
            start = time.perf_counter()
            action = await run_in_threadpool(policy.predict, obs)
            elapsed = (time.perf_counter() - start) * 1e3
        except ObservationError as error:
            return refuse(422, str(error))
        return JSONResponse({"action": [float(a) for a in action], "model": model, "inference_ms": elapsed})

    return app


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def serve(bundle: Path, host: str = "127.0.0.1", port: int = 8000, model: str = "fp32",
          max_body_bytes: int | None = None, log_level: str = "info") -> None:
    """Run the server until interrupted."""
    import uvicorn

    if log_level not in _LOG_LEVELS:
        raise ImitlabError(f"unknown log level {log_level!r}; choose one of {', '.join(_LOG_LEVELS)}")
    app = create_app(bundle, model, max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
