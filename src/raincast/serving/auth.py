"""Authentication of the prediction API: a user file with argon2id hashes, short-lived HS256
JWTs (RFC 8725: one pinned algorithm, every claim checked) and a pure-ASGI middleware that
guards every route except the health, metrics and docs endpoints.

The middleware also serves ``POST /auth/token`` (username + password -> bearer token), so the
service code never touches passwords. Tokens, passwords and hashes are never logged.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from filelock import FileLock

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

ALGORITHM: Final = "HS256"
ROLES: Final = ("admin", "user")
REQUIRED_CLAIMS: Final = ("sub", "role", "iat", "exp", "iss", "aud")
MIN_SECRET_BYTES: Final = 32
MIN_PASSWORD_CHARS: Final = 12
USERNAME_RE: Final = re.compile(r"^[a-z0-9_.-]{3,64}$")
DEFAULT_USERS_FILE: Final = "var/users.json"

#: Why a bearer token was rejected; passed to ``on_auth_failure`` (the 401 body never says).
AuthFailure = Literal[
    "missing",
    "malformed",
    "bad_algorithm",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "bad_audience",
    "bad_issuer",
    "missing_claim",
    "bad_role",
]

PUBLIC_PATHS: Final = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/openapi.json", "/"}
)
PUBLIC_PREFIXES: Final = ("/static_content/",)
TOKEN_PATH: Final = "/auth/token"
MAX_LOGIN_BODY: Final = 4096
MAX_TOKEN_CHARS: Final = 4096
#: Concurrent argon2 verifications per process (each takes ~64 MiB with the defaults).
LOGIN_CONCURRENCY: Final = 4

_GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'


class AuthConfigError(ValueError):
    """The authentication settings in the environment are missing or unsafe."""


class UserStoreError(ValueError):
    """The user file cannot be read or a user change is not allowed."""


class AuthError(Exception):
    """A bearer token was rejected; ``reason`` says why (for metrics and logs only)."""

    def __init__(self, reason: AuthFailure) -> None:
        super().__init__(reason)
        self.reason: AuthFailure = reason


def users_file_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """``$RAINCAST_USERS_FILE`` or ``var/users.json`` (relative to the working directory)."""
    env = os.environ if environ is None else environ
    return Path(env.get("RAINCAST_USERS_FILE") or DEFAULT_USERS_FILE)


@dataclass(frozen=True)
class AuthConfig:
    """Token settings; the secret is validated on construction and never shown in repr."""

    secret: str = field(repr=False)
    users_file: Path = Path(DEFAULT_USERS_FILE)
    ttl_s: int = 900
    issuer: str = "raincast"
    audience: str = "raincast-api"
    leeway_s: int = 30

    def __post_init__(self) -> None:
        if not self.secret:
            raise AuthConfigError(f"RAINCAST_JWT_SECRET is not set; {_GENERATE_HINT}")
        if len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise AuthConfigError(
                f"RAINCAST_JWT_SECRET is too short (need at least {MIN_SECRET_BYTES} bytes); "
                + _GENERATE_HINT
            )
        if not 60 <= self.ttl_s <= 86400:
            raise AuthConfigError("RAINCAST_JWT_TTL_S must be between 60 and 86400 seconds")
        if not 0 <= self.leeway_s <= 60:
            raise AuthConfigError("RAINCAST_JWT_LEEWAY_S must be between 0 and 60 seconds")
        if not self.issuer or not self.audience:
            raise AuthConfigError("RAINCAST_JWT_ISSUER and RAINCAST_JWT_AUDIENCE must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        """Read ``RAINCAST_JWT_*`` and ``RAINCAST_USERS_FILE`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        return cls(
            secret=env.get("RAINCAST_JWT_SECRET", ""),
            users_file=users_file_from_env(env),
            ttl_s=_int_env(env, "RAINCAST_JWT_TTL_S", 900),
            issuer=env.get("RAINCAST_JWT_ISSUER") or "raincast",
            audience=env.get("RAINCAST_JWT_AUDIENCE") or "raincast-api",
            leeway_s=_int_env(env, "RAINCAST_JWT_LEEWAY_S", 30),
        )


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise AuthConfigError(f"{name} must be an integer number of seconds") from None


# --- users ----------------------------------------------------------------------------------


def check_user(name: str, role: str) -> None:
    """Raise ``UserStoreError`` unless the name and role are acceptable for a new user."""
    if not USERNAME_RE.fullmatch(name):
        raise UserStoreError(f"invalid user name {name!r}: use 3-64 characters of a-z 0-9 _ . -")
    if role not in ROLES:
        raise UserStoreError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")


@dataclass(frozen=True)
class UserInfo:
    """A user as listed: never the hash."""

    name: str
    role: str
    created_at: str


class UserStore:
    """Users in a JSON file of argon2id hashes, re-read whenever the file changes on disk.

    A missing file means no users: every login fails (there are no default credentials).
    Writes are atomic (temp file + ``os.replace``, mode 0600) under a cross-process lock.
    """

    def __init__(self, path: Path | str, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, dict[str, str]] = {}

    @cached_property
    def _dummy_hash(self) -> str:
        # Unknown users are verified against this so the response time does not reveal them.
        return self._hasher.hash(secrets.token_urlsafe(24))

    def _current(self) -> dict[str, dict[str, str]]:
        """The users on disk; re-parsed only when the file's stat changes."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            with self._lock:
                if stamp == self._stamp:
                    return self._users
            users = _parse_users(self.path.read_bytes(), self.path)
        except FileNotFoundError:
            with self._lock:
                self._stamp, self._users = None, {}
            return {}
        if st.st_mode & 0o077:
            log.warning("user file %s is readable by other users; chmod 600 it", self.path)
        with self._lock:
            self._stamp, self._users = stamp, users
        return users

    def list(self) -> builtins.list[UserInfo]:
        """Every user, sorted by name."""
        return [
            UserInfo(name, u["role"], u.get("created_at", ""))
            for name, u in sorted(self._current().items())
        ]

    def add(self, name: str, password: str, role: str = "user") -> None:
        """Add a user; refuses bad names, unknown roles, short passwords and duplicates."""
        check_user(name, role)
        if len(password) < MIN_PASSWORD_CHARS:
            raise UserStoreError(
                f"password too short: use at least {MIN_PASSWORD_CHARS} characters"
            )
        entry = {
            "hash": self._hasher.hash(password),
            "role": role,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        def change(users: dict[str, dict[str, str]]) -> None:
            if name in users:
                raise UserStoreError(f"user {name!r} already exists")
            users[name] = entry

        self._update(change)

    def remove(self, name: str) -> None:
        """Remove a user; ``LookupError`` if there is none of that name."""

        def change(users: dict[str, dict[str, str]]) -> None:
            if users.pop(name, None) is None:
                raise LookupError(f"no user {name!r}")

        self._update(change)

    def verify(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None (same cost either way)."""
        dummy = self._dummy_hash  # built on first use by any user, so that call is not a tell
        try:
            user = self._current().get(name)
        except UserStoreError:
            log.exception("user file %s is unreadable; refusing every login", self.path)
            user = None
        stored = user["hash"] if user else dummy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:  # cannot happen (the dummy matches no password), but never let it in
            return None
        if self._hasher.check_needs_rehash(stored):
            self._rehash(name, stored, password)
        return user["role"]

    def _rehash(self, name: str, old_hash: str, password: str) -> None:
        new_hash = self._hasher.hash(password)

        def change(users: dict[str, dict[str, str]]) -> None:
            if users.get(name, {}).get("hash") == old_hash:  # unchanged since we verified
                users[name]["hash"] = new_hash

        try:
            self._update(change)
        except (OSError, UserStoreError) as err:  # e.g. a read-only file: still log in
            log.warning("could not rehash the password of %s: %s", name, err)

    def _update(self, change: Callable[[dict[str, dict[str, str]]], None]) -> None:
        """Read-modify-write under a cross-process lock; atomic replace with mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(f"{self.path}.lock", timeout=10):
            users = _parse_users(self.path.read_bytes(), self.path) if self.path.exists() else {}
            change(users)
            data = json.dumps({"users": users}, indent=2, sort_keys=True).encode() + b"\n"
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def _parse_users(raw: bytes, path: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserStoreError(f"{path} is not valid JSON: {err}") from None
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict):
        raise UserStoreError(f'{path} must hold {{"users": {{...}}}}')
    for name, u in users.items():
        if not (isinstance(u, dict) and isinstance(u.get("hash"), str) and u.get("role") in ROLES):
            raise UserStoreError(f"{path}: entry {name!r} needs a hash and a role in {ROLES}")
    return users


# --- tokens ---------------------------------------------------------------------------------


def issue_token(config: AuthConfig, sub: str, role: str) -> str:
    """A signed HS256 access token for ``sub`` valid for ``config.ttl_s`` seconds."""
    if not sub or role not in ROLES:
        raise ValueError("a token needs a subject and a role in " + ", ".join(ROLES))
    now = int(time.time())
    claims = {
        "sub": sub,
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + config.ttl_s,
        "iss": config.issuer,
        "aud": config.audience,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, config.secret, algorithm=ALGORITHM)


def verify_token(config: AuthConfig, token: str | None) -> dict[str, Any]:
    """The claims of a valid token; raises ``AuthError(reason)`` for anything else."""
    if not token:
        raise AuthError("missing")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise AuthError("malformed") from None
    # Checked before decoding: only our algorithm, whatever the library would accept.
    if header.get("alg") != ALGORITHM:
        raise AuthError("bad_algorithm")
    if "crit" in header:  # RFC 7515 4.1.11: we understand no critical extensions
        raise AuthError("malformed")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            config.secret,
            algorithms=[ALGORITHM],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_s,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature") from None
    except jwt.ExpiredSignatureError:
        raise AuthError("expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("not_yet_valid") from None
    except jwt.InvalidAudienceError:
        raise AuthError("bad_audience") from None
    except jwt.InvalidIssuerError:
        raise AuthError("bad_issuer") from None
    except jwt.MissingRequiredClaimError:
        raise AuthError("missing_claim") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("bad_algorithm") from None
    except jwt.InvalidTokenError:
        raise AuthError("malformed") from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise AuthError("missing_claim")
    if claims.get("role") not in ROLES:
        raise AuthError("bad_role")
    return claims


class VerifiedTokens:
    """The claims of tokens this process has fully verified, so a client reusing its token
    skips the HMAC and claim parsing (~12 % of a one-row `/predict`).

    Keyed by the exact token string, so any change to header, claims or signature misses.
    Expiry and not-before are re-checked against the clock (with the same leeway) on every
    hit; failures are never cached. Bounded: the oldest entry goes first.
    """

    def __init__(self, config: AuthConfig, max_entries: int = 4096) -> None:
        self.config, self.max_entries = config, max_entries
        self._claims: dict[str, dict[str, Any]] = {}

    def verify(self, token: str | None) -> dict[str, Any]:
        claims = self._claims.get(token) if token else None
        if claims is not None:
            now, leeway = time.time(), self.config.leeway_s
            if claims["exp"] > now - leeway and claims.get("nbf", 0) <= now + leeway:
                return dict(claims)  # a copy: handlers may annotate their own
            del self._claims[token]  # type: ignore[arg-type]
        claims = verify_token(self.config, token)  # raises for anything invalid
        if len(self._claims) >= self.max_entries:
            del self._claims[next(iter(self._claims))]
        self._claims[token] = claims  # type: ignore[index]
        return dict(claims)


# --- middleware -----------------------------------------------------------------------------


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
        config: AuthConfig | None = None,
        users: UserStore | None = None,
        public_paths: Iterable[str] = PUBLIC_PATHS,
        public_prefixes: Iterable[str] = PUBLIC_PREFIXES,
        admin_prefixes: Iterable[str] = ("/admin",),
        on_auth_failure: Callable[[str], None] | None = None,
        on_login: Callable[[bool], None] | None = None,
        token_path: str = TOKEN_PATH,
    ) -> None:
        self.app = app
        self.config = config or AuthConfig.from_env()
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
    headers: builtins.list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer an ASGI request with an already-encoded JSON body."""
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
