"""The API worker's GC settings and the fixed BentoML request timer (raincast.serving.runtime)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from typing import Any

import bentoml
import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from raincast.serving import runtime


@pytest.fixture
def patched() -> Iterator[None]:
    original = TimeoutMiddleware.__call__
    assert runtime.patch_bentoml_timeout()
    yield
    TimeoutMiddleware.__call__ = original  # type: ignore[method-assign]


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(5)
    await _ok_app(scope, receive, send)


async def _call(middleware: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware({"type": "http", "method": "GET", "path": "/"}, receive, send)
    return sent


def _live_timers(loop: asyncio.AbstractEventLoop) -> int:
    return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]


def test_finished_requests_leave_no_timer_behind(patched: None) -> None:
    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        middleware = TimeoutMiddleware(_ok_app, timeout=60)
        last: list[dict[str, Any]] = []
        for _ in range(200):
            last = await _call(middleware)
        return _live_timers(asyncio.get_running_loop()), last

    live, sent = asyncio.run(scenario())
    assert live == 0  # BentoML 1.4.39 unpatched leaves 200 timers alive for 60 s
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]


def test_unpatched_middleware_keeps_one_timer_per_request() -> None:
    """The bug being fixed, shown on the original method (guards against an upstream fix
    making the patch pointless, and against the test above passing vacuously)."""
    original = getattr(TimeoutMiddleware, "unpatched_call", TimeoutMiddleware.__call__)
    assert original is not runtime._timeout_call
    unpatched = type("Unpatched", (TimeoutMiddleware,), {"__call__": original})

    async def scenario() -> int:
        middleware = unpatched(_ok_app, timeout=60)
        for _ in range(50):
            await _call(middleware)
        return _live_timers(asyncio.get_running_loop())

    assert asyncio.run(scenario()) == 50


def test_slow_request_still_gets_504_after_the_timeout(patched: None) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        sent = await _call(TimeoutMiddleware(_slow_app, timeout=0.05))
        await asyncio.sleep(0.01)  # the cancelled app unwinds (its own sleep timer goes)
        return sent, _live_timers(asyncio.get_running_loop())

    sent, live = asyncio.run(scenario())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in body
    assert live == 0


def test_patch_is_skipped_with_a_warning_when_bentoml_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = TimeoutMiddleware.__call__
    monkeypatch.delattr(TimeoutMiddleware, "_set_timer_out")
    with caplog.at_level(logging.WARNING, logger="raincast.serving"):
        assert runtime.patch_bentoml_timeout() is False
    assert TimeoutMiddleware.__call__ is original
    assert "request timers stay uncancelled" in caplog.text


def test_patch_was_copied_from_the_installed_bentoml() -> None:
    """uv.lock and the copy move together: a BentoML upgrade fails here first."""
    assert bentoml.__version__ == runtime.PATCHED_BENTOML_VERSION


def test_patch_refuses_another_bentoml_version(monkeypatch: pytest.MonkeyPatch) -> None:
    original = TimeoutMiddleware.__call__
    monkeypatch.setattr(bentoml, "__version__", "1.4.40")
    with pytest.raises(runtime.BentoMLVersionError) as info:
        runtime.patch_bentoml_timeout()
    assert "bentoml 1.4.40 is installed" in str(info.value)
    assert f"copy from bentoml {runtime.PATCHED_BENTOML_VERSION}" in str(info.value)
    assert TimeoutMiddleware.__call__ is original  # nothing was patched


def test_settle_worker_freezes_the_start_up_heap() -> None:
    kept = [object() for _ in range(10)]
    try:
        runtime.settle_worker()
        assert gc.get_freeze_count() > 1000  # pytest + bentoml's imports, at least
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
    del kept


# --- admission ----------------------------------------------------------------------------


def _http(path: str = "/predict") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path}


async def _answer(app: Any, path: str = "/predict") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_http(path), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_admission_refuses_beyond_the_limit_at_once_and_counts_it() -> None:
    refused: list[int] = []
    release = asyncio.Event()

    async def held(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await _ok_app(scope, receive, send)

    async def scenario() -> list[tuple[int, dict[bytes, bytes], bytes]]:
        admission = runtime.Admission(held, max_concurrency=2, on_refused=lambda: refused.append(1))
        first = [asyncio.create_task(_answer(admission)) for _ in range(2)]
        await asyncio.sleep(0)
        assert admission.in_flight == 2
        third = await asyncio.wait_for(_answer(admission), 0.5)  # not queued behind the two
        health = asyncio.create_task(_answer(admission, "/readyz"))  # bypasses the limit
        await asyncio.sleep(0)
        release.set()
        done = [*(await asyncio.gather(*first)), third, await health]
        assert admission.in_flight == 0
        assert (await _answer(admission))[0] == 200  # a free slot again
        return done

    answers = asyncio.run(scenario())
    assert [a[0] for a in answers] == [200, 200, 429, 200]
    _, headers, body = answers[2]
    assert headers[b"retry-after"] == b"1" and body == runtime.REFUSED_BODY
    assert refused == [1]


def test_admission_frees_the_slot_of_a_request_that_failed() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def scenario() -> int:
        admission = runtime.Admission(broken, max_concurrency=1)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await _answer(admission)
        return admission.in_flight

    assert asyncio.run(scenario()) == 0


def test_bentoml_builds_the_service_app_with_admission_outermost() -> None:
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.server.http.traffic import MaxConcurrencyMiddleware

    original = ServiceAppFactory.__dict__["middlewares"]

    @bentoml.service(name="admission-probe", traffic={"timeout": 5, "max_concurrency": 6})
    class Probe:
        @bentoml.api
        def ping(self) -> str:
            return "pong"

    try:
        assert runtime.patch_bentoml_admission()
        assert runtime.patch_bentoml_admission()  # idempotent: wraps BentoML's, not itself
        Probe.inject_config()
        stack = ServiceAppFactory(Probe).middlewares
    finally:
        ServiceAppFactory.middlewares = original
    classes = [layer.cls for layer in stack]
    assert classes[0] is runtime.Admission and MaxConcurrencyMiddleware not in classes
    assert stack[0].kwargs["max_concurrency"] == 6
    assert "/readyz" in runtime.Admission(_ok_app, **stack[0].kwargs).skip_paths
