#!/usr/bin/python3
"""Error responses the gateway generates itself: 404 (no route), 502
(upstream refused/closed/garbage), 504 (upstream silent), 431 (header block
or field count over the limit), 413 (body over request_body_size), 400
(malformed). Each carries a short text body and none of the rejected
requests reaches the origin."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ErrorsTest(h.GatewayTestCase):

    @classmethod
    def extra_setup(cls):
        cls.dead_port = h.free_port()          # nothing listens here
        cls.hole = h.BlackHole()               # accepts (backlog), never answers
        cls.missing_sock = os.path.join(cls.tmpdir, "nobody-listens.sock")

    @classmethod
    def extra_teardown(cls):
        cls.hole.stop()

    @classmethod
    def make_config(cls):
        o = cls.origin.address
        return h.base_config(cls.gateway_port, [
            h.route("r1", "app.test", o),
            h.route("prefix", "prefix.test", o, path_prefix="/only"),
            h.route("dead", "dead.test", "127.0.0.1:%d" % cls.dead_port),
            h.route("hole", "hole.test", cls.hole.address),
            h.route("nosock", "nosock.test", "unix:" + cls.missing_sock),
        ], limits={
            "header_block_size": 4096,
            "header_field_count": 20,
            "request_body_size": 1024,
            "upstream_connect_timeout": "2s",
            "upstream_response_timeout": "1s",
            "header_read_timeout": "10s",
        })

    # -- helpers -----------------------------------------------------------

    def one_response(self, data, timeout=10):
        resp, err, elapsed, got = h.raw_response(self.port, data, timeout=timeout)
        self.assertIsNotNone(resp, "no complete response within %.0f s (%r): %r%s"
                             % (timeout, err, got[:300], self.gateway_context()))
        return resp, elapsed

    def assert_error(self, data, status, what, origin_untouched=True, timeout=10):
        before = self.origin.requests
        resp, elapsed = self.one_response(data, timeout)
        self.assertEqual(resp.status, status, "%s: expected %d, got %r"
                         % (what, status, resp))
        problem = h.short_text_body_problem(resp)
        self.assertIsNone(problem, "%s: the %d response should carry a short text "
                          "body: %s" % (what, status, problem))
        if origin_untouched:
            time.sleep(0.2)
            self.assertEqual(self.origin.requests, before,
                             "%s: the request reached the origin: %r"
                             % (what, self.origin.request_lines[before:]))
        return resp, elapsed

    # -- 404 ---------------------------------------------------------------

    def test_404_unknown_host(self):
        self.assert_error(h.build_request("GET", "/headers", host="nobody.test"),
                          404, "unknown host")

    def test_404_path_outside_every_prefix(self):
        status, _, _ = self.get("/only/x", host="prefix.test")
        self.assertEqual(status, 200, "path inside the prefix should route")
        self.assert_error(h.build_request("GET", "/elsewhere", host="prefix.test"),
                          404, "path outside the route's prefix")

    def test_404_then_connection_still_usable(self):
        with h.RawConn(self.port) as c:
            r = c.roundtrip("GET", "/x", host="nobody.test")
            self.assertEqual(r.status, 404)
            if r.has_token("Connection", "close"):
                self.assertTrue(c.closed_by_peer(5),
                                "said Connection: close after 404 but did not close")
                return
            r = c.roundtrip("GET", "/headers")
            self.assertEqual(r.status, 200,
                             "request after a 404 on the same connection failed")

    # -- 502 ---------------------------------------------------------------

    def test_502_upstream_refuses(self):
        resp, elapsed = self.assert_error(
            h.build_request("GET", "/", host="dead.test"), 502,
            "upstream port closed", origin_untouched=False)
        self.assertLess(elapsed, 8, "502 for a refused connect took %.1f s" % elapsed)

    def test_502_missing_unix_socket(self):
        self.assert_error(h.build_request("GET", "/", host="nosock.test"), 502,
                          "upstream unix socket missing", origin_untouched=False)

    def test_502_upstream_closes_without_response(self):
        self.assert_error(h.build_request("GET", "/drop"), 502,
                          "upstream closed without answering", origin_untouched=False)

    def test_502_upstream_sends_garbage(self):
        self.assert_error(h.build_request("GET", "/garbage"), 502,
                          "upstream answered with garbage", origin_untouched=False)

    # -- 504 ---------------------------------------------------------------

    def test_504_upstream_never_answers(self):
        resp, elapsed = self.assert_error(h.build_request("GET", "/silent"), 504,
                                          "origin read the request and stayed silent",
                                          origin_untouched=False, timeout=20)
        self.assertGreater(elapsed, 0.5, "504 came before upstream_response_timeout (1s)")
        self.assertLess(elapsed, 10, "504 took %.1f s with a 1s timeout" % elapsed)

    def test_504_upstream_blackhole(self):
        resp, elapsed = self.assert_error(h.build_request("GET", "/", host="hole.test"),
                                          504, "upstream accepted (backlog) and never "
                                          "answered", origin_untouched=False, timeout=20)
        self.assertLess(elapsed, 10, "504 took %.1f s" % elapsed)

    # -- 431 ---------------------------------------------------------------

    def test_431_header_block_too_large(self):
        headers = [("X-Filler-%d" % i, "v" * 1000) for i in range(8)]  # ~8 KiB
        self.assert_error(h.build_request("GET", "/headers", headers=headers), 431,
                          "8 KiB header block with header_block_size 4096")

    def test_431_single_huge_header(self):
        self.assert_error(h.build_request("GET", "/headers",
                                          headers=[("X-Big", "b" * 8192)]),
                          431, "one 8 KiB header with header_block_size 4096")

    def test_431_too_many_fields(self):
        headers = [("X-F%d" % i, "1") for i in range(30)]
        self.assert_error(h.build_request("GET", "/headers", headers=headers), 431,
                          "31 header fields with header_field_count 20")

    def test_under_header_limits_passes(self):
        headers = [("X-F%d" % i, "v" * 150) for i in range(15)]  # ~2.5 KiB, 16 fields
        status, _, body = self.get("/headers", headers=dict(headers))
        self.assertEqual(status, 200, "a request inside the header limits was "
                         "refused: %r" % body[:200])

    # -- 413 ---------------------------------------------------------------

    def test_413_content_length_over_limit(self):
        self.assert_error(h.build_request("POST", "/sha256", body=b"x" * 2048), 413,
                          "2048-byte body with request_body_size 1024")

    def test_413_chunked_body_over_limit(self):
        data = (b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" +
                h.chunk_encode([b"y" * 600, b"y" * 600, b"y" * 848]))
        self.assert_error(data, 413, "2048-byte chunked body with request_body_size 1024",
                          origin_untouched=False)

    def test_body_at_limit_passes(self):
        status, _, body = self.get("/sha256", method="POST", body=b"z" * 1024)
        self.assertEqual(status, 200, "a 1024-byte body with request_body_size "
                         "1024 was refused: %r" % body[:200])

    # -- 400 ---------------------------------------------------------------

    MALFORMED = [
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        ("header without colon", b"GET / HTTP/1.1\r\nHost app.test\r\n\r\n"),
        ("bad version", b"GET / HTTP/x.y\r\nHost: app.test\r\n\r\n"),
        ("space inside header name",
         b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Name: x\r\n\r\n"),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n"),
        ("two different Host headers",
         b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n"),
        ("bad character in method", b"G(T / HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        ("space inside request target",
         b"GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        ("non-numeric Content-Length",
         b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: abc\r\n\r\n"),
        ("negative Content-Length",
         b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: -1\r\n\r\n"),
        ("invalid Host value",
         b"GET / HTTP/1.1\r\nHost: app.test/evil\r\n\r\n"),
    ]

    def test_400_malformed_requests(self):
        for what, data in self.MALFORMED:
            with self.subTest(case=what):
                self.assert_error(data, 400, what)


if __name__ == "__main__":
    h.main()
