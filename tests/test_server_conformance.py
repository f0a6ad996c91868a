"""The server against its own OpenAPI document: schemathesis with every check on finds no failure, and 10,000
fuzzed requests leave it answering, with /metrics counting each one.

The bundle here is a toy (a hand-built ONNX graph over two 4x4 cameras and a 3-d state): the server is what is
tested, and schema-driven generation cannot build the 9216-character image strings of a real 48-pixel camera
within Hypothesis's data budget. The real-bundle server tests are in test_deploy_server.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import schemathesis
from onnx import TensorProto, helper, numpy_helper

from imitlab.deploy.server import ServerSettings, create_app
from imitlab.deploy.spec import FORMAT, FORMAT_VERSION, MODEL_FILE, SPEC_FILE

TOKEN = "conformance-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAMERAS = ("image", "wrist_image")
SIZE, STATE_DIM, ACTION_DIM = 4, 3, 2
STATE_LOW, STATE_HIGH = [-5.0, -1.0, -1000.0], [5.0, 1.0, 1000.0]


def write_toy_bundle(folder: Path, nan_weights: bool = False) -> Path:
    """A bundle whose model is tanh(state @ Ws + sum over cameras of flatten(image) @ Wi); NaN weights on request."""
    rng = np.random.default_rng(0)
    state_weights = rng.normal(size=(STATE_DIM, ACTION_DIM)).astype(np.float32) * 0.1
    if nan_weights:
        state_weights[0, 0] = np.nan
    pixels = SIZE * SIZE * 3
    image_weights = (rng.normal(size=(pixels, ACTION_DIM)) / (255 * pixels)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["state", "Ws"], ["s"])]
    total = "s"
    for key in CAMERAS:
        nodes += [helper.make_node("Cast", [key], [f"{key}_f"], to=TensorProto.FLOAT),
                  helper.make_node("Flatten", [f"{key}_f"], [f"{key}_flat"], axis=1),
                  helper.make_node("MatMul", [f"{key}_flat", "Wi"], [f"{key}_a"]),
                  helper.make_node("Add", [total, f"{key}_a"], [f"{total}_{key}"])]
        total = f"{total}_{key}"
    nodes.append(helper.make_node("Tanh", [total], ["action"]))
    graph = helper.make_graph(
        nodes, "toy_policy",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", STATE_DIM])]
        + [helper.make_tensor_value_info(k, TensorProto.UINT8, ["batch", SIZE, SIZE, 3]) for k in CAMERAS],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", ACTION_DIM])],
        [numpy_helper.from_array(state_weights, "Ws"), numpy_helper.from_array(image_weights, "Wi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / MODEL_FILE))
    content = (folder / MODEL_FILE).read_bytes()
    spec = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source_policy": str(folder.resolve()),
        "env_id": "imitlab/Toy-v0", "env_kwargs": {}, "image_keys": list(CAMERAS), "image_size": SIZE,
        "state_dim": STATE_DIM, "action_dim": ACTION_DIM,
        "observation_space": {"type": "Dict", "spaces": {"state": {"type": "Box", "low": STATE_LOW, "high": STATE_HIGH}}},
        "action_space": {"type": "Box", "low": -1.0, "high": 1.0},
        "models": {"fp32": {"file": MODEL_FILE, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}},
    }
    (folder / SPEC_FILE).write_text(json.dumps(spec))
    return folder


def _app(bundle: Path, **overrides):
    return create_app(bundle, ServerSettings(token=TOKEN, allowed_hosts=("testserver",), **overrides))


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory) -> Path:
    return write_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


def test_schemathesis_run_finds_no_failure_with_every_check(toy_bundle, monkeypatch):
    """`schemathesis run` in-process (its engine, every phase) with all checks on: status codes and content types
    documented, responses matching their schemas, schema-valid requests accepted, invalid ones and requests
    without the token refused, undeclared methods answered 405.

    Hypothesis mixes the literals of every local module loaded so far into what it generates, and which of ours a
    pytest worker has loaded depends on the modules it ran before: the seeded run then drew other requests from run
    to run. With no local literals it draws the same requests in every run (a failure is then reproducible alone)."""
    from hypothesis.internal.conjecture import providers
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events, from_schema

    monkeypatch.setattr(providers, "_get_local_constants", providers.Constants)
    monkeypatch.setattr(providers, "CONSTANTS_CACHE", type(providers.CONSTANTS_CACHE)(1024))  # none cached earlier

    config = SchemathesisConfig.from_dict({
        "seed": 7, "headers": AUTH,
        "generation": {"max-examples": 100, "deterministic": True},
        "checks": {"enabled": True, "max_response_time": 10.0},  # the server answers every request by its 10 s timeout
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app(toy_bundle), config=config, headers=AUTH)
    failures, errors, scenarios = [], [], 0
    for event in from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            scenarios += 1
            for checks in event.recorder.checks.values():
                failures += [f"{c.name}: {c.failure_info.failure.title}: {c.failure_info.failure.message[:400]} "
                             f"{c.failure_info.code_sample[:2000]}" for c in checks if c.status == Status.FAILURE]
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "value", event))[:300])
    assert not errors and not sorted(set(failures)), (errors, sorted(set(failures)))
    assert scenarios >= 5  # every operation ran


def _valid_obs(rng: np.random.Generator) -> dict:
    return {"state": [float(rng.uniform(lo, hi)) for lo, hi in zip(STATE_LOW, STATE_HIGH)],
            **{k: base64.b64encode(rng.integers(0, 256, SIZE * SIZE * 3, dtype=np.uint8).tobytes()).decode()
               for k in CAMERAS}}


def _fuzzed_request(rng: np.random.Generator) -> tuple[str, str, dict[str, str], bytes]:
    """One request from a mix of mutations of a valid one: (method, path, headers, body)."""
    body = json.dumps({"obs": _valid_obs(rng)}).encode()
    headers = {"content-type": "application/json", **AUTH}
    kind = int(rng.integers(0, 10))
    if kind == 0:  # random bytes
        body = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
    elif kind == 1:  # truncated JSON
        body = body[:int(rng.integers(0, len(body)))]
    elif kind == 2:  # one byte flipped
        i = int(rng.integers(0, len(body)))
        body = body[:i] + bytes([int(rng.integers(0, 256))]) + body[i + 1:]
    elif kind == 3:  # out-of-range, non-finite or wrongly typed state
        obs = _valid_obs(rng)
        obs["state"][int(rng.integers(0, STATE_DIM))] = [1e39, -1e6, "1", None, True, [1.0]][int(rng.integers(0, 6))]
        body = json.dumps({"obs": obs}).encode()
    elif kind == 4:  # an image of the wrong length or alphabet
        obs = _valid_obs(rng)
        obs[CAMERAS[int(rng.integers(0, 2))]] = base64.b64encode(bytes(int(rng.integers(0, 60)))).decode() + "!"[:int(rng.integers(0, 2))]
        body = json.dumps({"obs": obs}).encode()
    elif kind == 5:  # NaN/Infinity literals, deep nesting
        body = [b'{"obs": {"state": [NaN, 0, 0]}}', b"[" * 5000, b'{"obs": ' * 2000][int(rng.integers(0, 3))]
    elif kind == 6:  # wrong or missing headers
        headers = [{"content-type": "text/plain", **AUTH}, {"content-type": "application/json"},
                   {"content-type": "application/json", "Authorization": "Bearer wrong-token-wrong-token"},
                   {"content-type": "application/json", "host": "rebinding.example", **AUTH}][int(rng.integers(0, 4))]
    elif kind == 7:  # other methods and paths
        return (["GET", "PUT", "DELETE", "POST"][int(rng.integers(0, 4))],
                ["/act", "/nope", "/spec", "/act/1"][int(rng.integers(0, 4))], headers, body)
    elif kind == 8:  # an oversized body
        body = b" " * 70_000 + body
    return "POST", "/act", headers, body  # kind 9: valid


def _counted(metrics_text: str, **labels: str) -> int:
    """Sum of ``imitlab_requests_total`` over the series whose labels include ``labels``."""
    total = 0.0
    for label_text, value in re.findall(r"^imitlab_requests_total{([^}]*)} (\S+)$", metrics_text, re.M):
        series = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(series.get(k) == v for k, v in labels.items()):
            total += float(value)
    return int(total)


async def _call(app, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """One HTTP request through the ASGI interface, as a server would make it (no client library in between);
    any exception the app lets escape fails the test."""
    fields = {"host": "testserver", "content-length": str(len(body)), **{k.lower(): v for k, v in headers.items()}}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.encode(), v.encode()) for k, v in fields.items()],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {}}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_ten_thousand_fuzzed_requests_are_all_answered_and_counted(toy_bundle):
    app = _app(toy_bundle)
    rng = np.random.default_rng(12)
    requests = [_fuzzed_request(rng) for _ in range(10_000)]

    async def run() -> tuple[list[int], str]:
        statuses = [(await _call(app, *request))[0] for request in requests]
        body = json.dumps({"obs": _valid_obs(rng)}).encode()
        status, answer = await _call(app, "POST", "/act", {"content-type": "application/json", **AUTH}, body)
        assert status == 200 and len(json.loads(answer)["action"]) == ACTION_DIM
        return statuses, (await _call(app, "GET", "/metrics", AUTH, b""))[1].decode()

    statuses, metrics = asyncio.run(run())
    assert len(statuses) == 10_000 and max(statuses) < 500, sorted(set(statuses))
    assert {200, 400, 401, 405, 413, 415, 422} <= set(statuses)
    assert _counted(metrics) == 10_000 + 1  # the fuzz, plus the valid request after it (/metrics counts when done)
    act_ok = sum(s == 200 and r[:2] == ("POST", "/act") for s, r in zip(statuses, requests))
    assert _counted(metrics, path="/act", status="200") == act_ok + 1
    assert _counted(metrics, status="422") == statuses.count(422)


def test_non_finite_actions_are_a_503_with_a_reason_and_the_server_is_not_ready(tmp_path):
    from fastapi.testclient import TestClient

    client = TestClient(_app(write_toy_bundle(tmp_path / "nan", nan_weights=True)))
    response = client.post("/act", json={"obs": _valid_obs(np.random.default_rng(0))}, headers=AUTH)
    assert response.status_code == 503 and "non-finite" in response.json()["detail"]
    assert client.get("/ready").status_code == 503 and client.get("/health").status_code == 200
    assert 'reason="non_finite_action"' in client.get("/metrics", headers=AUTH).text
