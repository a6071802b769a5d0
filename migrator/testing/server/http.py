"""The HTTP plumbing under the fake vLLM server: a thread a connection, bodies read, replies sent or dropped."""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from migrator.testing.server.replies import _Abort, _Reply
from migrator.testing.server.stats import ServerStats


class _App(Protocol):
    """What the handler needs of the app it serves (``FakeVLLM``)."""

    verbose: bool
    stats: ServerStats
    _local: threading.local  # the connection a handler thread is serving

    def _track(self, sock: socket.socket, add: bool) -> None: ...

    def dispatch(self, method: str, path: str, headers: Any, body: bytes) -> _Reply: ...


def _read_chunked(rfile) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        chunks.append(rfile.read(size))
        rfile.readline()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    server: _HTTPServer  # the server that made this handler (it has the app)

    def setup(self) -> None:
        super().setup()
        # as uvicorn does: without it the header and body writes of a small answer wait out
        # the client's delayed ACK (40 ms each /tokenize), which no real vLLM costs
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.app._track(self.connection, True)
        if isinstance(self.connection, ssl.SSLSocket):
            # TLS mode: the handshake runs here, in this connection's thread, so a
            # client that rejects the certificate (or never speaks TLS) blocks no one.
            try:
                self.connection.do_handshake()
            except BaseException:
                self.server.app._track(self.connection, False)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._track(self.connection, False)

    def log_message(self, fmt: str, *args: Any) -> None:
        if self.server.app.verbose:
            sys.stderr.write("fake-vllm: " + (fmt % args) + "\n")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        app = self.server.app
        try:
            body = self._read_body()
            app._local.conn = self.connection
            reply = app.dispatch(method, urlsplit(self.path).path, self.headers, body)
        except _Abort as abort:
            self._drop(abort)
            return
        app.stats.count_status(reply.status)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (e.g. its timeout fired)
            self.close_connection = True

    def _drop(self, abort: _Abort) -> None:
        """Close the connection without a complete answer."""
        self.close_connection = True
        sock = self.connection
        try:
            if abort.partial:
                self.wfile.write(abort.partial)
            if abort.reset:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # release the makefile() reference first
            sock.close()
        except OSError:
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, app: _App):
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        if self.app.verbose:  # otherwise a client hanging up is not news
            super().handle_error(request, client_address)
