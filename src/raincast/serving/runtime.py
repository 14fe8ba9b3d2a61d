"""Keep the API worker's latency tail short: no long garbage-collection pauses, and
refusals under overload that cost almost nothing.

Measured under `make bench` load (1-row ``/predict``, c=16, ~1,300 req/s): the worker's
full (generation 2) collections took 300-460 ms every ~10 s and set the p99. Two causes,
two fixes, both applied once per worker process (`settle_worker` once the service has
started, `patch_bentoml_timeout` by `raincast.serving.service.create_service`):

* **Start-up heap.** BentoML, FastAPI, pandas, MLflow and XGBoost leave ~1M long-lived
  objects that every full collection walks again. `settle_worker` collects once and then
  `gc.freeze()`s them (CPython's documented tool for this), so later full collections
  only walk what was allocated after start-up.
* **BentoML's request timer.** ``TimeoutMiddleware`` (bentoml 1.4.39,
  ``traffic={"timeout": ...}``) schedules ``loop.call_later(timeout, ...)`` for every
  request and never cancels it: each finished request leaves a timer handle and a future
  alive for the full timeout (60 s here, ~80k requests' worth at this rate), and they all
  reach the oldest generation. `patch_bentoml_timeout` gives the middleware the same
  behaviour with the timer cancelled when the request ends (a cancelled handle drops its
  references at once). Worth reporting upstream. The copy is tied to one BentoML release
  (`PATCHED_BENTOML_VERSION`): on any other the patch refuses (`BentoMLVersionError`,
  so the API does not start) until the copy has been compared with that release's
  middleware; if the private class is not where it is expected on that release, the patch
  is skipped with a warning and nothing else changes.
* **Admission.** BentoML checks ``traffic.max_concurrency`` behind its metrics and timeout
  middlewares, so under overload each 429 cost ~0.3 ms of the one event loop and the
  refusals crowded out the admitted requests (make bench: admitted p95 4.5x the
  at-capacity p95, refusals' p99 44 ms). `patch_bentoml_admission` makes BentoML build the
  service's app with `Admission` outermost in its place: the same limit per worker, the
  same skipped paths, the same 429 body plus ``Retry-After``, counted in a raincast metric
  because BentoML's request metrics no longer see refusals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger("raincast.serving")

#: The BentoML release whose ``TimeoutMiddleware.__call__`` `_timeout_call` was copied from.
PATCHED_BENTOML_VERSION: Final = "1.4.39"


class BentoMLVersionError(RuntimeError):
    """The installed BentoML is not the release the timeout patch was copied from."""


def settle_worker() -> None:
    """Collect once, then move every surviving object out of the collector's sight."""
    gc.collect()
    gc.freeze()


async def _timeout_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
    # bentoml.._internal.server.http.traffic.TimeoutMiddleware.__call__ (1.4.39), with the
    # timer handle kept and cancelled in `finally`. Same 504 body on timeout.
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    from starlette.responses import JSONResponse

    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"},
                    status_code=504,
                )
                await resp(scope, receive, send)
        else:
            await fut
    finally:
        timer.cancel()


def patch_bentoml_timeout() -> bool:
    """Install `_timeout_call` on BentoML's TimeoutMiddleware; False (and a warning) when
    the class is not the one this was written against.

    Raises `BentoMLVersionError` when the installed BentoML is not
    `PATCHED_BENTOML_VERSION`: a copied private method must be re-checked, not trusted."""
    import bentoml

    installed = str(bentoml.__version__)
    if installed != PATCHED_BENTOML_VERSION:
        raise BentoMLVersionError(
            f"raincast.serving.runtime.patch_bentoml_timeout replaces BentoML's "
            f"TimeoutMiddleware.__call__ with a copy from bentoml {PATCHED_BENTOML_VERSION}, "
            f"but bentoml {installed} is installed: compare `_timeout_call` with that "
            f"release's TimeoutMiddleware, then update PATCHED_BENTOML_VERSION (or drop the "
            f"patch if the release cancels its timer itself)"
        )
    try:
        from bentoml._internal.server.http.traffic import TimeoutMiddleware
    except ImportError:
        log.warning("bentoml TimeoutMiddleware not found; request timers stay uncancelled")
        return False
    if not callable(getattr(TimeoutMiddleware, "_set_timer_out", None)):
        log.warning("bentoml TimeoutMiddleware changed; request timers stay uncancelled")
        return False
    if TimeoutMiddleware.__call__ is not _timeout_call:
        TimeoutMiddleware.unpatched_call = TimeoutMiddleware.__call__  # type: ignore[attr-defined]
        TimeoutMiddleware.__call__ = _timeout_call  # type: ignore[method-assign]
    return True


# --- admission: the concurrency limit, checked before anything else -----------------------

#: The 429 of `Admission`: BentoML's body and status, plus when to try again.
REFUSED_BODY: Final = b'{"error":"Too many requests"}'
_REFUSED_START: Final = {
    "type": "http.response.start",
    "status": 429,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(REFUSED_BODY)).encode()),
        (b"retry-after", b"1"),
    ],
}
_REFUSED_BODY_MESSAGE: Final = {"type": "http.response.body", "body": REFUSED_BODY}


class Admission:
    """Pure-ASGI middleware: at most ``max_concurrency`` requests in flight, the rest 429.

    BentoML's ``MaxConcurrencyMiddleware`` with the same arguments and answer, placed
    outermost instead of behind BentoML's metrics and timeout middlewares: a refusal then
    costs the event loop a counter check and two sends instead of ~0.3 ms, so under
    overload the refusals no longer crowd out the admitted requests (see README,
    benchmarks: overload)."""

    def __init__(
        self,
        app: Any,
        max_concurrency: int,
        skip_paths: list[str] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        from bentoml._internal.server.http.traffic import MaxConcurrencyMiddleware

        self.app, self.max_concurrency = app, max_concurrency
        self.skip_paths = frozenset([*(skip_paths or []), *MaxConcurrencyMiddleware.BYPASS_PATHS])
        self.on_refused = on_refused
        self.in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.skip_paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            if self.on_refused is not None:
                self.on_refused()
            await send(_REFUSED_START)
            await send(_REFUSED_BODY_MESSAGE)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def patch_bentoml_admission(on_refused: Callable[[], None] | None = None) -> bool:
    """Make BentoML build its services' apps with `Admission` outermost in place of its
    ``MaxConcurrencyMiddleware`` (same limit per worker, same skipped paths); False (and a
    warning) when BentoML's app factory is not the one this was written against."""
    try:
        from _bentoml_impl.server.app import ServiceAppFactory
        from bentoml._internal.server.http.traffic import MaxConcurrencyMiddleware
        from starlette.middleware import Middleware
    except ImportError:
        log.warning("bentoml ServiceAppFactory not found; its own concurrency limit stays")
        return False
    current = ServiceAppFactory.__dict__.get("middlewares")
    if not isinstance(current, property) or current.fget is None:
        log.warning("bentoml ServiceAppFactory changed; its own concurrency limit stays")
        return False
    original = getattr(current.fget, "unpatched", current.fget)

    def middlewares(self: Any) -> list[Any]:
        stack = list(original(self))
        for i, layer in enumerate(stack):
            if layer.cls is MaxConcurrencyMiddleware:
                del stack[i]
                return [Middleware(Admission, **layer.kwargs, on_refused=on_refused), *stack]
        return stack

    middlewares.unpatched = original  # type: ignore[attr-defined]
    ServiceAppFactory.middlewares = property(middlewares)
    return True
