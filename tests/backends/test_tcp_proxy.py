"""The outage relay itself: it forwards, refuses while down, comes back on the same port,
and trips on a request it is told to watch for (no backends needed)."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.backends.tcp_proxy import TcpProxy


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like boto3 and requests

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def relay() -> Iterator[TcpProxy]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = TcpProxy(server.server_address[1])
    proxy.up()
    yield proxy
    proxy.down()
    server.shutdown()


def _put(proxy: TcpProxy, path: str, size: int = 300_000) -> int:
    req = urllib.request.Request(proxy.url + path, data=b"x" * size, method="PUT")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return len(resp.read())


def test_relay_forwards_refuses_while_down_and_returns_on_the_same_port(
    relay: TcpProxy,
) -> None:
    port = relay.port
    assert _put(relay, "/a") == 300_000
    relay.down()
    with pytest.raises(urllib.error.URLError) as err:
        _put(relay, "/a")
    assert isinstance(err.value.reason, ConnectionRefusedError)
    relay.up()
    assert relay.port == port
    assert _put(relay, "/b") == 300_000


def test_relay_trips_on_a_watched_request_and_stays_down(relay: TcpProxy) -> None:
    relay.trip_on(b"/bucket/secret.bin HTTP/1.1")
    assert _put(relay, "/bucket/other.bin") == 300_000
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _put(relay, "/bucket/secret.bin")
    assert relay.tripped.is_set() and not relay.is_up
    with pytest.raises(urllib.error.URLError):
        _put(relay, "/bucket/other.bin")
    relay.up()
    assert _put(relay, "/bucket/secret.bin") == 300_000  # tripped once only
