"""A loopback TCP relay a test can cut and restore: an outage of the service behind it
without touching that service (moto keeps its buckets, MLflow its connections' far end).

``down()`` closes the listening socket (new connections are refused, as by a stopped
server) and resets the open ones; ``up()`` listens again on the same port.
``trip_on(b"...")`` makes the relay go down by itself the first time a client sends those
bytes, e.g. the key of one object in the middle of an upload.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

_CHUNK = 65536


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._pattern: bytes | None = None
        self.port = 0
        #: Set when a ``trip_on`` pattern was seen (and the relay went down).
        self.tripped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        """Listen (again, on the same port once one was chosen) and relay."""
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            sock.settimeout(0.2)  # the accept loop notices `down()` within 0.2 s
            self.port = sock.getsockname()[1]
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            # shutdown first: it stops the listening at once, even while the accept loop
            # still polls this socket (a bare close would wait for that poll to return).
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            _reset(conn)

    def trip_on(self, pattern: bytes) -> None:
        """Go down the first time a client sends ``pattern`` (it is not forwarded)."""
        self.tripped.clear()
        self._pattern = pattern

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by down()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    _reset(client)
                    _reset(server)
                    return
                self._conns |= {client, server}
            pair = _Pair(client, server)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, outbound: bool) -> None:
        src, dst = (pair.client, pair.server) if outbound else (pair.server, pair.client)
        tail = b""
        try:
            while data := src.recv(_CHUNK):
                pattern = self._pattern
                if outbound and pattern is not None:
                    if pattern in tail + data:
                        self._pattern = None
                        self.tripped.set()
                        self.down()
                        return
                    tail = data[-(len(pattern) - 1) :] if len(pattern) > 1 else b""
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the EOF on; the other direction may go on
        except OSError:
            self._forget(pair, reset=True)
            return
        if pair.direction_ended():
            self._forget(pair, reset=False)

    def _forget(self, pair: _Pair, reset: bool) -> None:
        with self._lock:
            self._conns -= {pair.client, pair.server}
        for sock in (pair.client, pair.server):
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()


class _Pair:
    """The two sockets of one relayed connection; closed once both directions ended."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self._ended = 0
        self._lock = threading.Lock()

    def direction_ended(self) -> bool:
        """Record one direction's EOF; True when it was the second."""
        with self._lock:
            self._ended += 1
            return self._ended == 2


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), waking any thread blocked in recv on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
