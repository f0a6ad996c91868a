"""Who may talk to the policy server: a Host-header allow-list and an optional bearer token.

The Host check stops DNS rebinding (a web page whose domain is re-pointed at 127.0.0.1 sends its own name as
Host); the token stops anyone else on the network. Probes (``/health``, ``/ready``) answer without either, so
an orchestrator can reach them by any address; they reveal nothing but liveness.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable

from imitlab.deploy.metrics import ASGIApp, Message, Scope, set_error_reason

#: Host names that reach this machine only: the default allow-list.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Allow-list entry that accepts any Host (for a server behind a proxy that checks it).
ANY_HOST = "*"
#: Shortest bearer token accepted: 16 characters (e.g. `python -c "import secrets; print(secrets.token_urlsafe())"`).
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a Host header, lower-case, without port or IPv6 brackets ("[::1]:8000" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HttpGuard:
    """ASGI middleware refusing a disallowed Host (400) and, when a token is set, a missing or wrong one (401)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], token: str | None, open_paths: Iterable[str]):
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts}
        self.token = token.encode() if token else None
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", ""))
        if ANY_HOST not in self.allowed and host not in self.allowed:
            set_error_reason(scope, "host_not_allowed")
            await _refuse(send, 400, f"Host {host[:64]!r} is not allowed (start the server with --allow-host)")
            return
        if self.token is not None and not self._authorised(headers.get("authorization", "")):
            set_error_reason(scope, "unauthorized")
            await _refuse(send, 401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')",
                          [(b"www-authenticate", b'Bearer realm="imitlab"')])
            return
        await self.app(scope, receive, send)

    def _authorised(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        # compare_digest takes time independent of where the strings differ: no timing oracle on the token.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"), self.token)


async def _refuse(send: Callable[[Message], Awaitable[None]], status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
