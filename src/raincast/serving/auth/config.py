"""Token settings (`AuthConfig`, validated from the one `Settings`) and the errors of the
authentication package."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from raincast.settings import Settings

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


def users_file(settings: Settings) -> Path:
    """``RAINCAST_USERS_FILE`` or ``var/users.json`` (relative to the working directory)."""
    # An empty variable (compose's ``${RAINCAST_USERS_FILE:-}``) parses as Path("."): the default.
    return settings.users_file if settings.users_file != Path() else Path(DEFAULT_USERS_FILE)


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
    def from_settings(cls, settings: Settings) -> AuthConfig:
        """The ``jwt_*`` and ``users_file`` settings, checked; `AuthConfigError` names the
        variable at fault. Empty values mean the defaults."""
        return cls(
            secret=settings.jwt_secret.get_secret_value(),
            users_file=users_file(settings),
            ttl_s=_seconds("RAINCAST_JWT_TTL_S", settings.jwt_ttl_s, cls.ttl_s),
            issuer=settings.jwt_issuer or cls.issuer,
            audience=settings.jwt_audience or cls.audience,
            leeway_s=_seconds("RAINCAST_JWT_LEEWAY_S", settings.jwt_leeway_s, cls.leeway_s),
        )


def _seconds(name: str, raw: str, default: int) -> int:
    """A whole number of seconds; kept a string in `Settings` so that a value such as
    ``15m`` gets this message rather than a generic validation error."""
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise AuthConfigError(f"{name} must be an integer number of seconds") from None
