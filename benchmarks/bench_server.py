"""Load test of `imitlab serve` on loopback: requests/s and p50/p99 latency at concurrency 1, 8 and 32.

Serves a Nature-CNN bundle (one is built from an untrained policy unless --bundle is given: serving cost does not
depend on the weights) in a real uvicorn process on 127.0.0.1 and sends real LaneFollow observations (base64
images) over keep-alive connections from a minimal asyncio HTTP/1.1 client. Each level is bounded by --requests and --seconds.
The client runs on the same machine and takes CPU from the server; compare numbers from one run only.

    python benchmarks/bench_server.py [--bundle BUNDLE] [--size 84] [--requests 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from imitlab.deploy.bundle import deploy, probe_observations
from imitlab.deploy.wire import encode_observation

ENV_ID = "imitlab/LaneFollow-v0"
HOST = "127.0.0.1"  # loopback only: the benchmark never exposes a server


def build_bundle(folder: Path, size: int) -> Path:
    """A deployed bundle of an untrained Nature-CNN driving policy (the gate at 0: only serving is measured)."""
    import torch

    from imitlab.demos.dataset import space_to_json
    from imitlab.envs import make_env
    from imitlab.policies import ImagePolicy, PolicyConfig, save_policy

    env_kwargs = {"image_size": size}
    env = make_env(ENV_ID, **env_kwargs)
    try:
        metadata = {"env_id": ENV_ID, "env_kwargs": env_kwargs, "observation_space": space_to_json(env.observation_space),
                    "action_space": space_to_json(env.action_space)}
        state_dim, action_dim = env.observation_space["state"].shape[0], env.action_space.shape[0]
    finally:
        env.close()
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=size, state_dim=state_dim,
                                      action_dim=action_dim))
    save_policy(policy, folder / "policy", metadata)
    return deploy(folder / "policy", 0.0, episodes=2, out=folder / "bundle", workers=1, videos=0, progress=False).bundle


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, port: int, max_concurrency: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "imitlab.cli", "serve", str(bundle), "--host", HOST, "--port",
                             str(port), "--max-concurrency", str(max_concurrency), "--log-level", "warning"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready")


class Connection:
    """A keep-alive HTTP/1.1 connection speaking just enough of the protocol for POST /act: a client this small
    costs far less CPU than the server it measures (a general client library would be the bottleneck)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port), port)

    async def post(self, body: bytes) -> int:
        head = (f"POST /act HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def load(port: int, bodies: list[bytes], concurrency: int, requests: int, seconds: float) -> dict[str, float]:
    """Send up to ``requests`` requests (or for ``seconds``) over ``concurrency`` connections; latency in ms."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    stop_at = time.monotonic() + seconds
    connections = [await Connection.open(port) for _ in range(concurrency)]

    async def worker(connection: Connection) -> None:
        nonlocal sent
        while sent < requests and time.monotonic() < stop_at:
            body = bodies[sent % len(bodies)]
            sent += 1
            start = time.perf_counter()
            status = await connection.post(body)
            latencies.append((time.perf_counter() - start) * 1e3)
            statuses[status] = statuses.get(status, 0) + 1

    begin = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - begin
    for connection in connections:
        connection.close()
    ok = statuses.get(200, 0)
    return {"requests": len(latencies), "ok": ok, "refused_503": statuses.get(503, 0),
            "other": len(latencies) - ok - statuses.get(503, 0), "rps": ok / elapsed,
            "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: build a Nature-CNN one)")
    parser.add_argument("--size", type=int, default=84, help="camera size of the built bundle")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2000, help="most requests per concurrency level")
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds per concurrency level")
    parser.add_argument("--max-concurrency", type=int, default=32, help="the server's --max-concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or build_bundle(Path(tmp), args.size)
        from imitlab.deploy.spec import read_spec, spec_categories

        spec = read_spec(bundle)
        categories = [c.key for c in spec_categories(spec)]
        obs = probe_observations(spec["env_id"], spec["env_kwargs"], ("state", *spec["image_keys"], *categories),
                                 limit=64)
        bodies = [json.dumps(encode_observation({k: v[i] for k, v in obs.items()}, spec["image_keys"],
                                                category_keys=categories)).encode()
                  for i in range(len(obs["state"]))]
        port = _free_port()
        server = start_server(bundle, port, args.max_concurrency)
        try:
            asyncio.run(load(port, bodies, 4, 100, 10))  # warm-up
            print(f"{spec['policy_config']['backbone'] if 'policy_config' in spec else '?'} bundle, "
                  f"{spec['image_size']} px, server --max-concurrency {args.max_concurrency}, loopback {HOST}")
            print(f"{'concurrency':>11} {'requests':>8} {'ok':>6} {'503':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
            for concurrency in args.concurrency:
                r = asyncio.run(load(port, bodies, concurrency, args.requests, args.seconds))
                print(f"{concurrency:>11} {r['requests']:>8} {r['ok']:>6} {r['refused_503']:>5} {r['rps']:>7.1f} "
                      f"{r['p50']:>7.2f} {r['p99']:>7.2f}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
