#!/usr/bin/python3
"""HTTP/1.1 pipelining: several requests written at once on one connection
are all answered, in request order, with correct bodies."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class PipeliningTest(h.GatewayTestCase):

    def read_n(self, conn, n, methods=None, timeout=20):
        out = []
        for i in range(n):
            m = methods[i] if methods else "GET"
            try:
                out.append(conn.response(m, timeout=timeout))
            except (h.IncompleteResponse, OSError) as e:
                self.fail("response %d of %d missing: %r (got %r)" % (i + 1, n, e, out))
        return out

    def test_three_gets_in_one_send(self):
        paths = ["/headers?first", "/headers?second", "/headers?third"]
        with h.RawConn(self.port) as c:
            c.send(b"".join(h.build_request("GET", p) for p in paths))
            rs = self.read_n(c, 3)
        got = [r.json()["path"] for r in rs]
        self.assertEqual(got, paths, "pipelined responses out of order")
        self.assertEqual([r.status for r in rs], [200, 200, 200])

    def test_pipelined_with_bodies(self):
        reqs = [h.build_request("POST", "/echo", body=b"A" * 1000),
                h.build_request("GET", "/bytes/2000"),
                h.build_request("POST", "/echo", body=b"B" * 3),
                h.build_request("HEAD", "/bytes/50"),
                h.build_request("GET", "/chunked/7000")]
        with h.RawConn(self.port) as c:
            c.send(b"".join(reqs))
            rs = self.read_n(c, 5, methods=["POST", "GET", "POST", "HEAD", "GET"])
        self.assertEqual(rs[0].body, b"A" * 1000)
        self.assertEqual(rs[1].body, h.pattern_bytes(2000))
        self.assertEqual(rs[2].body, b"B" * 3)
        self.assertEqual(rs[3].header("X-Origin-Path"), "/bytes/50")
        self.assertEqual(rs[4].body, h.pattern_bytes(7000))

    def test_slow_first_request_keeps_order(self):
        paths = ["/slow/700", "/bytes/5", "/headers?last"]
        with h.RawConn(self.port) as c:
            c.send(b"".join(h.build_request("GET", p) for p in paths))
            rs = self.read_n(c, 3)
        self.assertEqual([r.header("X-Origin-Path") for r in rs], paths,
                         "a slow first request let later responses overtake it")
        self.assertEqual(rs[0].body, b"slept 700")

    def test_ten_pipelined_last_closes(self):
        paths = ["/headers?n=%d" % i for i in range(10)]
        data = b"".join(h.build_request("GET", p) for p in paths[:-1])
        data += h.build_request("GET", paths[-1], headers=[("Connection", "close")])
        with h.RawConn(self.port) as c:
            c.send(data)
            rs = self.read_n(c, 10)
            self.assertEqual([r.json()["path"] for r in rs], paths)
            self.assertTrue(c.closed_by_peer(5),
                            "connection not closed after the pipelined request "
                            "carrying Connection: close")

    def test_hundred_pipelined_requests(self):
        paths = ["/headers?p=%d" % i for i in range(100)]
        with h.RawConn(self.port) as c:
            c.send(b"".join(h.build_request("GET", p) for p in paths))
            rs = self.read_n(c, 100)
        self.assertEqual([r.json()["path"] for r in rs], paths,
                         "100 pipelined responses lost or reordered")

    def test_pipelined_large_responses_bounded_memory(self):
        """40 requests for 1 MiB each, written at once, read only after a
        pause: the gateway must not buffer the 40 MiB of answers."""
        n, size = 40, h.MiB
        with h.RawConn(self.port, timeout=60) as c:
            c.send(b"".join(h.build_request("GET", "/bytes/%d?i=%d" % (size, i))
                            for i in range(n)))
            time.sleep(2)
            rss = self.gateway.rss_mib()
            for i in range(n):
                r = c.response(timeout=60)
                self.assertEqual(r.header("X-Origin-Path"), "/bytes/%d?i=%d" % (size, i))
                self.assertEqual(len(r.body), size)
            self.assertTrue(r.body == h.pattern_bytes(size))
        self.assertLess(rss, 60, "gateway RSS %.1f MiB while 40 pipelined 1 MiB "
                        "responses waited for the client: it buffers them" % rss)

    def test_requests_split_at_odd_boundaries(self):
        data = (h.build_request("POST", "/echo", body=b"hello world") +
                h.build_request("GET", "/headers?split"))
        with h.RawConn(self.port) as c:
            for i in range(0, len(data), 7):
                c.send(data[i:i + 7])
                time.sleep(0.002)
            rs = self.read_n(c, 2)
        self.assertEqual(rs[0].body, b"hello world")
        self.assertEqual(rs[1].json()["path"], "/headers?split")

    def test_pipelined_across_routes_and_errors(self):
        reqs = [h.build_request("GET", "/headers?a"),
                h.build_request("GET", "/nothing", host="unknown.test"),
                h.build_request("GET", "/headers?c")]
        with h.RawConn(self.port) as c:
            c.send(b"".join(reqs))
            first = c.response(timeout=20)
            second = c.response(timeout=20)
            self.assertEqual(first.json()["path"], "/headers?a")
            self.assertEqual(second.status, 404, "unknown host in a pipeline")
            if second.has_token("Connection", "close"):
                return  # the gateway may close after an error; that is fine
            third = c.response(timeout=20)
            self.assertEqual(third.json()["path"], "/headers?c")


if __name__ == "__main__":
    h.main()
