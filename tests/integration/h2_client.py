#!/usr/bin/python3
"""A small frame-level HTTP/2 client for the integration tests: it sends
what a test asks for, well-formed or not, and reports what the server did.

The connection is a raw socket: plaintext HTTP/2 with prior knowledge (h2c,
the client opens with the "PRI * HTTP/2.0" preface) or TLS with ALPN "h2".
Two ways to send on it:

  * python3-h2's H2Connection (Debian's 4.1) for well-formed frames:
    request HEADERS, DATA under flow control, RST_STREAM, PING, SETTINGS;
  * hand-built bytes for what h2 refuses to emit: `frame()` and the
    builders below it (hyperframe and hpack ship with python3-h2) make
    invalid header blocks, CONTINUATION floods, HPACK bombs, SETTINGS with
    repeated entries, window overflows.

Whatever arrives is parsed by this module's own tolerant reader (frame
headers, hyperframe bodies, an hpack Decoder), so a server that cuts the
connection or answers strangely is reported, never raised: every GOAWAY
(error code, last stream id), every RST_STREAM per stream (code), each
response (status, headers, body, trailers), the SETTINGS the server
announced, and whether the connection ended (EOF or reset) and when.

Tracking: with track=True (the default) the received bytes are also fed to
h2, so its flow-control windows and the server's stream limit follow the
server and h2 answers SETTINGS and PING itself. The first time h2 objects
(for instance the server answers a stream that went out as raw bytes, which
h2 never saw) tracking stops and the reader takes over the SETTINGS/PING
acknowledgements and the WINDOW_UPDATEs. An attacker that sends raw header
blocks should use track=False from the start: h2 is then only a serializer,
it never hears from the server.

Only Debian packages: /usr/bin/python3, python3-h2 (hyperframe, hpack).
"""

import collections
import hashlib
import socket
import ssl
import struct
import time

import hpack
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import Settings
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame,
                              PushPromiseFrame, RstStreamFrame)

LOOPBACK = "127.0.0.1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY",
               RST_STREAM: "RST_STREAM", SETTINGS: "SETTINGS",
               PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
               WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}

# Flags.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# SETTINGS identifiers.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8

# Error codes (RFC 9113 section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

MAX_WINDOW = 2 ** 31 - 1


def error_name(code):
    """'ENHANCE_YOUR_CALM' for 0xb; '0x1f' for a code RFC 9113 does not name."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return "0x%x" % code


# --------------------------------------------------------------------------
# Hand-built frames: bytes exactly as given, nothing checked
# --------------------------------------------------------------------------

def frame(ftype, flags, stream_id, payload=b""):
    """One frame: the 9-byte header (length, type, flags, stream id) and the
    payload as given. Any length, type, flags or stream id goes."""
    return (struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
            + struct.pack(">I", stream_id & 0x7FFFFFFF) + bytes(payload))


def headers_frame(stream_id, block, end_stream=True, end_headers=True):
    """HEADERS carrying `block` (an HPACK fragment) with the flags asked for."""
    f = HeadersFrame(stream_id, data=bytes(block))
    if end_stream:
        f.flags.add("END_STREAM")
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def continuation_frame(stream_id, block, end_headers=False):
    """CONTINUATION carrying `block`; END_HEADERS only when asked."""
    f = ContinuationFrame(stream_id, data=bytes(block))
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def data_frame(stream_id, data, end_stream=False):
    """DATA with `data`, ignoring flow control (the caller's business)."""
    f = DataFrame(stream_id, data=bytes(data))
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def rst_stream_frame(stream_id, code=CANCEL):
    """RST_STREAM with the given error code."""
    return RstStreamFrame(stream_id, error_code=code).serialize()


def settings_frame(entries=(), ack=False):
    """SETTINGS with `entries` [(identifier, value), ...] in order, repeats
    kept (hyperframe's own SettingsFrame is a dict and would fold them)."""
    payload = b"".join(struct.pack(">HI", ident, value) for ident, value in entries)
    return frame(SETTINGS, FLAG_ACK if ack else 0, 0, payload)


def ping_frame(opaque=b"\0" * 8, ack=False):
    """PING (or its ACK) with 8 opaque bytes."""
    return frame(PING, FLAG_ACK if ack else 0, 0, opaque)


def window_update_frame(stream_id, increment):
    """WINDOW_UPDATE with any 31-bit increment, including 0 and values that
    overflow the peer's window."""
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment & 0x7FFFFFFF))


def goaway_frame(last_stream_id, code=NO_ERROR, debug=b""):
    """GOAWAY from the client side."""
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id & 0x7FFFFFFF, code) + debug)


# --------------------------------------------------------------------------
# Hand-built HPACK (RFC 7541): no Huffman, so the bytes are easy to reason
# about. Literals "without indexing" leave the dynamic table alone, so such a
# block can go out between blocks from h2's encoder without breaking it.
# --------------------------------------------------------------------------

def hpack_int(value, prefix_bits, first_byte=0):
    """An HPACK integer with an N-bit prefix; first_byte carries the
    representation's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = bytearray([first_byte | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _as_bytes(text):
    """str as latin-1 bytes (each char one byte); bytes unchanged."""
    return text if isinstance(text, (bytes, bytearray)) else text.encode("latin-1")


def hpack_string(text):
    """A string literal (length-prefixed, not Huffman coded). Bytes go out
    as they are: CR, LF, NUL and uppercase included."""
    raw = _as_bytes(text)
    return hpack_int(len(raw), 7) + raw


def hpack_literal(name, value, index=False):
    """A literal field with a literal name; index=True inserts it into the
    dynamic table ("with incremental indexing"), else "without indexing"."""
    return (b"\x40" if index else b"\x00") + hpack_string(name) + hpack_string(value)


def hpack_indexed(index):
    """A 1-byte (for index < 127) indexed field: static 1..61, dynamic 62+
    (62 is the newest dynamic entry)."""
    return hpack_int(index, 7, 0x80)


def header_block(fields):
    """A whole block of literal-without-indexing fields, in the order given
    (pseudo-headers are just names starting with ':')."""
    return b"".join(hpack_literal(n, v) for n, v in fields)


def request_fields(method="GET", path="/", authority="app.test", scheme="http",
                   extra=()):
    """The four request pseudo-headers followed by `extra` fields."""
    return [(":method", method), (":scheme", scheme), (":authority", authority),
            (":path", path)] + list(extra)


def split_frames(data):
    """[(type, flags, stream_id, payload)] for complete frames in `data`."""
    out = []
    pos = 0
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos:pos + 3], "big")
        if len(data) - pos < 9 + length:
            break
        out.append((data[pos + 3], data[pos + 4],
                    int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                    bytes(data[pos + 9:pos + 9 + length])))
        pos += 9 + length
    return out


# --------------------------------------------------------------------------
# What came back
# --------------------------------------------------------------------------

GoAway = collections.namedtuple("GoAway", "error_code last_stream_id debug at")
GoAway.__doc__ = """A GOAWAY received: error code, last stream id, debug
data, and time.monotonic() when it arrived."""


class StreamResult:
    """What the server sent on one stream."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.informational = []  # [[(name, value)...]] for each 1xx head
        self.headers = None      # final response head, pseudo-headers included
        self.status = None       # int :status of the final head
        self.body = bytearray()
        self.trailers = []       # fields of a HEADERS after the final head
        self.ended = False       # END_STREAM received
        self.reset_code = None   # RST_STREAM error code from the server
        self.data_frames = 0
        self.opened_at = time.monotonic()
        self.headers_at = None
        self.finished_at = None  # END_STREAM or RST_STREAM

    @property
    def complete(self):
        """Ended normally (END_STREAM) or reset by the server."""
        return self.ended or self.reset_code is not None

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers or ():
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers or () if k.lower() == name]

    def sha256(self):
        return hashlib.sha256(self.body).hexdigest()

    def __repr__(self):
        state = ("ended" if self.ended else
                 "reset %s" % error_name(self.reset_code) if self.reset_code is not None
                 else "open")
        return "<stream %d %s status=%s headers=%r body=%d bytes %r>" % (
            self.stream_id, state, self.status,
            [(k, v[:80]) for k, v in (self.headers or [])][:20], len(self.body),
            bytes(self.body[:120]))


class H2Client:
    """One HTTP/2 connection to host:port (see the module docstring).

    Arguments:
      tls, server_name, alpn, ca_file  TLS with ALPN (default "h2"); no
                     server_name means no SNI; without ca_file the server
                     certificate is not verified.
      settings       {identifier: value} announced in the first SETTINGS
                     (ENABLE_PUSH=0 is always added).
      connection_window  grow the connection receive window to this many
                     bytes at once (default: the protocol's 65535).
      track          feed received bytes to h2 as well (module docstring).
      auto_window    hand back receive window for every DATA received
                     (False: never send WINDOW_UPDATE).
      ack_settings, answer_pings  when not tracking, acknowledge the
                     server's SETTINGS and answer its PINGs.
      rcvbuf, sndbuf SO_RCVBUF / SO_SNDBUF set before connect (a small
                     rcvbuf makes a client that does not read felt sooner).
      preface        send the preface and SETTINGS at once (default).

    State after reading: goaways [GoAway], streams {id: StreamResult},
    resets {id: code} (in arrival order), server_settings [dict per
    SETTINGS frame], settings_acks, ping_acks, frame_counts, closed (None,
    "eof", "reset" or another reason), closed_at, write_error, errors.
    """

    def __init__(self, port, host=LOOPBACK, tls=False, server_name=None,
                 alpn=("h2",), ca_file=None, timeout=10.0, settings=None,
                 connection_window=None, track=True, auto_window=True,
                 ack_settings=True, answer_pings=True, rcvbuf=None,
                 sndbuf=None, preface=True):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.track = track
        self.auto_window = auto_window
        self.ack_settings = ack_settings
        self.answer_pings = answer_pings
        self.goaways = []
        self.streams = {}
        self.resets = collections.OrderedDict()
        self.server_settings = []
        self.settings_acks = 0
        self.ping_acks = []
        self.pings_received = 0
        self.window_updates = 0
        self.frame_counts = collections.Counter()
        self.errors = []
        self.h2_error = None
        self.closed = None
        self.closed_at = None
        self.write_error = None
        self.write_blocked = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.opened_at = time.monotonic()
        self._in = bytearray()
        self._out = bytearray()
        self._block = None   # [frame type, stream id, HEADERS flags, fragment]
        self._held = {}      # stream id -> bytes whose stream window is withheld
        self._next_stream_id = 1
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.alpn = None
        self.sock = self._connect(tls, server_name, alpn, ca_file, rcvbuf, sndbuf)

        self.h2 = H2Connection(H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False))
        local = {SETTINGS_ENABLE_PUSH: 0, SETTINGS_MAX_CONCURRENT_STREAMS: 100,
                 SETTINGS_MAX_HEADER_LIST_SIZE: 1 << 24}
        local.update(settings or {})
        # Replacing the object (not updating it) makes the values current at
        # once, so h2 sizes new streams' receive windows by what we announce.
        self.h2.local_settings = Settings(client=True, initial_values=local)
        self.h2.decoder.max_header_list_size = 1 << 30
        if preface:
            self.h2.initiate_connection()
            if connection_window and connection_window > 65535:
                self.h2.increment_flow_control_window(connection_window - 65535)
            self.flush()

    # -- connection --------------------------------------------------------

    def _connect(self, tls, server_name, alpn, ca_file, rcvbuf, sndbuf):
        """The TCP connection (and TLS handshake) the client runs on."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                if ca_file:
                    ctx.load_verify_locations(ca_file)
                    ctx.check_hostname = bool(server_name)
                else:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if alpn:
                    ctx.set_alpn_protocols(list(alpn))
                sock = ctx.wrap_socket(sock, server_hostname=server_name)
                self.alpn = sock.selected_alpn_protocol()
                self.tls_version = sock.version()
                self.peer_certificate = sock.getpeercert(binary_form=True)
        except Exception:
            sock.close()
            raise
        return sock

    @property
    def tracking(self):
        """True while h2 is fed the received bytes (see the docstring)."""
        return self.track and self.h2_error is None

    def close(self):
        """Close the socket (no GOAWAY: use send_raw(goaway_frame()) first
        for a polite end)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending -------------------------------------------------------------

    def send_raw(self, data, timeout=None):
        """Write bytes as they are. Returns True when all were written.
        False when the connection is gone (write_error says why) or the
        server did not take them within `timeout` (write_blocked; a frame
        may then be cut in half, so stop sending on this connection)."""
        if self.write_error:
            return False
        if not data:
            return True
        try:
            self.sock.settimeout(self.timeout if timeout is None else timeout)
            self.sock.sendall(data)
            self.bytes_sent += len(data)
            return True
        except socket.timeout:
            self.write_blocked = True
            self.write_error = "write blocked for %.1f s (the server stopped reading)" % (
                self.timeout if timeout is None else timeout)
        except (BrokenPipeError, ConnectionResetError) as e:
            self.write_error = "write failed: %s" % e.__class__.__name__
        except (ssl.SSLError, OSError) as e:
            self.write_error = "write failed: %r" % e
        return False

    def flush(self, timeout=None):
        """Send whatever h2 and the reader have queued (acks, window
        updates, frames made through self.h2). Returns send_raw's answer."""
        data = self.h2.data_to_send() if self.h2_error is None else b""
        data = bytes(data) + bytes(self._out)
        self._out.clear()
        return self.send_raw(data, timeout)

    def h2_bytes(self):
        """Take what h2 has queued without sending it (to glue it to raw
        frames in one write)."""
        return bytes(self.h2.data_to_send())

    def new_stream_id(self):
        """The next client stream id (odd, increasing). Raw and h2 streams
        share this counter."""
        sid = self._next_stream_id
        self._next_stream_id += 2
        return sid

    def _stream(self, sid):
        """The StreamResult for sid, made on first use."""
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = StreamResult(sid)
        return st

    def headers_bytes(self, stream_id, fields, end_stream=True):
        """HEADERS for `fields` made by h2 (its encoder, no validation),
        returned rather than sent, glued after anything h2 had queued."""
        self.h2.send_headers(stream_id, fields, end_stream=end_stream)
        self._stream(stream_id)
        return self.h2_bytes()

    def encode(self, fields):
        """An HPACK block from h2's own encoder (so its dynamic table stays
        in step with the server's). Send it, in order, or the tables part."""
        return self.h2.encoder.encode(fields)

    def request(self, method, path, authority="app.test", headers=(), body=None,
                scheme="http", end_stream=True, flush=True):
        """Open a stream with a request made by h2 and return its id.
        `headers` are (name, value) pairs after the pseudo-headers. A body
        (bytes) is sent with send_body (flow control when tracking).
        end_stream=False leaves the request open for more DATA."""
        sid = self.new_stream_id()
        fields = request_fields(method, path, authority, scheme, headers)
        self.h2.send_headers(sid, fields, end_stream=end_stream and body is None)
        self._stream(sid)
        if body is not None:
            self.flush()
            self.send_body(sid, body, end_stream=end_stream)
        elif flush:
            self.flush()
        return sid

    def send_body(self, stream_id, data, end_stream=True, timeout=None):
        """Send request body bytes on a stream. Tracking: in pieces that fit
        the server's windows and frame size, reading while the window is
        closed. Not tracking: raw DATA frames of 16384 bytes, regardless of
        windows. Returns True when everything was written."""
        data = memoryview(bytes(data))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self.tracking:
            return self._send_body_raw(stream_id, data, end_stream)
        pos = 0
        while True:
            if not self.tracking:
                return self._send_body_raw(stream_id, data[pos:], end_stream)
            try:
                window = min(self.h2.local_flow_control_window(stream_id),
                             self.h2.max_outbound_frame_size, len(data) - pos)
                if window > 0 or pos == len(data):
                    last = pos + window == len(data)
                    self.h2.send_data(stream_id, bytes(data[pos:pos + window]),
                                      end_stream=end_stream and last)
            except Exception as e:  # the stream or the connection is gone
                self.errors.append("send_body(%d): %r" % (stream_id, e))
                return False
            if window > 0 or pos == len(data):
                pos += window
                if not self.flush():
                    return False
                if last:
                    return True
                continue
            if self.closed or time.monotonic() > deadline:
                return False
            self.pump(0.2)

    def _send_body_raw(self, stream_id, data, end_stream):
        """DATA frames of up to 16384 bytes, windows ignored."""
        pieces = [data[i:i + 16384] for i in range(0, len(data), 16384)] or [b""]
        out = b"".join(data_frame(stream_id, p, end_stream and i == len(pieces) - 1)
                       for i, p in enumerate(pieces))
        return self.send_raw(out)

    def reset(self, stream_id, code=CANCEL, flush=True):
        """RST_STREAM through h2 (the stream must be one h2 knows)."""
        self.h2.reset_stream(stream_id, error_code=code)
        return self.flush() if flush else True

    def ping(self, opaque=b"pingpong", flush=True):
        """PING through h2."""
        self.h2.ping(opaque)
        return self.flush() if flush else True

    def update_settings(self, settings, flush=True):
        """SETTINGS through h2 ({identifier: value})."""
        self.h2.update_settings(settings)
        return self.flush() if flush else True

    def hold_window(self, stream_id):
        """Stop handing back receive window for this stream (the connection
        window is still handed back): a reader that is slow on one stream."""
        self._held.setdefault(stream_id, 0)

    def release_window(self, stream_id):
        """Hand back the withheld window of this stream and stop holding."""
        n = self._held.pop(stream_id, 0)
        if n:
            if self.tracking:
                try:
                    self.h2.increment_flow_control_window(n, stream_id=stream_id)
                except Exception as e:
                    self.errors.append("release_window(%d): %r" % (stream_id, e))
            else:
                self._out += window_update_frame(stream_id, n)
        return self.flush()

    # -- reading --------------------------------------------------------------

    def pump(self, timeout):
        """Wait up to `timeout` seconds (0: do not wait) for bytes, process
        what came. Returns the number of bytes read (0 on timeout, or once
        the connection is closed)."""
        if self.closed:
            return 0
        try:
            self.sock.settimeout(timeout if timeout > 0 else 0.0)
            data = self.sock.recv(262144)
        except (socket.timeout, BlockingIOError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError):
            return 0
        except ConnectionResetError:
            self._mark_closed("reset")
            return 0
        except ssl.SSLError as e:
            self._mark_closed("tls error: %s" % e)
            return 0
        except OSError as e:
            self._mark_closed("error: %r" % e)
            return 0
        if not data:
            self._mark_closed("eof")
            return 0
        self.bytes_received += len(data)
        self._on_bytes(data)
        return len(data)

    def drain(self):
        """Process everything already received, without waiting."""
        total = 0
        while True:
            n = self.pump(0)
            if not n:
                return total
            total += n

    def wait(self, predicate, timeout):
        """Read until predicate() is true, the connection closes or timeout
        seconds pass. Returns bool(predicate())."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if self.closed:
                return bool(predicate())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.pump(min(remaining, 0.5))

    def wait_closed(self, timeout):
        """True if the server ends the connection within `timeout` seconds
        (everything it sent before is processed first)."""
        return self.wait(lambda: self.closed is not None, timeout)

    def handshake(self, timeout=None):
        """Wait for the server's first SETTINGS (acknowledged by h2 or the
        reader). Returns it as {identifier: value}, or None if none came."""
        self.wait(lambda: self.server_settings, self.timeout if timeout is None else timeout)
        return self.server_settings[0] if self.server_settings else None

    def stream_done(self, stream_id):
        """The stream ended or was reset, or a GOAWAY says the server will
        never process it, or the connection is gone."""
        st = self.streams.get(stream_id)
        if st is not None and st.complete:
            return True
        if any(g.last_stream_id < stream_id for g in self.goaways):
            return True
        return self.closed is not None

    def response(self, stream_id, timeout=None):
        """Read until the stream is done (stream_done) or timeout; returns
        its StreamResult (look at .complete, .status, .reset_code)."""
        self.wait(lambda: self.stream_done(stream_id),
                  self.timeout if timeout is None else timeout)
        return self._stream(stream_id)

    # -- what happened ----------------------------------------------------

    @property
    def goaway(self):
        """The last GOAWAY received, or None."""
        return self.goaways[-1] if self.goaways else None

    def error_goaway(self):
        """The first GOAWAY whose code is not NO_ERROR, or None."""
        for g in self.goaways:
            if g.error_code != NO_ERROR:
                return g
        return None

    def reset_codes(self):
        """Counter {error code name: streams reset with it}."""
        return collections.Counter(error_name(c) for c in self.resets.values())

    def describe(self):
        """One line: GOAWAYs, resets, responses, how the connection ended."""
        parts = []
        for g in self.goaways:
            parts.append("GOAWAY(%s, last_stream_id=%d%s) after %.2f s" % (
                error_name(g.error_code), g.last_stream_id,
                ", %r" % g.debug[:60] if g.debug else "", g.at - self.opened_at))
        if self.resets:
            parts.append("RST_STREAM on %d streams (%s)" % (
                len(self.resets), ", ".join("%s x%d" % kv for kv in
                                            sorted(self.reset_codes().items()))))
        statuses = collections.Counter(st.status for st in self.streams.values()
                                       if st.status is not None)
        if statuses:
            parts.append("responses %s" % ", ".join(
                "%s x%d" % kv for kv in sorted(statuses.items())))
        if self.closed:
            parts.append("connection closed by the server (%s) after %.2f s" % (
                self.closed, self.closed_at - self.opened_at))
        else:
            parts.append("connection open")
        if self.write_error:
            parts.append(self.write_error)
        if self.h2_error:
            parts.append("h2 stopped tracking: %s" % self.h2_error[:120])
        if self.errors:
            parts.append("reader: %s" % "; ".join(self.errors[:3]))
        return "; ".join(parts)

    # -- the tolerant reader ----------------------------------------------

    def _mark_closed(self, how):
        """Note the first sign that the connection ended, and when."""
        if self.closed is None:
            self.closed = how
            self.closed_at = time.monotonic()

    def _on_bytes(self, data):
        """Bytes from the socket: to h2 when tracking, then frame by frame
        to _on_frame; then send what the reader queued (acks, windows)."""
        if self.tracking:
            try:
                self.h2.receive_data(data)
            except Exception as e:
                self.h2_error = "%s: %s" % (e.__class__.__name__, e)
                # h2 queued its own GOAWAY on the way out: this client
                # decides what goes on the wire, so keep everything but that.
                kept = [f for f in split_frames(self.h2.data_to_send()) if f[0] != GOAWAY]
                self._out += b"".join(frame(*f) for f in kept)
        self._in += data
        pos = 0
        buf = self._in
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            try:
                self._on_frame(ftype, flags, sid, payload)
            except Exception as e:  # a malformed frame from the server
                self.errors.append("%s frame on stream %d: %r" % (
                    FRAME_NAMES.get(ftype, ftype), sid, e))
        del buf[:pos]
        if not self.closed:
            self.flush()

    def _on_frame(self, ftype, flags, sid, payload):
        """Record one complete frame from the server."""
        self.frame_counts[FRAME_NAMES.get(ftype, "0x%x" % ftype)] += 1
        now = time.monotonic()
        if self._block is not None and ftype != CONTINUATION:
            self.errors.append("%s while a header block was open" % FRAME_NAMES.get(ftype, ftype))
            self._block = None
        if ftype == DATA:
            data = payload
            if flags & FLAG_PADDED and data:
                data = data[1:len(data) - data[0]]
            st = self._stream(sid)
            st.body += data
            st.data_frames += 1
            if flags & FLAG_END_STREAM:
                st.ended = True
                st.finished_at = now
            if payload and self.auto_window:
                self._hand_back(sid, len(payload), st.ended)
        elif ftype in (HEADERS, PUSH_PROMISE):
            f = (HeadersFrame if ftype == HEADERS else PushPromiseFrame)(sid)
            f.parse_flags(flags)
            f.parse_body(memoryview(payload))
            self._block = [ftype, sid, flags, bytearray(f.data)]
            if flags & FLAG_END_HEADERS:
                self._end_block()
        elif ftype == CONTINUATION:
            if self._block is None or self._block[1] != sid:
                self.errors.append("CONTINUATION on stream %d out of place" % sid)
                return
            self._block[3] += payload
            if flags & FLAG_END_HEADERS:
                self._end_block()
        elif ftype == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            st = self._stream(sid)
            st.reset_code = code
            st.finished_at = now
            self.resets[sid] = code
        elif ftype == SETTINGS:
            if flags & FLAG_ACK:
                self.settings_acks += 1
                return
            entries = {}
            for i in range(0, len(payload) - 5, 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                entries[ident] = value
            self.server_settings.append(entries)
            if not self.tracking and self.ack_settings:
                # h2 never sees these when not tracking: keep its encoder
                # within the server's table size, as the ACK promises.
                if SETTINGS_HEADER_TABLE_SIZE in entries:
                    self.h2.encoder.header_table_size = entries[SETTINGS_HEADER_TABLE_SIZE]
                self._out += settings_frame(ack=True)
        elif ftype == PING:
            if flags & FLAG_ACK:
                self.ping_acks.append(payload)
                return
            self.pings_received += 1
            if not self.tracking and self.answer_pings:
                self._out += ping_frame(payload, ack=True)
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self.goaways.append(GoAway(code, last, bytes(payload[8:]), now))
        elif ftype == WINDOW_UPDATE:
            self.window_updates += 1

    def _end_block(self):
        """A header block is complete: decode it and file it as a 1xx
        head, the response head or trailers."""
        ftype, sid, flags, block = self._block
        self._block = None
        try:
            fields = self.decoder.decode(bytes(block), raw=True)
        except Exception as e:
            self.errors.append("HPACK decode error on stream %d: %r" % (sid, e))
            return
        fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]
        if ftype == PUSH_PROMISE:
            self.errors.append("PUSH_PROMISE on stream %d although push is off" % sid)
            return
        st = self._stream(sid)
        status = dict(fields).get(":status")
        if st.headers is None:
            if status is not None and status.startswith("1"):
                st.informational.append(fields)
            else:
                st.headers = fields
                st.headers_at = time.monotonic()
                st.status = int(status) if status and status.isdigit() else None
        else:
            st.trailers = fields
        if flags & FLAG_END_STREAM:
            st.ended = True
            st.finished_at = time.monotonic()

    def _hand_back(self, sid, n, ended):
        """Give back receive window for n bytes of DATA on stream sid."""
        held = sid in self._held
        if held:
            self._held[sid] += n
        if self.tracking:
            try:
                if held:
                    self.h2.increment_flow_control_window(n)
                else:
                    self.h2.acknowledge_received_data(n, sid)
            except Exception as e:
                self.errors.append("window for stream %d: %r" % (sid, e))
            return
        self._out += window_update_frame(0, n)
        if not ended and not held:
            self._out += window_update_frame(sid, n)


# --------------------------------------------------------------------------
# One-shot convenience
# --------------------------------------------------------------------------

def h2_request(port, method="GET", path="/", authority="app.test", headers=(),
               body=None, timeout=15.0, **client_args):
    """One request on a fresh connection; returns (StreamResult, client)
    with the client already closed (its report is still readable)."""
    with H2Client(port, timeout=timeout, **client_args) as c:
        sid = c.request(method, path, authority, headers, body)
        result = c.response(sid, timeout)
        return result, c
