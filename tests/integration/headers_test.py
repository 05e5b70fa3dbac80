#!/usr/bin/python3
"""Header handling: X-Forwarded-*, X-Request-Id, hop-by-hop removal in both
directions, Host and end-to-end headers preserved, request target passed
through unchanged."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def seen(report, name):
    """All values of header `name` the origin saw (case-insensitive)."""
    return [v for k, v in report["headers"] if k.lower() == name.lower()]


def joined(report, name):
    return ", ".join(seen(report, name))


class HeadersTest(h.GatewayTestCase):

    def report(self, path="/headers", headers=(), host="app.test", method="GET",
               body=None):
        with h.RawConn(self.port) as c:
            c.request(method, path, host=host, headers=headers, body=body)
            r = c.response(method, timeout=15)
        self.assertEqual(r.status, 200, "origin did not answer: %r" % r)
        is_json = (r.header("Content-Type") or "").startswith("application/json")
        return (r.json() if is_json else None), r

    # -- forwarding headers ------------------------------------------------

    def test_x_forwarded_for_added(self):
        rep, _ = self.report()
        xff = joined(rep, "X-Forwarded-For")
        self.assertTrue(xff, "origin saw no X-Forwarded-For: %r" % rep["headers"])
        self.assertEqual(xff.split(",")[-1].strip(), "127.0.0.1",
                         "X-Forwarded-For should end with the client address: %r" % xff)

    def test_x_forwarded_for_appended(self):
        rep, _ = self.report(headers=[("X-Forwarded-For", "203.0.113.7")])
        parts = [p.strip() for p in joined(rep, "X-Forwarded-For").split(",")]
        self.assertEqual(parts, ["203.0.113.7", "127.0.0.1"],
                         "the client's X-Forwarded-For must be kept and the client "
                         "address appended: %r" % seen(rep, "X-Forwarded-For"))

    def test_x_forwarded_proto_and_host(self):
        rep, _ = self.report()
        self.assertEqual(seen(rep, "X-Forwarded-Proto"), ["http"])
        self.assertEqual(seen(rep, "X-Forwarded-Host"), ["app.test"])

    def test_x_forwarded_proto_not_spoofable(self):
        rep, _ = self.report(headers=[("X-Forwarded-Proto", "https")])
        self.assertEqual(seen(rep, "X-Forwarded-Proto"), ["http"],
                         "a client-sent X-Forwarded-Proto must be replaced on a "
                         "plaintext listener")

    def test_request_id_generated(self):
        ids = []
        for _ in range(3):
            rep, _ = self.report()
            rid = seen(rep, "X-Request-Id")
            self.assertEqual(len(rid), 1, "expected one generated X-Request-Id, got %r" % rid)
            self.assertGreaterEqual(len(rid[0]), 8, "request id %r looks too short" % rid[0])
            ids.append(rid[0])
        self.assertEqual(len(set(ids)), 3, "generated request ids repeat: %r" % ids)

    def test_request_id_kept(self):
        rep, _ = self.report(headers=[("X-Request-Id", "client-id-123")])
        self.assertEqual(seen(rep, "X-Request-Id"), ["client-id-123"],
                         "a client-sent X-Request-Id must be passed on unchanged")

    # -- hop-by-hop --------------------------------------------------------

    def test_hop_by_hop_request_headers_removed(self):
        rep, _ = self.report(headers=[
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Secret-Hop", "must-not-pass"),
            ("TE", "gzip"),
            ("X-End-To-End", "must-pass"),
        ])
        for name in ("Connection", "Keep-Alive", "Proxy-Connection", "X-Secret-Hop"):
            self.assertEqual(seen(rep, name), [],
                             "hop-by-hop header %s reached the origin: %r"
                             % (name, seen(rep, name)))
        te = [v for v in seen(rep, "TE") if v.strip().lower() != "trailers"]
        self.assertEqual(te, [], "TE other than 'trailers' reached the origin: %r" % te)
        self.assertEqual(seen(rep, "X-End-To-End"), ["must-pass"])

    def test_connection_close_token_not_forwarded(self):
        with h.RawConn(self.port) as c:
            c.request("GET", "/headers", headers=[("Connection", "close")])
            r = c.response(timeout=10)
        rep = r.json()
        self.assertEqual(seen(rep, "Connection"), [],
                         "the client's Connection header reached the origin")

    def test_hop_by_hop_response_headers_removed(self):
        _, r = self.report("/hop-response")
        self.assertEqual(r.header_all("X-Resp-Hop"), [],
                         "a header the origin named in Connection reached the client")
        self.assertEqual(r.header_all("Keep-Alive"), [],
                         "the origin's Keep-Alive header reached the client")
        for v in r.header_all("Connection"):
            self.assertNotIn("x-resp-hop", v.lower(),
                             "the origin's Connection header reached the client")
        self.assertEqual(r.header("X-Origin-Custom"), "yes")

    def test_informational_1xx_response(self):
        """The origin sends 103 Early Hints before its 200: the client must
        get the 200 (the 103 may be passed on or dropped) and the connection
        must stay in sync."""
        with h.RawConn(self.port) as c:
            c.request("GET", "/early-hints")
            r = c.response(timeout=10)  # skips any 1xx
            self.assertEqual((r.status, r.body), (200, b"after hints\n"), repr(r))
            r = c.roundtrip("GET", "/bytes/3")
            self.assertEqual(r.body, h.pattern_bytes(3),
                             "connection out of sync after a 1xx response")

    # -- preserved things --------------------------------------------------

    def test_host_preserved(self):
        rep, _ = self.report()
        self.assertEqual(seen(rep, "Host"), ["app.test"])
        rep, _ = self.report(host="app.test:%d" % self.port)
        self.assertEqual(seen(rep, "Host"), ["app.test:%d" % self.port],
                         "Host with a port must reach the origin unchanged")

    def test_end_to_end_headers_preserved(self):
        long_value = "v" * 2000
        rep, _ = self.report(headers=[
            ("X-Dup", "one"), ("X-Dup", "two"),
            ("x-lower-case", "Mixed Value"),
            ("X-Long", long_value),
            ("X-Empty", ""),
            ("X-Special", "a=b; c=\"d,e\"; f"),
            ("Authorization", "Bearer opaque-token"),
            ("Cookie", "k=v"),
            ("User-Agent", "integration-test/1.0"),
        ])
        self.assertEqual(", ".join(seen(rep, "X-Dup")), "one, two",
                         "repeated header lost or reordered: %r" % seen(rep, "X-Dup"))
        self.assertEqual(seen(rep, "X-Lower-Case"), ["Mixed Value"])
        self.assertEqual(seen(rep, "X-Long"), [long_value])
        self.assertEqual(seen(rep, "X-Empty"), [""], "empty header value dropped")
        self.assertEqual(seen(rep, "X-Special"), ["a=b; c=\"d,e\"; f"])
        self.assertEqual(seen(rep, "Authorization"), ["Bearer opaque-token"])
        self.assertEqual(seen(rep, "Cookie"), ["k=v"])
        self.assertEqual(seen(rep, "User-Agent"), ["integration-test/1.0"])

    def test_large_header_block_under_default_limit(self):
        """header_block_size defaults to 65536: a 48 KiB header block (bigger
        than any single read buffer) must pass, byte for byte."""
        headers = [("X-Big-%d" % i, chr(ord("a") + i) * 8000) for i in range(6)]
        rep, _ = self.report(headers=headers)
        for name, value in headers:
            self.assertEqual(seen(rep, name), [value],
                             "%s (8000 bytes) did not arrive intact" % name)

    def test_single_long_header_under_default_limit(self):
        for n in (16000, 20000, 32000, 60000):
            with self.subTest(value_length=n):
                value = "".join(chr(ord("a") + i % 26) for i in range(n))
                with h.RawConn(self.port) as c:
                    c.request("GET", "/headers", headers=[("X-Long", value)])
                    r = c.response(timeout=15)
                self.assertEqual(r.status, 200,
                                 "a %d-byte header with the default header_block_size "
                                 "65536 was refused: %r" % (n, r))
                self.assertEqual(seen(r.json(), "X-Long"), [value])

    def test_headers_split_across_reads(self):
        """The same request written in two pieces, split at every offset, so
        the gateway reads the head in two reads: the origin must always see
        exactly the same headers (head parsing keeps spans into read
        buffers, so this is where a stale or doubled span would show)."""
        custom = [("X-Dup", "one"), ("X-Dup", "two"), ("X-Empty", ""),
                  ("X-Special", "a=b; c=\"d,e\"; f"), ("Cookie", "k=v"),
                  ("User-Agent", "split-test/1.0")]
        req = h.build_request("POST", "/headers?split", headers=custom, body=b"0123456789")
        expected = [[k.lower(), v] for k, v in custom]
        failures = []
        for cut in range(1, len(req)):
            with h.RawConn(self.port) as c:
                c.send(req[:cut])
                time.sleep(0.003)
                c.send(req[cut:])
                r = c.response(timeout=10)
            if r.status != 200:
                failures.append((cut, "status %d" % r.status))
                continue
            rep = r.json()
            got = [[k.lower(), v] for k, v in rep["headers"]
                   if k.lower() in ("x-dup", "x-empty", "x-special", "cookie", "user-agent")]
            if got != expected or rep["body_length"] != 10 or rep["path"] != "/headers?split":
                failures.append((cut, got, rep["body_length"], rep["path"]))
        self.assertEqual(failures, [], "request split at these offsets (of %d bytes) "
                         "arrived differently: %r" % (len(req), failures[:5]))

    def test_long_header_split_across_reads(self):
        value = "".join(chr(ord("a") + i % 26) for i in range(12000))
        custom = [("X-Before", "b"), ("X-Long", value), ("X-After", "a")]
        req = h.build_request("GET", "/headers?long-split", headers=custom)
        failures = []
        cuts = [1, 100, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097,
                8191, 8192, 8193, 12000, 12100, len(req) - 2, len(req) - 1]
        for cut in cuts:
            with h.RawConn(self.port) as c:
                c.send(req[:cut])
                time.sleep(0.01)
                c.send(req[cut:])
                r = c.response(timeout=10)
            if r.status != 200:
                failures.append((cut, r.status))
                continue
            got = [(k, v) for k, v in r.json()["headers"] if k.startswith("X-")
                   and not k.startswith(("X-Forwarded", "X-Request-Id"))]
            if got != custom:
                failures.append((cut, [(k, len(v)) for k, v in got]))
        self.assertEqual(failures, [], "a 12 KB header split across reads arrived "
                         "differently at these offsets: %r" % failures[:5])

    def test_large_response_header(self):
        """Origins send big response heads (CSP, Set-Cookie, Link). Expected:
        a response head is accepted up to the same header_block_size (65536
        by default) as a request head; 12 KB and 32 KB values must pass."""
        for n in (12000, 32000):
            with self.subTest(value_length=n):
                resp, err, _, raw = h.raw_response(
                    self.port, h.build_request("GET", "/big-response-header/%d" % n))
                self.assertIsNotNone(resp, "no response: %r %r" % (err, raw[:200]))
                self.assertEqual(resp.status, 200, "a %d-byte response header was "
                                 "refused: %r" % (n, resp))
                self.assertEqual(len(resp.header("X-Big-Response") or ""), n)

    def test_request_target_unchanged(self):
        for target in ["/headers?a=1&b=%20x&c", "/headers/%2F/enc%3Fd?q=%26",
                       "/headers//double//slashes", "/headers?"]:
            with self.subTest(target=target):
                rep, _ = self.report(target)
                self.assertEqual(rep["path"], target,
                                 "the request target was rewritten")

    def test_methods_passed_through(self):
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]:
            with self.subTest(method=method):
                body = b"payload" if method in ("POST", "PUT", "PATCH") else None
                rep, _ = self.report(method=method, body=body)
                self.assertEqual(rep["method"], method)
                if body:
                    self.assertEqual(rep["body_length"], len(body))

    def test_response_headers_preserved(self):
        _, r = self.report("/hop-response")
        self.assertEqual(r.header_all("Set-Cookie"), ["a=1; Path=/", "b=2; Path=/"],
                         "Set-Cookie lines must stay separate and in order")
        self.assertEqual(r.header("X-Origin-Name"), "origin")


if __name__ == "__main__":
    h.main()
