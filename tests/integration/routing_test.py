#!/usr/bin/python3
"""Routing: exact host, case-insensitive host, host with port, wildcard host
(exact beats wildcard, apex not matched), longest path prefix, strip_prefix,
unix-socket and DNS-name upstreams, 404 for unknown hosts; run with two
workers so both loops serve the same table."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class RoutingTest(h.GatewayTestCase):

    @classmethod
    def extra_setup(cls):
        cls.origin_b = h.Origin("B")
        cls.origin_u = h.Origin("U", unix_path=os.path.join(cls.tmpdir, "origin.sock"))

    @classmethod
    def extra_teardown(cls):
        cls.origin_b.stop()
        cls.origin_u.stop()

    @classmethod
    def make_config(cls):
        a, b = cls.origin.address, cls.origin_b.address
        config = h.base_config(cls.gateway_port, [
            h.route("root", "app.test", a),
            h.route("api", "app.test", b, path_prefix="/api"),
            h.route("api-v2", "app.test", a, path_prefix="/api/v2"),
            h.route("gs-x", "app.test", b, path_prefix="/gs/x", strip_prefix=True),
            h.route("gs-x-slash", "app.test", b, path_prefix="/gs/y/", strip_prefix=True),
            h.route("wild", "*.wild.test", b),
            h.route("exact-in-wild", "exact.wild.test", a),
            h.route("unix", "unix.test", cls.origin_u.address),
            h.route("dns", "dns.test", "localhost:%d" % cls.origin.port),
        ])
        config["workers"] = 2
        return config

    def where(self, path, host):
        """(origin name, path the origin saw) for a request."""
        status, headers, body = self.get(path, host=host)
        self.assertEqual(status, 200, "%s%s: status %d body %r"
                         % (host, path, status, body[:200]))
        import json
        rep = json.loads(body)
        return rep["origin"], rep["path"]

    def test_exact_host(self):
        self.assertEqual(self.where("/x", "app.test"), ("origin", "/x"))

    def test_host_case_insensitive(self):
        self.assertEqual(self.where("/x", "APP.Test")[0], "origin",
                         "host names are case-insensitive")

    def test_host_with_port(self):
        self.assertEqual(self.where("/x", "app.test:%d" % self.port)[0], "origin",
                         "Host with a port must match the route's host")

    def test_unknown_host_404(self):
        before = (self.origin.requests, self.origin_b.requests)
        resp, err, _, data = h.raw_response(self.port,
                                            h.build_request("GET", "/x", host="nope.test"))
        self.assertIsNotNone(resp, "no response (%r): %r" % (err, data[:200]))
        self.assertEqual(resp.status, 404)
        problem = h.short_text_body_problem(resp)
        self.assertIsNone(problem, "404 should have a short text body: %s" % problem)
        time.sleep(0.2)
        self.assertEqual((self.origin.requests, self.origin_b.requests), before,
                         "an unroutable request reached an origin")

    def test_longest_prefix_wins(self):
        self.assertEqual(self.where("/api", "app.test"), ("B", "/api"))
        self.assertEqual(self.where("/api/users", "app.test"), ("B", "/api/users"))
        self.assertEqual(self.where("/api/v2/users", "app.test"), ("origin", "/api/v2/users"))
        self.assertEqual(self.where("/other", "app.test"), ("origin", "/other"))
        self.assertEqual(self.where("/", "app.test"), ("origin", "/"))

    def test_strip_prefix(self):
        cases = [("/gs/x/foo", "/foo"), ("/gs/x/foo/bar?q=1", "/foo/bar?q=1"),
                 ("/gs/x", "/"), ("/gs/x/", "/"), ("/gs/x?q=1", "/?q=1")]
        for path, expect in cases:
            with self.subTest(path=path):
                self.assertEqual(self.where(path, "app.test"), ("B", expect),
                                 "strip_prefix of /gs/x on %s" % path)

    def test_strip_prefix_with_trailing_slash_prefix(self):
        self.assertEqual(self.where("/gs/y/foo", "app.test"), ("B", "/foo"))
        self.assertEqual(self.where("/gs/y/", "app.test"), ("B", "/"))

    def test_wildcard_host(self):
        self.assertEqual(self.where("/w", "foo.wild.test"), ("B", "/w"))
        self.assertEqual(self.where("/w", "3000--gs-abc.wild.test")[0], "B")

    def test_exact_beats_wildcard(self):
        self.assertEqual(self.where("/e", "exact.wild.test"), ("origin", "/e"))

    def test_wildcard_does_not_match_apex(self):
        status, _, _ = self.get("/", host="wild.test")
        self.assertEqual(status, 404, "'*.wild.test' must not match 'wild.test'")

    def test_unix_socket_upstream(self):
        self.assertEqual(self.where("/via-unix", "unix.test"), ("U", "/via-unix"))

    def test_dns_name_upstream(self):
        self.assertEqual(self.where("/via-dns", "dns.test"), ("origin", "/via-dns"))

    def test_absolute_form_request_target(self):
        """RFC 9112 3.2.2: a server must accept absolute-form; its authority
        wins over Host."""
        data = (b"GET http://app.test/api/abs HTTP/1.1\r\nHost: app.test\r\n"
                b"Connection: close\r\n\r\n")
        got, _, _ = self.raw(data, timeout=10)
        responses, _ = h.parse_responses(got)
        self.assertTrue(responses, "no response: %r" % got[:200])
        self.assertEqual(responses[0].status, 200, repr(responses[0]))
        self.assertEqual(responses[0].json()["origin"], "B")

    def test_both_workers_route_the_same(self):
        # Many fresh connections spread over both SO_REUSEPORT workers.
        for i in range(40):
            self.assertEqual(self.where("/api/n%d" % i, "app.test")[0], "B")
            self.assertEqual(self.where("/gs/x/n%d" % i, "app.test"), ("B", "/n%d" % i))


if __name__ == "__main__":
    h.main()
