"""The pure-ASGI guard of the prediction API: a bearer JWT on every route except the
health, metrics and docs endpoints, the admin role on ``/admin``, and ``POST /auth/token``
(username + password -> bearer token), so the service code never touches passwords. Also
the small ASGI helpers the other middlewares share (`route_path`, `send_json_bytes`)."""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

import anyio
import anyio.to_thread

from raincast.serving.auth.config import AuthConfig, AuthError
from raincast.serving.auth.tokens import VerifiedTokens, issue_token
from raincast.serving.auth.users import UserStore

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("raincast.serving.auth")  # the package's one logger

PUBLIC_PATHS: Final = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/openapi.json", "/"}
)
PUBLIC_PREFIXES: Final = ("/static_content/",)
TOKEN_PATH: Final = "/auth/token"
MAX_LOGIN_BODY: Final = 4096
#: Concurrent argon2 verifications per process (each takes ~64 MiB with the defaults).
LOGIN_CONCURRENCY: Final = 4


class JWTMiddleware:
    """Pure-ASGI guard: bearer JWT on every HTTP route but the public ones, admin role on
    ``admin_prefixes``, and ``POST /auth/token`` for logins. Claims land in
    ``scope["state"]["auth"]`` (``request.state.auth``).

    ``on_auth_failure(reason)`` gets an ``AuthFailure`` for each 401 and ``"forbidden"`` for
    each 403; ``on_login(success)`` gets each login's outcome. Both are for metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: AuthConfig,
        users: UserStore | None = None,
        public_paths: Iterable[str] = PUBLIC_PATHS,
        public_prefixes: Iterable[str] = PUBLIC_PREFIXES,
        admin_prefixes: Iterable[str] = ("/admin",),
        on_auth_failure: Callable[[str], None] | None = None,
        on_login: Callable[[bool], None] | None = None,
        token_path: str = TOKEN_PATH,
    ) -> None:
        self.app = app
        self.config = config
        self.users = users or UserStore(self.config.users_file)
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.admin_prefixes = tuple(admin_prefixes)
        self.on_auth_failure = on_auth_failure
        self.on_login = on_login
        self.token_path = token_path
        self._limiter: anyio.CapacityLimiter | None = None
        self._tokens = VerifiedTokens(self.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path == self.token_path:
            await self._login(scope, receive, send)
            return
        if self._is_public(path):
            await self.app(scope, receive, send)
            return
        try:
            claims = self._tokens.verify(_bearer_token(scope))
        except AuthError as err:
            log.info("auth rejected: reason=%s path=%s", err.reason, path)
            self._notify_failure(err.reason)
            challenge = "Bearer" if err.reason == "missing" else 'Bearer error="invalid_token"'
            await _send_json(
                send,
                401,
                {"detail": "invalid or missing token"},
                [(b"www-authenticate", challenge.encode())],
            )
            return
        if claims["role"] != "admin" and path.startswith(self.admin_prefixes):
            log.info("auth forbidden: sub=%s path=%s", claims["sub"], path)
            self._notify_failure("forbidden")
            await _send_json(send, 403, {"detail": "forbidden"})
            return
        # A fresh state dict: the server may share the lifespan one between requests.
        scope["state"] = {**(scope.get("state") or {}), "auth": claims}
        await self.app(scope, receive, send)

    def _is_public(self, path: str) -> bool:
        if path in self.public_paths:
            return True
        return path.startswith(self.public_prefixes) and ".." not in path.split("/")

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _send_json(send, 405, {"detail": "method not allowed"}, [(b"allow", b"POST")])
            return
        headers = _headers(scope)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_LOGIN_BODY:
            await _send_json(send, 413, {"detail": "request body too large"})
            return
        body = await _read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            await _send_json(send, 413, {"detail": "request body too large"})
            return
        try:
            creds = _parse_credentials(body, headers.get(b"content-type", b""))
        except ValueError:
            await _send_json(send, 400, {"detail": "malformed request body"})
            return
        role = None
        if creds is not None:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(LOGIN_CONCURRENCY)
            role = await anyio.to_thread.run_sync(
                self.users.verify, creds[0], creds[1], limiter=self._limiter
            )
        self._notify_login(role is not None)
        if creds is None or role is None:
            log.info("login failed")
            await _send_json(
                send, 401, {"detail": "invalid credentials"}, [(b"www-authenticate", b"Bearer")]
            )
            return
        log.info("login ok: sub=%s role=%s", creds[0], role)
        token = issue_token(self.config, creds[0], role)
        await _send_json(
            send,
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": self.config.ttl_s},
            [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")],
        )

    def _notify_failure(self, reason: str) -> None:
        if self.on_auth_failure is not None:
            try:
                self.on_auth_failure(reason)
            except Exception:  # metrics must never decide a request
                log.exception("on_auth_failure callback failed")

    def _notify_login(self, success: bool) -> None:
        if self.on_login is not None:
            try:
                self.on_login(success)
            except Exception:
                log.exception("on_login callback failed")


def route_path(scope: Scope) -> str:
    """The path the router will match (as Starlette does: without ``root_path``)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when no bearer token was sent.

    A non-Bearer scheme counts as no token (RFC 6750 3.1); several headers are malformed.
    """
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise AuthError("malformed")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise AuthError("malformed")
    return token


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds ``limit`` bytes."""
    chunks: builtins.list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # client went away; an empty body fails the login
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse_credentials(body: bytes, content_type: bytes) -> tuple[str, str] | None:
    """(username, password) from a JSON or form body; None when absent; ValueError when the
    body cannot be parsed at all."""
    if not body.strip():
        return None
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    mime = content_type.split(b";")[0].strip().lower()
    if mime == b"application/x-www-form-urlencoded" and not text.lstrip().startswith("{"):
        form = parse_qs(text, keep_blank_values=True, strict_parsing=False)
        data: object = {k: v[0] for k, v in form.items()}
    else:  # JSON, also without a content type (and `curl -d '{...}'`, which says form)
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("credentials must be an object")
    name, password = data.get("username"), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        return None
    return name, password


async def _send_json(
    send: Send,
    status: int,
    body: Mapping[str, object],
    headers: builtins.list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_json_bytes(send, status, json.dumps(body, separators=(",", ":")).encode(), headers)


async def send_json_bytes(
    send: Send,
    status: int,
    payload: bytes,
    headers: Sequence[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer an ASGI request with an already-encoded JSON body (and extra headers)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
