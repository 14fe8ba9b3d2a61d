"""statsd_exporter stand-in for the stack test (Debian packages no statsd_exporter).

Listens for StatsD lines on UDP, maps them with the mapping file prom/statsd-exporter reads
(the subset observability/statsd-mapping.yml uses: glob matches with `*` per dotted part,
`$n` in labels, per-mapping or default observer type, histogram buckets) and serves
/metrics. Timers arrive in ms and are exported in seconds, as statsd_exporter does;
counters get the `_total` suffix from prometheus_client. Unmapped names: dots and dashes
become underscores.
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass
class Mapping:
    pattern: re.Pattern[str]
    name: str
    labels: dict[str, str]
    observer: str
    buckets: list[float] | None


def load_mappings(path: str) -> list[Mapping]:
    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    defaults = doc.get("defaults", {})
    out = []
    for m in doc.get("mappings", []):
        parts = [re.escape(p).replace(r"\*", "([^.]*)") for p in m["match"].split(".")]
        hist = m.get("histogram_options") or defaults.get("histogram_options") or {}
        out.append(
            Mapping(
                re.compile("^" + r"\.".join(parts) + "$"),
                m["name"],
                {k: str(v) for k, v in (m.get("labels") or {}).items()},
                m.get("observer_type", defaults.get("observer_type", "summary")),
                hist.get("buckets"),
            )
        )
    return out


class Exporter:
    def __init__(self, mappings: list[Mapping], registry: CollectorRegistry) -> None:
        self.mappings = mappings
        self.registry = registry
        self.metrics: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()

    def _metric(self, kind: str, name: str, labels: dict[str, str], buckets: Any) -> Any:
        metric = self._family(kind, name, tuple(sorted(labels)), buckets)
        return metric.labels(**labels) if labels else metric

    def _family(self, kind: str, name: str, labels: tuple[str, ...], buckets: Any) -> Any:
        key = (kind, name)
        if key not in self.metrics:
            doc = f"statsd metric {name}"
            if kind == "counter":
                self.metrics[key] = Counter(name, doc, labels, registry=self.registry)
            elif kind == "gauge":
                self.metrics[key] = Gauge(name, doc, labels, registry=self.registry)
            else:
                kw = {"buckets": buckets} if buckets else {}
                self.metrics[key] = Histogram(name, doc, labels, registry=self.registry, **kw)
        return self.metrics[key]

    def handle(self, line: str) -> None:
        try:
            name, rest = line.split(":", 1)
            fields = rest.split("|")
            raw, kind = fields[0], fields[1]
            rate = next((float(f[1:]) for f in fields[2:] if f.startswith("@")), 1.0)
        except (ValueError, IndexError):
            return
        mapped_name = re.sub(r"[^a-zA-Z0-9_]", "_", name)
        labels: dict[str, str] = {}
        buckets = None
        for m in self.mappings:
            hit = m.pattern.match(name)
            if hit:
                mapped_name = m.name
                labels = {
                    k: re.sub(r"\$(\d+)", lambda g, h=hit: h.group(int(g.group(1))), v)
                    for k, v in m.labels.items()
                }
                buckets = m.buckets
                break
        value = float(raw)
        with self.lock:
            if kind == "c":
                base = mapped_name.removesuffix("_total")
                self._metric("counter", base, labels, None).inc(value / rate)
            elif kind == "g":
                gauge = self._metric("gauge", mapped_name, labels, None)
                if raw[0] in "+-":
                    gauge.inc(value)
                else:
                    gauge.set(value)
            elif kind in ("ms", "h", "d"):
                seconds = value / 1000.0 if kind == "ms" else value
                self._metric("histogram", mapped_name, labels, buckets).observe(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--statsd.mapping-config", dest="mapping", required=True)
    parser.add_argument("--statsd.listen-udp", dest="udp", default=":9125")
    parser.add_argument("--web.listen-address", dest="web", default=":9102")
    args = parser.parse_args()
    registry = CollectorRegistry()
    exporter = Exporter(load_mappings(args.mapping), registry)
    host, port = args.web.rsplit(":", 1)
    start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    uhost, uport = args.udp.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((uhost or "0.0.0.0", int(uport)))
    print(f"statsd-exporter stand-in: udp {args.udp}, metrics on {args.web}", flush=True)
    while True:
        data, _ = sock.recvfrom(65535)
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                try:
                    exporter.handle(line.strip())
                except ValueError as err:  # e.g. one name used as two metric types
                    print(f"dropped {line.strip()!r}: {err}", flush=True)


if __name__ == "__main__":
    main()
