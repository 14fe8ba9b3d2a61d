"""API authentication: user file, JWT issue/verify (RFC 8725) and the ASGI middleware."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from raincast.serving.auth import (
    REQUIRED_CLAIMS,
    AuthConfig,
    AuthConfigError,
    AuthError,
    JWTMiddleware,
    UserStore,
    UserStoreError,
    VerifiedTokens,
    issue_token,
    verify_token,
)
from raincast.settings import Settings

SECRET = secrets.token_urlsafe(48)
GENERIC = {"detail": "invalid or missing token"}
ALICE_PW = "alice-password-123"
ROOT_PW = "root-password-1234"


def fast_hasher(time_cost: int = 1) -> PasswordHasher:
    """Cheap argon2id parameters: tests only (production keeps argon2-cffi's defaults)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=8192, parallelism=1)


@pytest.fixture
def config(tmp_path: Path) -> AuthConfig:
    return AuthConfig(secret=SECRET, users_file=tmp_path / "users.json")


@pytest.fixture
def users(config: AuthConfig) -> UserStore:
    store = UserStore(config.users_file, hasher=fast_hasher())
    store.add("alice", ALICE_PW, "user")
    store.add("root", ROOT_PW, "admin")
    return store


async def _echo_auth(request: Request) -> JSONResponse:
    return JSONResponse({"auth": request.state.auth})


async def _plain(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "has_auth": hasattr(request.state, "auth")})


def _app(started: list[str] | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        if started is not None:
            started.append("up")
        yield

    return Starlette(
        routes=[
            Route("/predict", _echo_auth, methods=["GET", "POST"]),
            Route("/admin/reload", _echo_auth, methods=["POST"]),
            Route("/livez", _plain),
            Route("/livezz", _plain),
            Route("/static_content/app.css", _plain),
        ],
        lifespan=lifespan,
    )


class Recorder:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.logins: list[bool] = []


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def client(config: AuthConfig, users: UserStore, rec: Recorder) -> Iterator[TestClient]:
    mw = JWTMiddleware(
        _app(),
        config=config,
        users=users,
        on_auth_failure=rec.failures.append,
        on_login=rec.logins.append,
    )
    with TestClient(mw) as c:
        yield c


def _login(client: TestClient, username: str, password: str) -> str:
    r = client.post("/auth/token", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "alice",
        "role": "user",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "iss": "raincast",
        "aud": "raincast-api",
        "jti": secrets.token_hex(8),
    }
    claims.update(overrides)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_jwt(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand (PyJWT refuses to sign some of the attacks we need)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(sig)}"


def _rsa_pair() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem


# --- config ---------------------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    """Settings from ``values`` alone: no ``.env`` file, no RAINCAST_* of the caller's shell
    (the `clean_env` fixture)."""
    return Settings(_env_file=None, **values)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [k for k in os.environ if k.startswith("RAINCAST_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_config_from_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    cfg = AuthConfig.from_settings(_settings(jwt_secret=SECRET))
    assert (cfg.ttl_s, cfg.issuer, cfg.audience, cfg.leeway_s) == (
        900,
        "raincast",
        "raincast-api",
        30,
    )
    assert cfg.users_file == Path("var/users.json")
    assert SECRET not in repr(cfg)


def test_config_from_settings_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = AuthConfig.from_settings(
        _settings(
            jwt_secret=SECRET,
            users_file=tmp_path / "u.json",
            jwt_ttl_s="60",
            jwt_issuer="me",
            jwt_audience="you",
            jwt_leeway_s="0",
        )
    )
    assert (cfg.users_file, cfg.ttl_s, cfg.issuer, cfg.audience, cfg.leeway_s) == (
        tmp_path / "u.json",
        60,
        "me",
        "you",
        0,
    )


def test_config_reads_the_raincast_variables(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The variable names operators set (compose, .env.example) reach the config."""
    for name, value in {
        "RAINCAST_JWT_SECRET": SECRET,
        "RAINCAST_USERS_FILE": str(tmp_path / "env-users.json"),
        "RAINCAST_JWT_TTL_S": "120",
        "RAINCAST_JWT_ISSUER": "me",
        "RAINCAST_JWT_AUDIENCE": "you",
        "RAINCAST_JWT_LEEWAY_S": "5",
    }.items():
        clean_env.setenv(name, value)
    cfg = AuthConfig.from_settings(_settings())
    assert (cfg.secret, cfg.users_file, cfg.ttl_s, cfg.issuer, cfg.audience, cfg.leeway_s) == (
        SECRET,
        tmp_path / "env-users.json",
        120,
        "me",
        "you",
        5,
    )
    assert AuthConfig.from_settings(Settings()) == cfg  # what `raincast serve` checks


def test_empty_variables_mean_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """As compose passes an unset ``${VAR:-}``."""
    for name in ("USERS_FILE", "JWT_TTL_S", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_LEEWAY_S"):
        clean_env.setenv(f"RAINCAST_{name}", "")
    cfg = AuthConfig.from_settings(_settings(jwt_secret=SECRET))
    assert (cfg.users_file, cfg.ttl_s, cfg.issuer, cfg.audience, cfg.leeway_s) == (
        Path("var/users.json"),
        900,
        "raincast",
        "raincast-api",
        30,
    )


@pytest.mark.parametrize("secret", ["", "short-secret", "é" * 15])
def test_weak_or_missing_secret_is_refused(clean_env: pytest.MonkeyPatch, secret: str) -> None:
    with pytest.raises(AuthConfigError, match=r"secrets\.token_urlsafe") as info:
        AuthConfig.from_settings(_settings(jwt_secret=secret))
    assert secret == "" or secret not in str(info.value)
    assert "RAINCAST_JWT_SECRET" in str(info.value)


def test_secret_length_counts_utf8_bytes() -> None:
    AuthConfig(secret="é" * 16)  # 32 bytes, 16 characters


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAINCAST_JWT_TTL_S", "59"),
        ("RAINCAST_JWT_TTL_S", "86401"),
        ("RAINCAST_JWT_TTL_S", "15m"),
        ("RAINCAST_JWT_LEEWAY_S", "61"),
        ("RAINCAST_JWT_LEEWAY_S", "-1"),
        ("RAINCAST_JWT_LEEWAY_S", "half a minute"),
    ],
)
def test_out_of_range_durations_are_refused(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(AuthConfigError, match=name):
        AuthConfig.from_settings(_settings(jwt_secret=SECRET))


def test_middleware_guards_with_its_config_and_users_file(config: AuthConfig) -> None:
    mw = JWTMiddleware(_app(), config)
    assert mw.users.path == config.users_file
    with TestClient(mw) as c:
        assert c.get("/predict").status_code == 401
        assert (
            c.post("/auth/token", json={"username": "alice", "password": ALICE_PW}).status_code
            == 401
        )


# --- tokens ---------------------------------------------------------------------------------


def test_issued_token_has_every_claim(config: AuthConfig) -> None:
    token = issue_token(config, "alice", "user")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = verify_token(config, token)
    assert set(claims) == {"sub", "role", "iat", "nbf", "exp", "iss", "aud", "jti"}
    assert (claims["sub"], claims["role"], claims["iss"], claims["aud"]) == (
        "alice",
        "user",
        "raincast",
        "raincast-api",
    )
    assert claims["exp"] - claims["iat"] == config.ttl_s
    assert claims["jti"] != verify_token(config, issue_token(config, "alice", "user"))["jti"]


def test_issue_token_refuses_unknown_roles(config: AuthConfig) -> None:
    with pytest.raises(ValueError):
        issue_token(config, "alice", "root")


def test_expiry_within_leeway_is_accepted(config: AuthConfig) -> None:
    now = int(time.time())
    token = jwt.encode(_claims(iat=now - 700, nbf=now - 700, exp=now - 10), SECRET, "HS256")
    assert verify_token(config, token)["sub"] == "alice"


def test_verify_token_without_token_is_missing(config: AuthConfig) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(config, None)
    assert info.value.reason == "missing"


def test_cached_token_still_expires(config: AuthConfig) -> None:
    config = dataclasses.replace(config, leeway_s=0)
    now = int(time.time())
    token = jwt.encode(_claims(iat=now, nbf=now, exp=now + 1), SECRET, "HS256")
    cache = VerifiedTokens(config)
    assert cache.verify(token)["sub"] == "alice"
    assert token in cache._claims  # later calls are hits
    time.sleep(max(0.0, now + 1.05 - time.time()))
    with pytest.raises(AuthError) as info:
        cache.verify(token)
    assert info.value.reason == "expired"
    assert token not in cache._claims


def test_token_cache_never_keeps_failures_and_stays_bounded(config: AuthConfig) -> None:
    cache = VerifiedTokens(config, max_entries=2)
    good = issue_token(config, "alice", "user")
    forged = good[: good.rindex(".") + 1] + "A" * 43
    for _ in range(2):
        with pytest.raises(AuthError) as info:
            cache.verify(forged)
        assert info.value.reason == "bad_signature"
    tokens = [issue_token(config, "alice", "user") for _ in range(3)]
    for t in tokens:
        cache.verify(t)
    assert len(cache._claims) == 2 and tokens[0] not in cache._claims
    claims = cache.verify(tokens[2])
    claims["role"] = "admin"  # a handler scribbling on its copy
    assert cache.verify(tokens[2])["role"] == "user"


# --- middleware: happy paths ----------------------------------------------------------------


def test_login_then_call_protected_endpoint(client: TestClient, rec: Recorder) -> None:
    r = client.post("/auth/token", json={"username": "alice", "password": ALICE_PW})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert r.headers["cache-control"] == "no-store"
    r = client.post("/predict", headers=_bearer(body["access_token"]))
    assert r.status_code == 200
    auth = r.json()["auth"]
    assert (auth["sub"], auth["role"], auth["aud"]) == ("alice", "user", "raincast-api")
    assert rec.logins == [True]
    assert rec.failures == []


def test_login_accepts_a_form_body(client: TestClient) -> None:
    r = client.post("/auth/token", data={"username": "alice", "password": ALICE_PW})
    assert r.status_code == 200
    assert client.get("/predict", headers=_bearer(r.json()["access_token"])).status_code == 200


@pytest.mark.parametrize("path", ["/livez", "/static_content/app.css"])
def test_public_paths_need_no_token(client: TestClient, rec: Recorder, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.json() == {"ok": True, "has_auth": False}
    assert rec.failures == []


def test_public_paths_match_exactly(client: TestClient, rec: Recorder) -> None:
    assert client.get("/livezz").status_code == 401
    assert rec.failures == ["missing"]


def test_lifespan_passes_through(config: AuthConfig, users: UserStore) -> None:
    started: list[str] = []
    with TestClient(JWTMiddleware(_app(started), config=config, users=users)):
        assert started == ["up"]


def test_admin_prefix_needs_admin_role(client: TestClient, rec: Recorder) -> None:
    user = _login(client, "alice", ALICE_PW)
    r = client.post("/admin/reload", headers=_bearer(user))
    assert r.status_code == 403
    assert r.json() == {"detail": "forbidden"}
    assert rec.failures == ["forbidden"]
    admin = _login(client, "root", ROOT_PW)
    r = client.post("/admin/reload", headers=_bearer(admin))
    assert r.status_code == 200
    assert r.json()["auth"]["role"] == "admin"


def test_failing_metrics_callback_does_not_change_the_answer(
    config: AuthConfig, users: UserStore
) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("metrics down")

    mw = JWTMiddleware(_app(), config=config, users=users, on_auth_failure=boom, on_login=boom)
    with TestClient(mw) as c:
        assert c.get("/predict").status_code == 401
        assert c.get("/predict", headers=_bearer(_login(c, "alice", ALICE_PW))).status_code == 200


# --- middleware: every kind of bad token ----------------------------------------------------


def _tampered() -> str:
    head, _, sig = jwt.encode(_claims(), SECRET, "HS256").split(".")
    return f"{head}.{_b64(json.dumps(_claims(role='admin')).encode())}.{sig}"


def _rs256() -> str:
    key, _ = _rsa_pair()
    return jwt.encode(_claims(), key, algorithm="RS256")


def _hs_rs_confusion() -> str:
    # The classic attack: alg switched to HS256 and the server's RSA *public* key used as the
    # HMAC secret. Our secret is not that PEM, so the signature cannot match.
    _, pem = _rsa_pair()
    return _raw_jwt({"alg": "HS256", "typ": "JWT"}, _claims(role="admin"), pem)


def _without(claim: str) -> str:
    claims = _claims()
    del claims[claim]
    return jwt.encode(claims, SECRET, "HS256")


BAD_TOKENS: list[tuple[str, Callable[[], dict[str, str]], str]] = [
    ("no header", dict, "missing"),
    ("basic scheme", lambda: {"Authorization": "Basic YWxpY2U6cHc="}, "missing"),
    ("empty bearer", lambda: {"Authorization": "Bearer "}, "malformed"),
    ("garbage", lambda: _bearer("not-a.jwt-at.all"), "malformed"),
    (
        "alg none",
        lambda: _bearer(_raw_jwt({"alg": "none"}, _claims(role="admin"), None)),
        "bad_algorithm",
    ),
    ("alg HS512", lambda: _bearer(jwt.encode(_claims(), SECRET, "HS512")), "bad_algorithm"),
    ("RS256", lambda: _bearer(_rs256()), "bad_algorithm"),
    ("HS/RS confusion", lambda: _bearer(_hs_rs_confusion()), "bad_signature"),
    ("wrong key", lambda: _bearer(jwt.encode(_claims(), "x" * 48, "HS256")), "bad_signature"),
    ("tampered role", lambda: _bearer(_tampered()), "bad_signature"),
    (
        "expired beyond leeway",
        lambda: _bearer(
            jwt.encode(_claims(iat=int(time.time()) - 900, exp=int(time.time()) - 31), SECRET)
        ),
        "expired",
    ),
    (
        "nbf in the future",
        lambda: _bearer(jwt.encode(_claims(nbf=int(time.time()) + 120), SECRET)),
        "not_yet_valid",
    ),
    ("wrong aud", lambda: _bearer(jwt.encode(_claims(aud="other-api"), SECRET)), "bad_audience"),
    ("wrong iss", lambda: _bearer(jwt.encode(_claims(iss="evil"), SECRET)), "bad_issuer"),
    ("bad role", lambda: _bearer(jwt.encode(_claims(role="root"), SECRET)), "bad_role"),
    *[(f"no {c}", lambda c=c: _bearer(_without(c)), "missing_claim") for c in REQUIRED_CLAIMS],
]


@pytest.mark.parametrize(
    ("headers", "reason"), [(h, r) for _, h, r in BAD_TOKENS], ids=[n for n, _, _ in BAD_TOKENS]
)
def test_bad_tokens_get_a_generic_401(
    client: TestClient, rec: Recorder, headers: Callable[[], dict[str, str]], reason: str
) -> None:
    r = client.post("/predict", headers=headers())
    assert r.status_code == 401
    assert r.json() == GENERIC
    expected = "Bearer" if reason == "missing" else 'Bearer error="invalid_token"'
    assert r.headers["www-authenticate"] == expected
    assert rec.failures == [reason]


def test_bad_token_on_admin_path_is_401_not_403(client: TestClient, rec: Recorder) -> None:
    r = client.post("/admin/reload", headers=_bearer(jwt.encode(_claims(), "y" * 48)))
    assert r.status_code == 401
    assert rec.failures == ["bad_signature"]


# --- middleware: login ----------------------------------------------------------------------


def test_failed_login_is_401_and_counted(client: TestClient, rec: Recorder) -> None:
    r = client.post("/auth/token", json={"username": "alice", "password": "wrong-password-1"})
    assert r.status_code == 401
    assert r.json() == {"detail": "invalid credentials"}
    assert r.headers["www-authenticate"] == "Bearer"
    assert "access_token" not in r.text
    assert rec.logins == [False]


def test_unknown_user_and_wrong_password_look_the_same(client: TestClient) -> None:
    unknown = client.post("/auth/token", json={"username": "mallory", "password": ALICE_PW})
    wrong = client.post("/auth/token", json={"username": "alice", "password": ROOT_PW})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    assert dict(unknown.headers) == dict(wrong.headers)


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b'{"username": "alice"}', b'{"username": "alice", "password": 123456789012}'],
)
def test_missing_credentials_are_401(client: TestClient, rec: Recorder, body: bytes) -> None:
    r = client.post("/auth/token", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert rec.logins == [False]


@pytest.mark.parametrize("body", [b"{not json", b'["alice", "pw"]', b"\xff\xfe"])
def test_malformed_login_body_is_400(client: TestClient, rec: Recorder, body: bytes) -> None:
    r = client.post("/auth/token", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert rec.logins == []


def test_login_body_too_large_is_413(client: TestClient) -> None:
    big = {"username": "alice", "password": "p" * 5000}
    assert client.post("/auth/token", json=big).status_code == 413
    streamed = client.post("/auth/token", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]))
    assert streamed.status_code == 413


def test_login_path_only_takes_post(client: TestClient) -> None:
    r = client.get("/auth/token")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_no_users_file_means_no_login(config: AuthConfig, rec: Recorder) -> None:
    store = UserStore(config.users_file, hasher=fast_hasher())
    mw = JWTMiddleware(_app(), config=config, users=store, on_login=rec.logins.append)
    with TestClient(mw) as c:
        for name, pw in [("admin", "admin"), ("admin", "admin-password"), ("root", ROOT_PW)]:
            r = c.post("/auth/token", json={"username": name, "password": pw})
            assert r.status_code == 401
    assert rec.logins == [False, False, False]


def test_users_file_is_hot_reloaded(client: TestClient, config: AuthConfig) -> None:
    carol = {"username": "carol", "password": "carol-password-1"}
    assert client.post("/auth/token", json=carol).status_code == 401
    # Another process (the CLI) changes the file while the server runs.
    UserStore(config.users_file, hasher=fast_hasher()).add("carol", carol["password"], "user")
    assert client.post("/auth/token", json=carol).status_code == 200
    UserStore(config.users_file, hasher=fast_hasher()).remove("carol")
    assert client.post("/auth/token", json=carol).status_code == 401


# --- user store -----------------------------------------------------------------------------


def test_store_verifies_and_never_keeps_plain_passwords(users: UserStore) -> None:
    assert users.verify("alice", ALICE_PW) == "user"
    assert users.verify("root", ROOT_PW) == "admin"
    assert users.verify("alice", ROOT_PW) is None
    raw = users.path.read_text()
    assert ALICE_PW not in raw and ROOT_PW not in raw
    assert "$argon2id$" in raw
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    assert [(u.name, u.role) for u in users.list()] == [("alice", "user"), ("root", "admin")]


def test_unknown_users_still_pay_for_a_hash(config: AuthConfig) -> None:
    verified: list[str | bytes] = []

    class RecordingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(hash)
            return super().verify(hash, password)

    store = UserStore(config.users_file, hasher=RecordingHasher(1, 8192, 1))
    store.add("alice", ALICE_PW)
    assert store.verify("nobody", ALICE_PW) is None
    assert store.verify("Not A Valid Name!", ALICE_PW) is None
    # Both ran a real argon2id verification (same parameters as the stored hashes).
    assert len(verified) == 2
    assert all(str(h).startswith("$argon2id$v=19$m=8192,t=1,p=1$") for h in verified)


@pytest.mark.parametrize(
    ("name", "password", "role", "match"),
    [
        ("alice", "short-pw", "user", "too short"),
        ("Alice", ALICE_PW, "user", "invalid user name"),
        ("al", ALICE_PW, "user", "invalid user name"),
        ("bob", ALICE_PW, "root", "invalid role"),
        ("alice", ALICE_PW, "user", "already exists"),
    ],
)
def test_store_refuses_bad_users(
    users: UserStore, name: str, password: str, role: str, match: str
) -> None:
    before = users.path.read_bytes()
    with pytest.raises(UserStoreError, match=match):
        users.add(name, password, role)
    assert users.path.read_bytes() == before


def test_remove_unknown_user_is_lookup_error(users: UserStore) -> None:
    with pytest.raises(LookupError):
        users.remove("nobody")
    users.remove("alice")
    assert [u.name for u in users.list()] == ["root"]


def test_outdated_hash_is_upgraded_on_login(config: AuthConfig) -> None:
    UserStore(config.users_file, hasher=fast_hasher(time_cost=1)).add("alice", ALICE_PW)
    old = json.loads(config.users_file.read_text())["users"]["alice"]["hash"]
    store = UserStore(config.users_file, hasher=fast_hasher(time_cost=2))
    assert store.verify("alice", ALICE_PW) == "user"
    new = json.loads(config.users_file.read_text())["users"]["alice"]["hash"]
    assert new != old and "t=2" in new
    assert store.verify("alice", ALICE_PW) == "user"
    assert stat.S_IMODE(config.users_file.stat().st_mode) == 0o600


def test_corrupt_users_file_fails_closed(config: AuthConfig) -> None:
    config.users_file.write_text("{not json")
    store = UserStore(config.users_file, hasher=fast_hasher())
    assert store.verify("alice", ALICE_PW) is None
    with pytest.raises(UserStoreError, match="not valid JSON"):
        store.list()
    with pytest.raises(UserStoreError):
        store.add("bob", "bob-password-12")
    assert config.users_file.read_text() == "{not json"
