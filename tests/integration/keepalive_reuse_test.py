#!/usr/bin/python3
"""Keep-alive on both sides: client connections stay usable, upstream
connections are pooled and reused, stale pooled connections are not fatal,
idle timeouts close what they should."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class UpstreamReuseTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port,
                             [h.route("r1", "app.test", cls.origin.address)],
                             upstream_pool={"idle_connections": 32,
                                            "idle_timeout": "60s"})

    def test_sequential_requests_one_client_connection(self):
        before = self.origin.connections
        with h.RawConn(self.port) as c:
            for i in range(20):
                r = c.roundtrip("GET", "/headers?i=%d" % i)
                self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
                self.assertEqual(r.json()["path"], "/headers?i=%d" % i)
            self.assertFalse(c.closed_by_peer(0.3),
                             "gateway closed a keep-alive client connection")
        opened = self.origin.connections - before
        self.assertLessEqual(opened, 2,
                             "20 sequential requests opened %d upstream "
                             "connections; the pool should reuse them" % opened)

    def test_sequential_requests_new_client_connections(self):
        before = self.origin.connections
        for i in range(20):
            status, _, body = self.get("/headers?n=%d" % i)
            self.assertEqual(status, 200)
        opened = self.origin.connections - before
        self.assertLessEqual(opened, 2,
                             "20 requests on 20 client connections opened %d "
                             "upstream connections; the pool should reuse "
                             "them" % opened)

    def test_mixed_methods_and_bodies_reuse(self):
        before = self.origin.connections
        with h.RawConn(self.port) as c:
            for i in range(10):
                r = c.roundtrip("POST", "/echo", body=b"x" * (i * 1000))
                self.assertEqual((r.status, len(r.body)), (200, i * 1000))
                r = c.roundtrip("GET", "/chunked/%d" % (i * 777))
                self.assertEqual(len(r.body), i * 777)
        opened = self.origin.connections - before
        self.assertLessEqual(opened, 2, "opened %d upstream connections" % opened)

    def test_concurrent_requests_beyond_pool_size(self):
        """100 requests at once (more than upstream_pool.idle_connections 32):
        all are served; the pool limits idle connections, not active ones."""
        import threading
        results = []
        lock = threading.Lock()

        def one(i):
            try:
                status, _, body = self.get("/slow/300?c=%d" % i, timeout=60)
            except Exception as e:
                status, body = repr(e), b""
            with lock:
                results.append(status)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        bad = [s for s in results if s != 200]
        self.assertEqual(len(results), 100, "only %d of 100 requests finished" % len(results))
        self.assertEqual(bad, [], "concurrent requests failed: %r" % bad[:10])
        # Afterwards, at most idle_connections upstream connections stay open.
        time.sleep(0.5)
        self.assertLessEqual(self.origin.open_connections, 32,
                             "more idle upstream connections kept than "
                             "upstream_pool.idle_connections (32)")

    def test_origin_connection_close_is_handled(self):
        """The origin answers with Connection: close; the client connection
        stays usable and the next request gets a fresh upstream."""
        with h.RawConn(self.port) as c:
            r = c.roundtrip("GET", "/close")
            self.assertEqual(r.status, 200)
            self.assertFalse(r.has_token("Connection", "close"),
                             "the origin's hop-by-hop 'Connection: close' was "
                             "passed to the client")
            r = c.roundtrip("GET", "/headers")
            self.assertEqual(r.status, 200,
                             "request after the origin closed its connection")

    def test_stale_pooled_connection_is_not_fatal(self):
        """The origin closes a pooled connection 200 ms after answering on it.
        A later request must not fail with 502 because the gateway picked the
        dead connection."""
        for i in range(3):
            status, _, _ = self.get("/close-later")
            self.assertEqual(status, 200)
            time.sleep(0.6)
            status, _, body = self.get("/headers?after-stale=%d" % i)
            self.assertEqual(status, 200,
                             "request after the origin closed an idle pooled "
                             "connection failed with %d: %r" % (status, body[:200]))

    def test_client_connection_close(self):
        with h.RawConn(self.port) as c:
            c.request("GET", "/headers", headers=[("Connection", "close")])
            r = c.response(timeout=10)
            self.assertEqual(r.status, 200)
            self.assertTrue(c.closed_by_peer(5),
                            "gateway kept the connection open after the client "
                            "sent Connection: close")

    def test_http10_client_closed_after_response(self):
        with h.RawConn(self.port) as c:
            c.send(b"GET /bytes/10 HTTP/1.0\r\nHost: app.test\r\n\r\n")
            r = c.response(timeout=10)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, h.pattern_bytes(10))
            self.assertFalse(r.chunked, "chunked response sent to an HTTP/1.0 client")
            self.assertTrue(c.closed_by_peer(5),
                            "HTTP/1.0 request without keep-alive: the gateway "
                            "must close after the response")

    def test_http10_client_gets_unchunked_body(self):
        # The origin answers chunked; an HTTP/1.0 client can't decode that.
        data, closed, _ = self.raw(b"GET /chunked/5000 HTTP/1.0\r\nHost: app.test\r\n\r\n",
                                   timeout=10)
        responses, err = h.parse_responses(data)
        self.assertTrue(responses, "no response: %r" % data[:300])
        r = responses[0]
        self.assertEqual(r.status, 200)
        self.assertFalse(r.chunked, "Transfer-Encoding: chunked sent to an HTTP/1.0 client")
        self.assertEqual(r.body, h.pattern_bytes(5000))


class IdleTimeoutsTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port,
                             [h.route("r1", "app.test", cls.origin.address)],
                             limits={"keepalive_idle_timeout": "2s"},
                             upstream_pool={"idle_connections": 32,
                                            "idle_timeout": "1s"})

    def test_client_keepalive_idle_timeout(self):
        with h.RawConn(self.port) as c:
            r = c.roundtrip("GET", "/headers")
            self.assertEqual(r.status, 200)
            time.sleep(0.3)
            r = c.roundtrip("GET", "/headers")
            self.assertEqual(r.status, 200, "connection idle 0.3 s was unusable")
            start = time.monotonic()
            closed = c.closed_by_peer(10)
            self.assertTrue(closed, "idle client connection still open 10 s after "
                            "the last response (keepalive_idle_timeout is 2s)")
            self.assertGreater(time.monotonic() - start, 1.0,
                               "idle connection closed well before keepalive_idle_timeout")

    def test_upstream_pool_idle_timeout(self):
        status, _, _ = self.get("/headers")
        self.assertEqual(status, 200)
        closed = h.wait_until(lambda: self.origin.open_connections == 0, 6)
        self.assertTrue(closed, "%d upstream connection(s) still open 6 s after "
                        "the last request (upstream_pool.idle_timeout is 1s)"
                        % self.origin.open_connections)
        # And a request after the pool emptied works.
        status, _, _ = self.get("/headers")
        self.assertEqual(status, 200)


if __name__ == "__main__":
    h.main()
