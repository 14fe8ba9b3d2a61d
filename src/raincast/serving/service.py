"""The prediction API: a BentoML 1.4 class service serving the registry champion.

    bentoml serve raincast.serving.service:RainService --host 127.0.0.1 --port 3000
    raincast serve --host 127.0.0.1 --port 3000            # the same, plus checks

The HTTP routes are a FastAPI app mounted on the service (BentoML's documented ASGI
integration, methods get the service instance as ``self``): FastAPI gives the 422s with
field paths and the OpenAPI docs at ``/api/docs``. BentoML adds ``/livez``, ``/readyz``
(fails until a model is loaded, via ``__is_ready__``) and ``/metrics``.

Every request passes two ASGI middlewares first, so no route can forget them: the body
size limit (413) and JWT authentication (`raincast.serving.auth.JWTMiddleware`, which also
serves ``POST /auth/token``). Then `raincast.serving.fastpath.FastRoutes` answers valid
``/predict`` and ``/predict_batch`` bodies without the FastAPI request cycle; everything it
does not fully validate goes on to the FastAPI routes below, which own the error bodies.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from raincast.features import build_matrix_columns
from raincast.monitoring.jobs import JsonFormatter
from raincast.serving import metrics
from raincast.serving.auth import PUBLIC_PATHS, AuthConfig, JWTMiddleware, send_json_bytes
from raincast.serving.fastpath import FastRoutes, replay_body
from raincast.serving.model import LoadedModel, ModelHolder
from raincast.serving.runtime import patch_bentoml_timeout, settle_worker
from raincast.serving.schemas import (
    BatchRequest,
    BatchResponse,
    InputError,
    PredictRequest,
    PredictResponse,
    validate_columns,
)
from raincast.settings import Settings

log = logging.getLogger("raincast.serving")

# A registry outage must cost a refresh seconds, not MLflow's default minutes of retries
# (the admin reload would hit the request timeout). Explicit settings win.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

#: Largest request body accepted (bytes); a 100k-row columnar batch is ~25 MB.
MAX_BODY_BYTES = int(os.environ.get("RAINCAST_API_MAX_BODY_BYTES", str(32 * 1024 * 1024)))
POLL_INTERVAL_S = float(os.environ.get("RAINCAST_API_POLL_S", "30"))
#: Read when `bentoml serve` imports this module: no (or a weak) RAINCAST_JWT_SECRET stops
#: the server before it binds a port, with AuthConfigError's message.
AUTH = AuthConfig.from_env()

#: OpenTelemetry tracing, off unless an OTLP endpoint is configured (e.g. Tempo's
#: http://tempo:4318/v1/traces in compose).
OTLP_ENDPOINT = os.environ.get("RAINCAST_OTLP_ENDPOINT", "")
TRACING: dict[str, Any] = (
    {
        "exporter_type": "otlp",
        "sample_rate": float(os.environ.get("RAINCAST_TRACE_SAMPLE_RATE", "1.0")),
        "excluded_urls": "/livez,/readyz,/metrics",
        "otlp": {"protocol": "http", "endpoint": OTLP_ENDPOINT},
    }
    if OTLP_ENDPOINT
    # No exporter: keep BentoML's OpenTelemetry middleware out of the request path (it
    # still builds a span per request at sample rate 0, ~17 % of a /predict).
    else {"sample_rate": 0.0, "excluded_urls": [".*"]}
)


def _json_logs() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())  # the pipeline's: same fields everywhere
    for name in ("raincast",):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(os.environ.get("RAINCAST_LOG_LEVEL", "INFO"))
        logger.propagate = False


_json_logs()
patch_bentoml_timeout()  # before BentoML builds the app; see raincast.serving.runtime

app = FastAPI(
    title="raincast",
    description="Rain tomorrow in Australia: the registry champion behind a JWT.",
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
    redoc_url=None,
)


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes`` (declared or streamed), before any route runs."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # Chunked / undeclared body: buffer up to the limit, then replay it.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


async def _too_large(send: Any, limit: int) -> None:
    body = b'{"detail":"request body too large (limit %d bytes)"}' % limit
    await send_json_bytes(send, 413, body)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="raincast",
    workers=int(os.environ.get("RAINCAST_API_WORKERS", "1")),
    traffic={"timeout": 60},
    tracing=TRACING,
    logging={"access": {"enabled": os.environ.get("RAINCAST_API_ACCESS_LOG", "false") == "true"}},
)
class RainService:
    """Loads the champion at start, polls the alias, swaps without downtime."""

    def __init__(self) -> None:
        self.holder = ModelHolder(Settings())
        self._seen_version: str | None = None
        log.info("startup: %s", self.holder.refresh())
        self._observe_model()
        if POLL_INTERVAL_S > 0:
            self.holder.start_polling(POLL_INTERVAL_S)
        settle_worker()  # the start-up heap out of every later full GC

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    def _observe_model(self) -> None:
        model = self.holder.current
        if model is not None:
            metrics.set_model(model.version, model.loaded_at)
            self._seen_version = model.version

    def current_model(self) -> LoadedModel | None:
        """The model to answer with (None before the first load); keeps the gauges fresh."""
        model = self.holder.current
        if model is not None:
            if model.version != self._seen_version:  # swapped by the poller
                self._observe_model()
            metrics.model_age(model.loaded_at)
        return model

    def _model(self) -> LoadedModel:
        model = self.current_model()
        if model is None:
            raise HTTPException(503, "no champion model loaded yet")
        return model

    @app.post("/predict", response_model=PredictResponse)
    async def predict(self, request: PredictRequest) -> dict[str, Any]:
        """Rain tomorrow for one or more raw observations (weatherAUS schema, day D)."""
        # Valid requests are answered by `_fast_predict` before they get here; this route
        # is the documented contract and answers what that one hands over.
        return _predictions(self._model(), request)

    @app.post("/predict_batch", response_model=BatchResponse)
    def predict_batch(self, request: BatchRequest) -> Any:
        """Columnar batch (up to RAINCAST_API_MAX_BATCH_ROWS rows) in one call."""
        status, body = _batch_answer(self._model(), request.columns)
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/model")
    def model_info(self) -> dict[str, Any]:
        """Version, test metrics, threshold and training time of the served model."""
        model = self._model()
        return {**model.describe(), "last_refresh_error": self.holder.last_error}

    @app.post("/admin/reload")
    def reload(self) -> Any:
        """Re-resolve the champion alias now (admin role)."""
        t0 = time.perf_counter()
        status = self.holder.refresh()
        ok = not status.startswith("failed")
        metrics.reload(ok)
        self._observe_model()
        model = self.holder.current
        body = {
            "status": status,
            "model_version": model.version if model else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return body if ok else JSONResponse(body, status_code=503)


def _predictions(model: LoadedModel, request: PredictRequest) -> dict[str, Any]:
    # Runs on the event loop: <= RAINCAST_API_MAX_ROWS rows take ~0.5 ms per row, cheaper
    # than the thread-pool hop.
    proba = model.predict_records([row.model_dump() for row in request.rows])
    labels = np.where(proba >= model.threshold, "Yes", "No")
    metrics.observe(labels, proba)
    return {
        "predictions": [
            {
                "probability": float(p),
                "label": str(lab),
                "threshold": model.threshold,
                "model_version": model.version,
            }
            for p, lab in zip(proba, labels, strict=True)
        ]
    }


def _batch_answer(model: LoadedModel, columns: dict[str, list[Any]]) -> tuple[int, bytes]:
    """(status, JSON body) of a columnar batch: 422 naming column and row, or the scores."""
    try:
        matrix = build_matrix_columns(validate_columns(columns))
    except InputError as err:
        return 422, orjson.dumps({"detail": err.errors})
    proba = model.predict_matrix(matrix)
    labels = np.where(proba >= model.threshold, "Yes", "No")
    metrics.observe(labels, proba)
    # orjson straight to bytes: re-validating 10k floats through the response model
    # would cost more than the prediction.
    return 200, orjson.dumps(
        {
            "probability": proba,
            "label": labels.tolist(),
            "threshold": model.threshold,
            "model_version": model.version,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _serving_model() -> LoadedModel | None:
    service: RainService = bentoml.get_current_service()
    return service.current_model()


async def _fast_predict(body: bytes) -> tuple[int, bytes] | None:
    """`/predict` for a body that validates; anything else goes to the FastAPI route."""
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError:
        return None
    model = _serving_model()
    if model is None:
        return None
    return 200, orjson.dumps(_predictions(model, request))


def _batch_from_json(body: bytes) -> tuple[int, bytes] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    # The shape BatchRequest accepts, else FastAPI's own 422 (or 503 without a model).
    if not (isinstance(doc, dict) and doc.keys() == {"columns"}):
        return None
    columns = doc["columns"]
    if not (isinstance(columns, dict) and all(isinstance(v, list) for v in columns.values())):
        return None
    model = _serving_model()
    return None if model is None else _batch_answer(model, columns)


async def _fast_batch(body: bytes) -> tuple[int, bytes] | None:
    """`/predict_batch` without pydantic over 200k values; off the event loop."""
    return await anyio.to_thread.run_sync(_batch_from_json, body)


RainService.add_asgi_middleware(  # type: ignore[attr-defined]
    JWTMiddleware,
    config=AUTH,
    public_paths=(*PUBLIC_PATHS, app.docs_url, app.openapi_url),
    on_auth_failure=metrics.auth_failure,
    on_login=metrics.login,
)
RainService.add_asgi_middleware(BodyLimitMiddleware)  # type: ignore[attr-defined]
# Innermost of ours: bodies are already size-checked and the caller authenticated.
RainService.add_asgi_middleware(  # type: ignore[attr-defined]
    FastRoutes, routes={"/predict": _fast_predict, "/predict_batch": _fast_batch}
)
