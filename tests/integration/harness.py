"""Shared helpers for spacegate's integration tests.

Everything here is Python standard library plus python3-websockets (Debian's
10.4, asyncio API). Nothing here shares code with the gateway: the origin is
Python's http.server, the clients are raw sockets, http.client, curl and
websockets.

Pieces:
  * Gateway       - writes a config file, starts the real `spacegate` binary,
                    waits for its port, stops it, reads /proc (fds, RSS).
  * Origin        - threaded HTTP/1.1 origin (TCP or unix socket) with test
                    endpoints and counters of connections and requests.
  * WebSocketPeer - websockets echo server on its own thread and loop.
  * RawConn, raw_exchange, parse_responses - raw-socket HTTP client helpers.
  * GatewayTestCase - unittest base class wiring the above together.
  * ControlClient, ControlGatewayTestCase, WebSocketClient, run_ctl,
    parse_metrics - the control API (unix socket or TCP with a token),
    a gateway started with a control socket (and optionally a state dir),
    a blocking raw-socket WebSocket client, the spacegatectl CLI and a
    Prometheus text parser.

Environment:
  SPACEGATE_BINARY   path of the gateway binary
                     (default /work/main/build/proxy/spacegate)
  SPACEGATE_KEEP_TMP if set, temp dirs (configs, gateway logs) are kept
  SPACEGATECTL_BINARY path of the admin CLI
                     (default /work/main/build/control/cli/spacegatectl)
"""

import asyncio
import atexit
import ctypes
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_BINARY = "/work/main/build/proxy/spacegate"
BINARY = os.environ.get("SPACEGATE_BINARY", DEFAULT_BINARY)
DEFAULT_CTL_BINARY = "/work/main/build/control/cli/spacegatectl"
CTL_BINARY = os.environ.get("SPACEGATECTL_BINARY", DEFAULT_CTL_BINARY)
KEEP_TMP = bool(os.environ.get("SPACEGATE_KEEP_TMP"))
LOOPBACK = "127.0.0.1"
MiB = 1024 * 1024


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------

def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05):
    """Poll predicate() until it returns a truthy value or timeout passes.
    Returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def tail(text, limit=4000):
    if len(text) <= limit:
        return text
    return "...[%d bytes cut]...\n%s" % (len(text) - limit, text[-limit:])


def port_refuses(port, host=LOOPBACK, timeout=2.0):
    """True when a TCP connect to host:port is refused (nothing listening)."""
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


# --------------------------------------------------------------------------
# Deterministic body pattern (a prime-length block, so chunk boundaries and
# block boundaries never line up and a reordered block changes the hash)
# --------------------------------------------------------------------------

PATTERN_PERIOD = 65521
_PATTERN_BLOCK = bytes(((i * 131) + (i >> 8) * 7 + 13) & 0xFF
                       for i in range(PATTERN_PERIOD))
_PATTERN_DOUBLE = _PATTERN_BLOCK + _PATTERN_BLOCK


def pattern_slice(offset, length):
    """Bytes [offset, offset+length) of the infinite pattern; length <= PERIOD."""
    assert length <= PATTERN_PERIOD
    start = offset % PATTERN_PERIOD
    return _PATTERN_DOUBLE[start:start + length]


def pattern_chunks(total, chunk=PATTERN_PERIOD):
    """Yield the first `total` bytes of the pattern, in pieces of <= chunk."""
    chunk = min(chunk, PATTERN_PERIOD)
    offset = 0
    while offset < total:
        n = min(chunk, total - offset)
        yield pattern_slice(offset, n)
        offset += n


def pattern_bytes(total):
    return b"".join(pattern_chunks(total))


_pattern_hash_cache = {}


def pattern_sha256(total):
    if total not in _pattern_hash_cache:
        h = hashlib.sha256()
        for piece in pattern_chunks(total):
            h.update(piece)
        _pattern_hash_cache[total] = h.hexdigest()
    return _pattern_hash_cache[total]


# --------------------------------------------------------------------------
# The origin
# --------------------------------------------------------------------------

class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestOrigin/1.0"
    disable_nagle_algorithm = True
    timeout = 300  # a stuck connection dies eventually

    # -- plumbing ---------------------------------------------------------

    @property
    def origin(self):
        return self.server.origin

    def setup(self):
        # TCP_NODELAY only applies to TCP (not to the unix-socket origin).
        self.disable_nagle_algorithm = \
            self.request.family in (socket.AF_INET, socket.AF_INET6)
        super().setup()

    def address_string(self):
        return str(self.client_address)

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def parse_request(self):
        # Count every request line that arrives, even one we cannot parse:
        # the smuggling tests assert that *nothing* reached the origin.
        line = self.raw_requestline
        self.origin._note_request(line)
        ok = super().parse_request()
        if ok:
            self.origin._note_path(self.path, self.command)
            self.origin._note_head(self.raw_requestline, self.headers)
        return ok

    def _dispatch(self):
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def do_HEAD(self):
        self._dispatch()

    # -- body helpers -------------------------------------------------------

    def _is_chunked(self):
        te = ",".join(self.headers.get_all("Transfer-Encoding") or [])
        codings = [c.strip().lower() for c in te.split(",") if c.strip()]
        return bool(codings) and codings[-1] == "chunked"

    def body_chunks(self):
        """Yield the request body, streaming (Content-Length or chunked).
        Sets self.request_trailers for chunked bodies."""
        self.request_trailers = []
        if self._is_chunked():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionResetError("eof in chunk size")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 262144))
                    if not data:
                        raise ConnectionResetError("eof in chunk data")
                    remaining -= len(data)
                    yield data
                crlf = self.rfile.read(2)
                if crlf != b"\r\n":
                    raise ValueError("bad chunk terminator %r" % crlf)
            while True:
                line = self.rfile.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                self.request_trailers.append([name.strip(), value.strip()])
            return
        length = self.headers.get("Content-Length")
        if length is None:
            return
        remaining = int(length)
        while remaining:
            data = self.rfile.read(min(remaining, 262144))
            if not data:
                raise ConnectionResetError("eof in body")
            remaining -= len(data)
            yield data

    def read_body(self):
        return b"".join(self.body_chunks())

    def drain_body(self):
        n = 0
        for piece in self.body_chunks():
            n += len(piece)
        return n

    # -- response helpers --------------------------------------------------

    def _common_headers(self):
        self.send_header("X-Origin-Name", self.origin.name)
        self.send_header("X-Origin-Path", self.path)
        self.send_header("X-Origin-Method", self.command)

    def respond(self, status, body=b"", content_type="text/plain",
                extra_headers=(), close=False):
        self.send_response(status)
        self._common_headers()
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and not no_body and body:
            self.wfile.write(body)

    def respond_json(self, status, obj, extra_headers=()):
        self.respond(status, json.dumps(obj).encode(), "application/json",
                     extra_headers)

    def headers_report(self, body_length=None):
        return {
            "origin": self.origin.name,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "request_line": self.requestline,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_length": body_length,
        }

    # -- endpoints -----------------------------------------------------------

    def _route(self):
        path = self.path
        bare = path.split("?", 1)[0]
        query = path.split("?", 1)[1] if "?" in path else ""
        parts = bare.split("/")

        if bare == "/echo":
            body = self.read_body()
            self.respond(200, body, self.headers.get("Content-Type",
                                                     "application/octet-stream"))
            return

        if bare == "/stream-echo":
            # Content-Length body echoed back while it is still arriving.
            length = int(self.headers.get("Content-Length", "0"))
            self.send_response(200)
            self._common_headers()
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            for piece in self.body_chunks():
                self.wfile.write(piece)
            return

        if bare == "/sha256":
            m = re.search(r"(?:^|&)wait=(\d+)", query)
            if m:  # read the body late: the gateway must apply backpressure
                time.sleep(int(m.group(1)) / 1000.0)
            h = hashlib.sha256()
            n = 0
            for piece in self.body_chunks():
                h.update(piece)
                n += len(piece)
            self.respond_json(200, {
                "sha256": h.hexdigest(), "length": n,
                "chunked": self._is_chunked(),
                "trailers": self.request_trailers,
                "content_length": self.headers.get("Content-Length"),
            })
            return

        if len(parts) == 3 and parts[1] == "bytes":
            n = int(parts[2])
            self.drain_body()
            self.send_response(200)
            self._common_headers()
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                for piece in pattern_chunks(n):
                    self.wfile.write(piece)
            return

        if len(parts) == 3 and parts[1] == "chunked":
            n = int(parts[2])
            trailers = "trailers=1" in query
            self.drain_body()
            self.send_response(200)
            self._common_headers()
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            if trailers:
                self.send_header("Trailer", "X-Body-Sha256")
            self.end_headers()
            if self.command == "HEAD":
                return
            sizes = [1, 7, 100, 4096, 65521, 3000, 16384]
            offset = 0
            i = 0
            while offset < n:
                size = min(sizes[i % len(sizes)], n - offset)
                i += 1
                data = pattern_slice(offset, size)
                offset += size
                self.wfile.write(b"%x\r\n%s\r\n" % (size, data))
            tail_ = b"0\r\n"
            if trailers:
                tail_ += b"X-Body-Sha256: " + pattern_sha256(n).encode() + b"\r\n"
            self.wfile.write(tail_ + b"\r\n")
            return

        if len(parts) == 3 and parts[1] == "slow":
            ms = int(parts[2])
            self.drain_body()
            time.sleep(ms / 1000.0)
            self.respond(200, b"slept %d" % ms)
            return

        if len(parts) == 3 and parts[1] == "status":
            code = int(parts[2])
            self.drain_body()
            self.respond(code, b"status %d\n" % code)
            return

        if bare == "/silent":
            # Read the request, never answer; give up when the test ends.
            self.origin.stop_event.wait(300)
            self.close_connection = True
            return

        if bare == "/close":
            self.drain_body()
            self.respond(200, b"closing\n", close=True)
            return

        if bare == "/close-later":
            # Answer as if keeping the connection alive, then close it
            # shortly after: the gateway's pooled connection goes stale.
            self.drain_body()
            self.respond(200, b"closing later\n")
            self.wfile.flush()
            time.sleep(0.2)
            self.close_connection = True
            return

        if bare == "/drip":
            # Chunked response in pieces with pauses: ?n=3&ms=1000 sends
            # "piece-0", waits, "piece-1", ... A buffering proxy delays all.
            q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            n, ms = int(q.get("n", "3")), int(q.get("ms", "1000"))
            self.drain_body()
            self.send_response(200)
            self._common_headers()
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                if i:
                    time.sleep(ms / 1000.0)
                piece = b"piece-%d\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return

        if bare == "/early-hints":
            self.drain_body()
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\n"
                             b"Link: </style.css>; rel=preload\r\n\r\n")
            self.respond(200, b"after hints\n")
            return

        if len(parts) == 3 and parts[1] == "close-delimited":
            # HTTP/1.1 response with neither Content-Length nor chunked:
            # the body ends when the origin closes the connection.
            n = int(parts[2])
            self.drain_body()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Origin-Name: %s\r\n"
                             b"Content-Type: application/octet-stream\r\n"
                             b"Connection: close\r\n\r\n" % self.origin.name.encode())
            for piece in pattern_chunks(n):
                self.wfile.write(piece)
            self.close_connection = True
            return

        if len(parts) == 3 and parts[1] == "big-response-header":
            n = int(parts[2])
            self.drain_body()
            value = "".join(chr(ord("a") + i % 26) for i in range(n))
            self.respond(200, b"big header\n", extra_headers=[("X-Big-Response", value)])
            return

        if bare == "/drop":
            # Read the request, then close without any response.
            self.drain_body()
            self.close_connection = True
            return

        if bare == "/garbage":
            self.drain_body()
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.close_connection = True
            return

        if bare == "/hop-response":
            self.drain_body()
            self.respond(200, b"hop\n", extra_headers=[
                ("Connection", "X-Resp-Hop"),
                ("X-Resp-Hop", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("X-Origin-Custom", "yes"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/"),
            ])
            return

        # /headers and everything else: report what arrived, as JSON.
        n = self.drain_body()
        self.respond_json(200, self.headers_report(body_length=n))


class _OriginServerMixin:
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def process_request(self, request, client_address):
        self.origin._note_accept()
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.origin._note_close()
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # Broken connections are normal in these tests; record, don't print.
        self.origin.errors.append(repr(sys.exc_info()[1]))


class _TCPOriginServer(_OriginServerMixin, ThreadingHTTPServer):
    pass


class _UnixOriginServer(_OriginServerMixin, socketserver.ThreadingMixIn,
                        socketserver.UnixStreamServer):
    pass


class Origin:
    """A threaded HTTP/1.1 origin on loopback TCP (or a unix socket).

    Counters (read them through the properties; they are thread-safe):
      connections      TCP connections accepted so far
      open_connections connections currently open
      requests         request lines received (parsable or not)
      paths            list of request targets received, in order
    """

    def __init__(self, name="origin", unix_path=None):
        self.name = name
        self.unix_path = unix_path
        self._lock = threading.Lock()
        self._connections = 0
        self._open = 0
        self._requests = 0
        self._paths = []
        self._request_lines = []
        self._heads = []
        self.errors = []
        self.stop_event = threading.Event()
        if unix_path:
            self.server = _UnixOriginServer(unix_path, OriginHandler)
            self.port = None
        else:
            self.server = _TCPOriginServer((LOOPBACK, 0), OriginHandler)
            self.port = self.server.server_address[1]
        self.server.origin = self
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="origin-" + name, daemon=True)
        self._thread.start()

    @property
    def address(self):
        if self.unix_path:
            return "unix:" + self.unix_path
        return "%s:%d" % (LOOPBACK, self.port)

    def _note_accept(self):
        with self._lock:
            self._connections += 1
            self._open += 1

    def _note_close(self):
        with self._lock:
            self._open -= 1

    def _note_request(self, line):
        with self._lock:
            self._requests += 1
            self._request_lines.append(line)

    def _note_path(self, path, method):
        with self._lock:
            self._paths.append(path)

    def _note_head(self, raw_requestline, headers):
        # The request line and every header field as received (latin-1
        # text), for tests that assert something never reached the origin.
        line = raw_requestline.decode("latin-1")
        fields = "".join("%s: %s\r\n" % (k, v) for k, v in headers.items())
        with self._lock:
            self._heads.append(line + fields)

    @property
    def connections(self):
        with self._lock:
            return self._connections

    @property
    def open_connections(self):
        with self._lock:
            return self._open

    @property
    def requests(self):
        with self._lock:
            return self._requests

    @property
    def paths(self):
        with self._lock:
            return list(self._paths)

    @property
    def request_lines(self):
        with self._lock:
            return list(self._request_lines)

    @property
    def heads(self):
        """Every parsed request head received so far (request line plus
        header fields, as text), in order."""
        with self._lock:
            return list(self._heads)

    def stop(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass


class BlackHole:
    """A listening socket that never accepts and never answers: connects
    succeed (kernel backlog), requests go nowhere."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    @property
    def address(self):
        return "%s:%d" % (LOOPBACK, self.port)

    def stop(self):
        self.sock.close()


class StuckConnectUpstream:
    """A listener whose accept queue is full (backlog 0, filled by a few
    connections that are never accepted): further TCP connects to it hang
    in SYN-SENT, so a gateway's upstream connect stays pending until its
    upstream_connect_timeout."""

    def __init__(self, fillers=3):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(fillers):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex((LOOPBACK, self.port))
            self.fillers.append(f)
        time.sleep(0.1)

    @property
    def address(self):
        return "%s:%d" % (LOOPBACK, self.port)

    def stop(self):
        for f in self.fillers:
            f.close()
        self.sock.close()


# --------------------------------------------------------------------------
# WebSocket echo peer
# --------------------------------------------------------------------------

class WebSocketPeer:
    """websockets echo server on its own thread and event loop.

    Paths: anything echoes every message back; "/ws/close" closes at once
    with code 4001, reason "bye"."""

    def __init__(self):
        import websockets  # python3-websockets (Debian 10.4)
        self._websockets = websockets
        self.connections = 0
        self.open = 0
        self.paths = []
        self.request_headers = []  # [(name, value), ...] per upgrade request
        self.port = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ws-peer",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("websocket peer did not start")

    async def _handler(self, ws):
        self.connections += 1
        self.open += 1
        self.paths.append(ws.path)
        self.request_headers.append(list(ws.request_headers.raw_items()))
        try:
            if ws.path.startswith("/ws/close"):
                await ws.close(4001, "bye")
                return
            async for message in ws:
                await ws.send(message)
        except self._websockets.ConnectionClosed:
            pass
        finally:
            self.open -= 1

    def _run(self):
        asyncio.set_event_loop(self._loop)

        async def start():
            return await self._websockets.serve(
                self._handler, LOOPBACK, 0, max_size=None,
                ping_interval=None, compression=None)

        self._server = self._loop.run_until_complete(start())
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    @property
    def address(self):
        return "%s:%d" % (LOOPBACK, self.port)

    def stop(self):
        def _close():
            self._server.close()
        try:
            self._loop.call_soon_threadsafe(_close)
            fut = asyncio.run_coroutine_threadsafe(self._server.wait_closed(),
                                                   self._loop)
            fut.result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# --------------------------------------------------------------------------
# The gateway process
# --------------------------------------------------------------------------

def base_config(port, routes, **overrides):
    """A minimal gateway config: one worker, access log off, given routes.
    Keyword overrides: limits={...} and upstream_pool={...} are merged into
    their sections; anything else replaces the top-level key."""
    config = {
        "listen": ["%s:%d" % (LOOPBACK, port)],
        "workers": 1,
        "access_log": "off",
        "routes": routes,
    }
    for key, value in overrides.items():
        if key in ("limits", "upstream_pool") and isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return config


def route(id, host, upstream, path_prefix="/", strip_prefix=False,
          protocol="http1", **extra):
    r = {"id": id, "host": host, "path_prefix": path_prefix,
         "strip_prefix": strip_prefix, "upstream": upstream,
         "protocol": protocol}
    r.update(extra)
    return r


class GatewayError(AssertionError):
    pass


_live_gateways = set()


def _kill_leftover_gateways():
    for gw in list(_live_gateways):
        try:
            gw.kill()
        except Exception:
            pass


atexit.register(_kill_leftover_gateways)


def _die_with_parent():
    # Runs in the child before exec: if the test process dies (even by
    # SIGKILL, e.g. a runner timeout), the kernel kills the gateway too.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Gateway:
    """The real spacegate binary, run as a subprocess."""

    def __init__(self, config, tmpdir=None, extra_args=(), port=None):
        self.own_tmp = tmpdir is None
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="spacegate-it-")
        self.config = config
        if port is None:
            listen = config.get("listen") or []
            port = int(listen[0].rsplit(":", 1)[1]) if listen else None
        self.port = port
        self.extra_args = list(extra_args)
        self.config_path = os.path.join(self.tmpdir, "config.yaml")
        self.stdout_path = os.path.join(self.tmpdir, "gateway.stdout")
        self.stderr_path = os.path.join(self.tmpdir, "gateway.stderr")
        self.proc = None
        self.returncode = None
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------

    def write_config(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
            f.write("\n")

    def start(self, timeout=10.0):
        if not os.path.exists(BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % BINARY)
        self.write_config()
        self.starts += 1
        mode = "w" if self.starts == 1 else "a"
        self._out = open(self.stdout_path, mode + "b")
        self._err = open(self.stderr_path, mode + "b")
        self.proc = subprocess.Popen(
            [BINARY, "--config", self.config_path] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            cwd=self.tmpdir, preexec_fn=_die_with_parent)
        _live_gateways.add(self)
        self.returncode = None
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise GatewayError(
                    "gateway exited with code %s during start-up\n"
                    "command: %s\nconfig:\n%s\nstderr:\n%s" % (
                        rc, " ".join(self.proc.args),
                        json.dumps(self.config, indent=2),
                        tail(self.stderr())))
            try:
                socket.create_connection((LOOPBACK, self.port),
                                         timeout=1.0).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise GatewayError(
                    "gateway did not accept on %s:%d within %.0f s\nstderr:\n%s"
                    % (LOOPBACK, self.port, timeout, tail(self.stderr())))
            time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for exit; returns the exit code or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout)
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15.0):
        """SIGTERM and wait; SIGKILL after timeout. Returns the exit code
        (negative for death by signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                self.kill()
        self.returncode = self.proc.poll()
        self._close_files()
        _live_gateways.discard(self)
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.returncode = self.proc.poll() if self.proc else None
        self._close_files()
        _live_gateways.discard(self)

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    def cleanup(self):
        self.kill()
        if self.own_tmp and not KEEP_TMP:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- observation ---------------------------------------------------------

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def fd_targets(self):
        """{fd: readlink target} for the gateway's open descriptors."""
        out = {}
        base = "/proc/%d/fd" % self.pid
        for name in os.listdir(base):
            try:
                out[int(name)] = os.readlink(os.path.join(base, name))
            except OSError:
                pass
        return out

    def status_kib(self, field):
        """A field of /proc/PID/status in KiB, e.g. VmRSS or VmHWM."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def rss_mib(self):
        return self.status_kib("VmRSS") / 1024.0

    def hwm_mib(self):
        return self.status_kib("VmHWM") / 1024.0

    def threads(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return None


def run_gateway_once(config_path, args=(), timeout=15):
    """Run the binary to completion (for --check and bad-config cases).
    Returns CompletedProcess with text stdout/stderr."""
    if not os.path.exists(BINARY):
        raise unittest.SkipTest("gateway binary not found: %s" % BINARY)
    try:
        return subprocess.run([BINARY, "--config", config_path] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        # It started and kept running: report that as the "exit code".
        def text(v):
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
        return subprocess.CompletedProcess(
            e.cmd, "still running after %d s (killed)" % timeout,
            text(e.stdout), text(e.stderr))


# --------------------------------------------------------------------------
# Raw HTTP client helpers
# --------------------------------------------------------------------------

class Response:
    def __init__(self, version, status, reason, headers, body, trailers=None,
                 chunked=False, raw_head=b""):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value), in order
        self.body = body
        self.trailers = trailers or []
        self.chunked = chunked
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_token(self, name, token):
        values = ",".join(self.header_all(name)).lower()
        return token.lower() in [t.strip() for t in values.split(",")]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes %r>" % (
            self.status, self.reason, self.headers, len(self.body),
            self.body[:200])


class IncompleteResponse(Exception):
    pass


class _Reader:
    """Buffered reader over a socket (or over fixed bytes)."""

    def __init__(self, sock=None, data=b""):
        self.sock = sock
        self.buf = bytearray(data)
        self.eof = sock is None
        self.seen = bytearray(data[:1 << 20])  # first MiB received, for messages

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        if len(self.seen) < (1 << 20):
            self.seen += data[:(1 << 20) - len(self.seen)]
        return True

    def read_until(self, delim, limit=1 << 20):
        while True:
            idx = self.buf.find(delim)
            if idx >= 0:
                out = bytes(self.buf[:idx + len(delim)])
                del self.buf[:idx + len(delim)]
                return out
            if len(self.buf) > limit:
                raise IncompleteResponse("line too long")
            if not self._fill():
                raise IncompleteResponse(
                    "eof before %r; have %r" % (delim, bytes(self.buf[:200])))

    def read_exact(self, n, sink=None):
        """Read n bytes; with sink, pass pieces to it instead of returning."""
        parts = []
        while n:
            if not self.buf and not self._fill():
                raise IncompleteResponse("eof with %d body bytes missing" % n)
            take = min(n, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            n -= take
            if sink:
                sink(piece)
            else:
                parts.append(piece)
        return b"".join(parts)

    def read_to_eof(self, sink=None):
        parts = []
        while True:
            if self.buf:
                piece = bytes(self.buf)
                self.buf.clear()
                if sink:
                    sink(piece)
                else:
                    parts.append(piece)
            if not self._fill():
                break
        return b"".join(parts)

    def at_eof(self):
        """True if no buffered bytes and the peer has closed (may block
        up to the socket timeout)."""
        if self.buf:
            return False
        return not self._fill()


def _read_response(reader, method="GET", sink=None):
    """Read one response (skipping 1xx interim responses unless the status is
    101). Body is returned unless sink is given (then it gets the pieces)."""
    while True:
        head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].decode("latin-1")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", status_line)
        if not m:
            raise IncompleteResponse("bad status line %r" % status_line)
        version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
        headers = []
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise IncompleteResponse("bad header line %r" % line)
            headers.append((name, value.strip()))
        resp = Response(version, status, reason, headers, b"", raw_head=head)
        if 100 <= status < 200 and status != 101:
            continue  # interim response
        break
    if method == "HEAD" or status in (204, 304) or status == 101:
        return resp
    te = ",".join(resp.header_all("Transfer-Encoding")).lower()
    if te:
        if [c.strip() for c in te.split(",")][-1] != "chunked":
            raise IncompleteResponse("response with TE not ending in chunked")
        resp.chunked = True
        parts = []
        while True:
            line = reader.read_until(b"\r\n")
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            data = reader.read_exact(size, sink)
            if not sink:
                parts.append(data)
            if reader.read_exact(2) != b"\r\n":
                raise IncompleteResponse("bad chunk terminator")
        while True:
            line = reader.read_until(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            resp.trailers.append((name.strip(), value.strip()))
        resp.body = b"".join(parts)
        return resp
    cl = resp.header_all("Content-Length")
    if cl:
        resp.body = reader.read_exact(int(cl[0]), sink)
        return resp
    resp.body = reader.read_to_eof(sink)
    return resp


def parse_responses(data, methods=None):
    """Parse every complete response in `data` (bytes). Returns
    (responses, leftover_error_or_None)."""
    reader = _Reader(data=data)
    out = []
    i = 0
    while reader.buf:
        method = (methods[i] if methods and i < len(methods) else "GET")
        try:
            out.append(_read_response(reader, method))
        except (IncompleteResponse, ValueError) as e:
            return out, e
        i += 1
    return out, None


def connect(port, timeout=10.0, host=LOOPBACK):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(sock, timeout=5.0, limit=64 * MiB):
    """Read until the peer closes or `timeout` passes without the close.
    Returns (data, closed, elapsed_seconds)."""
    start = time.monotonic()
    deadline = start + timeout
    chunks = []
    total = 0
    closed = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not data:
            closed = True
            break
        chunks.append(data)
        total += len(data)
        if total > limit:
            break
    return b"".join(chunks), closed, time.monotonic() - start


def raw_exchange(port, data, timeout=5.0, shut_write=False):
    """Open a connection, send `data`, read until close or timeout.
    Returns (bytes_received, closed_by_peer, elapsed)."""
    s = connect(port, timeout=timeout)
    try:
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_close(s, timeout)
    finally:
        s.close()


def raw_response(port, data, timeout=10.0, method="GET"):
    """Open a connection, send `data`, read ONE response (returning as soon
    as it is complete, whether or not the connection stays open).
    Returns (Response or None, error or None, elapsed, raw bytes received)."""
    start = time.monotonic()
    c = RawConn(port, timeout=timeout)
    try:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            resp = c.response(method, timeout=timeout)
            return resp, None, time.monotonic() - start, bytes(c.reader.seen)
        except (IncompleteResponse, OSError, ValueError) as e:
            return None, e, time.monotonic() - start, bytes(c.reader.seen)
    finally:
        c.close()


class RawConn:
    """One client connection; write raw bytes, read responses one by one."""

    def __init__(self, port, timeout=10.0):
        self.sock = connect(port, timeout)
        self.reader = _Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, path, host="app.test", headers=(), body=None,
                version="HTTP/1.1"):
        self.send(build_request(method, path, host, headers, body, version))

    def response(self, method="GET", sink=None, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        return _read_response(self.reader, method, sink)

    def roundtrip(self, method, path, host="app.test", headers=(), body=None):
        self.request(method, path, host, headers, body)
        return self.response(method)

    def closed_by_peer(self, timeout=3.0):
        """True if the peer closes (EOF/RST) within timeout with no further
        bytes; False if it stays open. Raises if unexpected bytes arrive."""
        self.sock.settimeout(timeout)
        if self.reader.buf:
            raise AssertionError("unexpected bytes: %r" % bytes(self.reader.buf[:200]))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if data:
            raise AssertionError("unexpected bytes: %r" % data[:200])
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method, path, host="app.test", headers=(), body=None,
                  version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, path, version)]
    if host is not None:
        lines.append("Host: " + host)
    names = {k.lower() for k, _ in headers}
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None and "content-length" not in names and \
            "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def chunk_encode(pieces, trailers=()):
    out = bytearray()
    for p in pieces:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers:
        out += ("%s: %s\r\n" % (k, v)).encode()
    out += b"\r\n"
    return bytes(out)


def http_get(port, path, host="app.test", headers=None, timeout=15.0,
             method="GET", body=None):
    """One request on a fresh http.client connection.
    Returns (status, headers list, body bytes)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        h = {"Host": host}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheaders(), data
    finally:
        conn.close()


def curl(args, timeout=120):
    """Run curl; returns CompletedProcess (bytes)."""
    return subprocess.run(["curl", "-sS"] + list(args), capture_output=True,
                          timeout=timeout)


def short_text_body_problem(resp):
    """None if resp carries a short text error body, else a description."""
    if not resp.body:
        return "empty body"
    if len(resp.body) > 2048:
        return "body is %d bytes, expected a short text" % len(resp.body)
    ctype = (resp.header("Content-Type") or "").lower()
    if ctype and not ctype.startswith("text/"):
        return "Content-Type %r is not text/*" % ctype
    try:
        resp.body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8 text: %r" % resp.body[:100]
    return None


# --------------------------------------------------------------------------
# unittest base class
# --------------------------------------------------------------------------

class GatewayTestCase(unittest.TestCase):
    """Starts an origin (and optionally a WebSocket peer) and one gateway for
    the class. Subclasses override make_config(cls) and may set
    WITH_WEBSOCKET = True. If a test leaves the gateway dead, that test fails
    with the gateway's stderr and the next test gets a fresh gateway."""

    WITH_WEBSOCKET = False
    HOST = "app.test"

    @classmethod
    def make_config(cls):
        return base_config(cls.gateway_port,
                           [route("r1", cls.HOST, cls.origin.address)])

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % BINARY)
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        cls.origin = Origin("origin")
        cls.ws_peer = WebSocketPeer() if cls.WITH_WEBSOCKET else None
        cls.gateway_port = free_port()
        cls.extra_setup()
        cls.gateway = Gateway(cls.make_config(), tmpdir=cls.tmpdir)
        try:
            cls.gateway.start()
        except Exception:
            cls._teardown_resources()
            raise
        cls.port = cls.gateway_port

    @classmethod
    def extra_setup(cls):
        pass

    @classmethod
    def extra_teardown(cls):
        pass

    @classmethod
    def _teardown_resources(cls):
        gw = getattr(cls, "gateway", None)
        if gw is not None:
            gw.stop()
        cls.extra_teardown()
        if cls.ws_peer is not None:
            cls.ws_peer.stop()
        cls.origin.stop()
        if not KEEP_TMP:
            shutil.rmtree(cls.tmpdir, ignore_errors=True)
        else:
            print("kept temp dir %s" % cls.tmpdir, file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        cls._teardown_resources()

    def setUp(self):
        if not self.gateway.alive():
            # An earlier test killed it; give this test a fresh one.
            self.gateway.start()

    def tearDown(self):
        if not self.gateway.alive():
            rc = self.gateway.proc.poll()
            self.fail("gateway died during this test (exit code %s); stderr:\n%s"
                      % (rc, tail(self.gateway.stderr())))

    # -- conveniences ------------------------------------------------------

    def get(self, path, host=None, headers=None, method="GET", body=None,
            timeout=15.0):
        return http_get(self.port, path, host or self.HOST, headers, timeout,
                        method, body)

    def raw(self, data, timeout=5.0):
        return raw_exchange(self.port, data, timeout)

    def settle_origin(self, expected_requests=None, timeout=1.0):
        """Give in-flight forwarded requests time to land at the origin."""
        if expected_requests is None:
            time.sleep(timeout)
            return self.origin.requests
        return wait_until(lambda: self.origin.requests >= expected_requests,
                          timeout) and self.origin.requests

    def gateway_context(self):
        return "\n--- gateway stderr (tail) ---\n%s" % tail(self.gateway.stderr(), 2000)


# --------------------------------------------------------------------------
# The control API: client, gateway test case, spacegatectl, metrics parser
# --------------------------------------------------------------------------

class ControlClient:
    """A blocking client of the gateway's control API, on its unix socket or
    on TCP (address=(host, port), with token= for `Authorization: Bearer`).
    One connection per request (`Connection: close`); replies are harness
    Response objects (status, headers, body, json())."""

    def __init__(self, socket_path=None, address=None, token=None,
                 timeout=30.0):
        assert socket_path or address, "a socket path or a TCP address"
        self.socket_path = socket_path
        self.address = address
        self.token = token
        self.timeout = timeout

    def where(self):
        if self.socket_path:
            return "unix:" + self.socket_path
        return "%s:%d" % tuple(self.address)

    def connect(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        if self.socket_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(self.socket_path)
            except OSError:
                s.close()
                raise
            return s
        return socket.create_connection(tuple(self.address), timeout=timeout)

    def send_raw(self, data, method="GET", timeout=None):
        """Send raw bytes on a fresh connection and read ONE response."""
        s = self.connect(timeout)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return _read_response(_Reader(s), method)
        finally:
            s.close()

    @staticmethod
    def encode_body(body):
        if body is None or isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode("utf-8")
        return json.dumps(body).encode("utf-8")

    def request(self, method, path, body=None, headers=(), token=True,
                timeout=None):
        """method path [body]; body may be bytes, str or anything JSON.
        token=True sends the client's token (if any), a string sends that,
        None sends no Authorization header."""
        data = self.encode_body(body)
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost",
                 "Connection: close", "User-Agent: spacegate-integration-test"]
        bearer = self.token if token is True else token
        if bearer:
            lines.append("Authorization: Bearer %s" % bearer)
        names = {k.lower() for k, _ in headers}
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        if data is not None:
            if "content-type" not in names:
                lines.append("Content-Type: application/json")
            if "content-length" not in names and \
                    "transfer-encoding" not in names:
                lines.append("Content-Length: %d" % len(data))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return self.send_raw(head + (data or b""), method, timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    # -- conveniences that expect success --------------------------------

    def _ok_json(self, resp, what, status=200):
        if resp.status != status:
            raise AssertionError("%s on %s: expected %d, got %d: %r"
                                 % (what, self.where(), status, resp.status,
                                    resp.body[:500]))
        return resp.json()

    def routes(self):
        """GET /routes as JSON: {"version": N, "routes": [...]}."""
        return self._ok_json(self.get("/routes"), "GET /routes")

    def version(self):
        return self.routes()["version"]

    def stats(self):
        return self._ok_json(self.get("/stats"), "GET /stats")

    def metrics_text(self):
        resp = self.get("/metrics")
        if resp.status != 200:
            raise AssertionError("GET /metrics: %d %r" % (resp.status, resp.body[:300]))
        return resp.body.decode("utf-8")

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def put_routes(self, routes, version=None):
        """PUT /routes (version: current + 1 unless given). Returns Response."""
        if version is None:
            version = self.version() + 1
        return self.put("/routes", {"version": version, "routes": list(routes)})

    def patch_routes(self, upsert=None, delete=None, version=None):
        if version is None:
            version = self.version() + 1
        body = {"version": version}
        if upsert is not None:
            body["upsert"] = list(upsert)
        if delete is not None:
            body["delete"] = list(delete)
        return self.patch("/routes", body)

    def must(self, resp, what="control write"):
        """Assert a write was accepted (200); returns its JSON."""
        return self._ok_json(resp, what)

    def wait_snapshot(self, version=None, timeout=30.0):
        """Wait until /stats route_table.snapshot_version reaches `version`
        (default: the current table version). Returns True when it did."""
        if version is None:
            version = self.version()
        return bool(wait_until(
            lambda: self.stats()["route_table"]["snapshot_version"] >= version,
            timeout, interval=0.05))


def control_config(port, routes, socket_path=None, state_dir=None,
                   control=None, **overrides):
    """base_config plus the control section (socket and any other keys)
    and, when given, state_dir."""
    section = {}
    if socket_path:
        section["socket"] = socket_path
    section.update(control or {})
    if section:
        overrides["control"] = section
    if state_dir:
        overrides["state_dir"] = state_dir
    return base_config(port, routes, **overrides)


def wait_for_socket(path, timeout=10.0):
    return wait_until(lambda: os.path.exists(path), timeout)


class ControlGatewayTestCase(GatewayTestCase):
    """GatewayTestCase with the control API on a unix socket in the class's
    temp dir, and (STATE_DIR = True) a state dir. The config has no routes
    unless config_routes() returns some, so the table starts at version 0.
    self.api is a ControlClient on the socket."""

    STATE_DIR = False
    CONTROL = {}   # more keys of the config's `control` section
    WORKERS = 1

    @classmethod
    def config_routes(cls):
        return []

    @classmethod
    def make_config(cls):
        cls.control_socket = os.path.join(cls.tmpdir, "control.sock")
        cls.state_dir = os.path.join(cls.tmpdir, "state") if cls.STATE_DIR else None
        return control_config(cls.gateway_port, cls.config_routes(),
                              socket_path=cls.control_socket,
                              state_dir=cls.state_dir, control=dict(cls.CONTROL),
                              workers=cls.WORKERS)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api = ControlClient(cls.control_socket)
        if not wait_for_socket(cls.control_socket):
            cls._teardown_resources()
            raise GatewayError("control socket %s did not appear" % cls.control_socket)


def run_ctl(args, socket_path=None, timeout=60):
    """Run spacegatectl [--socket PATH] ARGS... to completion.
    Returns CompletedProcess with text stdout/stderr."""
    if not os.path.exists(CTL_BINARY):
        raise unittest.SkipTest("spacegatectl binary not found: %s" % CTL_BINARY)
    command = [CTL_BINARY]
    if socket_path:
        command += ["--socket", socket_path]
    command += list(args)
    return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def describe_run(proc):
    return "command: %s\nexit code: %s\nstdout:\n%s\nstderr:\n%s" % (
        " ".join(proc.args), proc.returncode, tail(proc.stdout, 3000),
        tail(proc.stderr, 3000))


class Metrics:
    """Parsed Prometheus text: samples[(name, ((label, value), ...))] = float,
    types[name] = "counter" | "gauge" | "histogram", problems = bad lines."""

    def __init__(self):
        self.samples = {}
        self.order = []
        self.types = {}
        self.helps = {}
        self.problems = []

    def get(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def series(self, name):
        """[(labels dict, value)] of every sample of `name`, in text order."""
        return [(dict(key[1]), self.samples[key]) for key in self.order
                if key[0] == name]


_METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$')
_METRIC_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_metrics(text):
    out = Metrics()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3].strip() if len(parts) > 3 else ""
            elif len(parts) >= 3 and parts[1] == "HELP":
                out.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            out.problems.append("line %d: %r" % (number, line))
            continue
        name, label_text, value_text = m.group(1), m.group(2) or "", m.group(3)
        labels = {}
        rest = label_text
        while rest:
            lm = _METRIC_LABEL.match(rest)
            if not lm:
                out.problems.append("line %d: bad labels %r" % (number, label_text))
                break
            labels[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        try:
            value = float(value_text)
        except ValueError:
            out.problems.append("line %d: bad value %r" % (number, line))
            continue
        key = (name, tuple(sorted(labels.items())))
        if key in out.samples:
            out.problems.append("line %d: duplicate sample %r" % (number, line))
        out.samples[key] = value
        out.order.append(key)
    return out


# --------------------------------------------------------------------------
# A blocking WebSocket client (raw socket, RFC 6455 framing)
# --------------------------------------------------------------------------

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketClosed(Exception):
    pass


class WebSocketClient:
    """One WebSocket through the gateway, driven synchronously so a test can
    interleave it with control API calls. echo() sends and waits for the
    peer's echo; wait_closed() tells whether the connection ends."""

    def __init__(self, port, host, path="/", timeout=15.0, headers=()):
        import base64
        self.host = host
        self.path = path
        self.sock = connect(port, timeout)
        self.reader = _Reader(self.sock)
        key = base64.b64encode(os.urandom(16)).decode()
        request = build_request("GET", path, host, [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
            + list(headers))
        try:
            self.sock.sendall(request)
            self.response = _read_response(self.reader)
        except Exception:
            self.sock.close()
            raise
        if self.response.status != 101:
            self.sock.close()
            raise AssertionError("WebSocket upgrade for %s%s answered %r"
                                 % (host, path, self.response))
        accept = base64.b64encode(hashlib.sha1(
            (key + WEBSOCKET_GUID).encode()).digest()).decode()
        if self.response.header("Sec-WebSocket-Accept") != accept:
            self.sock.close()
            raise AssertionError("bad Sec-WebSocket-Accept: %r" % self.response)
        self.closed = False

    def send(self, message, opcode=None):
        payload = message.encode("utf-8") if isinstance(message, str) else message
        if opcode is None:
            opcode = 1 if isinstance(message, str) else 2
        head = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += n.to_bytes(2, "big")
        else:
            head.append(0x80 | 127)
            head += n.to_bytes(8, "big")
        mask = os.urandom(4)
        head += mask
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(head) + masked)

    def _frame(self, timeout):
        self.sock.settimeout(timeout)
        try:
            b0, b1 = self.reader.read_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self.reader.read_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self.reader.read_exact(8), "big")
            mask = self.reader.read_exact(4) if b1 & 0x80 else None
            payload = self.reader.read_exact(n)
        except IncompleteResponse as e:
            self.closed = True
            raise WebSocketClosed("connection closed (%s)" % e)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.closed = True
            raise WebSocketClosed("connection reset (%s)" % e)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return b0 & 0x80, b0 & 0x0F, payload

    def recv(self, timeout=15.0):
        """The next message (str for text, bytes for binary). Raises
        WebSocketClosed when the connection ends, socket.timeout if nothing
        comes in time."""
        parts = []
        kind = None
        while True:
            fin, opcode, payload = self._frame(timeout)
            if opcode == 8:
                self.closed = True
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                raise WebSocketClosed("close frame, code %s" % code)
            if opcode == 9:
                try:
                    self.send(payload, opcode=10)
                except OSError:
                    pass
                continue
            if opcode == 10:
                continue
            if opcode in (1, 2):
                kind = opcode
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode("utf-8") if kind == 1 else data

    def echo(self, message, timeout=15.0):
        """Send, and return what comes back (the echo peer sends it back)."""
        self.send(message)
        return self.recv(timeout)

    def wait_closed(self, timeout):
        """True if the connection ends (EOF, reset or a close frame) within
        `timeout` seconds; False if it is still open."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.recv(remaining)
            except WebSocketClosed:
                return True
            except socket.timeout:
                return False

    def close(self):
        if not self.closed:
            try:
                self.send(b"\x03\xe8", opcode=8)
            except OSError:
                pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# Access tokens: keys and tokens made by the real CLI (`spacegatectl token
# keygen` / `token sign`); tampering and forging done here in Python
# --------------------------------------------------------------------------

def b64url_encode(data):
    """base64url without padding (the token's alphabet)."""
    import base64
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text):
    import base64
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split_token(token):
    """`v1.<payload>.<signature>` -> (payload dict, payload part, signature
    bytes)."""
    version, payload_part, signature_part = token.split(".")
    assert version == "v1", token
    return (json.loads(b64url_decode(payload_part)), payload_part,
            b64url_decode(signature_part))


def join_token(payload, signature):
    """A token from a payload (dict, JSON text or bytes) and a signature
    (bytes). The signature is NOT recomputed."""
    if isinstance(payload, dict):
        payload = json.dumps(payload, separators=(",", ":"))
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return "v1.%s.%s" % (b64url_encode(payload), b64url_encode(signature))


def tamper_token(token, **changes):
    """The token with payload fields changed (None deletes a field) and its
    original signature kept: a forgery."""
    payload, _, signature = split_token(token)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return join_token(payload, signature)


def ed25519_available():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401
        return True
    except ImportError:
        return False


class TokenKey:
    """A key pair written by `spacegatectl token keygen --kid KID --out
    PREFIX` (PREFIX.key, PREFIX.pub). sign() runs `spacegatectl token sign`;
    sign_payload() signs any payload bytes in Python (python3-cryptography),
    for tokens the CLI cannot make (oversized, odd fields)."""

    def __init__(self, directory, kid, name=None):
        if not os.path.exists(CTL_BINARY):
            raise unittest.SkipTest("spacegatectl binary not found: %s" % CTL_BINARY)
        self.kid = kid
        self.prefix = os.path.join(directory, name or kid)
        proc = subprocess.run([CTL_BINARY, "token", "keygen", "--kid", kid,
                               "--out", self.prefix],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise AssertionError("token keygen failed:\n%s" % describe_run(proc))
        self.key_path = self.prefix + ".key"
        self.pub_path = self.prefix + ".pub"
        with open(self.pub_path) as f:
            self.public = json.load(f)          # {"kid", "public_key"}
        with open(self.key_path) as f:
            self.private = json.load(f)         # plus "private_key"
        self.public_key = self.public["public_key"]

    def entry(self):
        """{"kid", "public_key"} as the config and the control API take it."""
        return {"kid": self.kid, "public_key": self.public_key}

    def sign(self, sub, gs, scopes=(), ttl=None, aud=None, iat=None, exp=None,
             key_path=None):
        args = [CTL_BINARY, "token", "sign", "--key", key_path or self.key_path,
                "--sub", sub, "--gs", gs]
        if ttl is not None:
            args += ["--ttl", ttl]
        for scope in scopes:
            args += ["--scope", scope]
        if aud is not None:
            args += ["--aud", aud]
        if iat is not None:
            args += ["--iat", str(int(iat))]
        if exp is not None:
            args += ["--exp", str(int(exp))]
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise AssertionError("token sign failed:\n%s" % describe_run(proc))
        token = proc.stdout.strip()
        if not token.startswith("v1.") or token.count(".") != 2:
            raise AssertionError("token sign printed %r" % proc.stdout)
        return token

    def key_file_with_kid(self, kid):
        """A copy of this private key file naming another kid: the CLI then
        signs tokens that claim `kid` with this key."""
        path = "%s-as-%s.key" % (self.prefix, kid)
        data = dict(self.private)
        data["kid"] = kid
        with open(path, "w") as f:
            json.dump(data, f)
        os.chmod(path, 0o600)
        return path

    def sign_payload(self, payload):
        """v1 token over any payload (dict, JSON text or bytes), signed in
        Python with this key. SkipTest without python3-cryptography."""
        try:
            from cryptography.hazmat.primitives.asymmetric import ed25519
        except ImportError:
            raise unittest.SkipTest("python3-cryptography is not installed")
        if isinstance(payload, dict):
            payload = json.dumps(payload, separators=(",", ":"))
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        # BoringSSL's 64-byte private key is seed (32) || public key (32).
        seed = b64url_decode(self.private["private_key"])[:32]
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        signed_part = "v1." + b64url_encode(payload)
        return signed_part + "." + b64url_encode(key.sign(signed_part.encode("ascii")))


def auth_section(keys=(), files=(), login_url=None, cookie_name=None):
    """The config's `auth:` section: `keys` go inline ({kid, public_key}),
    `files` as {file: PATH.pub}."""
    section = {"public_keys": [k.entry() for k in keys] +
               [{"file": k.pub_path} for k in files]}
    if login_url is not None:
        section["login_url"] = login_url
    if cookie_name is not None:
        section["cookie_name"] = cookie_name
    return section


UNAUTHORIZED_BODY = b"401 Unauthorized: authentication required\n"
WWW_AUTHENTICATE = 'Bearer realm="spacegate"'


def main():
    unittest.main(verbosity=2)
