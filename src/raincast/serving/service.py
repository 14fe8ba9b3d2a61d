"""The prediction API: a BentoML 1.4 class service serving the registry champion.

    bentoml serve raincast.serving.service:RainService --host 127.0.0.1 --port 3000
    raincast serve --host 127.0.0.1 --port 3000            # the same, plus checks

The HTTP routes are a FastAPI app mounted on the service (BentoML's documented ASGI
integration, methods get the service instance as ``self``): FastAPI gives the OpenAPI docs
at ``/api/docs``. BentoML adds ``/livez``, ``/readyz`` (fails until a model is loaded, via
``__is_ready__``) and ``/metrics``, and its traffic settings: a request timeout and a
concurrency limit (``max_concurrency``: requests beyond it get 429 at once; health and
metrics bypass it).

Every request passes three ASGI middlewares of ours, so no route can forget them: the body
size limit per endpoint (413, sized from the endpoint's row limit), JWT authentication
(`raincast.serving.auth.JWTMiddleware`, which also serves ``POST /auth/token``) and
`raincast.serving.fastpath.FastRoutes`, which answers every JSON ``/predict`` and
``/predict_batch`` body through `raincast.serving.answers` (200, bounded 422, 503) without
the FastAPI request cycle. Large bodies are parsed, validated and scored in a worker
thread, so the event loop that answers ``/livez``, ``/readyz`` and other callers never
waits on them. The FastAPI routes below are the documented contract and answer only what
the fast path does not take (non-JSON content types), with the same bounded errors.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import bentoml
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from raincast.monitoring.jobs import JsonFormatter
from raincast.serving import answers, metrics
from raincast.serving.auth import (
    PUBLIC_PATHS,
    AuthConfig,
    JWTMiddleware,
    route_path,
    send_json_bytes,
)
from raincast.serving.fastpath import FastRoutes, replay_body
from raincast.serving.model import LoadedModel, ModelHolder
from raincast.serving.monitor import (
    BINS,
    RELIABILITY_KINDS,
    SCORE_KINDS,
    WINDOW_DAYS,
    BadQueryError,
    MonitorStore,
    StoreUnavailableError,
    parse_choice,
    parse_int,
)
from raincast.serving.runtime import patch_bentoml_timeout, settle_worker
from raincast.serving.schemas import (
    BASE_BODY_BYTES,
    BatchRequest,
    BatchResponse,
    PredictRequest,
    PredictResponse,
    body_limits,
)
from raincast.settings import Settings

log = logging.getLogger("raincast.serving")

# A registry outage must cost a refresh seconds, not MLflow's default minutes of retries
# (the admin reload would hit the request timeout). Explicit settings win.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

#: Largest request body per path (bytes), from the row limits; see `body_limits`.
BODY_LIMITS = body_limits()
#: Bodies up to this size are answered on the event loop (a few rows: ~0.1 ms, less than
#: the hop to a worker thread); larger ones in a worker thread.
INLINE_BODY_BYTES = 16 * 1024
POLL_INTERVAL_S = float(os.environ.get("RAINCAST_API_POLL_S", "30"))
#: Worker processes (each holds its own copy of the model): a number or ``cpu_count``.
_WORKERS_ENV = os.environ.get("RAINCAST_API_WORKERS", "1")
WORKERS: int | str = int(_WORKERS_ENV) if _WORKERS_ENV.isdigit() else "cpu_count"
#: Requests in flight per service (BentoML divides it between the workers); beyond it a
#: request is refused with 429 at once instead of queueing. Sized from the measured
#: capacity (see README, benchmarks): 16 per worker keeps a full worker's queue ~10 ms.
MAX_CONCURRENCY = int(
    os.environ.get(
        "RAINCAST_API_MAX_CONCURRENCY",
        str(16 * (WORKERS if isinstance(WORKERS, int) else os.cpu_count() or 1)),
    )
)
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
    """413 for bodies over the path's limit (declared or streamed), before any route runs.

    ``limits`` maps a path to its largest body; other paths get ``default``."""

    def __init__(
        self, app: Any, limits: dict[str, int] | None = None, default: int = BASE_BODY_BYTES
    ) -> None:
        self.app, self.default = app, default
        self.limits = BODY_LIMITS if limits is None else limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(route_path(scope), self.default)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
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
            if size > limit:
                await _too_large(send, limit)
                return
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


async def _too_large(send: Any, limit: int) -> None:
    body = b'{"detail":"request body too large (limit %d bytes)"}' % limit
    await send_json_bytes(send, 413, body)


@app.exception_handler(RequestValidationError)
async def _bounded_validation_error(_: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 without echoing the input and with at most `answers.MAX_ERRORS`."""
    status, body = answers.error_answer(exc.errors())
    return Response(body, status_code=status, media_type="application/json")


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="raincast",
    workers=WORKERS,
    traffic={"timeout": 60, "max_concurrency": MAX_CONCURRENCY},
    tracing=TRACING,
    logging={"access": {"enabled": os.environ.get("RAINCAST_API_ACCESS_LOG", "false") == "true"}},
)
class RainService:
    """Loads the champion at start, polls the alias, swaps without downtime."""

    def __init__(self) -> None:
        # Behind a path prefix (nginx: /api/ -> /), "Try it out" in the OpenAPI page must
        # call <prefix>/predict: the prefix goes into the spec's servers.
        if prefix := os.environ.get("RAINCAST_API_PUBLIC_PREFIX", "").rstrip("/"):
            app.servers = [{"url": prefix}]
            app.openapi_schema = None
        settings = Settings()
        self.holder = ModelHolder(settings)
        # Monitor reads the raw store read-only (RAINCAST_STORE_URL; compose: the reader role).
        self.monitor = MonitorStore(settings.raw_store_url, settings.model_name)
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
    def predict(self, request: PredictRequest) -> dict[str, Any]:
        """Rain tomorrow for one or more raw observations (weatherAUS schema, day D)."""
        # JSON bodies are answered by `_fast_predict` before they get here; this route is
        # the documented contract and answers what that one does not take.
        return answers.predictions(self._model(), request)

    @app.post("/predict_batch", response_model=BatchResponse)
    def predict_batch(self, request: BatchRequest) -> Any:
        """Columnar batch (up to RAINCAST_API_MAX_BATCH_ROWS rows) in one call."""
        status, body = answers.batch_answer(self._model(), request.columns)
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/model")
    def model_info(self) -> dict[str, Any]:
        """Version, test metrics, threshold and training time of the served model."""
        model = self._model()
        return {**model.describe(), "last_refresh_error": self.holder.last_error}

    # --- Monitor: read-only views of the raw store (issue 21's contract) -------------------

    @app.get("/monitor/scores")
    def monitor_scores(self, kind: str | None = None) -> dict[str, Any]:
        """Live and/or replayed F1, ROC AUC, calibration per as-of date and window
        (``kind`` live | replayed | all), oldest first."""
        return _monitor(lambda: self.monitor.scores(parse_choice("kind", kind, SCORE_KINDS, "all")))

    @app.get("/monitor/reliability")
    def monitor_reliability(
        self, kind: str | None = None, window_days: str | None = None, bins: str | None = None
    ) -> dict[str, Any]:
        """Reliability diagram of the last ``window_days`` scored days (``kind`` replayed |
        live; default replayed when a replayed window exists)."""

        def answer() -> dict[str, Any]:
            chosen = parse_choice("kind", kind, RELIABILITY_KINDS, "") or None
            days = parse_int("window_days", window_days, WINDOW_DAYS)
            return self.monitor.reliability(chosen, days, parse_int("bins", bins, BINS))

        return _monitor(answer)

    @app.get("/monitor/drift")
    def monitor_drift(self) -> dict[str, Any]:
        """Drift share, drifted columns and verdict of every cycle, oldest first."""
        return _monitor(self.monitor.drift)

    @app.get("/monitor/champions")
    def monitor_champions(self) -> dict[str, Any]:
        """The champion timeline: every registry decision, oldest first."""
        model = self.holder.current
        return _monitor(lambda: self.monitor.champions(model.version if model else None))

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


def _monitor(answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A Monitor answer; 422 / 503 with the reason instead of a traceback."""
    try:
        return answer()
    except BadQueryError as err:
        raise HTTPException(422, str(err)) from None
    except StoreUnavailableError as err:
        raise HTTPException(503, str(err)) from None


def _serving_model() -> LoadedModel | None:
    service: RainService = bentoml.get_current_service()
    return service.current_model()


async def _fast_predict(body: bytes) -> tuple[int, bytes]:
    """`/predict`: a few rows on the event loop, more in a worker thread."""
    if len(body) <= INLINE_BODY_BYTES:
        return answers.answer_predict(_serving_model(), body)
    return await anyio.to_thread.run_sync(answers.answer_predict, _serving_model(), body)


async def _fast_batch(body: bytes) -> tuple[int, bytes]:
    """`/predict_batch`, always in a worker thread (up to 100k rows)."""
    return await anyio.to_thread.run_sync(answers.answer_batch, _serving_model(), body)


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
