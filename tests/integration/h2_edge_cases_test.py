#!/usr/bin/python3
"""HTTP/2 edge cases found by review and by the http2_frames fuzzer: a Host
field that disagrees with :authority never reaches the upstream; HEAD gets
the length of a local answer but not its body (HTTP/2 and HTTP/1.1, where a
body would corrupt the next response on the connection); the tunnel
endpoint is not forwarded over HTTP/2; a request body that stops arriving
is answered 408 after limits.client_body_timeout; a WebSocket over HTTP/2
is closed after its tunnel idle timeout."""

import json
import os
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2_client as hc  # noqa: E402
from h2_websocket_test import ws_client_frame  # noqa: E402

HOST = "app.test"


class H2EdgeCasesTest(h.GatewayTestCase):
    HOST = HOST

    @classmethod
    def extra_setup(cls):
        cls.ws_peer = h.WebSocketPeer()

    @classmethod
    def extra_teardown(cls):
        cls.ws_peer.stop()

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port, [
            h.route("r1", HOST, cls.origin.address),
            h.route("ws", "ws.test", "127.0.0.1:%d" % cls.ws_peer.port,
                    tunnel_idle_timeout_ms=1500),
        ], limits={"client_body_timeout": "1s"})

    def client(self, **kw):
        c = hc.H2Client(self.port, timeout=10.0, **kw)
        self.addCleanup(c.close)
        return c

    def test_host_field_disagreeing_with_authority_is_dropped(self):
        c = self.client()
        sid = c.request("GET", "/headers", HOST, headers=[("host", "evil.test")])
        r = c.response(sid, 10)
        self.assertEqual(r.status, 200, r)
        text = bytes(r.body).decode("latin-1").lower()
        self.assertNotIn("evil.test", text, "the client's Host reached the origin")

    def test_head_local_answer_has_no_body_on_h2(self):
        c = self.client()
        sid = c.request("HEAD", "/", "unknown.test")
        r = c.response(sid, 10)
        self.assertEqual(r.status, 404, r)
        self.assertTrue(r.ended, r)
        self.assertEqual(bytes(r.body), b"")
        self.assertGreater(int(r.header("content-length")), 0)

    def test_head_local_answer_keeps_http1_connection_in_step(self):
        s = h.connect(self.port)
        try:
            s.sendall(b"HEAD / HTTP/1.1\r\nHost: unknown.test\r\n\r\n"
                      b"GET / HTTP/1.1\r\nHost: unknown.test\r\nConnection: close\r\n\r\n")
            data = h.read_until_close(s, 5)[0]
        finally:
            s.close()
        responses, error = h.parse_responses(data, methods=["HEAD", "GET"])
        self.assertIsNone(error, data)
        self.assertEqual([r.status for r in responses], [404, 404], data)
        self.assertEqual(responses[0].body, b"")
        self.assertTrue(responses[1].body.startswith(b"404 Not Found"), data)

    def test_tunnel_endpoint_not_forwarded_over_h2(self):
        before = self.origin.requests
        c = self.client()
        sid = c.request("GET", "/.spacegate/tunnel/22", HOST)
        r = c.response(sid, 10)
        self.assertEqual(r.status, 501, r)
        self.assertEqual(self.origin.requests, before)

    def test_stalled_request_body_gets_408(self):
        c = self.client()
        sid = c.request("POST", "/upload", HOST, headers=[("content-length", "1000")],
                        end_stream=False)
        c.send_body(sid, b"x" * 10, end_stream=False)
        started = time.monotonic()
        r = c.response(sid, 10)
        elapsed = time.monotonic() - started
        self.assertTrue(r.status == 408 or r.reset_code is not None, r)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 6)

    def test_websocket_over_h2_idle_timeout(self):
        c = self.client(track=False)
        c.handshake()
        sid = c.new_stream_id()
        fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                  (":path", "/idle"), (":authority", "ws.test"),
                  ("sec-websocket-version", "13")]
        c.send_raw(hc.headers_frame(sid, c.encode(fields), end_stream=False))
        c.wait(lambda: c._stream(sid).status is not None, 10)
        self.assertEqual(c._stream(sid).status, 200)
        started = time.monotonic()
        self.assertTrue(c.wait(lambda: c._stream(sid).complete, 8), c._stream(sid))
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 1.0)
        self.assertIsNone(c.closed, "the connection itself must stay up")


if __name__ == "__main__":
    unittest.main(verbosity=2)
