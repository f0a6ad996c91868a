"""The HTTP server: correct actions for valid requests, a 4xx with a reason for every kind of bad request, and
a fuzz run of thousands of malformed requests against the real uvicorn process (only 2xx/4xx, still up)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imitlab.deploy.runtime import load_bundle
from imitlab.deploy.server import ServerSettings, create_app, default_body_limit
from imitlab.deploy.wire import encode_observation

SIZE = 48


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def client(bundle: Path) -> TestClient:
    return TestClient(create_app(bundle, ServerSettings(allowed_hosts=("testserver",))))


def _obs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"state": rng.normal(size=4).astype(np.float32),
            "image": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)}


def _valid_body(seed: int = 0, base64_images: bool = True) -> dict:
    return encode_observation(_obs(seed), ["image"], base64_images)


@pytest.mark.parametrize("base64_images", [True, False])
def test_act_returns_the_runtime_action(client, bundle, base64_images):
    response = client.post("/act", json=_valid_body(3, base64_images))
    assert response.status_code == 200, response.text
    expected = load_bundle(bundle).predict(_obs(3))
    np.testing.assert_allclose(response.json()["action"], expected, atol=1e-6)
    assert response.json()["model"] == "fp32"


def test_health_ready_and_spec_without_local_paths(client, bundle):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json() == {"status": "ready", "model": "fp32"}
    full = json.loads((bundle / "bundle.json").read_text())
    local = str(bundle.parent.parent)  # the pytest folder every recorded path lies under
    assert local in json.dumps(full)  # bundle.json itself records where it came from
    shown = client.get("/spec")
    assert local not in shown.text and "source_policy" not in shown.json() and "train_config" not in shown.json()
    assert shown.json()["image_keys"] == ["image"] and shown.json()["validation"] == full["validation"]


def _with(**changes) -> dict:
    body = _valid_body()
    body["obs"].update(changes)
    return body


BAD_REQUESTS = [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"obs": {"state": [NaN, 0, 0, 0]}}', "application/json", 400, "NaN"),
    (b"\xff\xfe\x00garbage", "application/json", 400, "not valid JSON"),
    (b"[" * 100_000, "application/json", 413, "larger than"),
    (json.dumps(_valid_body()).encode(), "text/plain", 415, "Content-Type"),
    (json.dumps([1, 2]).encode(), "application/json", 422, "JSON object"),
    (json.dumps({"obs": 1}).encode(), "application/json", 422, "must be an object"),
    (json.dumps({"obs": {}, "x": 1}).encode(), "application/json", 422, "optionally with \"session\""),
    (json.dumps(_with(extra=[1])).encode(), "application/json", 422, "exactly the keys"),
    (json.dumps(_with(state=[0.0, 1.0])).encode(), "application/json", 422, "list of 4 numbers"),
    (json.dumps(_with(state=[0.0, True, 0.0, 0.0])).encode(), "application/json", 422, "numbers"),
    (json.dumps(_with(state=[0.0, "1", 0.0, 0.0])).encode(), "application/json", 422, "numbers"),
    (b'{"obs": {"state": [1e999, 0, 0, 0], "image": "AA=="}}', "application/json", 422, "finite"),
    (('{"obs": {"state": [' + "9" * 400 + ', 0, 0, 0], "image": "AA=="}}').encode(), "application/json", 422, "finite"),
    (json.dumps(_with(state=[1e6, 0.0, 0.0, 0.0])).encode(), "application/json", 422, "outside the observation space"),
    (json.dumps(_with(image="!!!")).encode(), "application/json", 422, "base64"),
    (json.dumps(_with(image=base64.b64encode(b"\x00" * 10).decode())).encode(), "application/json", 422, "bytes"),
    (json.dumps(_with(image=[[[0, 0, 0]] * SIZE] * (SIZE - 1))).encode(), "application/json", 422, "shape"),
    (json.dumps(_with(image=[[[0, 0, 256]] * SIZE] * SIZE)).encode(), "application/json", 422, "0..255"),
    (json.dumps(_with(image=[[[0, 0, 1.5]] * SIZE] * SIZE)).encode(), "application/json", 422, "0..255"),
    (json.dumps(_with(image=[[[0, 0, False]] * SIZE] * SIZE)).encode(), "application/json", 422, "0..255"),
    (json.dumps(_with(image={"b64": "AA=="})).encode(), "application/json", 422, "base64 string or a nested"),
]


@pytest.mark.parametrize("body, content_type, status, reason", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_with_a_reason(client, body, content_type, status, reason):
    response = client.post("/act", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]


def test_body_limit_fits_a_nested_list_image(bundle):
    spec = load_bundle(bundle).spec
    assert len(json.dumps(_valid_body(base64_images=False))) < default_body_limit(spec)


# --- fuzzing the real server ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory):
    """`imitlab serve` in a subprocess on a free port; yields (base url, process, stderr file)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serverlog") / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "imitlab.cli", "serve", str(bundle), "--port", str(port),
                                 "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    try:
        yield url, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server[0], timeout=30) as session:
        yield session


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)
FUZZ = settings(max_examples=700, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _assert_handled(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])


@FUZZ
@given(body=st.one_of(json_values, st.fixed_dictionaries({"obs": json_values}),
                      st.fixed_dictionaries({"obs": st.fixed_dictionaries({"state": json_values, "image": json_values})})))
def test_fuzz_arbitrary_json(http, body):
    _assert_handled(http.post("/act", content=json.dumps(body).encode(), headers={"content-type": "application/json"}))


def _mutations():
    numbers = st.one_of(st.floats(allow_nan=False), st.integers(min_value=-10**30, max_value=10**30))
    channel = st.one_of(st.integers(-300, 300), st.floats(allow_nan=False, width=32), st.booleans(), st.text(max_size=2))
    pixel_rows = st.lists(st.lists(st.lists(channel, min_size=2, max_size=4), min_size=1, max_size=3), max_size=3)
    b64 = st.binary(max_size=SIZE * SIZE * 3 + 10).map(lambda b: base64.b64encode(b).decode())
    return st.fixed_dictionaries({
        "state": st.one_of(st.lists(numbers, min_size=0, max_size=6), json_values),
        "image": st.one_of(b64, st.text(max_size=50), pixel_rows, st.just(_valid_body()["obs"]["image"])),
    }, optional={"extra": json_values})


@FUZZ
@given(obs=_mutations())
def test_fuzz_mutated_observations(http, obs):
    # json.dumps writes inf as Infinity, which the server must refuse like any other bad input.
    response = http.post("/act", content=json.dumps({"obs": obs}).encode(), headers={"content-type": "application/json"})
    _assert_handled(response)
    if response.status_code == 200:
        assert len(response.json()["action"]) == 2


@FUZZ
@given(body=st.binary(max_size=2000),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=utf-8"]),
       method=st.sampled_from(["POST", "GET", "PUT", "DELETE"]),
       path=st.sampled_from(["/act", "/health", "/spec", "/nope", "/act/1"]))
def test_fuzz_raw_bytes_methods_and_paths(http, body, content_type, method, path):
    headers = {"content-type": content_type} if content_type else {}
    _assert_handled(http.request(method, path, content=body, headers=headers))


def test_server_is_still_up_and_logged_no_errors(server, http):
    """Runs after the fuzz tests (file order): the process never died and never logged an exception."""
    _, proc, log = server
    assert http.post("/act", json=_valid_body()).status_code == 200
    assert http.get("/health").json()["requests"] >= 1400
    assert proc.poll() is None
    assert "Traceback" not in log.read_text() and "Exception" not in log.read_text()
