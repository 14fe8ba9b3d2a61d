"""Batch-job observability for every `raincast <step>` command: one OpenTelemetry span,
JSON logs carrying its trace id, and gauges pushed to a Prometheus Pushgateway.

Pushgateway grouping key ``job=<step>``; every push carries
``raincast_job_duration_seconds`` and, on success only, ``raincast_job_last_success_
timestamp_seconds`` (a failure pushes ``raincast_job_last_failure_timestamp_seconds``
with POST semantics, so the last success survives and staleness stays visible). Step
values (rows, model scores, drift share, live metrics) are added with `record()`.

Everything is off unless the caller passes it (the CLI passes its `Settings`:
``RAINCAST_PUSHGATEWAY_URL`` e.g. ``http://127.0.0.1:9091``, ``RAINCAST_OTLP_ENDPOINT`` for
OTLP/HTTP traces, ``RAINCAST_LOG_FORMAT=json``, ``RAINCAST_RUN_ID``); nothing here reads
the environment. A monitoring outage never fails the job: it is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_values: list[tuple[str, str, dict[str, str], float]] = []
_tracer_ready = False


def record(name: str, value: float, doc: str = "", **labels: str) -> None:
    """Add a gauge to the current job's push (name must start with ``raincast_``)."""
    if not name.startswith("raincast_"):
        raise ValueError(f"metric {name!r} must use the raincast_ prefix")
    _values.append((name, doc or name, labels, float(value)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace id (empty when not tracing)."""

    def format(self, record: logging.LogRecord) -> str:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "trace_id": format(ctx.trace_id, "032x") if ctx.trace_id else "",
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """One stderr handler on the root logger; ``log_format`` json: one JSON object a line."""
    handler = logging.StreamHandler()
    if log_format.lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configure_tracing(endpoint: str, service_name: str = "raincast-pipeline") -> None:
    """Install an OTLP exporter to ``endpoint`` (once per process); empty: no tracing."""
    global _tracer_ready
    if _tracer_ready or not endpoint:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _tracer_ready = True


@contextlib.contextmanager
def job(
    step: str, *, pushgateway_url: str = "", otlp_endpoint: str = "", run_id: str = ""
) -> Iterator[None]:
    """Span + timing + push around one pipeline step. Empty ``pushgateway_url`` /
    ``otlp_endpoint``: no push / no exporter; ``run_id`` (the orchestrator's) tags the span."""
    from opentelemetry import trace

    configure_tracing(otlp_endpoint)
    _values.clear()
    t0 = time.time()
    ok = False
    with trace.get_tracer("raincast").start_as_current_span(f"raincast.{step}") as span:
        span.set_attribute("raincast.step", step)
        if run_id:
            span.set_attribute("raincast.run_id", run_id)
        try:
            yield
            ok = True
        except SystemExit as done:  # typer.Exit / sys.exit: code 0 and 99 (skip) are fine
            ok = done.code in (None, 0, 99)
            raise
        except BaseException as err:  # the click.exceptions.Exit typer raises included
            ok = getattr(err, "exit_code", 1) in (0, 99)
            raise
        finally:
            span.set_attribute("raincast.ok", ok)
            push(step, time.time() - t0, ok, pushgateway_url)
            provider = trace.get_tracer_provider()
            if hasattr(provider, "force_flush"):
                provider.force_flush(5000)


def push(step: str, duration_s: float, ok: bool, url: str) -> bool:
    """Push this job's gauges to the Pushgateway at ``url``; False when ``url`` is empty,
    or (logged) when the push fails."""
    if not url:
        return False
    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.exposition import push_to_gateway, pushadd_to_gateway

    registry = CollectorRegistry()
    Gauge("raincast_job_duration_seconds", "Wall time of the last run", registry=registry).set(
        duration_s
    )
    stamp = (
        "raincast_job_last_success_timestamp_seconds"
        if ok
        else ("raincast_job_last_failure_timestamp_seconds")
    )
    Gauge(stamp, "Unix time the last run ended", registry=registry).set(time.time())
    gauges: dict[str, Any] = {}
    for name, doc, labels, value in _values if ok else []:
        if name not in gauges:
            gauges[name] = Gauge(name, doc, sorted(labels), registry=registry)
        (gauges[name].labels(**labels) if labels else gauges[name]).set(value)
    try:
        # Success replaces the job's group; failure only adds, keeping the last success.
        (push_to_gateway if ok else pushadd_to_gateway)(url, job=step, registry=registry, timeout=5)
    except OSError as err:
        log.warning("pushgateway %s unreachable (%s); metrics of %s not pushed", url, err, step)
        return False
    return True
