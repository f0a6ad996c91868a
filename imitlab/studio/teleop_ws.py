"""The teleoperation WebSocket: one connection drives one :class:`TeleopSession` at the env's control rate.

Page -> server, JSON text messages (``type``): ``start`` (env_id, env_kwargs, seed, assist, speed), ``input``
(``codes``: held ``KeyboardEvent.code`` values, ``controls``: held control names from gamepad buttons,
``axes``: gamepad axes by name), ``pause``, ``resume``, ``step`` (one step while paused), ``reset`` (seed),
``hand_back`` (assist: the expert drives again), ``save`` (dataset, operator), ``discard``.

Server -> page: ``session`` (labels, key legend, rate), ``saved``, ``error`` (one line) as JSON text, and one
binary message per frame: a 4-byte big-endian header length, the JSON header (``stamp_ms``: wall-clock time
the env step finished, mode, step report, the byte size of each view) and the views' JPEGs back to back. The
page measures latency against ``stamp_ms``.

Modes: ``waiting`` (after a reset: the first control input or ``resume`` starts the clock), ``running``,
``paused`` and ``done`` (the env ended the episode: save or discard).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TypeVar

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from imitlab.core.errors import ImitlabError
from imitlab.demos.controls import dead_zone
from imitlab.studio.paths import resolve_inside
from imitlab.studio.session import TeleopSession, encode_jpeg

router = APIRouter()
T = TypeVar("T")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Connection:
    """The state of one page: its session, what the human holds, the mode, and the thread that owns the env."""

    def __init__(self, ws: WebSocket, root: Path):
        self.ws = ws
        self.root = root
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-env")
        self.lock = asyncio.Lock()
        self.session: TeleopSession | None = None
        self.mode = "waiting"
        self.held: set[str] = set()
        self.axes: dict[str, float] = {}
        self.speed = 1.0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the env's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    async def send_frame(self, stamp_ms: float) -> None:
        session = self.session
        assert session is not None
        views = await self.run(lambda: {k: encode_jpeg(v) for k, v in session.frames().items()})
        header = json.dumps({"type": "frame", "stamp_ms": stamp_ms, "mode": self.mode, "seed": session.seed,
                             "report": asdict(session.report()),
                             "views": [[name, len(data)] for name, data in views.items()]}).encode()
        await self.ws.send_bytes(struct.pack(">I", len(header)) + header + b"".join(views.values()))

    async def step_once(self) -> None:
        session = self.session
        if session is None or session.done:
            return
        await self.run(session.step, set(self.held), dict(self.axes))
        stamp = time.time() * 1000.0
        if session.done:
            self.mode = "done"
        await self.send_frame(stamp)

    async def ticker(self) -> None:
        """Step at the control rate (times ``speed``) while running; a slow step delays the next, never bursts."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            period = 1.0 / (self.session.control_hz * self.speed) if self.session else 0.1
            next_tick = max(next_tick + period, loop.time())
            await asyncio.sleep(next_tick - loop.time())
            if self.mode == "running":
                async with self.lock:
                    if self.mode == "running":
                        try:
                            await self.step_once()
                        except ImitlabError as exc:
                            self.mode = "paused"
                            await self.ws.send_json({"type": "error", "message": _one_line(exc)})

    def _held_from(self, message: dict[str, Any]) -> None:
        keys = self.session.controls.keys if self.session else {}
        self.held = {keys[c] for c in message.get("codes", []) if c in keys} | set(message.get("controls", []))
        self.axes = {str(k): float(v) for k, v in (message.get("axes") or {}).items()}

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "start":
            await self.start(message)
            return
        session = self.session
        if session is None:
            raise ImitlabError("start a session first (choose an env and press Start)")
        async with self.lock:
            if kind == "input":
                self._held_from(message)
                touched = bool(self.held) or any(dead_zone(v) for v in self.axes.values())
                if touched and session.assist and not session.human_in_control:
                    session.take_over()
                if touched and self.mode == "waiting":
                    self.mode = "running"
            elif kind == "pause" and self.mode in ("running", "waiting"):
                self.mode = "paused"
            elif kind == "resume" and self.mode in ("paused", "waiting"):
                self.mode = "running"
            elif kind == "step" and self.mode != "done":
                self.mode = "paused"
                await self.step_once()
            elif kind == "hand_back":
                session.hand_back()
            elif kind in ("reset", "discard"):
                await self.reset(int(message.get("seed", session.seed)))
            elif kind == "save":
                dataset = resolve_inside(self.root, str(message.get("dataset", "")))
                path = await self.run(session.save, dataset, str(message.get("operator", "")))
                await self.ws.send_json({"type": "saved", "path": str(path.relative_to(self.root)),
                                         "episode": path.stem, "success": session.success, "steps": session.steps})
                await self.reset(session.seed + 1)
            else:
                raise ImitlabError(f"unknown or untimely message {kind!r} (mode {self.mode})")

    async def reset(self, seed: int) -> None:
        assert self.session is not None
        await self.run(self.session.reset, seed)
        self.mode = "waiting"
        await self.send_frame(time.time() * 1000.0)

    async def start(self, message: dict[str, Any]) -> None:
        kwargs = message.get("env_kwargs") or {}
        if isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs) if kwargs.strip() else {}
            except json.JSONDecodeError as exc:
                raise ImitlabError(f"env kwargs are not valid JSON: {exc}") from None
        try:
            seed, speed = int(message.get("seed", 0)), float(message.get("speed", 1.0))
        except (TypeError, ValueError):
            raise ImitlabError("seed must be an integer and speed a number") from None
        if not 0.05 <= speed <= 20:
            raise ImitlabError(f"speed must be between 0.05 and 20 times the control rate, got {speed}")
        env_id, assist = str(message.get("env_id", "")).strip(), bool(message.get("assist", False))
        async with self.lock:
            new = await self.run(lambda: TeleopSession(env_id, kwargs, seed, assist))
            if self.session is not None:
                await self.run(self.session.close)
            self.session, self.speed, self.held, self.axes = new, speed, set(), {}
            self.mode = "waiting"
            await self.ws.send_json({"type": "session", "env_id": env_id, "env_kwargs": new.env_kwargs,
                                     "labels": new.labels, "keys": new.controls.keys, "control_hz": new.control_hz,
                                     "speed": speed, "assist": assist})
            await self.send_frame(time.time() * 1000.0)

    async def close(self) -> None:
        if self.session is not None:
            await self.run(self.session.close)
        self.thread.shutdown(wait=False)


@router.websocket("/ws/teleop")
async def teleop_socket(ws: WebSocket) -> None:
    await ws.accept()
    connection = _Connection(ws, ws.app.state.root)
    ticker = asyncio.create_task(connection.ticker())
    try:
        while True:
            raw = await ws.receive_text()
            try:
                message = json.loads(raw)
                if not isinstance(message, dict):
                    raise ImitlabError("a message must be a JSON object")
                await connection.handle(message)
            except json.JSONDecodeError as exc:
                await ws.send_json({"type": "error", "message": f"malformed message: {exc}"})
            except (ImitlabError, ValueError, TypeError) as exc:  # bad input: say so, keep the session
                await ws.send_json({"type": "error", "message": _one_line(exc)})
    except WebSocketDisconnect:
        pass
    finally:
        ticker.cancel()
        await connection.close()
