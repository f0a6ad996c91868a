"""The server's OpenAPI document, generated from the bundle's spec: what ``/act`` accepts and every answer it gives.

The request schema says exactly what ``wire.parse_request`` accepts (the keys, the state length and its
per-entry bounds, each image as base64 of the right length or a nested list of the right shape), so a client
generated from it, or a fuzzer such as schemathesis, sends valid requests and learns every refusal.
"""

from __future__ import annotations

from typing import Any

from imitlab.deploy.spec import spec_categories
from imitlab.deploy.wire import MAX_SEED, SESSION_PATTERN, STATE_LIMIT, state_bounds

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["detail"], "additionalProperties": False,
    "properties": {"detail": {"type": "string", "description": "One line saying what was wrong."}},
}


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a JSON ``{"detail": ...}`` error."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def observation_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of the ``obs`` object: "state" plus one entry per camera key and per category key, all required,
    nothing else."""
    size = int(spec["image_size"])
    low, high = state_bounds(spec)
    state = {
        "type": "array", "minItems": int(spec["state_dim"]), "maxItems": int(spec["state_dim"]), "items": False,
        "prefixItems": [{"type": "number", "minimum": max(float(lo), -STATE_LIMIT),
                         "maximum": min(float(hi), STATE_LIMIT)} for lo, hi in zip(low, high)],
        "description": "Proprioceptive state, raw (normalisation is inside the model), within the env's bounds.",
    }
    # size * size * 3 bytes is a multiple of 3, so its base64 has no padding: exactly 4 * size * size characters.
    chars = 4 * size * size
    base64_image = {"type": "string", "minLength": chars, "maxLength": chars, "pattern": f"^[A-Za-z0-9+/]{{{chars}}}$",
                    "contentEncoding": "base64",
                    "description": f"base64 of the raw uint8 {size}x{size}x3 RGB bytes in row-major order"}
    pixel = {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "integer", "minimum": 0, "maximum": 255}}
    row = {"type": "array", "minItems": size, "maxItems": size, "items": pixel}
    nested_image = {"type": "array", "minItems": size, "maxItems": size, "items": row,
                    "description": f"{size}x{size}x3 nested list of integers 0..255 (RGB)"}
    image = {"oneOf": [base64_image, nested_image]}
    categories = {c.key: {"type": "integer", "minimum": c.start, "maximum": c.start + c.n - 1,
                          "description": f"Category input (a Discrete({c.n}) observation, e.g. a route command): "
                                         f"an integer {c.start}..{c.start + c.n - 1}."}
                  for c in spec_categories(spec)}
    keys = ["state", *spec["image_keys"], *categories]
    return {"type": "object", "required": keys, "additionalProperties": False,
            "properties": {"state": state, **{key: image for key in spec["image_keys"]}, **categories}}


def act_openapi(spec: dict[str, Any], model: str) -> dict[str, Any]:
    """``openapi_extra`` for POST /act: the typed request body and every response the route gives."""
    action_dim = int(spec["action_dim"])
    session = {"type": "string", "pattern": SESSION_PATTERN,
               "description": "Optional: this request is a step of the client's episode so named. The server keeps "
                              "the episode's head state (a chunk head's chunks, executed open-loop or temporally "
                              "ensembled; a gmm head's sampling; a frame history): send one request per control "
                              "step, in order; a new id starts a new episode. Without it, /act is stateless."}
    seed = {"type": "integer", "minimum": 0, "maximum": MAX_SEED,
            "description": "With a new session: seeds its sampling (default 0)."}
    body = {"type": "object", "required": ["obs"], "additionalProperties": False,
            "properties": {"obs": observation_schema(spec), "session": session, "seed": seed},
            "dependentRequired": {"seed": ["session"]}}
    bounded = {"type": "number", "minimum": -1.0, "maximum": 1.0}
    one_action = {"type": "array", "minItems": action_dim, "maxItems": action_dim, "items": bounded}
    properties: dict[str, Any] = {
        "action": {**one_action, "description": "The action to take now."},
        "model": {"type": "string", "enum": [model]},
        "inference_ms": {"type": "number", "minimum": 0.0},
        "session": {"type": "string", "pattern": SESSION_PATTERN, "description": "The request's session."},
        "step": {"type": "integer", "minimum": 0, "description": "The session's step this action is for."}}
    policy_config = spec.get("policy_config") or {}
    if policy_config.get("head") == "chunk":
        size = int(policy_config["chunk_size"])
        properties["action_chunk"] = {"type": "array", "minItems": size, "maxItems": size, "items": one_action,
                                      "description": "Stateless requests only: the next actions the chunk head "
                                                     "predicts, to execute on the client's side."}
    action = {"type": "object", "required": ["action", "model", "inference_ms"], "additionalProperties": False,
              "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "The action for this observation, in [-1, 1].",
                    "content": {"application/json": {"schema": action}}},
            "400": error_response("Body is not valid JSON (NaN and Infinity are refused), or the Host is not allowed."),
            "413": error_response("Body larger than the server's limit."),
            "415": error_response("Content-Type is not application/json."),
            "422": error_response("JSON that is not a valid observation: keys, shapes, types or value ranges."),
            "503": error_response("Server busy (all inference slots taken), request timed out, or the model "
                                  "gave a non-finite action; the detail says which. Retry later."),
        },
    }


def secure_openapi(document: dict[str, Any], open_paths: set[str], token: bool) -> dict[str, Any]:
    """Add what the HTTP guard does to every operation it guards: 400 for a Host not allowed and, with a token,
    the bearer scheme and its 401."""
    if token:
        document.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The server's --token / IMITLAB_TOKEN."}}
    for path, operations in document.get("paths", {}).items():
        if path in open_paths:
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", error_response("The Host header is not allowed."))
            if token:
                operation["security"] = [{"bearer": []}]
                responses["401"] = error_response("Missing or wrong bearer token.")
    return document
