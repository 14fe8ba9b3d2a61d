"""The API's start-up (`raincast.serving.service.create_service`), without a server: importing
the module does nothing, the service is built from the Settings it is given, and a weak
secret stops it before any process-wide change."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from raincast.serving import service
from raincast.serving.auth import AuthConfigError, JWTMiddleware
from raincast.serving.schemas import body_limits
from raincast.settings import Settings

SECRET = secrets.token_urlsafe(48)


@pytest.fixture
def startup(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """`create_service` in this process without leaving its process-wide changes behind:
    log levels it would configure are recorded, the BentoML patch is skipped, and the
    MLflow variables it sets are removed again after the test. No RAINCAST_* of the
    caller's shell reaches the settings."""
    for name in [k for k in os.environ if k.startswith("RAINCAST_")]:
        monkeypatch.delenv(name)
    levels: list[str] = []
    monkeypatch.setattr(service, "configure_json_logs", levels.append)
    monkeypatch.setattr(service, "patch_bentoml_timeout", lambda: True)
    for name in service.MLFLOW_HTTP_DEFAULTS:
        monkeypatch.setenv(name, "-")  # recorded, so the teardown restores the real state
        monkeypatch.delenv(name)
    yield levels


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, project_dir=tmp_path, home=tmp_path / "var", **values)


def _app(svc: Any) -> FastAPI:
    (app, path, _), *_ = svc.mount_apps
    assert path == "/"
    return app


def _middleware(svc: Any, cls: type) -> dict[str, Any]:
    return next(options for mw, options in svc.middlewares if mw is cls)


def test_importing_the_service_module_changes_nothing() -> None:
    code = (
        "import json, logging, os\n"
        "from bentoml._internal.server.http.traffic import TimeoutMiddleware\n"
        "before = TimeoutMiddleware.__call__\n"
        "import raincast.serving.service\n"
        "print(json.dumps({'mlflow_env': sorted(k for k in os.environ"
        " if k.startswith('MLFLOW_HTTP_')), 'handlers': len(logging.getLogger('raincast')"
        ".handlers), 'patched': TimeoutMiddleware.__call__ is not before}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "MLFLOW_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]  # no JWT secret needed to import it
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "mlflow_env": [],
        "handlers": 0,
        "patched": False,
    }


def test_the_service_is_built_from_its_settings(startup: list[str], tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        jwt_secret=SECRET,
        api_workers=2,
        api_max_rows=50,
        api_max_batch_rows=500,
        api_max_body_bytes=100_000,
        api_access_log=True,
        api_public_prefix="/api/",
        otlp_endpoint="http://tempo:4318/v1/traces",
        trace_sample_rate=0.25,
        log_level="DEBUG",
    )
    svc = service.create_service(settings)
    assert svc.config["workers"] == 2
    assert svc.config["traffic"] == {"timeout": 60, "max_concurrency": 32}  # 16 per worker
    assert svc.config["tracing"]["otlp"]["endpoint"] == "http://tempo:4318/v1/traces"
    assert svc.config["tracing"]["sample_rate"] == 0.25
    assert svc.config["logging"] == {"access": {"enabled": True}}
    assert _middleware(svc, service.BodyLimitMiddleware)["limits"] == body_limits(50, 500, 100_000)
    auth = _middleware(svc, JWTMiddleware)["config"]
    assert auth.secret == SECRET and auth.users_file == Path("var/users.json")
    spec = _app(svc).openapi()
    assert spec["servers"] == [{"url": "/api"}]
    assert spec["components"]["schemas"]["PredictRequest"]["properties"]["rows"]["maxItems"] == 50
    assert startup == ["DEBUG"]
    assert {k: os.environ[k] for k in service.MLFLOW_HTTP_DEFAULTS} == service.MLFLOW_HTTP_DEFAULTS


def test_defaults_are_one_worker_sixteen_requests_and_no_tracing(
    startup: list[str], tmp_path: Path
) -> None:
    svc = service.create_service(_settings(tmp_path, jwt_secret=SECRET))
    assert svc.config["workers"] == 1
    assert svc.config["traffic"]["max_concurrency"] == 16
    assert svc.config["tracing"] == {"sample_rate": 0.0, "excluded_urls": [".*"]}
    assert "servers" not in _app(svc).openapi()


def test_an_explicit_concurrency_limit_wins(startup: list[str], tmp_path: Path) -> None:
    svc = service.create_service(
        _settings(tmp_path, jwt_secret=SECRET, api_workers=2, api_max_concurrency=5)
    )
    assert svc.config["traffic"]["max_concurrency"] == 5


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"jwt_secret": ""}, "RAINCAST_JWT_SECRET"),
        ({"jwt_secret": "too-short"}, "RAINCAST_JWT_SECRET"),
        ({"jwt_secret": SECRET, "jwt_ttl_s": "15m"}, "RAINCAST_JWT_TTL_S"),
    ],
)
def test_bad_auth_settings_stop_start_up_before_any_change(
    startup: list[str], tmp_path: Path, values: dict[str, Any], named: str
) -> None:
    with pytest.raises(AuthConfigError, match=named):
        service.create_service(_settings(tmp_path, **values))
    assert startup == []  # logging untouched
    assert not any(k in os.environ for k in service.MLFLOW_HTTP_DEFAULTS)


def test_the_service_module_offers_only_rain_service() -> None:
    with pytest.raises(AttributeError, match="NoSuchService"):
        service.NoSuchService  # noqa: B018
