#!/usr/bin/python3
"""A 1xx, 204 or 304 response has no body, whatever Content-Length or
Transfer-Encoding it carries (RFC 9112 6.3). Found by
fuzz/http1_response_fuzzer: the gateway framed such a response as bodiless
for the client while its parser went on to read a body from the upstream, so
a 304 with the representation's Content-Length hung the connection, and bytes
after a 204 reached the client as the response to its next request (an
upstream could answer requests it never received). The origin here is a raw
socket that writes exactly the bytes each path names."""

import os
import socket
import socketserver
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"

SCRIPTED = {
    b"/304-with-length": b"HTTP/1.1 304 Not Modified\r\nETag: \"xyzzy\"\r\n"
                         b"Content-Length: 1234\r\n\r\n",
    b"/304-with-chunked": b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"/204-then-injection": b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(INJECTED), INJECTED),
    b"/100-with-length": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ScriptedOrigin:
    """Answers each request (head only) with the bytes scripted for its
    path, or a 200 "ok"; keeps connections alive."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    try:
                        data = self.request.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffered += data
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1]
                self.request.sendall(SCRIPTED.get(path, OK))

    def __init__(self):
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((h.LOOPBACK, 0), self.Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "%s:%d" % (h.LOOPBACK, self.server.server_address[1])

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class NoBodyStatusDesyncTest(h.GatewayTestCase):

    @classmethod
    def extra_setup(cls):
        cls.scripted = ScriptedOrigin()

    @classmethod
    def extra_teardown(cls):
        cls.scripted.stop()

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port,
                             [h.route("scripted", "app.test", cls.scripted.address)],
                             limits={"upstream_response_timeout": "30s"})

    def assert_next_request_served(self, conn, what):
        try:
            r = conn.roundtrip("GET", "/ok")
        except socket.timeout:
            self.fail("%s: the next request on the connection got no answer in 5 s "
                      "(the gateway still reads a body for the bodiless response)" % what)
        self.assertEqual((r.status, r.body), (200, b"ok"),
                         "%s: the next request got another response: %r" % (what, r))

    def test_304_with_content_length_has_no_body(self):
        with h.RawConn(self.port, timeout=5) as c:
            r = c.roundtrip("GET", "/304-with-length")
            self.assertEqual(r.status, 304)
            self.assertEqual(r.body, b"")
            self.assert_next_request_served(c, "304 with Content-Length")

    def test_304_with_chunked_has_no_body(self):
        with h.RawConn(self.port, timeout=5) as c:
            r = c.roundtrip("GET", "/304-with-chunked")
            self.assertEqual(r.status, 304)
            self.assert_next_request_served(c, "304 with Transfer-Encoding: chunked")

    def test_bytes_after_204_never_reach_the_client(self):
        with h.RawConn(self.port, timeout=5) as c:
            r = c.roundtrip("GET", "/204-then-injection")
            self.assertEqual(r.status, 204)
            self.assert_next_request_served(c, "204 followed by a second response")

    def test_interim_100_with_content_length(self):
        with h.RawConn(self.port, timeout=5) as c:
            r = c.roundtrip("GET", "/100-with-length")  # skips the 1xx
            self.assertEqual((r.status, r.body), (200, b"final"), repr(r))
            self.assert_next_request_served(c, "100 with Content-Length")


if __name__ == "__main__":
    h.main()
