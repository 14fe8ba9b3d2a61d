"""Token settings (`AuthConfig`) and the errors of the authentication package."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

ALGORITHM: Final = "HS256"
ROLES: Final = ("admin", "user")
REQUIRED_CLAIMS: Final = ("sub", "role", "iat", "exp", "iss", "aud")
MIN_SECRET_BYTES: Final = 32
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
