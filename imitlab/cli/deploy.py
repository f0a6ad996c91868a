"""``imitlab deploy`` (the validation gate that writes a bundle) and ``imitlab serve`` (a bundle over HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from imitlab.core.seeds import HELD_OUT_SEED_START


def deploy_cmd(
    run: Path = typer.Argument(..., help="Training run or policy folder."),
    min_success: float = typer.Option(..., help="Bar for the lower end of the 95 % Wilson interval (0..1)."),
    episodes: int = typer.Option(50, min=1, help="Held-out validation episodes."),
    out: Optional[Path] = typer.Option(None, help="Bundle folder to create (default: <run>/bundle)."),
    int8: bool = typer.Option(False, help="Also build and validate an int8 model; shipped only if it clears the bar."),
    int8_mode: str = typer.Option("static", help="int8 scheme: static (calibrated, quantises convs) or dynamic."),
    workers: int = typer.Option(0, min=0, help="Worker processes (0: all cores)."),
    videos: int = typer.Option(2, min=0, help="Best/worst episode videos in the validation report."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First validation seed (held-out range)."),
) -> None:
    """Validate a policy in closed loop and write a deployment bundle only if it clears --min-success."""
    from imitlab.deploy.bundle import deploy

    result = deploy(run, min_success, episodes=episodes, out=out, int8=int8, int8_mode=int8_mode,
                    workers=workers or None, videos=videos, seed_start=seed_start)
    v, lat = result.spec["validation"], result.spec["latency_ms_batch1"]
    typer.echo(f"torch vs ONNX max |action difference|: {v['parity_max_abs_diff']:.2e}")
    typer.echo(_line("fp32", v["fp32"], lat["fp32"]) + f" (torch eager {lat['torch']['median_ms']:.2f} ms)")
    if "int8" in v:
        int8 = v["int8"]
        if "success_ci95" in int8:
            typer.echo(_line("int8", int8, lat["int8"]))
        diff = int8["max_abs_diff_vs_fp32"]  # None: non-finite actions
        typer.echo(f"int8 ({int8['scheme']}): largest action difference from fp32 "
                   + ("non-finite" if diff is None else f"{diff:.3f}") + ", "
                   + ("included" if int8["included"] else f"not included, the bundle keeps fp32 only: {int8['reason']}"))
    typer.echo(f"deployed: {result.bundle} (gate: Wilson lower bound {100 * v['fp32']['success_ci95'][0]:.1f} % >= "
               f"{100 * min_success:.1f} %); report: {result.bundle / v['fp32']['report']}")


def _line(name: str, r: dict[str, Any], latency: dict[str, float]) -> str:
    low, high = r["success_ci95"]
    return (f"{name}: success {r['successes']}/{r['episodes']} = {100 * r['success_rate']:.1f} % "
            f"(95 % CI {100 * low:.1f}-{100 * high:.1f} %), {latency['median_ms']:.2f} ms/step at batch 1")


def serve_cmd(
    bundle: Path = typer.Argument(..., help="Deployment bundle folder written by `imitlab deploy`."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; any but loopback needs a token."),
    port: int = typer.Option(8000, min=1, max=65535),
    model: str = typer.Option("fp32", help="fp32 or int8 (if the bundle has it)."),
    token: Optional[str] = typer.Option(None, envvar="IMITLAB_TOKEN", show_envvar=True,
                                        help="Bearer token required on every request but /health and /ready "
                                        "(prefer the env var: a command line is visible to other users)."),
    allow_host: list[str] = typer.Option([], help="Host header value to accept (repeatable; default: localhost, "
                                         "127.0.0.1, ::1 and --host; '*': any)."),
    max_concurrency: int = typer.Option(4, min=1, help="Requests at work at once; more get 503 at once."),
    request_timeout: float = typer.Option(10.0, min=0.001, help="Seconds per /act request before a 503."),
    max_body_kb: int = typer.Option(0, min=0, help="Request size limit in KiB (0: enough for the bundle's images)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    chunk_exec: Optional[str] = typer.Option(None, help="A chunk head's execution in a session: open or ensemble "
                                             "(default: the bundle's)."),
    sample: bool = typer.Option(False, help="A gmm head samples its mixture in a session (seeded by its seed)."),
    max_sessions: int = typer.Option(256, min=1, help="Client episodes (sessions) kept; the least recently used "
                                     "is forgotten beyond that."),
) -> None:
    """Serve a bundle over HTTP: POST /act, GET /health, /ready, /spec, /metrics."""
    from imitlab.deploy.http_guard import LOOPBACK_HOSTS
    from imitlab.deploy.server import ServerSettings, serve

    hosts = tuple(allow_host) or (*LOOPBACK_HOSTS, host)
    settings = ServerSettings(model=model, token=token or None, allowed_hosts=hosts,
                              max_body_bytes=max_body_kb * 1024 or None, max_concurrency=max_concurrency,
                              request_timeout_s=request_timeout, chunk_exec=chunk_exec, sample=sample,
                              max_sessions=max_sessions)
    serve(bundle, host=host, port=port, settings=settings, log_level=log_level)

