#!/usr/bin/python3
"""HTTP/2 through the gateway (issue 10), functional side: h2c with prior
knowledge from curl, nghttp, h2load and h2_client.H2Client (python3-h2);
the same routes, header rewriting and access log as HTTP/1.1; bodies both
ways checked by hash; the SETTINGS the gateway announces; many streams on
one connection, each with its own body; per-stream flow control (a slow
stream does not hold up the others); HEAD/204/304 framing; trailers;
SIGTERM (GOAWAY, the stream in flight finishes); h2 over TLS with ALPN."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2_client as hc  # noqa: E402

HOST = "app.test"


def seen(report, name):
    """All values of header `name` the origin saw (case-insensitive)."""
    return [v for k, v in report["headers"] if k.lower() == name.lower()]


def read_json_lines(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def server_settings_from_nghttp(text):
    """{name: value} of the first non-ACK SETTINGS frame nghttp -v says it
    received."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "recv SETTINGS frame" in line and "flags=0x00" in line:
            out = {}
            for follow in lines[i + 1:]:
                m = re.match(r"\s+\[(\w+)\(0x[0-9a-f]+\):(\d+)\]", follow)
                if m:
                    out[m.group(1)] = int(m.group(2))
                elif not follow.startswith(" "):
                    break
            return out
    return None


class H2Test(h.GatewayTestCase):

    @classmethod
    def extra_setup(cls):
        cls.api_origin = h.Origin("api")

    @classmethod
    def extra_teardown(cls):
        cls.api_origin.stop()

    @classmethod
    def make_config(cls):
        cls.log_path = os.path.join(cls.tmpdir, "access.log")
        return h.base_config(cls.gateway_port, [
            h.route("r1", HOST, cls.origin.address),
            h.route("api", HOST, cls.api_origin.address, path_prefix="/api",
                    strip_prefix=True),
        ], access_log=cls.log_path)

    # -- helpers -------------------------------------------------------------

    def client(self, **kw):
        c = hc.H2Client(self.port, timeout=15.0, **kw)
        self.addCleanup(c.close)
        return c

    def get(self, path, authority=HOST, headers=(), method="GET", body=None, **kw):
        """One request on a fresh h2c connection; returns the StreamResult
        after checking it completed (ended, not reset)."""
        c = self.client(**kw)
        sid = c.request(method, path, authority, headers, body)
        r = c.response(sid, 15)
        self.assertTrue(r.ended, "h2 %s %s did not complete: %r; %s%s"
                        % (method, path, r, c.describe(), self.gateway_context()))
        return r

    def report(self, path="/headers", headers=()):
        r = self.get(path, headers=headers)
        self.assertEqual(r.status, 200, "origin did not answer: %r" % r)
        return json.loads(bytes(r.body))

    def curl(self, args, timeout=120):
        if not shutil.which("curl"):
            self.skipTest("curl is not installed")
        return h.curl(["--http2-prior-knowledge", "-H", "Host: " + HOST] + list(args),
                      timeout=timeout)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    # -- curl ------------------------------------------------------------------

    def test_curl_get_8_mib(self):
        size = 8 * h.MiB
        out = os.path.join(self.tmpdir, "curl-8mib.bin")
        proc = self.curl(["-o", out, "-w", "%{http_code} %{http_version}",
                          self.url("/bytes/%d" % size)])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.decode().split(), ["200", "2"],
                         "curl --http2-prior-knowledge did not get a 200 over HTTP/2")
        h_ = hashlib.sha256()
        with open(out, "rb") as f:
            for piece in iter(lambda: f.read(1 << 20), b""):
                h_.update(piece)
        self.assertEqual(os.path.getsize(out), size)
        self.assertEqual(h_.hexdigest(), h.pattern_sha256(size), "8 MiB body corrupted")

    def test_curl_post_1_mib(self):
        size = h.MiB
        path = os.path.join(self.tmpdir, "curl-1mib-up.bin")
        with open(path, "wb") as f:
            for piece in h.pattern_chunks(size):
                f.write(piece)
        proc = self.curl(["-w", "\n%{http_code} %{http_version}", "--data-binary", "@" + path,
                          "-H", "Content-Type: application/octet-stream",
                          self.url("/sha256")])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        body, _, tail = proc.stdout.decode().rpartition("\n")
        self.assertEqual(tail.split(), ["200", "2"])
        rep = json.loads(body)
        self.assertEqual(rep["length"], size)
        self.assertEqual(rep["sha256"], h.pattern_sha256(size), "1 MiB upload corrupted")

    def test_h2_client_post_1_mib_under_flow_control(self):
        size = h.MiB
        r = self.get("/sha256", method="POST", body=h.pattern_bytes(size),
                     headers=[("content-type", "application/octet-stream")])
        self.assertEqual(r.status, 200, r)
        rep = json.loads(bytes(r.body))
        self.assertEqual((rep["length"], rep["sha256"]), (size, h.pattern_sha256(size)))

    # -- nghttp / h2load -----------------------------------------------------

    def test_nghttp_settings_announced(self):
        if not shutil.which("nghttp"):
            self.skipTest("nghttp (nghttp2-client) is not installed")
        proc = subprocess.run(["nghttp", "-nv", "-H", ":authority: " + HOST,
                               self.url("/headers")],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr)
        settings = server_settings_from_nghttp(proc.stdout)
        self.assertIsNotNone(settings, "nghttp saw no SETTINGS from the gateway:\n%s"
                             % proc.stdout[-3000:])
        self.assertEqual(settings.get("SETTINGS_MAX_CONCURRENT_STREAMS"), 100, settings)
        self.assertEqual(settings.get("SETTINGS_ENABLE_CONNECT_PROTOCOL"), 1, settings)
        self.assertEqual(settings.get("SETTINGS_MAX_HEADER_LIST_SIZE"), 65536,
                         "limits.header_block_size (default 65536) is not announced: %r"
                         % settings)
        self.assertRegex(proc.stdout, r"recv \(stream_id=\d+\) :status: 200")

    def test_h2load_2000_requests(self):
        if not shutil.which("h2load"):
            self.skipTest("h2load (nghttp2-client) is not installed")
        proc = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", "-t", "1",
                               "-H", ":authority: " + HOST, self.url("/headers")],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr)
        self.assertIn("Application protocol: h2c", proc.stdout)
        self.assertRegex(proc.stdout, r"requests: 2000 total, 2000 started, 2000 done, "
                         r"2000 succeeded, 0 failed, 0 errored, 0 timeout",
                         proc.stdout[-1500:])
        self.assertRegex(proc.stdout, r"status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx")

    # -- routing and header rewriting ------------------------------------------

    def test_unknown_host_404(self):
        before = self.origin.requests
        r = self.get("/headers", authority="nobody.test")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.origin.requests, before, "a 404 reached the origin")

    def test_path_prefix_routing(self):
        r = self.get("/api/headers?x=1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-origin-name"), "api",
                         "/api/ did not go to the path_prefix route")
        self.assertEqual(r.header("x-origin-path"), "/headers?x=1",
                         "strip_prefix did not strip /api")
        r = self.get("/apix")
        self.assertEqual(r.header("x-origin-name"), "origin", "/apix is outside /api")
        r = self.get("/other")
        self.assertEqual(r.header("x-origin-name"), "origin")

    def test_forwarding_headers_reach_origin(self):
        rep = self.report(headers=[("x-request-id", "h2-client-id-1")])
        xff = ", ".join(seen(rep, "X-Forwarded-For"))
        self.assertTrue(xff.endswith("127.0.0.1"), "X-Forwarded-For %r" % xff)
        self.assertEqual(seen(rep, "X-Forwarded-Proto"), ["http"])
        self.assertEqual(seen(rep, "X-Request-Id"), ["h2-client-id-1"])
        self.assertEqual(seen(rep, "Host"), [HOST], ":authority must become Host")
        self.assertEqual(rep["version"], "HTTP/1.1", "the upstream request is HTTP/1.1")
        generated = [seen(self.report(), "X-Request-Id") for _ in range(2)]
        for rid in generated:
            self.assertEqual(len(rid), 1, "expected one generated X-Request-Id: %r" % rid)
            self.assertGreaterEqual(len(rid[0]), 8)
        self.assertNotEqual(generated[0], generated[1])

    def test_hop_by_hop_headers_not_forwarded(self):
        rep = self.report(headers=[("te", "trailers"), ("x-end-to-end", "must-pass")])
        for name in ("Connection", "Keep-Alive", "Upgrade", "HTTP2-Settings",
                     "Proxy-Connection"):
            self.assertEqual(seen(rep, name), [], "%s reached the origin" % name)
        te = [v for v in seen(rep, "TE") if v.strip().lower() != "trailers"]
        self.assertEqual(te, [])
        self.assertEqual(seen(rep, "X-End-To-End"), ["must-pass"])
        self.assertFalse([k for k, _ in rep["headers"] if k.startswith(":")],
                         "pseudo-headers reached the origin: %r" % rep["headers"])

        r = self.get("/hop-response")
        self.assertEqual(r.status, 200, r)
        names = [k.lower() for k, _ in r.headers]
        for name in ("connection", "keep-alive", "x-resp-hop", "transfer-encoding"):
            self.assertNotIn(name, names, "the origin's %s reached the h2 client" % name)
        self.assertEqual(r.header("x-origin-custom"), "yes")
        self.assertEqual(r.header_all("set-cookie"), ["a=1; Path=/", "b=2; Path=/"])
        self.assertTrue(all(k == k.lower() for k in names), "uppercase h2 field names: %r"
                        % names)

    def test_cookie_crumbs_joined_for_origin(self):
        # RFC 9113 8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
        rep = self.report(headers=[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")])
        self.assertEqual(seen(rep, "Cookie"), ["a=1; b=2; c=3"])

    # -- framing ---------------------------------------------------------------

    def test_head_204_304_no_body(self):
        c = self.client()
        for method, path, status in (("HEAD", "/bytes/1000", 200),
                                     ("GET", "/status/204", 204),
                                     ("GET", "/status/304", 304)):
            sid = c.request(method, path, HOST)
            r = c.response(sid, 10)
            self.assertTrue(r.ended, "%s %s: %r" % (method, path, r))
            self.assertEqual(r.status, status, r)
            self.assertEqual(bytes(r.body), b"", "%s %s carried a body" % (method, path))
            self.assertEqual(r.data_frames, 0, "%s %s sent DATA frames" % (method, path))
        # The connection is still in step.
        sid = c.request("GET", "/bytes/5000", HOST)
        r = c.response(sid, 10)
        self.assertEqual((r.status, bytes(r.body)), (200, h.pattern_bytes(5000)))

    def test_trailers_from_origin(self):
        size = 100000
        r = self.get("/chunked/%d?trailers=1" % size, headers=[("te", "trailers")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.sha256(), h.pattern_sha256(size))
        self.assertEqual(r.header_all("transfer-encoding"), [],
                         "the origin's chunked framing header reached the h2 client")
        self.assertEqual(dict(r.trailers).get("x-body-sha256"), h.pattern_sha256(size),
                         "the origin's trailer did not reach the h2 client as trailers: %r"
                         % r.trailers)

    # -- access log --------------------------------------------------------------

    def test_access_log_line_for_h2(self):
        rid = "h2-log-%d" % os.getpid()
        r = self.get("/headers?log=1", headers=[("x-request-id", rid)])
        self.assertEqual(r.status, 200)
        entry = h.wait_until(lambda: [e for e in read_json_lines(self.log_path)
                                      if e.get("request_id") == rid], 3, 0.1)
        self.assertTrue(entry, "no access log line for an h2 request (id %s); last lines: %r"
                        % (rid, read_json_lines(self.log_path)[-3:]))
        e = entry[0]
        self.assertEqual((e.get("method"), e.get("host"), e.get("path"), e.get("status")),
                         ("GET", HOST, "/headers?log=1", 200), e)
        if "protocol" in e:
            self.assertEqual(e["protocol"], "HTTP/2.0", e)

    # -- many streams, flow control ---------------------------------------------

    def test_100_concurrent_streams_each_own_body(self):
        c = self.client(connection_window=16 * h.MiB)
        self.assertIsNotNone(c.handshake(10))
        sizes = {}
        for i in range(100):
            n = 1000 + 997 * i
            sizes[c.request("GET", "/bytes/%d" % n, HOST)] = n
        self.assertTrue(c.wait(lambda: all(c.stream_done(s) for s in sizes), 30),
                        "100 streams did not all finish: %s" % c.describe())
        self.assertEqual(c.resets, {}, "streams reset: %s" % c.describe())
        self.assertEqual(c.goaways, [])
        for sid, n in sizes.items():
            st = c.streams[sid]
            self.assertEqual(st.status, 200, st)
            self.assertEqual(len(st.body), n, "stream %d: wrong length" % sid)
            self.assertEqual(bytes(st.body), h.pattern_bytes(n), "stream %d: wrong body" % sid)
        # The streams run in parallel: 100 x 300 ms upstream waits, not 30 s.
        start = time.monotonic()
        sids = [c.request("GET", "/slow/300?p=%d" % i, HOST) for i in range(100)]
        self.assertTrue(c.wait(lambda: all(c.stream_done(s) for s in sids), 20))
        took = time.monotonic() - start
        self.assertTrue(all(c.streams[s].status == 200 for s in sids), c.describe())
        self.assertLess(took, 6.0, "100 concurrent streams of 300 ms took %.1f s" % took)

    def test_slow_reader_stream_does_not_stall_others(self):
        c = self.client()
        self.assertIsNotNone(c.handshake(10))
        big = 4 * h.MiB
        slow = c.request("GET", "/bytes/%d" % big, HOST, flush=False)
        c.hold_window(slow)  # never hand back this stream's window
        c.flush()
        fast = c.request("GET", "/bytes/300000", HOST)
        r = c.response(fast, 10)
        self.assertTrue(r.ended and r.status == 200,
                        "a stream stalled behind a slow one: %r; %s" % (r, c.describe()))
        self.assertEqual(r.sha256(), h.pattern_sha256(300000))
        self.assertLessEqual(len(c.streams[slow].body), 65535,
                             "more than the stream window arrived on the held stream")
        self.assertFalse(c.streams[slow].complete)
        c.release_window(slow)
        r = c.response(slow, 30)
        self.assertTrue(r.ended, "the held stream did not resume: %r" % r)
        self.assertEqual(r.sha256(), h.pattern_sha256(big))


class H2ShutdownTest(unittest.TestCase):
    """SIGTERM with h2 connections open: GOAWAY(NO_ERROR) to each, the
    stream in flight finishes, exit 0."""

    def setUp(self):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        self.origin = h.Origin("origin")
        self.addCleanup(self.origin.stop)
        port = h.free_port()
        self.gateway = h.Gateway(h.base_config(port, [h.route("r1", HOST,
                                                               self.origin.address)]))
        self.addCleanup(self.gateway.cleanup)
        self.gateway.start()
        self.port = port

    def test_sigterm_goaway_and_inflight_stream_finishes(self):
        busy = hc.H2Client(self.port, timeout=15)
        idle = hc.H2Client(self.port, timeout=15)
        self.addCleanup(busy.close)
        self.addCleanup(idle.close)
        self.assertIsNotNone(idle.handshake(5))
        sid = busy.request("GET", "/slow/2000", HOST)
        self.assertTrue(h.wait_until(lambda: "/slow/2000" in self.origin.paths, 5),
                        "the request did not reach the origin")
        self.gateway.signal(signal.SIGTERM)
        signalled = time.monotonic()
        r = busy.response(sid, 15)
        self.assertTrue(r.ended and r.status == 200, "the stream in flight did not finish: "
                        "%r; %s" % (r, busy.describe()))
        self.assertEqual(bytes(r.body), b"slept 2000")
        self.assertTrue(busy.goaways, "no GOAWAY on SIGTERM: %s" % busy.describe())
        g = busy.goaways[0]
        self.assertEqual(g.error_code, hc.NO_ERROR, busy.describe())
        self.assertGreaterEqual(g.last_stream_id, sid, "GOAWAY excludes the stream in flight")
        self.assertLess(g.at, r.finished_at, "GOAWAY came only after the stream finished, "
                        "not when the shutdown began")
        self.assertTrue(idle.wait(lambda: idle.goaways, 5), "the idle connection got no "
                        "GOAWAY: %s" % idle.describe())
        self.assertEqual(idle.goaways[0].error_code, hc.NO_ERROR)
        self.assertTrue(idle.wait_closed(10), "idle h2 connection not closed: %s"
                        % idle.describe())
        rc = self.gateway.wait(15)
        self.assertEqual(rc, 0, "exit code after SIGTERM (%.1f s)"
                         % (time.monotonic() - signalled))


class H2TlsTest(unittest.TestCase):
    """HTTP/2 over the TLS listener: ALPN h2 chosen, certificate checked."""

    def setUp(self):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        if not shutil.which("openssl"):
            raise unittest.SkipTest("openssl is not installed")
        self.tmp = tempfile.mkdtemp(prefix="spacegate-h2tls-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.cert = os.path.join(self.tmp, "gw.pem")
        self.key = os.path.join(self.tmp, "gw.key")
        proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                               "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                               "-keyout", self.key, "-out", self.cert, "-days", "2",
                               "-subj", "/CN=" + HOST, "-addext",
                               "subjectAltName=DNS:" + HOST],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.origin = h.Origin("origin")
        self.addCleanup(self.origin.stop)
        port, self.tls_port = h.free_port(), h.free_port()
        config = h.base_config(port, [h.route("r1", HOST, self.origin.address)])
        config["listen"].append({"address": "127.0.0.1:%d" % self.tls_port, "tls": True})
        config["tls"] = {"certificates": [{"cert": self.cert, "key": self.key,
                                           "default": True}]}
        self.gateway = h.Gateway(config)
        self.addCleanup(self.gateway.cleanup)
        self.gateway.start()

    def test_alpn_h2_get(self):
        c = hc.H2Client(self.tls_port, tls=True, server_name=HOST, ca_file=self.cert,
                        timeout=10)
        self.addCleanup(c.close)
        self.assertEqual(c.alpn, "h2")
        sid = c.request("GET", "/bytes/100000", HOST, scheme="https")
        r = c.response(sid, 10)
        self.assertEqual(r.status, 200, "%r; %s" % (r, c.describe()))
        self.assertEqual(r.sha256(), h.pattern_sha256(100000))
        rep_sid = c.request("GET", "/headers", HOST, scheme="https")
        rep = json.loads(bytes(c.response(rep_sid, 10).body))
        self.assertEqual(seen(rep, "X-Forwarded-Proto"), ["https"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
