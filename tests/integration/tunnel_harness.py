"""Helpers for the tunnel tests (tunnel_test.py, ssh_test.py,
websocket_scale_test.py): origins that speak raw bytes after a 101 or a
CONNECT, and clients that open tunnels through the gateway.

Nothing here shares code with the gateway. The origins are plain blocking
sockets, one thread per connection:

  * TunnelOrigin(http=True) reads an HTTP/1.1 Upgrade request, answers 101
    (with the right Sec-WebSocket-Accept) and then treats the connection as
    raw bytes; the path chooses what it does: /<mode>?tag=...&n=...
  * TunnelOrigin(http=False, mode=...) is a raw TCP port (what CONNECT and
    the WebSocket tunnel endpoint reach) with one fixed mode.

Modes (what the origin does with the bytes after the handshake):
  echo            every byte back; on EOF, shutdown(SHUT_WR) and close
  duplex          send n random bytes while reading to EOF, both hashed
  sink_then_send  read to EOF, then send "eof-seen <count> <sha256>\\n" and
                  n random bytes, then close (the client half-closed first)
  send_then_sink  send "origin-first\\n" and n random bytes, shutdown(SHUT_WR),
                  then read to EOF (the origin half-closes first)
  reset           read in the background, send n bytes, then close with
                  SO_LINGER 0 (a TCP reset)
  hold            read to EOF or reset, send nothing

Every connection leaves a Record (bytes and sha256 both ways, the first
64 KiB received, how and when the reading side ended) in origin.records.
"""

import base64
import hashlib
import os
import socket
import struct
import subprocess
import threading
import time
import unittest
from urllib.parse import parse_qs, urlsplit

import harness as h

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHUNK = 256 * 1024


def set_linger_zero(sock):
    """close() after this sends a TCP reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_close(sock):
    try:
        set_linger_zero(sock)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def websocket_accept(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def parse_head(head):
    """b"HTTP/1.1 200 OK\\r\\nA: b\\r\\n\\r\\n" -> (status, reason, [(name, value)])."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError("bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError("bad header line %r" % line)
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def header(headers, name, default=None):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return default


def read_head(sock, limit=65536):
    """Read up to the end of an HTTP head. Returns (head, bytes after it).
    Raises EOFError if the peer closes first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > limit:
            raise ValueError("head over %d bytes" % limit)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise EOFError("connection closed before the end of the head; got %r"
                           % buf[:300])
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end], buf[end:]


# --------------------------------------------------------------------------
# Origins
# --------------------------------------------------------------------------

class Record:
    """What one origin connection saw."""

    def __init__(self, mode, tag, params):
        self.mode = mode
        self.tag = tag
        self.params = params
        self.request_head = None
        self.received = 0
        self.sent = 0
        self._recv_hash = hashlib.sha256()
        self._sent_hash = hashlib.sha256()
        self.recv_sha = None
        self.sent_sha = None
        self.first = bytearray()       # the first 64 KiB received
        self.events = []               # [(monotonic time, what)]
        self.end = None                # how reading ended: eof | reset | timeout | error
        self.end_time = None
        self.error = None
        self.done = threading.Event()  # the connection is finished
        self.lock = threading.Lock()

    def note(self, what):
        with self.lock:
            self.events.append((time.monotonic(), what))

    def got(self, data):
        with self.lock:
            self.received += len(data)
            self._recv_hash.update(data)
            if len(self.first) < 65536:
                self.first += data[:65536 - len(self.first)]

    def put(self, data):
        with self.lock:
            self.sent += len(data)
            self._sent_hash.update(data)

    def ended(self, how):
        with self.lock:
            if self.end is None:
                self.end = how
                self.end_time = time.monotonic()
                self.recv_sha = self._recv_hash.hexdigest()

    def finish(self):
        with self.lock:
            self.sent_sha = self._sent_hash.hexdigest()
            if self.recv_sha is None:
                self.recv_sha = self._recv_hash.hexdigest()
        self.done.set()

    def wait_end(self, timeout):
        """Wait until the reading side ended; returns self.end (None if not)."""
        h.wait_until(lambda: self.end is not None, timeout, 0.02)
        return self.end

    def __repr__(self):
        return ("<Record %s tag=%s received=%d sent=%d end=%s error=%s events=%r>"
                % (self.mode, self.tag, self.received, self.sent, self.end,
                   self.error, [e[1] for e in self.events]))


def _read_to_end(conn, rec, leftover=b""):
    """Read (recording) until EOF, reset or error; record how it ended."""
    if leftover:
        rec.got(leftover)
    while True:
        try:
            data = conn.recv(CHUNK)
        except ConnectionResetError:
            rec.ended("reset")
            return "reset"
        except socket.timeout:
            rec.ended("timeout")
            return "timeout"
        except OSError as e:
            rec.ended("error: %r" % e)
            return rec.end
        if not data:
            rec.ended("eof")
            return "eof"
        rec.got(data)


def _send_random(conn, rec, n):
    left = n
    while left > 0:
        piece = os.urandom(min(CHUNK, left))
        conn.sendall(piece)
        rec.put(piece)
        left -= len(piece)


def _mode_echo(conn, rec, leftover, params):
    pending = leftover
    while True:
        if pending:
            rec.got(pending)
            conn.sendall(pending)
            rec.put(pending)
        try:
            pending = conn.recv(CHUNK)
        except ConnectionResetError:
            rec.ended("reset")
            return
        except socket.timeout:
            rec.ended("timeout")
            return
        if not pending:
            rec.ended("eof")
            break
    conn.shutdown(socket.SHUT_WR)
    rec.note("shut-wr")


def _mode_duplex(conn, rec, leftover, params):
    n = int(params.get("n", "0"))
    errors = []

    def sender():
        try:
            _send_random(conn, rec, n)
            conn.shutdown(socket.SHUT_WR)
            rec.note("sent-all")
        except OSError as e:
            errors.append(repr(e))

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    _read_to_end(conn, rec, leftover)
    t.join(600)
    if errors:
        rec.error = "send: " + errors[0]


def _mode_sink_then_send(conn, rec, leftover, params):
    n = int(params.get("n", "0"))
    how = _read_to_end(conn, rec, leftover)
    rec.note("read-ended:" + how)
    if how != "eof":
        return
    line = b"eof-seen %d %s\n" % (rec.received, rec.recv_sha.encode())
    conn.sendall(line)
    rec.put(line)
    _send_random(conn, rec, n)
    rec.note("sent-after-eof")


def _mode_send_then_sink(conn, rec, leftover, params):
    n = int(params.get("n", "0"))
    first = b"origin-first\n"
    conn.sendall(first)
    rec.put(first)
    _send_random(conn, rec, n)
    conn.shutdown(socket.SHUT_WR)
    rec.note("shut-wr")
    _read_to_end(conn, rec, leftover)


def _mode_reset(conn, rec, leftover, params):
    n = int(params.get("n", "0"))
    reader = threading.Thread(target=_read_to_end, args=(conn, rec, leftover),
                              daemon=True)
    reader.start()
    try:
        _send_random(conn, rec, n)
    finally:
        rec.note("reset")
        set_linger_zero(conn)
        conn.close()


def _mode_hold(conn, rec, leftover, params):
    _read_to_end(conn, rec, leftover)


MODES = {
    "echo": _mode_echo,
    "duplex": _mode_duplex,
    "sink_then_send": _mode_sink_then_send,
    "send_then_sink": _mode_send_then_sink,
    "reset": _mode_reset,
    "hold": _mode_hold,
}


class TunnelOrigin:
    """A threaded TCP origin on loopback. http=True: an upgrade origin (the
    path picks the mode); http=False: raw bytes from the first one, in
    `mode` with `params`."""

    def __init__(self, name, http=False, mode="echo", **params):
        self.name = name
        self.http = http
        self.mode = mode
        self.params = {k: str(v) for k, v in params.items()}
        self.records = []
        self.request_heads = []
        self.connections = 0
        self._lock = threading.Lock()
        self._conns = set()
        self._stopped = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((h.LOOPBACK, 0))
        self.sock.listen(1024)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="tunnel-origin-" + name)
        self._thread.start()

    @property
    def address(self):
        return "%s:%d" % (h.LOOPBACK, self.port)

    def _accept_loop(self):
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopped:
                    return
                time.sleep(0.05)
                continue
            with self._lock:
                self.connections += 1
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(300)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode, params, tag, leftover = self.mode, dict(self.params), None, b""
        head = None
        try:
            if self.http:
                head, leftover = read_head(conn)
                with self._lock:
                    self.request_heads.append(head)
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
                parts = urlsplit(target)
                mode = parts.path.strip("/")
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                tag = params.get("tag")
                key = None
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "sec-websocket-key":
                        key = value.strip()
                if mode not in MODES:
                    body = b"unknown mode\n"
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n%s" % (len(body), body))
                    return
                lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
                         "Connection: Upgrade"]
                if key:
                    lines.append("Sec-WebSocket-Accept: " + websocket_accept(key))
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            rec = Record(mode, tag, params)
            rec.request_head = head
            with self._lock:
                self.records.append(rec)
            try:
                MODES[mode](conn, rec, leftover, params)
            except (OSError, ValueError) as e:
                rec.error = repr(e)
                if rec.end is None:
                    rec.ended("reset" if isinstance(e, ConnectionResetError) else
                              "error: %r" % e)
            finally:
                rec.finish()
        except (OSError, ValueError, EOFError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def record(self, tag=None, index=None, timeout=10.0):
        """The record with `tag` (http origins), or records[index]; waits
        for it to appear."""
        def find():
            with self._lock:
                if tag is not None:
                    for r in self.records:
                        if r.tag == tag:
                            return r
                    return None
                return self.records[index] if len(self.records) > index else None
        rec = h.wait_until(find, timeout, 0.02)
        if rec is None:
            raise AssertionError("%s: no origin connection %s reached it (it has %d records)"
                                 % (self.name, "tag %r" % tag if tag else "#%d" % index,
                                    len(self.records)))
        return rec

    def stop(self):
        self._stopped = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(2)


# --------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------

class Tunnel:
    """The client's end of an established tunnel: the socket, plus bytes
    that arrived with the response head."""

    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.leftover = leftover

    def recv(self, n=CHUNK):
        if self.leftover:
            data, self.leftover = self.leftover[:n], self.leftover[n:]
            return data
        return self.sock.recv(n)

    def sendall(self, data):
        self.sock.sendall(data)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_exact(self, n, timeout=30.0):
        self.sock.settimeout(timeout)
        parts = []
        while n:
            data = self.recv(min(n, CHUNK))
            if not data:
                raise EOFError("EOF with %d bytes missing" % n)
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def read_line(self, timeout=30.0, limit=4096):
        self.sock.settimeout(timeout)
        buf = b""
        while not buf.endswith(b"\n"):
            data = self.recv(1)
            if not data:
                raise EOFError("EOF in a line: %r" % buf)
            buf += data
            if len(buf) > limit:
                raise ValueError("line too long: %r" % buf[:200])
        return buf

    def read_to_end(self, timeout=30.0, sink=None, keep=1 << 20):
        """Read until EOF, reset or `timeout` seconds without the end.
        Returns (how, data kept (first `keep` bytes), total bytes, seconds);
        how is "eof", "reset" or "timeout"."""
        start = time.monotonic()
        deadline = start + timeout
        kept = bytearray()
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", bytes(kept), total, time.monotonic() - start
            self.sock.settimeout(remaining)
            try:
                data = self.recv(CHUNK)
            except socket.timeout:
                return "timeout", bytes(kept), total, time.monotonic() - start
            except ConnectionResetError:
                return "reset", bytes(kept), total, time.monotonic() - start
            if not data:
                return "eof", bytes(kept), total, time.monotonic() - start
            total += len(data)
            if sink:
                sink(data)
            if len(kept) < keep:
                kept += data[:keep - len(kept)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        reset_close(self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HeadResponse:
    """A response read by head_exchange: status, reason, headers, body (for
    non-2xx answers: Content-Length bytes), and the tunnel (2xx/101)."""

    def __init__(self, status, reason, headers, body, tunnel, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.tunnel = tunnel
        self.raw_head = raw_head

    def header(self, name, default=None):
        return header(self.headers, name, default)

    def __repr__(self):
        return "<%d %s %r body=%r>" % (self.status, self.reason, self.headers,
                                       self.body[:200])


def head_exchange(port, request, timeout=10.0):
    """Send a raw request; read the response head. For 101 and 2xx, the
    connection is returned as response.tunnel; otherwise the body is read
    (Content-Length) and the socket is kept in response.tunnel too, so the
    caller can see whether the gateway closes it."""
    sock = h.connect(port, timeout)
    try:
        sock.sendall(request)
        head, leftover = read_head(sock)
    except Exception:
        sock.close()
        raise
    status, reason, headers = parse_head(head)
    tunnel = Tunnel(sock, leftover)
    body = b""
    if not (status == 101 or 200 <= status < 300):
        length = header(headers, "Content-Length")
        if length is not None:
            body = tunnel.read_exact(int(length), timeout)
    return HeadResponse(status, reason, headers, body, tunnel, head)


def upgrade_request(host, path, headers=()):
    key = base64.b64encode(os.urandom(16)).decode()
    fields = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    return h.build_request("GET", path, host, fields + list(headers))


def open_upgrade(port, host, path, headers=(), timeout=10.0):
    """An upgrade tunnel through the gateway to a TunnelOrigin(http=True);
    asserts the 101."""
    resp = head_exchange(port, upgrade_request(host, path, headers), timeout)
    if resp.status != 101:
        resp.tunnel.close()
        raise AssertionError("upgrade %s%s answered %r" % (host, path, resp))
    return resp.tunnel


def connect_request(authority, token=None, header_name="Proxy-Authorization",
                    host_header=True, extra=()):
    lines = ["CONNECT %s HTTP/1.1" % authority]
    if host_header:
        lines.append("Host: " + authority)
    if token is not None:
        lines.append("%s: Bearer %s" % (header_name, token))
    for k, v in extra:
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def run_duplex(tunnel, n, timeout=240.0):
    """Send n random bytes (then SHUT_WR) while reading to EOF, at once.
    Returns a dict: sent, sent_sha, received, recv_sha, how, seconds, error."""
    out = {"sent": 0, "error": None}
    sent_hash = hashlib.sha256()

    def sender():
        try:
            left = n
            while left > 0:
                piece = os.urandom(min(CHUNK, left))
                tunnel.sendall(piece)
                sent_hash.update(piece)
                out["sent"] += len(piece)
                left -= len(piece)
            tunnel.shutdown_write()
        except OSError as e:
            out["error"] = repr(e)

    recv_hash = hashlib.sha256()
    start = time.monotonic()
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    how, _, total, _ = tunnel.read_to_end(timeout, sink=recv_hash.update, keep=0)
    t.join(timeout)
    out.update(sent_sha=sent_hash.hexdigest(), received=total,
               recv_sha=recv_hash.hexdigest(), how=how,
               seconds=time.monotonic() - start)
    return out


# --------------------------------------------------------------------------
# Gateway side
# --------------------------------------------------------------------------

def totals(api):
    return api.stats()["totals"]


def wait_tunnels_open(api, value, timeout=5.0):
    """Wait until /stats totals.tunnels_open == value; returns the last value."""
    last = [None]

    def check():
        last[0] = totals(api)["tunnels_open"]
        return last[0] == value
    h.wait_until(check, timeout, 0.05)
    return last[0]


def ctl_supports_ssh_proxy():
    """True if `spacegatectl ssh-proxy --help` shows ssh-proxy's own help."""
    if not os.path.exists(h.CTL_BINARY):
        return False, ""
    proc = subprocess.run([h.CTL_BINARY, "ssh-proxy", "--help"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    text = proc.stdout + proc.stderr
    usage = [l for l in text.splitlines() if "usage" in l.lower()]
    own = proc.returncode == 0 and any("ssh-proxy" in l for l in usage)
    return own, text


def skip_unless(condition, what):
    if not condition:
        raise AssertionError("%s missing (a regression)" % what)
