#!/usr/bin/python3
"""Access log: one JSON object per line per request, with the documented
keys, matching what happened (status, bytes, route, upstream) and carrying the
same request id the origin saw in X-Request-Id."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

KEYS = ["time", "request_id", "worker", "client", "method", "host", "path",
        "status", "bytes_in", "bytes_out", "route", "upstream", "upstream_time",
        "total_time"]


def parse_lines(text, what):
    entries, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(obj, dict):
            entries.append(obj)
        else:
            bad.append(line)
    return entries, bad


class AccessLogTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        cls.log_path = os.path.join(cls.tmpdir, "access.log")
        cls.dead_port = h.free_port()
        return h.base_config(cls.gateway_port, [
            h.route("r1", "app.test", cls.origin.address),
            h.route("dead", "dead.test", "127.0.0.1:%d" % cls.dead_port),
        ], access_log=cls.log_path)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def entries_for(self, request_ids, timeout=2.5):
        """Poll the log until an entry exists for each id; returns
        {id: [entries]}."""
        def collect():
            entries, _ = parse_lines(self.read_log(), "log")
            found = {rid: [e for e in entries if e.get("request_id") == rid]
                     for rid in request_ids}
            return found if all(found.values()) else None
        found = h.wait_until(collect, timeout, 0.1)
        if not found:
            entries, bad = parse_lines(self.read_log(), "log")
            self.fail("no access log entry for some of %r within %.1f s; log has "
                      "%d entries, last: %r; non-JSON lines: %r"
                      % (request_ids, timeout, len(entries), entries[-3:], bad[:3]))
        return found

    def test_every_line_is_a_json_object(self):
        for i in range(5):
            self.get("/headers", headers={"X-Request-Id": "lines-%d" % i})
        self.entries_for(["lines-%d" % i for i in range(5)])
        entries, bad = parse_lines(self.read_log(), "log")
        self.assertEqual(bad, [], "access log lines that are not JSON objects")

    def test_fields_of_a_proxied_request(self):
        rid = "al-fields-1"
        status, _, body = self.get("/headers?x=1", headers={"X-Request-Id": rid})
        self.assertEqual(status, 200)
        e = self.entries_for([rid])[rid]
        self.assertEqual(len(e), 1, "one request produced %d log lines: %r" % (len(e), e))
        e = e[0]
        missing = [k for k in KEYS if k not in e]
        self.assertEqual(missing, [], "access log entry lacks keys: %r" % e)
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["host"], "app.test")
        self.assertIn(e["path"], ("/headers?x=1", "/headers"), repr(e))
        self.assertEqual(int(e["status"]), 200)
        self.assertEqual(e["route"], "r1")
        self.assertIn(str(self.origin.port), str(e["upstream"]),
                      "upstream field should name the origin: %r" % e["upstream"])
        self.assertIn("127.0.0.1", str(e["client"]))
        self.assertIsInstance(e["worker"], int)
        self.assertGreaterEqual(int(e["bytes_out"]), len(body),
                                "bytes_out smaller than the body sent")
        for k in ("upstream_time", "total_time"):
            self.assertIsInstance(e[k], (int, float), "%s should be a number: %r" % (k, e))
            self.assertGreaterEqual(e[k], 0)
        self.assertTrue(str(e["time"]), "empty time")

    def test_generated_request_id_matches_origin(self):
        status, _, body = self.get("/headers?gen=1")
        self.assertEqual(status, 200)
        rep = json.loads(body)
        ids = [v for k, v in rep["headers"] if k.lower() == "x-request-id"]
        self.assertEqual(len(ids), 1, "origin saw X-Request-Id %r" % ids)
        e = self.entries_for([ids[0]])[ids[0]]
        self.assertEqual(len(e), 1)
        self.assertIn("/headers", e[0]["path"])

    def test_bytes_in_and_out(self):
        rid_up, rid_down = "al-bytes-up", "al-bytes-down"
        self.get("/sha256", method="POST", body=b"u" * 5000,
                 headers={"X-Request-Id": rid_up})
        self.get("/bytes/50000", headers={"X-Request-Id": rid_down})
        found = self.entries_for([rid_up, rid_down])
        self.assertGreaterEqual(int(found[rid_up][0]["bytes_in"]), 5000)
        self.assertGreaterEqual(int(found[rid_down][0]["bytes_out"]), 50000)

    def test_error_statuses_logged(self):
        self.get("/x", host="nobody.test", headers={"X-Request-Id": "al-404"})
        self.get("/x", host="dead.test", headers={"X-Request-Id": "al-502"})
        found = self.entries_for(["al-404", "al-502"])
        self.assertEqual(int(found["al-404"][0]["status"]), 404)
        self.assertEqual(int(found["al-502"][0]["status"]), 502)
        self.assertEqual(found["al-502"][0]["route"], "dead")

    def test_one_line_per_request(self):
        ids = ["al-many-%d" % i for i in range(20)]
        with h.RawConn(self.port) as c:
            for rid in ids:
                r = c.roundtrip("GET", "/headers", headers=[("X-Request-Id", rid)])
                self.assertEqual(r.status, 200)
        found = self.entries_for(ids)
        counts = {rid: len(v) for rid, v in found.items() if len(v) != 1}
        self.assertEqual(counts, {}, "requests logged more than once")


class AccessLogStdoutTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port,
                             [h.route("r1", "app.test", cls.origin.address)],
                             access_log="stdout")

    def test_stdout_log(self):
        self.get("/headers", headers={"X-Request-Id": "to-stdout-1"})

        def find():
            entries, _ = parse_lines(self.gateway.stdout(), "stdout")
            return [e for e in entries if e.get("request_id") == "to-stdout-1"]
        found = h.wait_until(find, 2.5, 0.1)
        self.assertTrue(found, "no JSON access log line on stdout; stdout: %r"
                        % h.tail(self.gateway.stdout(), 1000))


if __name__ == "__main__":
    h.main()
