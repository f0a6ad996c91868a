"""HTTP inference server for a deployment bundle (FastAPI + uvicorn; the model runs in onnxruntime).

    POST /act      {"obs": {...}} -> {"action": [...], "model": "fp32", "inference_ms": 0.9}   (see deploy/wire.py)
                   stateless; a chunk head also answers its whole chunk, "action_chunk": [[...], ...]
                   {"obs": {...}, "session": "ep-1", "seed": 1} -> {"action": [...], "session": "ep-1", "step": 0, ...}
                   a step of the client's episode "ep-1": the server carries its chunks, sampling or frame
                   history (sessions.py)
    GET  /health   liveness: {"status": "ok", "model": "fp32", "requests": n}
    GET  /ready    readiness: 200 once the model answered a warm-up observation with finite actions, else 503
    GET  /spec     the bundle spec without local paths: inputs, spaces, camera settings, validation results
    GET  /metrics  Prometheus text: requests by path and status, latency histogram, errors by reason

Every request is checked before it reaches the model: Host header (400), bearer token when one is set (401),
content type (415), body size (413), JSON syntax (400), then keys, shapes, types and value ranges (422); each
refusal carries a one-line ``detail``. At most ``max_concurrency`` requests are at work at once (more get 503 at
once), each has ``request_timeout_s`` (503 when over), and a non-finite action is never returned (503).
The OpenAPI document at /openapi.json is generated from the bundle's spec (deploy/openapi.py).
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from imitlab.core.action_execution import ActOptions, EpisodeExecutor, Execution
from imitlab.core.errors import ImitlabError
from imitlab.core.observation_check import ObservationError
from imitlab.deploy.http_guard import LOOPBACK_HOSTS, MIN_TOKEN_LENGTH, HttpGuard, is_loopback
from imitlab.deploy.metrics import MetricsMiddleware, ServerMetrics, set_error_reason
from imitlab.deploy.openapi import act_openapi, error_response, secure_openapi
from imitlab.deploy.runtime import OnnxPolicy, load_bundle
from imitlab.deploy.slots import InferenceSlots
from imitlab.deploy.spec import public_spec
from imitlab.deploy.sessions import SessionStore
from imitlab.deploy.wire import ActRequest, WireError, parse_request

#: Bytes of JSON text allowed per image value (a nested list spends up to ~6 per value, e.g. "255, ") + slack.
_BYTES_PER_VALUE = 8
_BODY_SLACK = 16 * 1024
#: Bodies up to this size are parsed on the event loop (tens of microseconds); larger ones, such as a camera
#: image as a nested list (30-40 ms), on a slot thread so that /health and other requests never wait on them.
_INLINE_PARSE_BYTES = 4096
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: Answer without Host check or token: orchestrators probe these by IP, and they reveal only liveness.
OPEN_PATHS = ("/health", "/ready")
_ROUTES = ("/act", "/health", "/ready", "/spec", "/metrics", "/openapi.json", "/docs")


@dataclass(frozen=True)
class ServerSettings:
    """How the server admits and bounds requests."""

    model: str = "fp32"
    """Bundle model variant: "fp32" or "int8"."""
    token: str | None = None
    """Bearer token every request but /health and /ready must carry; required to bind a non-loopback address."""
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    """Host header values accepted ("*": any)."""
    max_body_bytes: int | None = None
    """Request size limit (None: room for every image as a nested list)."""
    max_concurrency: int = 4
    """Requests at work at once (parsing + inference); more are answered 503 at once."""
    request_timeout_s: float = 10.0
    """Deadline of one /act request, from its arrival to its answer (503 when over)."""
    threads: int = 1
    """onnxruntime intra-op threads per inference."""
    chunk_exec: str | None = None
    """How a chunk head's chunks are executed in a session: ``open`` or ``ensemble`` (None: the bundle's default)."""
    sample: bool = False
    """A gmm head samples its mixture in a session (seeded by the session's ``seed``)."""
    max_sessions: int = 256
    """Sessions (client episodes) kept; the least recently used one is forgotten beyond that."""

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ImitlabError(f"the token must have at least {MIN_TOKEN_LENGTH} characters "
                               "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
        if self.max_concurrency < 1 or not self.request_timeout_s > 0 or self.threads < 1 or self.max_sessions < 1:
            raise ImitlabError("max concurrency, threads and max sessions must be >= 1, the request timeout > 0 s")
        if not self.allowed_hosts:
            raise ImitlabError("the Host allow-list is empty; give at least one --allow-host (or '*')")


def default_body_limit(spec: dict[str, Any]) -> int:
    """Largest request accepted: room for every image as a nested list plus the state."""
    size = int(spec["image_size"])
    return _BODY_SLACK + _BYTES_PER_VALUE * (size * size * 3 * len(spec["image_keys"]) + int(spec["state_dim"])
                                             + len(spec.get("categories", [])))


def create_app(bundle: Path, settings: ServerSettings | None = None) -> FastAPI:
    """The app serving ``bundle`` (its model verified against the spec's sha256 first)."""
    settings = settings or ServerSettings()
    return build_app(load_bundle(Path(bundle), settings.model, settings.threads), settings)


def build_app(policy: OnnxPolicy, settings: ServerSettings) -> FastAPI:
    """The app serving an already loaded ``policy`` (its ``spec`` says what requests look like)."""
    spec = policy.spec
    limit = settings.max_body_bytes or default_body_limit(spec)
    slots = InferenceSlots(settings.max_concurrency)
    metrics = ServerMetrics(_ROUTES)
    shown_spec = public_spec(spec)
    readiness = _warm_up(policy)
    sessions = SessionStore(Execution.of(policy.policy_config, ActOptions(settings.chunk_exec, settings.sample)),
                            settings.max_sessions)
    received = {"act": 0}
    app = FastAPI(title="imitlab policy server", version=str(spec["format_version"]),
                  description=f"Policy for {spec['env_id']} (model {settings.model}).")
    app.router.add_event_handler("shutdown", slots.close)

    def refuse(request: Request, status: int, reason: str, detail: str) -> JSONResponse:
        set_error_reason(request.scope, reason)
        return JSONResponse(status_code=status, content={"detail": detail})

    @app.get("/health", responses={200: _json_object("The process is up.")})
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model, "requests": received["act"]}

    @app.get("/ready", responses={200: _json_object("The model answers."),
                                  503: error_response("The model failed its warm-up inference.")})
    def ready(request: Request) -> Response:
        if readiness is not None:
            return refuse(request, 503, "not_ready", readiness)
        return JSONResponse({"status": "ready", "model": settings.model})

    @app.get("/spec", responses={200: _json_object("The bundle spec, without local paths.")})
    def get_spec() -> dict[str, Any]:
        return shown_spec

    @app.get("/metrics", response_class=Response,
             responses={200: {"description": "Prometheus text format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def parse(body: bytes) -> ActRequest | _Answer:
        """The observation (and session) in a request body, or the refusal."""
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            return _Answer(400, "invalid_json", {"detail": f"body is not valid JSON ({str(error)[:120]})"})
        try:
            return parse_request(payload, spec)
        except (WireError, RecursionError) as error:
            return _Answer(422, "invalid_observation", {"detail": str(error)[:300]})

    def step(request: ActRequest) -> dict[str, Any]:
        """The action (and, stateless, a chunk head's whole chunk) for one request; a session's steps in order."""
        if request.session is None:  # as an episode's first step: a frame history repeats this frame
            outputs = policy.predict_outputs(EpisodeExecutor(sessions.execution).observe(request.obs))
            return {name: outputs[name] for name in ("action", "action_chunk") if name in outputs}
        session = sessions.get(request.session, request.seed)
        with session.lock:
            executor = session.executor
            obs = executor.observe(request.obs)
            outputs = policy.predict_outputs(obs) if executor.needs_outputs() else None
            return {"action": executor.act(outputs), "session": request.session, "step": executor.step - 1}

    def run_model(request: ActRequest) -> _Answer:
        start = time.perf_counter()
        try:
            answer = step(request)
        except ObservationError as error:
            return _Answer(422, "invalid_observation", {"detail": str(error)[:300]})
        elapsed = (time.perf_counter() - start) * 1e3
        if not all(np.all(np.isfinite(answer[name])) for name in ("action", "action_chunk") if name in answer):
            return _Answer(503, "non_finite_action", {"detail": "the model gave a non-finite (NaN or infinite) "
                                                                "action for this observation; nothing is returned"})
        for name in ("action", "action_chunk"):
            if name in answer:
                answer[name] = np.asarray(answer[name], np.float64).tolist()
        return _Answer(200, "", {**answer, "model": settings.model, "inference_ms": elapsed})

    def parse_and_run(body: bytes) -> _Answer:
        parsed = parse(body)
        return parsed if isinstance(parsed, _Answer) else run_model(parsed)

    @app.post("/act", openapi_extra=act_openapi(spec, settings.model), response_class=JSONResponse)
    async def act(request: Request) -> Response:
        deadline = time.monotonic() + settings.request_timeout_s
        received["act"] += 1
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return refuse(request, 415, "unsupported_media_type", "Content-Type must be application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return refuse(request, 413, "too_large", f"body larger than {limit} bytes")
        if not slots.try_acquire():
            return refuse(request, 503, "busy", f"server busy: all {slots.size} inference slots are taken; retry later")
        handed_over = False
        try:
            body = await asyncio.wait_for(_read_body(request, limit), deadline - time.monotonic())
            if body is None:
                return refuse(request, 413, "too_large", f"body larger than {limit} bytes")
            if len(body) <= _INLINE_PARSE_BYTES:  # parsing takes microseconds: not worth a thread hop
                parsed = parse(body)
                if isinstance(parsed, _Answer):
                    return refuse(request, parsed.status, parsed.reason, parsed.content["detail"])
                work = slots.submit(run_model, parsed)
            else:
                work = slots.submit(parse_and_run, body)
            handed_over = True
            status, reason, content = await asyncio.wait_for(asyncio.shield(work), deadline - time.monotonic())
        except asyncio.TimeoutError:
            return refuse(request, 503, "timeout", f"request took longer than {settings.request_timeout_s:g} s")
        finally:
            if not handed_over:
                slots.release()
        if status != 200:
            return refuse(request, status, reason, content["detail"])
        return JSONResponse(content)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            app.openapi_schema = secure_openapi(document, set(OPEN_PATHS), settings.token is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(HttpGuard, allowed_hosts=settings.allowed_hosts, token=settings.token, open_paths=OPEN_PATHS)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so it sees every request
    return app


class _Answer(NamedTuple):
    """What /act answers: HTTP status, error reason for the metrics ("" on success), JSON content."""

    status: int
    reason: str
    content: dict[str, Any]


def _json_object(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _warm_up(policy: OnnxPolicy) -> str | None:
    """Run the model once on a neutral observation (as an episode's first step); the reason it is not ready, or None."""
    frame = {"state": np.zeros(policy.state_dim, np.float32),
             **{k: np.full((policy.image_size, policy.image_size, 3), 128, np.uint8) for k in policy.image_keys},
             **{c.key: np.int64(c.start) for c in policy.categories}}
    obs = EpisodeExecutor(policy.execution).observe(frame)
    try:
        action = policy.predict(obs)
    except Exception as error:  # any failure of the model makes the server not ready, with the reason
        return f"warm-up inference failed ({str(error).splitlines()[0][:200] if str(error) else type(error).__name__})"
    if action.shape != (policy.action_dim,) or not np.all(np.isfinite(action)):
        return f"warm-up inference gave {action.shape} actions, finite: {bool(np.all(np.isfinite(action)))}"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def serve(bundle: Path, host: str = "127.0.0.1", port: int = 8000, settings: ServerSettings | None = None,
          log_level: str = "info") -> None:
    """Check the settings, load and verify the bundle, bind ``host:port``, then serve until interrupted."""
    import uvicorn

    settings = settings or ServerSettings()
    if log_level not in _LOG_LEVELS:
        raise ImitlabError(f"unknown log level {log_level!r}; choose one of {', '.join(_LOG_LEVELS)}")
    if not is_loopback(host) and settings.token is None:
        raise ImitlabError(f"refusing to listen on {host} without a token: anyone who can reach it could use the "
                           "policy; set --token or IMITLAB_TOKEN, or bind 127.0.0.1")
    app = create_app(bundle, settings)
    sock = bind_socket(host, port)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or one line saying why not (port in use, address not on this machine)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ImitlabError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    # proto must be IPPROTO_TCP (as getaddrinfo gives it): asyncio sets TCP_NODELAY only then, and without it
    # every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: rebinding after a restart is fine
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        reason = "address already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise ImitlabError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock
