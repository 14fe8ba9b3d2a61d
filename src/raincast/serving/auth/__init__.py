"""Authentication of the prediction API, in four parts:

* `config`: `AuthConfig` (token settings from the one `Settings`) and the errors;
* `users`: the user file of argon2id hashes (`UserStore`, `check_user`);
* `tokens`: short-lived HS256 JWTs (RFC 8725), issued and verified (`VerifiedTokens`);
* `middleware`: `JWTMiddleware`, the ASGI guard that also serves ``POST /auth/token``,
  and the ASGI helpers the other middlewares share.

Tokens, passwords and hashes are never logged. Every public name is importable from here.
"""

from raincast.serving.auth.config import (
    ALGORITHM,
    DEFAULT_USERS_FILE,
    MIN_SECRET_BYTES,
    REQUIRED_CLAIMS,
    ROLES,
    AuthConfig,
    AuthConfigError,
    AuthError,
    AuthFailure,
    UserStoreError,
    users_file,
)
from raincast.serving.auth.middleware import (
    LOGIN_CONCURRENCY,
    MAX_LOGIN_BODY,
    PUBLIC_PATHS,
    PUBLIC_PREFIXES,
    TOKEN_PATH,
    JWTMiddleware,
    route_path,
    send_json_bytes,
)
from raincast.serving.auth.tokens import MAX_TOKEN_CHARS, VerifiedTokens, issue_token, verify_token
from raincast.serving.auth.users import (
    MIN_PASSWORD_CHARS,
    USERNAME_RE,
    UserInfo,
    UserStore,
    check_user,
)

__all__ = [
    "ALGORITHM",
    "DEFAULT_USERS_FILE",
    "LOGIN_CONCURRENCY",
    "MAX_LOGIN_BODY",
    "MAX_TOKEN_CHARS",
    "MIN_PASSWORD_CHARS",
    "MIN_SECRET_BYTES",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "REQUIRED_CLAIMS",
    "ROLES",
    "TOKEN_PATH",
    "USERNAME_RE",
    "AuthConfig",
    "AuthConfigError",
    "AuthError",
    "AuthFailure",
    "JWTMiddleware",
    "UserInfo",
    "UserStore",
    "UserStoreError",
    "VerifiedTokens",
    "check_user",
    "issue_token",
    "route_path",
    "send_json_bytes",
    "users_file",
    "verify_token",
]
