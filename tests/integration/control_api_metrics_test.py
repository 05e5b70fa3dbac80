#!/usr/bin/python3
"""GET /metrics (Prometheus text) and GET /activity after real traffic:
requests by status class, per-route request and byte lines (only for
routes that carried traffic), the route table version and size gauges,
control write counters, the apply-latency histogram (buckets cumulative,
+Inf == _count == accepted writes), the tunnels_open gauge going 1 then 0
around a WebSocket; /activity's last_activity moving forward with HTTP and
with WebSocket-only traffic, open_tunnels counting an open WebSocket."""

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HISTOGRAM = "spacegate_route_update_apply_seconds"


def iso_to_unix_ms(text):
    stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return int(round(stamp.timestamp() * 1000))


class MetricsTestBase(h.ControlGatewayTestCase):
    WITH_WEBSOCKET = True
    WORKERS = 2

    def metrics(self):
        m = self.api.metrics()
        self.assertFalse(m.problems, "unparsable /metrics lines: %s" % m.problems[:5])
        return m

    def wait_metric(self, name, value, timeout=15, **labels):
        got = h.wait_until(lambda: self.api.metrics().get(name, **labels) == value, timeout)
        if not got:
            self.fail("%s%r never became %r (last %r)"
                      % (name, labels, value, self.api.metrics().get(name, **labels)))

    def activity(self, gitspace):
        resp = self.api.get("/activity")
        self.assertEqual(resp.status, 200)
        for entry in resp.json()["gitspaces"]:
            if entry["gitspace"] == gitspace:
                return entry
        return None

    def histogram(self, m):
        buckets = m.series(HISTOGRAM + "_bucket")
        return buckets, m.get(HISTOGRAM + "_sum"), m.get(HISTOGRAM + "_count")


class MetricsTest(MetricsTestBase):

    def routes(self):
        a = self.origin.address
        return [h.route("m-used", "used.test", a, gitspace="gs-m", access="public"),
                h.route("m-idle", "idle.test", a),
                h.route("m-ws", "ws.test", self.ws_peer.address, gitspace="gs-ws",
                        access="public"),
                h.route("m-act", "act.test", a, gitspace="gs-act", access="public"),
                h.route("m-act-ws", "act-ws.test", self.ws_peer.address, gitspace="gs-act2",
                        access="public")]

    def setUp(self):
        super().setUp()
        self.api.must(self.api.put_routes(self.routes()))

    def test_content_type_and_format(self):
        resp = self.api.get("/metrics")
        self.assertEqual(resp.status, 200)
        self.assertTrue((resp.header("Content-Type") or "").startswith("text/plain"),
                        resp.header("Content-Type"))
        m = self.metrics()
        for key in m.order:
            name = key[0]
            family = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[:-len(suffix)] in m.types:
                    family = name[:-len(suffix)]
            self.assertIn(family, m.types, "sample %s has no # TYPE line" % name)
        self.assertEqual(m.types.get(HISTOGRAM), "histogram")
        self.assertEqual(m.types.get("spacegate_requests_total"), "counter")
        self.assertEqual(m.types.get("spacegate_tunnels_open"), "gauge")

    def test_requests_by_class_and_per_route_lines(self):
        before = self.metrics()
        sent_bytes = 0
        for i in range(7):
            status, _, body = h.http_get(self.port, "/bytes/%d" % (100 + i), "used.test")
            self.assertEqual(status, 200)
            sent_bytes += len(body)
        for i in range(2):
            status, _, _ = h.http_get(self.port, "/status/404", "used.test")
            self.assertEqual(status, 404)
        status, _, _ = h.http_get(self.port, "/", "no-route.test")
        self.assertEqual(status, 404)
        got = h.wait_until(lambda: self.api.metrics().get(
            "spacegate_route_requests_total", route="m-used", **{"class": "2xx"}) == 7, 15)
        m = self.metrics()
        self.assertTrue(got, "spacegate_route_requests_total{route=\"m-used\",class=\"2xx\"} is "
                        "%r, expected 7" % m.get("spacegate_route_requests_total", route="m-used",
                                                 **{"class": "2xx"}))
        self.assertEqual(m.get("spacegate_route_requests_total", route="m-used",
                               **{"class": "4xx"}), 2)
        for cls_, n in (("2xx", 7), ("4xx", 3)):
            old = before.get("spacegate_requests_total", **{"class": cls_}) or 0
            self.assertGreaterEqual(m.get("spacegate_requests_total", **{"class": cls_}), old + n,
                                    "spacegate_requests_total{class=%r}" % cls_)
        bytes_in = m.get("spacegate_route_bytes_in_total", route="m-used")
        bytes_out = m.get("spacegate_route_bytes_out_total", route="m-used")
        self.assertIsNotNone(bytes_in, "no spacegate_route_bytes_in_total for the used route")
        self.assertGreater(bytes_in, 0)
        self.assertGreaterEqual(bytes_out, sent_bytes, "route bytes_out below the bodies sent")
        idle = [key for key in m.order if ("route", "m-idle") in key[1]]
        self.assertEqual(idle, [], "a route without traffic has per-route lines: %r" % idle)
        # /stats says the same, and its totals are the sum of the workers.
        stats = self.api.stats()
        m = self.metrics()
        self.assertEqual(len(stats["workers"]), 2)
        for cls_ in ("2xx", "4xx"):
            self.assertEqual(stats["totals"]["requests"][cls_],
                             m.get("spacegate_requests_total", **{"class": cls_}))
            self.assertEqual(stats["totals"]["requests"][cls_],
                             sum(w["requests"][cls_] for w in stats["workers"]))

    def test_route_table_gauges(self):
        m = self.metrics()
        table = self.api.routes()
        self.assertEqual(m.get("spacegate_route_table_version"), table["version"])
        self.assertEqual(m.get("spacegate_route_table_routes"), len(table["routes"]))
        self.api.must(self.api.patch_routes(delete=["m-idle"]))
        m = self.metrics()
        self.assertEqual(m.get("spacegate_route_table_version"), self.api.version())
        self.assertEqual(m.get("spacegate_route_table_routes"), len(table["routes"]) - 1)

    def test_control_writes_and_apply_histogram(self):
        m0 = self.metrics()
        accepted0 = m0.get("spacegate_control_writes_total", result="accepted")
        refused0 = m0.get("spacegate_control_writes_total", result="refused")
        a = self.origin.address
        api = self.api
        api.must(api.put_routes(self.routes()))
        api.must(api.patch_routes(upsert=[h.route("extra", "extra.test", a)]))
        api.must(api.put("/routes/extra2", h.route("extra2", "extra2.test", a)))
        api.must(api.delete("/routes/extra2"))
        api.must(api.patch_routes(delete=["extra"]))
        self.assertEqual(api.put_routes([], version=1).status, 409)
        self.assertEqual(api.patch_routes(delete=["nope"]).status, 400)
        self.assertEqual(api.delete("/routes/nope").status, 404)
        m = self.metrics()
        accepted = m.get("spacegate_control_writes_total", result="accepted")
        refused = m.get("spacegate_control_writes_total", result="refused")
        self.assertEqual(accepted, accepted0 + 5)
        self.assertEqual(refused, refused0 + 3)
        stats = api.stats()["control"]
        self.assertEqual((stats["writes_accepted"], stats["writes_refused"]), (accepted, refused))
        buckets, total, count = self.histogram(m)
        self.assertTrue(buckets, "no %s_bucket lines" % HISTOGRAM)
        bounds = [b[0].get("le") for b in buckets]
        self.assertEqual(bounds[-1], "+Inf", "the last bucket must be +Inf: %r" % bounds)
        numeric = [float(x) for x in bounds[:-1]]
        self.assertEqual(numeric, sorted(numeric), "bucket bounds not ascending: %r" % bounds)
        values = [b[1] for b in buckets]
        self.assertEqual(values, sorted(values), "buckets not cumulative: %r" % values)
        self.assertEqual(values[-1], count, "+Inf bucket != _count")
        self.assertEqual(count, accepted,
                         "%s_count (%r) != accepted control writes (%r)" % (HISTOGRAM, count, accepted))
        self.assertIsNotNone(total)
        self.assertGreater(total, 0, "_sum of %d applied writes is %r" % (count, total))
        self.assertLess(total, count * 60, "_sum %r s for %d writes" % (total, count))

    def test_tunnels_open_goes_1_then_0(self):
        self.wait_metric("spacegate_tunnels_open", 0)
        before = self.activity("gs-ws")
        self.assertEqual((before["open_tunnels"], before["open_connections"]), (0, 0), before)
        with h.WebSocketClient(self.port, "ws.test", "/metrics-ws") as ws:
            self.assertEqual(ws.echo("ping"), "ping")
            self.wait_metric("spacegate_tunnels_open", 1)
            entry = self.activity("gs-ws")
            self.assertEqual(entry["open_tunnels"], 1, "/activity open_tunnels: %r" % entry)
            self.assertGreaterEqual(entry["open_connections"], 1, entry)
            self.assertEqual(self.api.stats()["totals"]["tunnels_open"], 1)
        self.wait_metric("spacegate_tunnels_open", 0)
        self.assertTrue(h.wait_until(lambda: self.activity("gs-ws")["open_tunnels"] == 0, 15),
                        "open_tunnels stayed %r after the WebSocket closed" % self.activity("gs-ws"))
        self.assertEqual(self.activity("gs-ws")["open_connections"], 0)

    def test_activity_last_activity_moves_forward(self):
        entry = self.activity("gs-act")
        self.assertIsNotNone(entry, "no /activity entry for a route with a gitspace")
        self.assertEqual(entry["routes"], ["m-act"])
        if entry["last_activity_unix_ms"] == 0:
            self.assertIsNone(entry["last_activity"])
        wall_before = int(time.time() * 1000)
        status, _, _ = h.http_get(self.port, "/bytes/500", "act.test")
        self.assertEqual(status, 200)
        first = h.wait_until(lambda: (lambda e: e if e["bytes_out"] >= 500 else None)(
            self.activity("gs-act")), 15)
        self.assertTrue(first, "bytes_out never counted: %r" % self.activity("gs-act"))
        t1 = first["last_activity_unix_ms"]
        self.assertGreater(t1, 0)
        self.assertIsInstance(first["last_activity"], str)
        self.assertEqual(iso_to_unix_ms(first["last_activity"]), t1,
                         "last_activity %r and last_activity_unix_ms %r differ"
                         % (first["last_activity"], t1))
        # The gateway's clock and ours agree to well within a minute.
        self.assertLess(abs(t1 - wall_before), 60000, "last_activity %r vs now %r" % (t1, wall_before))
        self.assertGreater(first["bytes_in"], 0)
        time.sleep(1.2)
        status, _, _ = h.http_get(self.port, "/bytes/700", "act.test")
        self.assertEqual(status, 200)
        second = h.wait_until(lambda: (lambda e: e if e["bytes_out"] >= first["bytes_out"] + 700
                                       else None)(self.activity("gs-act")), 15)
        self.assertTrue(second, "bytes_out did not grow: %r" % self.activity("gs-act"))
        self.assertGreater(second["last_activity_unix_ms"], t1,
                           "last_activity did not move forward after more traffic")
        self.assertGreater(second["bytes_in"], first["bytes_in"])

    def test_activity_moves_forward_with_websocket_traffic_only(self):
        """An IDE that only talks over its WebSocket is active: its
        Gitspace's last_activity must follow the tunnel's bytes."""
        with h.WebSocketClient(self.port, "act-ws.test", "/ide") as ws:
            self.assertEqual(ws.echo("hello"), "hello")
            t1 = h.wait_until(lambda: self.activity("gs-act2")["last_activity_unix_ms"], 15)
            self.assertTrue(t1)
            self.assertEqual(self.activity("gs-act2")["open_tunnels"], 1)
            time.sleep(1.2)
            self.assertEqual(ws.echo("still typing"), "still typing")
            t2 = h.wait_until(lambda: (lambda t: t if t > t1 else None)(
                self.activity("gs-act2")["last_activity_unix_ms"]), 15)
            self.assertTrue(t2, "last_activity stayed at %r although the WebSocket carried "
                            "bytes 1.2 s later" % t1)

    def test_tunnel_bytes_are_counted_while_the_tunnel_is_open(self):
        """/activity bytes (and the per-route byte counters) must include a
        WebSocket's traffic while it is open, not only once it closes: IDE
        sessions last for hours."""
        with h.WebSocketClient(self.port, "act-ws.test", "/ide-bytes") as ws:
            self.assertEqual(ws.echo("x"), "x")
            before = self.activity("gs-act2")
            payload = b"\x5a" * 200000
            self.assertEqual(ws.echo(payload), payload)
            grown = h.wait_until(lambda: (lambda e: e if e["bytes_in"] >= before["bytes_in"] + 200000
                                          and e["bytes_out"] >= before["bytes_out"] + 200000
                                          else None)(self.activity("gs-act2")), 10)
            self.assertTrue(grown, "200 kB went each way through an open WebSocket but /activity "
                            "still says %r (before: %r)" % (self.activity("gs-act2"), before))


class ConfigRoutesMetricsTest(MetricsTestBase):
    """Routes from the config file are not control API writes: a fresh
    gateway has accepted none, and the apply histogram agrees."""
    WITH_WEBSOCKET = False

    @classmethod
    def config_routes(cls):
        return [h.route("cfg", "cfg.test", cls.origin.address)]

    def test_config_routes_are_not_counted_as_control_writes(self):
        m = self.metrics()
        _, _, count = self.histogram(m)
        accepted = m.get("spacegate_control_writes_total", result="accepted")
        self.assertEqual(m.get("spacegate_route_table_routes"), 1)
        self.assertEqual(accepted, count,
                         "spacegate_control_writes_total{result=\"accepted\"} is %r but the apply "
                         "histogram counts %r writes, before any control API write (the config "
                         "file's routes were counted as a control write)" % (accepted, count))
        self.assertEqual(accepted, 0, "a fresh gateway with config routes reports %r accepted "
                         "control API writes" % accepted)


if __name__ == "__main__":
    h.main()
