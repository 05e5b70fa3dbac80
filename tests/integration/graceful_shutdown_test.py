#!/usr/bin/python3
"""Graceful shutdown on SIGTERM: in-flight requests complete, new connections
are refused, idle connections are closed, the process exits 0 promptly, and
shutdown_grace bounds how long a stuck request can hold it up."""

import os
import signal
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class GracefulShutdownTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        cls.origin = h.Origin("origin")

    @classmethod
    def tearDownClass(cls):
        cls.origin.stop()

    def start_gateway(self, **limits):
        self.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        port = h.free_port()
        config = h.base_config(port, [h.route("r1", "app.test", self.origin.address)],
                               limits=limits or {})
        self.gateway = h.Gateway(config, tmpdir=self.tmpdir)
        self.gateway.start()
        self.port = port
        return self.gateway

    def tearDown(self):
        gw = getattr(self, "gateway", None)
        if gw is not None:
            gw.kill()
        if not h.KEEP_TMP:
            shutil.rmtree(getattr(self, "tmpdir", ""), ignore_errors=True)

    def in_thread(self, fn):
        result = {}

        def run():
            try:
                result["value"] = fn()
            except Exception as e:
                result["error"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, result

    def test_inflight_request_completes_and_exit_0(self):
        gw = self.start_gateway()
        t, result = self.in_thread(lambda: h.http_get(self.port, "/slow/2000", timeout=30))
        time.sleep(0.3)
        sigterm_at = time.monotonic()
        gw.signal(signal.SIGTERM)

        # New connections are refused while the old request drains.
        time.sleep(0.4)
        self.assertTrue(gw.alive(), "gateway exited before the in-flight request "
                        "finished (exit %s)" % gw.proc.poll())
        self.assertTrue(h.port_refuses(self.port),
                        "a new connection was accepted after SIGTERM")

        t.join(15)
        self.assertNotIn("error", result, "in-flight request failed after SIGTERM: %r"
                         % result.get("error"))
        status, _, body = result["value"]
        self.assertEqual((status, body), (200, b"slept 2000"),
                         "in-flight request was not completed")
        rc = gw.wait(10)
        took = time.monotonic() - sigterm_at
        self.assertIsNotNone(rc, "gateway still running 10 s after the last "
                             "request finished" + "\nstderr:\n" + h.tail(gw.stderr()))
        self.assertEqual(rc, 0, "exit code after SIGTERM; stderr:\n" + h.tail(gw.stderr()))
        self.assertLess(took, 12, "shutdown took %.1f s" % took)

    def test_idle_gateway_exits_quickly(self):
        gw = self.start_gateway()
        status, _, _ = h.http_get(self.port, "/headers")
        self.assertEqual(status, 200)
        start = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = gw.wait(10)
        self.assertEqual(rc, 0, "idle gateway: exit code %r after SIGTERM; stderr:\n%s"
                         % (rc, h.tail(gw.stderr())))
        self.assertLess(time.monotonic() - start, 5, "idle gateway took long to exit")

    def test_idle_keepalive_connection_does_not_hold_shutdown(self):
        gw = self.start_gateway()  # shutdown_grace default 30s
        with h.RawConn(self.port) as c:
            r = c.roundtrip("GET", "/headers")
            self.assertEqual(r.status, 200)
            start = time.monotonic()
            gw.signal(signal.SIGTERM)
            self.assertTrue(c.closed_by_peer(8),
                            "idle keep-alive connection not closed after SIGTERM")
            rc = gw.wait(10)
            took = time.monotonic() - start
        self.assertEqual(rc, 0, "exit code %r; stderr:\n%s" % (rc, h.tail(gw.stderr())))
        self.assertLess(took, 8, "an idle keep-alive connection held shutdown "
                        "for %.1f s" % took)

    def test_keepalive_connection_closed_after_inflight_response(self):
        gw = self.start_gateway()
        c = h.RawConn(self.port, timeout=20)
        try:
            c.request("GET", "/slow/1500")
            time.sleep(0.3)
            gw.signal(signal.SIGTERM)
            r = c.response(timeout=15)
            self.assertEqual(r.status, 200)
            self.assertTrue(c.closed_by_peer(5),
                            "connection not closed after the in-flight response "
                            "during shutdown")
        finally:
            c.close()
        rc = gw.wait(10)
        self.assertEqual(rc, 0, "exit code %r; stderr:\n%s" % (rc, h.tail(gw.stderr())))

    def test_shutdown_grace_bounds_stuck_requests(self):
        gw = self.start_gateway(shutdown_grace="1s", upstream_response_timeout="60s")
        t, result = self.in_thread(lambda: h.raw_exchange(
            self.port, h.build_request("GET", "/silent"), timeout=20))
        time.sleep(0.5)
        start = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = gw.wait(10)
        took = time.monotonic() - start
        self.assertIsNotNone(rc, "gateway still running 10 s after SIGTERM with "
                             "shutdown_grace 1s and a stuck request")
        self.assertGreaterEqual(rc, 0, "gateway died by signal %d" % -rc)
        self.assertLess(took, 6, "exit took %.1f s with shutdown_grace 1s" % took)
        t.join(25)
        got, closed, _ = result.get("value", (b"", False, 0))
        self.assertTrue(closed, "the stuck client connection was not closed at exit")


if __name__ == "__main__":
    h.main()
