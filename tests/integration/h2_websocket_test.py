#!/usr/bin/python3
"""WebSockets over HTTP/2 (RFC 8441) through the gateway: the gateway
announces SETTINGS_ENABLE_CONNECT_PROTOCOL, takes an extended CONNECT with
`:protocol websocket`, opens an HTTP/1.1 Upgrade to the route's upstream
(python3-websockets, which knows nothing of HTTP/2) and carries the
WebSocket frames in the stream's DATA both ways. Also: several WebSockets
and plain requests share one connection; a client END_STREAM closes the
upstream side; CONNECT without :protocol is refused on HTTP/2 (SSH tunnels
use HTTP/1.1); an upstream that refuses the upgrade gets its status
through."""

import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2_client as hc  # noqa: E402

HOST = "ws.test"
ENABLE_CONNECT_PROTOCOL = 0x8


def ws_client_frame(payload, opcode=0x1):
    """One masked client frame (RFC 6455 5.2), FIN set."""
    mask = os.urandom(4)
    head = bytearray([0x80 | opcode])
    if len(payload) < 126:
        head.append(0x80 | len(payload))
    elif len(payload) < 65536:
        head.append(0x80 | 126)
        head += struct.pack("!H", len(payload))
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + mask + masked


def ws_server_frames(data):
    """[(opcode, payload)] of the unmasked server frames in `data`, and the
    bytes left over."""
    frames = []
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        length = b1 & 0x7F
        at = pos + 2
        if length == 126:
            if len(data) - at < 2:
                break
            length = struct.unpack("!H", data[at:at + 2])[0]
            at += 2
        elif length == 127:
            if len(data) - at < 8:
                break
            length = struct.unpack("!Q", data[at:at + 8])[0]
            at += 8
        if len(data) - at < length:
            break
        frames.append((b0 & 0x0F, bytes(data[at:at + length])))
        pos = at + length
    return frames, bytes(data[pos:])


class H2WebSocketTest(h.GatewayTestCase):

    @classmethod
    def extra_setup(cls):
        cls.ws_peer = h.WebSocketPeer()

    @classmethod
    def extra_teardown(cls):
        cls.ws_peer.stop()

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port, [
            h.route("ws", HOST, "127.0.0.1:%d" % cls.ws_peer.port),
            h.route("plain", "plain.test", cls.origin.address),
        ])

    def client(self):
        c = hc.H2Client(self.port, timeout=10.0)
        self.addCleanup(c.close)
        return c

    def open_websocket(self, c, path="/echo", authority=HOST, extra=()):
        sid = c.new_stream_id()
        fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                  (":path", path), (":authority", authority),
                  ("sec-websocket-version", "13")] + list(extra)
        c.send_raw(hc.headers_frame(sid, c.encode(fields), end_stream=False))
        return sid

    def wait_frames(self, c, sid, count, timeout=10):
        def enough():
            return len(ws_server_frames(c._stream(sid).body)[0]) >= count
        c.wait(enough, timeout)
        return ws_server_frames(c._stream(sid).body)[0]

    def test_settings_announce_extended_connect(self):
        c = self.client()
        settings = c.handshake()
        self.assertEqual(settings.get(ENABLE_CONNECT_PROTOCOL), 1, settings)

    def test_echo_over_extended_connect(self):
        c = hc.H2Client(self.port, timeout=10.0, track=False)
        self.addCleanup(c.close)
        c.handshake()
        sid = self.open_websocket(c)
        c.wait(lambda: c._stream(sid).status is not None or c._stream(sid).complete, 10)
        st = c._stream(sid)
        self.assertEqual(st.status, 200, "extended CONNECT not accepted: %r; %s" % (st, c.describe()))
        self.assertFalse(st.complete, "the WebSocket stream ended at once: %r" % st)
        messages = [b"hello over h2", os.urandom(70000), b"third"]
        for message in messages:
            opcode = 0x2 if len(message) > 100 else 0x1
            wire = ws_client_frame(message, opcode)
            # DATA frames within the default SETTINGS_MAX_FRAME_SIZE.
            for at in range(0, len(wire), 16384):
                c.send_raw(hc.data_frame(sid, wire[at:at + 16384]))
        frames = self.wait_frames(c, sid, 3, timeout=15)
        self.assertEqual([p for _, p in frames[:3]], messages,
                         "echoes differ: %r" % [(o, len(p)) for o, p in frames])
        # The upstream saw a plain HTTP/1.1 upgrade for the same path.
        self.assertIn("/echo", self.ws_peer.paths)
        # A close frame from the client is answered with the upstream's close.
        c.send_raw(hc.data_frame(sid, ws_client_frame(struct.pack("!H", 1000), 0x8)))
        frames = self.wait_frames(c, sid, 4)
        self.assertEqual(frames[3][0], 0x8, "no close frame back: %r" % frames)

    def test_websockets_and_requests_share_one_connection(self):
        c = hc.H2Client(self.port, timeout=10.0, track=False)
        self.addCleanup(c.close)
        c.handshake()
        sockets = [self.open_websocket(c, "/room/%d" % i) for i in range(3)]
        for sid in sockets:
            c.wait(lambda: c._stream(sid).status is not None, 10)
            self.assertEqual(c._stream(sid).status, 200, c.describe())
        for i, sid in enumerate(sockets):
            c.send_raw(hc.data_frame(sid, ws_client_frame(b"message %d" % i)))
        plain = c.new_stream_id()
        c.send_raw(hc.headers_frame(plain, c.encode(hc.request_fields(
            "GET", "/hello", "plain.test", "http", ())), end_stream=True))
        for i, sid in enumerate(sockets):
            frames = self.wait_frames(c, sid, 1)
            self.assertEqual(frames[0][1], b"message %d" % i)
        r = c.response(plain, 10)
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(c.closed)

    def test_client_end_stream_closes_upstream(self):
        c = hc.H2Client(self.port, timeout=10.0, track=False)
        self.addCleanup(c.close)
        c.handshake()
        before = self.ws_peer.open
        sid = self.open_websocket(c, "/bye")
        c.wait(lambda: c._stream(sid).status is not None, 10)
        self.assertTrue(h.wait_until(lambda: self.ws_peer.open > before, 5))
        c.send_raw(hc.data_frame(sid, b"", end_stream=True))
        # The upstream sees its connection end; the stream then ends too.
        self.assertTrue(h.wait_until(lambda: self.ws_peer.open <= before, 10),
                        "the upstream WebSocket is still open")
        self.assertTrue(c.wait(lambda: c._stream(sid).complete, 10), c._stream(sid))

    def test_plain_connect_refused_on_h2(self):
        c = hc.H2Client(self.port, timeout=10.0, track=False)
        self.addCleanup(c.close)
        c.handshake()
        sid = c.new_stream_id()
        fields = [(":method", "CONNECT"), (":authority", HOST + ":22")]
        c.send_raw(hc.headers_frame(sid, c.encode(fields), end_stream=False))
        r = c.response(sid, 10)
        self.assertTrue(r.status == 501 or r.reset_code is not None, r)
        self.assertFalse(any(p.startswith("22") for p in self.ws_peer.paths))

    def test_upgrade_refused_by_upstream_keeps_its_status(self):
        c = hc.H2Client(self.port, timeout=10.0, track=False)
        self.addCleanup(c.close)
        c.handshake()
        # plain.test's upstream is an HTTP origin: it answers the upgrade
        # request like any GET (no 101), and that answer reaches the client.
        sid = self.open_websocket(c, "/hello", authority="plain.test")
        r = c.response(sid, 10)
        self.assertIsNotNone(r.status, r)
        self.assertNotEqual(r.status, 101)
        self.assertTrue(r.ended or r.reset_code is not None, r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
