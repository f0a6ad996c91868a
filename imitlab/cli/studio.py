"""``imitlab studio``: serve the studio on 127.0.0.1 and print its URL."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from imitlab.core.errors import ImitlabError


def studio_cmd(
    root: Path = typer.Option(Path("."), help="Folder whose datasets and runs the studio shows, and where it saves."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (keep 127.0.0.1 unless you know why)."),
    port: int = typer.Option(8765, min=0, max=65535, help="Port (0: any free one)."),
) -> None:
    """Teleoperate tasks in the browser, review and curate datasets, compare runs."""
    import uvicorn

    from imitlab.studio.app import create_app

    if not root.is_dir():
        raise ImitlabError(f"studio folder not found: {root}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ImitlabError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    url = f"http://{host}:{sock.getsockname()[1]}/"
    typer.echo(f"imitlab studio: {url} (serving {root.resolve()}; Ctrl-C stops)", err=False)
    server = uvicorn.Server(uvicorn.Config(create_app(root), log_level="warning", ws_max_size=1 << 20))
    server.run(sockets=[sock])

