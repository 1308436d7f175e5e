"""ASGI middleware for the service: refuse request bodies the API does not speak, with a 4xx that says so."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


async def send_json(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One whole JSON answer, sent as two ASGI messages (no Starlette response object per request)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonOnly:
    """POSTs to the API must be JSON: BentoML would otherwise try (and fail with a 500) to parse e.g. a
    multipart body without a boundary. Pages under ``exempt`` and bodiless requests pass through."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ("/ui",)) -> None:
        self.app, self.exempt = app, exempt

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and not scope["path"].startswith(self.exempt)
        ):
            headers = dict(scope.get("headers") or [])
            ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if ctype and ctype != "application/json":
                body = json.dumps(
                    {"error": f"Content-Type: expected application/json, got {ctype!r}"}
                ).encode()
                await send_json(send, 415, body)
                return
        await self.app(scope, receive, send)
