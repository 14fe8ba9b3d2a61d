"""nginx.conf, run for real: a copy with the upstream hosts pointed at local fake servers
(compose service names do not resolve here) and pid/log/temp paths in a temp folder, served
by the machine's nginx on a free loopback port."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import REPO, find_binary, free_port, require_binary

NGINX_CONF = REPO / "nginx.conf"
#: upstream name -> (compose service, port): what nginx.conf must proxy to.
UPSTREAMS = {
    "api": "api:3000",
    "streamlit": "streamlit:8501",
    "mlflow": "mlflow:5000",
    "airflow": "airflow-apiserver:8080",
    "grafana": "grafana:3000",
}
SECURITY_HEADERS = (
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Content-Security-Policy",
)
MAX_BODY = 32 * 1024 * 1024


# --- rendering -------------------------------------------------------------------------


def nginx_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
    return tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())  # type: ignore[union-attr]


def render(text: str, tmp: Path, listen: int, upstream_ports: dict[str, int], binary: str) -> Path:
    """A runnable copy of ``text``: every upstream server -> 127.0.0.1:<port>, listen on
    loopback, pid / logs / temp files under ``tmp``, no `user` switch unless root."""
    hosts = {v.split(":")[0]: k for k, v in UPSTREAMS.items()}

    def server(m: re.Match[str]) -> str:
        return f"server 127.0.0.1:{upstream_ports[hosts[m['host']]]};"

    text, n = re.subn(r"server (?P<host>[a-z-]+):\d+(?: resolve)?;", server, text)
    assert n >= len(UPSTREAMS), "an upstream server line was not rendered"
    text = re.sub(r"^user \S+;", "user root;" if os.geteuid() == 0 else "", text, flags=re.M)
    text = re.sub(r"^pid \S+;", f"pid {tmp}/nginx.pid;", text, flags=re.M)
    text = re.sub(r"error_log \S+", f"error_log {tmp}/error.log", text)
    text = re.sub(r"access_log /dev/stdout", f"access_log {tmp}/access.log", text)
    text = re.sub(r"listen 80 ", f"listen 127.0.0.1:{listen} ", text)
    text = re.sub(r"listen 443 ssl", f"listen 127.0.0.1:{free_port()} ssl", text)
    if not Path("/etc/nginx/mime.types").exists():
        text = text.replace("include /etc/nginx/mime.types;", "")
    if nginx_version(binary) < (1, 25, 1):  # `http2 on;` is newer than the test machine's nginx
        text = re.sub(r"\n\s*http2 on;", "", text)
    temp = "".join(
        f"    {kind}_temp_path {tmp}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_test(binary: str, conf: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-t", "-p", str(tmp), "-e", str(tmp / "startup.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def tls_block(text: str) -> str:
    """The commented TLS server of nginx.conf, uncommented."""
    block = re.search(r"# BEGIN TLS.*?\n(\s*# server \{.*?)\n\s*# END TLS", text, re.S)
    assert block, "nginx.conf has a commented `server { listen 443 ssl; ... }` block"
    return "\n".join(re.sub(r"^\s*# ?", "", line) for line in block[1].splitlines())


def locations(server: str) -> list[str]:
    return re.findall(r"^\s*location\s+([^{]+?)\s*\{", server, re.MULTILINE)


# --- fake upstreams and a real nginx ---------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body_bytes: int


class FakeUpstream:
    """An HTTP server on 127.0.0.1 answering 200 JSON to everything, recording requests."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.seen.append(
                    Seen(self.command, self.path, dict(self.headers.items()), len(body))
                )
                reply = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Proxy:
    port: int
    api: FakeUpstream
    ui: FakeUpstream
    tmp: Path
    log: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    return require_binary("nginx", "the reverse proxy under test")


@pytest.fixture
def proxy(nginx_bin: str, tmp_path: Path) -> Iterator[Proxy]:
    """nginx.conf running on loopback; /api/ goes to one fake server, everything else to
    another. nginx is stopped at the end, also when the test fails."""
    api, ui = FakeUpstream(), FakeUpstream()
    ports = {name: ui.port for name in UPSTREAMS} | {"api": api.port}
    port = free_port()
    conf = render(NGINX_CONF.read_text(), tmp_path, port, ports, nginx_bin)
    out = (tmp_path / "nginx.out").open("w")
    proc = subprocess.Popen(
        [
            nginx_bin,
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "startup.log"),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                logs = [p.read_text() for p in tmp_path.glob("*.log")]
                pytest.fail(f"nginx did not start (exit {proc.poll()}): {logs}")
            time.sleep(0.05)
        yield Proxy(port, api, ui, tmp_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        out.close()
        api.stop()
        ui.stop()


# --- static checks ---------------------------------------------------------------------


def test_config_routes_to_the_compose_services() -> None:
    text = NGINX_CONF.read_text()
    found = dict(re.findall(r"upstream (\S+) \{[^}]*?server ([a-z-]+:\d+)", text))
    assert found == UPSTREAMS
    assert re.search(r"^\s*server_tokens off;", text, re.M)
    assert re.search(r"^\s*client_max_body_size 32m;", text, re.M)
    assert re.search(r"^\s*limit_req_status 429;", text, re.M)
    http_server = text.split("# BEGIN TLS")[0]
    assert "Strict-Transport-Security" not in http_server, "HSTS only over TLS"
    assert "Strict-Transport-Security" in tls_block(text)


def test_nginx_t_accepts_the_config(nginx_bin: str, tmp_path: Path) -> None:
    conf = render(
        NGINX_CONF.read_text(), tmp_path, free_port(), dict.fromkeys(UPSTREAMS, 1), nginx_bin
    )
    proc = nginx_test(nginx_bin, conf, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_nginx_t_rejects_a_broken_config(nginx_bin: str, tmp_path: Path) -> None:
    broken = NGINX_CONF.read_text().replace("client_max_body_size 32m;", "client_max_body_size;")
    conf = render(broken, tmp_path, free_port(), dict.fromkeys(UPSTREAMS, 1), nginx_bin)
    assert nginx_test(nginx_bin, conf, tmp_path).returncode != 0


def test_the_commented_tls_server_is_valid_and_mirrors_the_http_server(
    nginx_bin: str, tmp_path: Path
) -> None:
    openssl = find_binary("openssl")
    if openssl is None:
        pytest.skip("`openssl` not installed (makes the test certificate)")
    text = NGINX_CONF.read_text()
    tls = tls_block(text)
    http_server = text.split("# BEGIN TLS")[0]
    assert locations(tls) == locations(http_server.split("    server {", 1)[1])
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=x",
            "-keyout",
            str(certs / "privkey.pem"),
            "-out",
            str(certs / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    enabled = text.replace(text[text.index("    # BEGIN TLS") : text.index("# END TLS")], tls)
    enabled = enabled.replace("/etc/nginx/certs/", f"{certs}/")
    conf = render(enabled, tmp_path, free_port(), dict.fromkeys(UPSTREAMS, 1), nginx_bin)
    proc = nginx_test(nginx_bin, conf, tmp_path)
    assert proc.returncode == 0, proc.stderr


# --- behaviour of a running nginx ------------------------------------------------------


def test_api_prefix_is_stripped_and_client_headers_forwarded(proxy: Proxy) -> None:
    resp = proxy.request("GET", "/api/model", headers={"Host": "raincast.example"})
    assert resp.status == 200
    seen = proxy.api.seen[-1]
    assert seen.path == "/model"
    assert seen.headers["Host"] == "raincast.example"
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert "Connection" not in seen.headers, "keep-alive to the API (no Connection: close)"
    assert proxy.request("GET", "/api/docs").status == 200
    assert proxy.api.paths()[-1] == "/api/docs"  # FastAPI serves its docs under /api/
    assert proxy.ui.seen == []


def test_security_headers_on_every_response(proxy: Proxy) -> None:
    for path, status in (("/", 200), ("/api/livez", 200), ("/metrics", 404)):
        resp = proxy.request("GET", path)
        assert resp.status == status, path
        for header in SECURITY_HEADERS:
            assert resp.getheader(header), f"{header} missing on {path}"
        assert resp.getheader("Strict-Transport-Security") is None
        assert resp.getheader("Server") == "nginx", "server_tokens off: no version"
    ui_csp = proxy.request("GET", "/").getheader("Content-Security-Policy") or ""
    assert "connect-src 'self' ws: wss:" in ui_csp  # Streamlit's websocket
    api_csp = proxy.request("GET", "/api/model").getheader("Content-Security-Policy") or ""
    assert api_csp.startswith("default-src 'none'")


def test_body_over_32_mib_is_refused_with_413(proxy: Proxy) -> None:
    resp = proxy.request("POST", "/api/predict_batch", body=b"x" * (MAX_BODY + 1))
    assert resp.status == 413
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    assert proxy.api.seen == [], "the API never sees the oversized body"
    assert proxy.request("POST", "/api/predict_batch", body=b"x" * 1024).status == 200
    assert proxy.api.seen[-1].body_bytes == 1024


def test_a_burst_to_the_api_gets_429s(proxy: Proxy) -> None:
    start = time.monotonic()
    statuses = [proxy.request("GET", "/api/livez").status for _ in range(40)]
    refills = 10 * (time.monotonic() - start)  # rate=10r/s
    assert set(statuses) == {200, 429}
    assert statuses[0] == 200
    assert 21 <= statuses.count(200) <= 21 + refills + 1  # 1 + burst 20, + what trickled in
    assert len(proxy.api.seen) == statuses.count(200)
    rejected = proxy.request("GET", "/api/livez")
    assert rejected.status == 429
    assert rejected.getheader("Content-Security-Policy")


def test_password_logins_have_a_slower_bucket(proxy: Proxy) -> None:
    statuses = [proxy.request("POST", "/api/auth/token", body=b"{}").status for _ in range(10)]
    assert statuses.count(200) <= 7 and statuses.count(429) >= 3
    assert set(proxy.api.paths()) == {"/auth/token"}


def test_metrics_are_never_exposed(proxy: Proxy) -> None:
    for path in (
        "/api/metrics",
        "/api/metrics?x=1",
        "/api//metrics",
        "/metrics",
        "/grafana/metrics",
    ):
        assert proxy.request("GET", path).status == 404, path
    assert proxy.api.seen == [] and proxy.ui.seen == []


def test_streamlit_gets_the_websocket_upgrade(proxy: Proxy) -> None:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    proxy.request("GET", "/_stcore/stream", headers=headers)
    seen = proxy.ui.seen[-1]
    assert seen.path == "/_stcore/stream"
    assert seen.headers["Upgrade"] == "websocket"
    assert seen.headers["Connection"].lower() == "upgrade"


def test_other_areas_route_with_their_prefixes(proxy: Proxy) -> None:
    proxy.request("GET", "/mlflow/ajax-api/2.0/mlflow/experiments/search")
    proxy.request("GET", "/airflow/api/v2/monitor/health")
    proxy.request("GET", "/grafana/api/health")
    assert proxy.ui.paths() == [
        "/ajax-api/2.0/mlflow/experiments/search",  # MLflow: prefix stripped
        "/airflow/api/v2/monitor/health",  # Airflow: base_url keeps /airflow
        "/grafana/api/health",  # Grafana: serve_from_sub_path keeps /grafana
    ]
    redirect = proxy.request("GET", "/mlflow")
    assert redirect.status == 301 and redirect.getheader("Location") == "/mlflow/"
