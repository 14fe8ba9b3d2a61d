"""The hot routes answered straight from ASGI, in front of the FastAPI app.

FastAPI's request cycle (dependency solving with a thread-pool hop for the service
instance, body parsing with the stdlib json, response-model re-validation) costs more than
a one-row prediction. `FastRoutes` serves ``POST`` to the paths it is given with a plain
handler ``(body) -> (status, JSON bytes[, headers]) | None``. A handler that returns None
hands the request, body replayed, to the FastAPI app, which stays the contract: the
OpenAPI docs, and every error body (422s with field paths, 503 without a model) come from
its routes. So handlers only answer what they fully validated.

Before a handler runs, the request yields to the event loop once. Requests that arrived
together are then all in flight at the same time, so the concurrency limit
(``traffic.max_concurrency``, checked outermost by `raincast.serving.runtime.Admission`)
sees the real backlog and refuses the excess with 429 at once; without the yield, each
request would finish before the next one is even counted and the backlog would wait unseen
in the socket buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from raincast.serving.auth import route_path, send_json_bytes

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


#: Extra response headers, already encoded (``(b"x-model-version", b"3")``).
Headers = Sequence[tuple[bytes, bytes]]
#: ``body -> (status, JSON body[, headers])``, or None to let the wrapped app answer.
Handler = Callable[[bytes], Awaitable[tuple[int, bytes] | tuple[int, bytes, Headers] | None]]

_JSON_TYPES = (b"application/json", b"")


class FastRoutes:
    """Pure-ASGI middleware: ``POST`` to a path of ``routes`` goes to its handler first."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, Handler]) -> None:
        self.app, self.routes = app, dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get(route_path(scope))
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if handler is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        await asyncio.sleep(0)  # let the requests that arrived with this one be counted
        answer = await handler(body)
        if answer is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        await send_json_bytes(send, *answer)


def _is_json(scope: Scope) -> bool:
    """No content type or a JSON one: what FastAPI parses as a JSON body."""
    for key, value in scope.get("headers") or ():
        if key.lower() == b"content-type":
            mime = value.split(b";")[0].strip().lower()
            return mime in _JSON_TYPES or mime.endswith(b"+json")
    return True


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` (already read) once, then the real messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
