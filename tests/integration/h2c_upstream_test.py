#!/usr/bin/python3
"""`protocol: h2c` routes: the gateway forwards to an HTTP/2 upstream with
prior knowledge (h2_origin.py, python3-h2), multiplexing the exchanges of
many clients, HTTP/1.1 and HTTP/2 alike, over a few upstream connections.
Checked: requests and bodies both ways (hashes), the same header rewriting
as HTTP/1.1 upstreams (X-Forwarded-*, X-Request-Id, no hop-by-hop fields),
responses without content-length (chunked to HTTP/1.1 clients), trailers,
HEAD/204/304, concurrency on one upstream connection, a dead upstream (502),
a response that takes too long (504), and that h2c with upstream_tls is
refused naming the field."""

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2_client as hc  # noqa: E402
from h2_origin import H2Origin, pattern  # noqa: E402

HOST = "app.test"


class H2cUpstreamTest(h.GatewayTestCase):
    HOST = HOST

    @classmethod
    def extra_setup(cls):
        cls.h2_origin = H2Origin()
        cls.dead_port = h.free_port()

    @classmethod
    def extra_teardown(cls):
        cls.h2_origin.stop()

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port, [
            h.route("h2c", HOST, cls.h2_origin.address, protocol="h2c"),
            h.route("dead", "dead.test", "127.0.0.1:%d" % cls.dead_port, protocol="h2c"),
        ], limits={"upstream_response_timeout": "2s"},
            control={"socket": os.path.join(cls.tmpdir, "control.sock")})

    def echo(self, status, body):
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def test_get_reaches_the_h2_upstream_with_rewritten_headers(self):
        status, headers, body = self.get("/echo?x=1", headers={"Connection": "close, x-hop",
                                                                "X-Hop": "1",
                                                                "X-Custom": "kept"})
        seen = self.echo(status, body)
        self.assertEqual(seen["method"], "GET")
        self.assertEqual(seen["path"], "/echo?x=1")
        self.assertEqual(seen["authority"], HOST)
        names = [n for n, _ in seen["headers"]]
        self.assertIn("x-forwarded-for", names)
        self.assertIn("x-request-id", names)
        self.assertIn("x-custom", names)
        for hop in ("x-hop", "connection", "host", "transfer-encoding"):
            self.assertNotIn(hop, names)

    def test_post_body_both_ways(self):
        payload = os.urandom(3 * 1024 * 1024 + 17)
        status, _, body = self.get("/echo", method="POST", body=payload,
                                   headers={"Content-Type": "application/octet-stream"})
        seen = self.echo(status, body)
        self.assertEqual(seen["body_length"], len(payload))
        self.assertEqual(seen["body_sha256"], hashlib.sha256(payload).hexdigest())

    def test_chunked_request_body(self):
        data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [b"a" * 1000, b"b" * 70000])
        raw = (b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + data + b"0\r\n\r\n")
        responses, _ = h.parse_responses(self.raw(raw, timeout=10)[0])
        self.assertEqual(responses[0].status, 200, responses)
        seen = json.loads(responses[0].body)
        self.assertEqual(seen["body_length"], 71000)

    def test_large_download_and_no_length_is_chunked(self):
        status, _, body = self.get("/bytes/%d" % (8 * 1024 * 1024))
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(),
                         hashlib.sha256(pattern(8 * 1024 * 1024)).hexdigest())
        raw = self.raw(b"GET /nolength/100000 HTTP/1.1\r\nHost: app.test\r\n"
                       b"Connection: close\r\n\r\n", timeout=10)
        responses, _ = h.parse_responses(raw[0])
        self.assertEqual(responses[0].status, 200)
        self.assertIn("chunked", responses[0].header("transfer-encoding", "").lower())
        self.assertEqual(responses[0].body, pattern(100000))

    def test_trailers_reach_an_http1_client(self):
        raw = self.raw(b"GET /trailers HTTP/1.1\r\nHost: app.test\r\nTE: trailers\r\n"
                       b"Connection: close\r\n\r\n", timeout=10)
        responses, _ = h.parse_responses(raw[0])
        self.assertEqual(responses[0].body, b"ok")
        self.assertIn(("x-checksum", "abc"),
                      [(k.lower(), v) for k, v in (responses[0].trailers or [])])

    def test_head_204_304(self):
        status, headers, body = self.get("/bytes/500", method="HEAD")
        self.assertEqual((status, body), (200, b""))
        for code in (204, 304):
            status, _, body = self.get("/status/%d" % code)
            self.assertEqual((status, body), (code, b""))

    def test_many_clients_share_few_upstream_connections(self):
        before = self.h2_origin.connections

        def one(i):
            status, _, body = h.http_get(self.port, "/echo?n=%d" % i, HOST)
            return status, json.loads(body)["connection"]
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(200)))
        self.assertTrue(all(s == 200 for s, _ in results), results[:5])
        used = {c for _, c in results}
        self.assertLessEqual(self.h2_origin.connections - before, 2,
                             "200 requests opened %d upstream connections" %
                             (self.h2_origin.connections - before))
        self.assertLessEqual(len(used), 2)

    def test_h2_client_to_h2c_upstream(self):
        c = hc.H2Client(self.port, timeout=10.0)
        self.addCleanup(c.close)
        ids = [c.request("GET", "/echo?s=%d" % i, HOST, flush=False) for i in range(50)]
        c.flush()
        for sid in ids:
            r = c.response(sid, 15)
            self.assertEqual(r.status, 200, r)
        post = c.request("POST", "/echo", HOST, body=os.urandom(300000))
        r = c.response(post, 15)
        self.assertEqual(json.loads(bytes(r.body))["body_length"], 300000)

    def test_dead_upstream_is_502(self):
        status, _, body = self.get("/x", host="dead.test")
        self.assertEqual(status, 502, body)

    def test_slow_upstream_is_504(self):
        status, _, body = self.get("/slow/4000")
        self.assertEqual(status, 504, body)
        # The session is still usable.
        status, _, _ = self.get("/echo")
        self.assertEqual(status, 200)

    def test_h2c_with_upstream_tls_is_refused(self):
        api = h.ControlClient(socket_path=os.path.join(self.tmpdir, "control.sock"))
        route = h.route("bad", "bad.test", self.h2_origin.address, protocol="h2c",
                        upstream_tls=True)
        reply = api.request("PUT", "/routes/bad?version=1000", body=route)
        self.assertEqual(reply.status, 400, reply.body)
        self.assertIn("upstream_tls", reply.json().get("field", ""))


if __name__ == "__main__":
    unittest.main(verbosity=2)
