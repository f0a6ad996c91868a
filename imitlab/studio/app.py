"""The studio's FastAPI app: three pages (static HTML/JS/CSS shipped as package data) and their APIs.

User errors (``ImitlabError``: bad path, env id, kwargs, corrupt file) become HTTP 400 with a one-line
``detail``, which the pages show; the server keeps running.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from imitlab.core.errors import ImitlabError
from imitlab.studio import review, runs, teleop_ws

STATIC = Path(str(files("imitlab.studio") / "static"))
PAGES = ("teleop", "review", "runs")


def create_app(root: Path) -> FastAPI:
    """The app serving datasets and runs found under ``root`` (where saved episodes go, too)."""
    app = FastAPI(title="imitlab studio", docs_url=None, redoc_url=None)
    app.state.root = Path(root).resolve()

    @app.exception_handler(ImitlabError)
    async def user_error(request: Request, exc: ImitlabError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).strip().splitlines()[0]}, status_code=400)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/teleop")

    for page in PAGES:
        app.add_api_route(f"/{page}", _page(page), include_in_schema=False)

    @app.get("/api/envs")
    def env_ids() -> list[str]:
        from imitlab.envs import TASKS

        return sorted(TASKS)

    app.include_router(teleop_ws.router)
    app.include_router(review.router)
    app.include_router(runs.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _page(name: str):
    def page() -> FileResponse:
        return FileResponse(STATIC / f"{name}.html")
    return page
