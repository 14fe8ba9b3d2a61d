"""The prediction API: a BentoML 1.4 class service serving the registry champion.

    bentoml serve raincast.serving.service:RainService --host 127.0.0.1 --port 3000
    raincast serve --host 127.0.0.1 --port 3000            # the same, plus checks

The HTTP routes are a FastAPI app mounted on the service (BentoML's documented ASGI
integration, methods get the service instance as ``self``): FastAPI gives the OpenAPI docs
at ``/api/docs``. BentoML adds ``/livez``, ``/readyz`` (fails until a model is loaded, via
``__is_ready__``) and ``/metrics``, and its traffic settings: a request timeout and a
concurrency limit (``max_concurrency``: requests beyond it get 429 at once; health and
metrics bypass it). The limit is checked outermost, before BentoML's metrics and timeout
middlewares (`raincast.serving.runtime.Admission`), so refusing costs next to nothing;
refusals are counted in ``raincast_requests_refused_total``.

Every request passes three ASGI middlewares of ours, so no route can forget them: the body
size limit per endpoint (413, sized from the endpoint's row limit), JWT authentication
(`raincast.serving.auth.JWTMiddleware`, which also serves ``POST /auth/token``) and
`raincast.serving.fastpath.FastRoutes`, which answers every JSON ``/predict`` and
``/predict_batch`` body through `raincast.serving.answers` (200, bounded 422, 503) without
the FastAPI request cycle. Large bodies are parsed, validated and scored in a worker
thread, so the event loop that answers ``/livez``, ``/readyz`` and other callers never
waits on them. The FastAPI routes below are the documented contract and answer only what
the fast path does not take (non-JSON content types), with the same bounded errors.

Importing this module does nothing. `create_service(settings)` is the start-up: it checks
the auth settings, sets MLflow's HTTP retry defaults, the JSON logs and the two BentoML
patches (timer, admission), and defines the service class (BentoML fixes workers, traffic
and tracing when a class is decorated, so the class is built from the settings there).
``RainService``, the name `bentoml serve` imports, is the one edge that does work: reading
it builds the service from a fresh `Settings` (environment and ``.env``), once per process.
"""

# No `from __future__ import annotations` here: FastAPI reads a route's annotations when
# the route is declared, and the /predict request model is built per settings inside
# `create_service`, so the annotations must be objects, not names to look up later.

import logging
import os
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar

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
from raincast.serving.backtest import (
    BacktestNotFoundError,
    BacktestResults,
    BacktestUnreadableError,
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
from raincast.serving.runtime import (
    patch_bentoml_admission,
    patch_bentoml_timeout,
    settle_worker,
)
from raincast.serving.schemas import (
    BASE_BODY_BYTES,
    BatchRequest,
    BatchResponse,
    PredictResponse,
    body_limits,
    predict_request_model,
)
from raincast.settings import Settings

log = logging.getLogger("raincast.serving")

T = TypeVar("T")

#: A registry outage must cost a refresh seconds, not MLflow's default minutes of retries
#: (the admin reload would hit the request timeout). Explicit settings win.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: Bodies up to this size are answered on the event loop (a few rows: ~0.1 ms, less than
#: the hop to a worker thread); larger ones in a worker thread.
INLINE_BODY_BYTES = 16 * 1024
#: Requests in flight per worker when ``RAINCAST_API_MAX_CONCURRENCY`` is not set (BentoML
#: divides the service's limit between the workers); beyond it a request is refused with
#: 429 at once instead of queueing. Sized from the measured capacity (see README,
#: benchmarks): 16 per worker keeps a full worker's queue ~10 ms.
CONCURRENCY_PER_WORKER = 16
REQUEST_TIMEOUT_S = 60


def create_service(settings: Settings) -> bentoml.Service[Any]:
    """The API's BentoML service for ``settings``, after the process-wide start-up.

    `AuthConfigError` (no or a weak ``RAINCAST_JWT_SECRET``, a bad token lifetime) comes
    before anything else, so a refused server changes nothing and binds no port."""
    auth = AuthConfig.from_settings(settings)
    limits = body_limits(
        settings.api_max_rows, settings.api_max_batch_rows, settings.api_max_body_bytes
    )
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    configure_json_logs(settings.log_level)
    patch_bentoml_timeout()  # before BentoML builds the app; see raincast.serving.runtime
    patch_bentoml_admission(on_refused=metrics.refused)

    app = _fastapi_app(settings.api_public_prefix)
    service = _service(settings, app)
    max_rows, max_batch_rows = settings.api_max_rows, settings.api_max_batch_rows

    # A 200 names the model that answered in its headers: the one the handler took, so a
    # swap during the request cannot make the header disagree with the body.
    async def fast_predict(body: bytes) -> answers.StampedAnswer:
        """`/predict`: a few rows on the event loop, more in a worker thread."""
        model = _serving_model()
        if len(body) <= INLINE_BODY_BYTES:
            answer = answers.answer_predict(model, body, max_rows)
        else:
            answer = await anyio.to_thread.run_sync(answers.answer_predict, model, body, max_rows)
        return answers.with_model_headers(model, answer)

    async def fast_batch(body: bytes) -> answers.StampedAnswer:
        """`/predict_batch`, always in a worker thread (up to 100k rows)."""
        model = _serving_model()
        answer = await anyio.to_thread.run_sync(answers.answer_batch, model, body, max_batch_rows)
        return answers.with_model_headers(model, answer)

    service.add_asgi_middleware(
        JWTMiddleware,
        config=auth,
        public_paths=(*PUBLIC_PATHS, app.docs_url, app.openapi_url),
        on_auth_failure=metrics.auth_failure,
        on_login=metrics.login,
    )
    service.add_asgi_middleware(BodyLimitMiddleware, limits=limits)
    # Innermost of ours: bodies are already size-checked and the caller authenticated.
    service.add_asgi_middleware(
        FastRoutes, routes={"/predict": fast_predict, "/predict_batch": fast_batch}
    )
    return service


def configure_json_logs(level: str) -> None:
    """The ``raincast`` loggers write JSON lines (the pipeline's fields) at ``level``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())  # the pipeline's: same fields everywhere
    logger = logging.getLogger("raincast")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def tracing_config(settings: Settings) -> dict[str, Any]:
    """BentoML's OpenTelemetry settings: OTLP export when ``otlp_endpoint`` is set (e.g.
    Tempo's http://tempo:4318/v1/traces in compose), else none at all."""
    if settings.otlp_endpoint:
        return {
            "exporter_type": "otlp",
            "sample_rate": settings.trace_sample_rate,
            "excluded_urls": "/livez,/readyz,/metrics",
            "otlp": {"protocol": "http", "endpoint": settings.otlp_endpoint},
        }
    # No exporter: keep BentoML's OpenTelemetry middleware out of the request path (it
    # still builds a span per request at sample rate 0, ~17 % of a /predict).
    return {"sample_rate": 0.0, "excluded_urls": [".*"]}


def _fastapi_app(public_prefix: str) -> FastAPI:
    app = FastAPI(
        title="raincast",
        description="Rain tomorrow in Australia: the registry champion behind a JWT.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    # Behind a path prefix (nginx: /api/ -> /), "Try it out" in the OpenAPI page must
    # call <prefix>/predict: the prefix goes into the spec's servers.
    if prefix := public_prefix.rstrip("/"):
        app.servers = [{"url": prefix}]
    app.exception_handler(RequestValidationError)(_bounded_validation_error)
    return app


def _service(settings: Settings, app: FastAPI) -> bentoml.Service[Any]:
    """The service class: BentoML reads its settings when the class is decorated."""
    predict_request = predict_request_model(settings.api_max_rows)
    max_batch_rows = settings.api_max_batch_rows
    max_concurrency = settings.api_max_concurrency or (
        CONCURRENCY_PER_WORKER * settings.api_worker_count
    )

    @bentoml.asgi_app(app, path="/")
    @bentoml.service(
        name="raincast",
        workers=settings.api_workers,
        traffic={"timeout": REQUEST_TIMEOUT_S, "max_concurrency": max_concurrency},
        tracing=tracing_config(settings),
        logging={"access": {"enabled": settings.api_access_log}},
    )
    class RainService:
        """Loads the champion at start, polls the alias, swaps without downtime."""

        def __init__(self) -> None:
            self.holder = ModelHolder(settings)
            # Monitor reads the raw store read-only (RAINCAST_STORE_URL; compose: the
            # reader role).
            self.monitor = MonitorStore(settings.raw_store_url, settings.model_name)
            # What `raincast backtest` wrote (read-only; RAINCAST_BACKTEST_DIR).
            self.backtests = BacktestResults(settings.backtest_results_dir)
            self._seen_version: str | None = None
            log.info("startup: %s", self.holder.refresh())
            self._observe_model()
            if settings.api_poll_s > 0:
                self.holder.start_polling(settings.api_poll_s)
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
        def predict(self, request: predict_request, response: Response) -> dict[str, Any]:  # type: ignore[valid-type]
            """Rain tomorrow for one or more raw observations (weatherAUS schema, day D).
            The ``X-Model-Version`` (and ``X-Model-Name``) header names the model."""
            # JSON bodies are answered by the fast path before they get here; this route is
            # the documented contract and answers what that one does not take.
            model = self._model()
            response.headers.update(model.header_dict)
            return answers.predictions(model, request)

        @app.post("/predict_batch", response_model=BatchResponse)
        def predict_batch(self, request: BatchRequest) -> Any:
            """Columnar batch (up to RAINCAST_API_MAX_BATCH_ROWS rows) in one call; the
            ``X-Model-Version`` (and ``X-Model-Name``) header names the model."""
            model = self._model()
            status, body = answers.batch_answer(model, request.columns, max_batch_rows)
            headers = model.header_dict if status == 200 else None
            return Response(
                body, status_code=status, media_type="application/json", headers=headers
            )

        @app.get("/model")
        def model_info(self) -> dict[str, Any]:
            """Version, test metrics, threshold and training time of the served model, and
            ``champion_history``: which version was champion from when to when (null, with
            ``champion_history_error``, while the raw store cannot be read)."""
            model = self._model()
            return {
                **model.describe(),
                "last_refresh_error": self.holder.last_error,
                **self.monitor.champion_history(),
            }

        # --- Monitor: read-only views of the raw store (issue 21's contract) -------------------

        @app.get("/monitor/scores")
        def monitor_scores(self, kind: str | None = None) -> dict[str, Any]:
            """Live and/or replayed F1, ROC AUC, calibration per as-of date and window
            (``kind`` live | replayed | all), oldest first."""
            return _monitor(
                lambda: self.monitor.scores(parse_choice("kind", kind, SCORE_KINDS, "all"))
            )

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

        # --- Backtest: the last `raincast backtest`'s results, read-only (issue 20) ---------------

        @app.get("/backtest")
        def backtest(self) -> dict[str, Any]:
            """The last backtest: run metadata, per-policy summary, retrains with their
            decisions, each policy's rolling live scores (thinned) and the plots there are."""
            return _backtest(self.backtests.summary)

        @app.get(
            "/backtest/plots/{name}",
            response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "the plot"}},
        )
        def backtest_plot(self, name: str) -> Response:
            """A backtest plot (PNG): backtest_rolling.png, backtest_retrains.png or
            backtest_compute.png; any other name is 404."""
            png = _backtest(lambda: self.backtests.plot(name))
            return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

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

    return RainService


class BodyLimitMiddleware:
    """413 for bodies over the path's limit (declared or streamed), before any route runs.

    ``limits`` maps a path to its largest body; other paths get ``default``."""

    def __init__(self, app: Any, limits: Mapping[str, int], default: int = BASE_BODY_BYTES) -> None:
        self.app, self.limits, self.default = app, dict(limits), default

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


async def _bounded_validation_error(_: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 without echoing the input and with at most `answers.MAX_ERRORS`."""
    status, body = answers.error_answer(exc.errors())
    return Response(body, status_code=status, media_type="application/json")


def _monitor(answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A Monitor answer; 422 / 503 with the reason instead of a traceback."""
    try:
        return answer()
    except BadQueryError as err:
        raise HTTPException(422, str(err)) from None
    except StoreUnavailableError as err:
        raise HTTPException(503, str(err)) from None


def _backtest(answer: Callable[[], T]) -> T:
    """A Backtest answer; 404 / 500 with the reason instead of a traceback."""
    try:
        return answer()
    except BacktestNotFoundError as err:
        raise HTTPException(404, str(err)) from None
    except BacktestUnreadableError as err:
        raise HTTPException(500, str(err)) from None


def _serving_model() -> LoadedModel | None:
    service: Any = bentoml.get_current_service()  # the RainService instance of this worker
    return service.current_model()


@cache
def _service_from_environment() -> bentoml.Service[Any]:
    return create_service(Settings())


def __getattr__(name: str) -> Any:
    """``RainService``: the service of this process's `Settings`, built on first use
    (`bentoml serve raincast.serving.service:RainService`, once per process)."""
    if name == "RainService":
        return _service_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
