"""Who may reach the server and how much it takes on: token, Host allow-list, concurrency limit, request timeout,
/health never blocked by work in progress, metrics, and `imitlab serve` refusing unsafe or impossible binds."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from imitlab.deploy.runtime import load_bundle
from imitlab.deploy.server import ServerSettings, build_app, create_app, serve
from imitlab.deploy.wire import encode_observation
from imitlab.core.errors import ImitlabError

TOKEN = "guard-test-token-0123456789abcdef"


def _body(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs = {"state": rng.uniform(-0.5, 0.5, size=4).astype(np.float32), "image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)}
    return encode_observation(obs, ["image"])


def test_with_a_token_requests_without_it_get_401(tiny_bundle):
    client = TestClient(create_app(tiny_bundle, ServerSettings(token=TOKEN, allowed_hosts=("testserver",))))
    assert client.post("/act", json=_body()).status_code == 401
    wrong = client.post("/act", json=_body(), headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/spec").status_code == 401 and client.get("/metrics").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    authorised = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/act", json=_body(), headers=authorised).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200  # probes stay open
    metrics = client.get("/metrics", headers=authorised).text
    assert 'imitlab_request_errors_total{path="/act",reason="unauthorized"} 2.0' in metrics
    assert client.get("/openapi.json", headers=authorised).json()["paths"]["/act"]["post"]["security"] == [{"bearer": []}]


def test_only_allowed_host_headers_are_served(tiny_bundle):
    client = TestClient(create_app(tiny_bundle), base_url="http://127.0.0.1:8000")  # default: loopback names
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:9", "[::1]:8000"):
        assert client.post("/act", json=_body(), headers={"host": host}).status_code == 200, host
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", ""):
        response = client.post("/act", json=_body(), headers={"host": host})
        assert response.status_code == 400 and "not allowed" in response.json()["detail"], host
    assert client.get("/health", headers={"host": "10.0.0.7:8000"}).status_code == 200  # probes by pod IP


class GatedPolicy:
    """The bundle's policy, whose model call waits until the test opens the gate: a model that takes its time."""

    def __init__(self, bundle: Path) -> None:
        self.inner = load_bundle(bundle)
        self.gate = threading.Event()
        self.gate.set()  # open for the app's warm-up inference
        self.entered = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def predict_outputs(self, obs):  # what the server's /act runs
        self.entered.set()
        self.gate.wait(timeout=30)
        return self.inner.predict_outputs(obs)


def test_busy_slots_answer_503_at_once_and_health_is_never_blocked(tiny_bundle):
    policy = GatedPolicy(tiny_bundle)
    app = build_app(policy, ServerSettings(allowed_hosts=("testserver",), max_concurrency=1, request_timeout_s=30))
    policy.gate.clear()
    policy.entered.clear()

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = asyncio.create_task(client.post("/act", json=_body()))
            for _ in range(3000):  # until the first request is at work in the slot (30 s at most)
                if policy.entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert policy.entered.is_set(), "the first /act never reached the model"

            assert (await client.get("/health")).status_code == 200  # the loop is free while the model works
            busy = await client.post("/act", json=_body(1))
            assert busy.status_code == 503 and "busy" in busy.json()["detail"]
            policy.gate.set()
            assert (await first).status_code == 200
            assert (await client.post("/act", json=_body(2))).status_code == 200  # the slot was released
            metrics = (await client.get("/metrics")).text
            assert 'imitlab_request_errors_total{path="/act",reason="busy"} 1.0' in metrics

    asyncio.run(run())


def test_a_request_over_its_deadline_gets_503_and_its_slot_returns_when_the_model_finishes(tiny_bundle):
    policy = GatedPolicy(tiny_bundle)
    app = build_app(policy, ServerSettings(allowed_hosts=("testserver",), max_concurrency=1, request_timeout_s=0.3))
    policy.gate.clear()

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            late = await client.post("/act", json=_body())
            assert late.status_code == 503 and "longer than 0.3 s" in late.json()["detail"]
            # The model is still running the timed-out request: its slot is not free yet.
            assert (await client.post("/act", json=_body(1))).status_code == 503
            policy.gate.set()
            for _ in range(200):
                response = await client.post("/act", json=_body(2))
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.02)
            assert response.status_code == 200

    asyncio.run(run())


def test_serve_refuses_a_public_address_without_a_token_and_a_weak_token(tiny_bundle):
    with pytest.raises(ImitlabError, match="without a token"):
        serve(tiny_bundle, host="0.0.0.0", port=1)
    with pytest.raises(ImitlabError, match="at least 16 characters"):
        ServerSettings(token="short")


def test_serve_on_a_busy_port_is_one_line_and_exit_1(tiny_bundle, monkeypatch, capsys):
    from imitlab.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(sys, "argv", ["imitlab", "serve", str(tiny_bundle), "--port", str(port)])
        with pytest.raises(SystemExit) as exit_info:
            main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 1
    assert lines == [f"imitlab: error: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_the_listening_socket_is_tcp_so_responses_are_not_held_back():
    """asyncio turns Nagle's algorithm off only for sockets created with proto IPPROTO_TCP; on a socket made with
    proto 0 every response waited ~40 ms for the client's delayed ACK."""
    from imitlab.deploy.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
    with pytest.raises(ImitlabError, match="cannot listen on no-such-host.invalid"):
        bind_socket("no-such-host.invalid", 0)
