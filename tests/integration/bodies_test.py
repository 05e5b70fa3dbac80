#!/usr/bin/python3
"""Request and response bodies of 0 B, 1 B, 1 MiB and 100 MiB through the
gateway, both directions, streaming on the test side too; the gateway's
memory stays far below the body size (nothing buffered whole, backpressure
works in both directions)."""

import hashlib
import http.client
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SIZES = [0, 1, h.MiB]
BIG = 100 * h.MiB
RSS_LIMIT_MIB = 60


class BodiesTest(h.GatewayTestCase):

    # -- helpers -----------------------------------------------------------

    def download(self, n, pause_after_headers=0.0, on_pause=None):
        """GET /bytes/n, streaming; returns (status, content_length, length,
        sha256)."""
        conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=60)
        try:
            conn.request("GET", "/bytes/%d" % n, headers={"Host": "app.test"})
            resp = conn.getresponse()
            if pause_after_headers:
                time.sleep(pause_after_headers)
                if on_pause:
                    on_pause()
            digest = hashlib.sha256()
            total = 0
            while True:
                piece = resp.read(262144)
                if not piece:
                    break
                digest.update(piece)
                total += len(piece)
            return (resp.status, resp.getheader("Content-Length"), total,
                    digest.hexdigest())
        finally:
            conn.close()

    def upload(self, n, path="/sha256", chunk=h.PATTERN_PERIOD):
        """POST n pattern bytes with Content-Length, streaming; returns
        (status, parsed JSON or raw body)."""
        conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=60)
        try:
            conn.putrequest("POST", path, skip_host=True,
                            skip_accept_encoding=True)
            conn.putheader("Host", "app.test")
            conn.putheader("Content-Length", str(n))
            conn.putheader("Content-Type", "application/octet-stream")
            conn.endheaders()
            for piece in h.pattern_chunks(n, chunk):
                conn.send(piece)
            resp = conn.getresponse()
            body = resp.read()
            try:
                import json
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body
        finally:
            conn.close()

    # -- small and medium sizes ----------------------------------------------

    def test_download_sizes(self):
        for n in SIZES:
            with self.subTest(size=n):
                status, cl, total, digest = self.download(n)
                self.assertEqual(status, 200, "GET /bytes/%d status" % n)
                self.assertEqual(total, n, "downloaded length for /bytes/%d" % n)
                self.assertEqual(digest, h.pattern_sha256(n),
                                 "downloaded bytes differ from the origin's "
                                 "pattern for /bytes/%d" % n)
                if cl is not None:
                    self.assertEqual(int(cl), n, "Content-Length for /bytes/%d" % n)

    def test_upload_sizes(self):
        for n in SIZES:
            with self.subTest(size=n):
                status, info = self.upload(n)
                self.assertEqual(status, 200, "POST /sha256 of %d bytes: %r" % (n, info))
                self.assertEqual(info["length"], n,
                                 "origin received a different body length")
                self.assertEqual(info["sha256"], h.pattern_sha256(n),
                                 "origin received different body bytes")

    def test_echo_sizes(self):
        for n in SIZES:
            with self.subTest(size=n):
                body = h.pattern_bytes(n)
                status, _, data = self.get("/echo", method="POST", body=body,
                                           headers={"Content-Type": "application/octet-stream"})
                self.assertEqual(status, 200)
                self.assertEqual(len(data), n, "echo length")
                self.assertTrue(data == body, "echoed body differs (%d bytes)" % n)

    def test_curl_upload_and_download_1mib(self):
        src = os.path.join(self.tmpdir, "up.bin")
        dst = os.path.join(self.tmpdir, "down.bin")
        with open(src, "wb") as f:
            for piece in h.pattern_chunks(h.MiB):
                f.write(piece)
        url = "http://127.0.0.1:%d" % self.port
        r = h.curl(["-H", "Host: app.test", "--data-binary", "@" + src,
                    "-H", "Content-Type: application/octet-stream",
                    url + "/sha256"])
        self.assertEqual(r.returncode, 0, "curl upload failed: %s" % r.stderr)
        import json
        info = json.loads(r.stdout)
        self.assertEqual((info["length"], info["sha256"]),
                         (h.MiB, h.pattern_sha256(h.MiB)),
                         "curl upload (which sends Expect: 100-continue) arrived wrong")
        r = h.curl(["-H", "Host: app.test", "-o", dst, "-w", "%{http_code}",
                    url + "/bytes/%d" % h.MiB])
        self.assertEqual(r.returncode, 0, "curl download failed: %s" % r.stderr)
        self.assertEqual(r.stdout, b"200")
        with open(dst, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                             h.pattern_sha256(h.MiB), "curl download bytes differ")

    def test_expect_100_continue(self):
        with h.RawConn(self.port) as c:
            c.send(b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
                   b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n")
            # A 100 Continue may or may not come (the origin sends one);
            # either way, sending the body afterwards must work.
            c.sock.settimeout(2)
            interim = b""
            try:
                interim = c.sock.recv(65536)
            except OSError:
                pass
            c.reader.buf += interim
            if interim:
                self.assertTrue(interim.startswith(b"HTTP/1.1 100"),
                                "first bytes after Expect: 100-continue should be "
                                "a 100 Continue, got %r" % interim[:200])
            c.send(b"0123456789")
            resp = c.response(timeout=10)
            self.assertEqual(resp.status, 200, repr(resp))
            self.assertEqual(resp.json()["sha256"],
                             hashlib.sha256(b"0123456789").hexdigest())

    def test_head_and_bodyless_statuses_keep_framing(self):
        with h.RawConn(self.port) as c:
            c.request("HEAD", "/bytes/1000")
            r = c.response("HEAD", timeout=10)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("Content-Length"), "1000",
                             "HEAD must carry the GET's Content-Length")
            c.request("HEAD", "/chunked/1000")
            r = c.response("HEAD", timeout=10)
            self.assertEqual(r.status, 200, "HEAD of a chunked resource")
            for code in (204, 304):
                c.request("GET", "/status/%d" % code)
                r = c.response(timeout=10)
                self.assertEqual(r.status, code)
            # If the gateway had sent a body for HEAD/204/304, this response
            # would be garbled.
            c.request("GET", "/bytes/5")
            r = c.response(timeout=10)
            self.assertEqual((r.status, r.body), (200, h.pattern_bytes(5)),
                             "framing broken after HEAD/204/304")

    def test_close_delimited_response(self):
        """The origin sends an HTTP/1.1 response with neither Content-Length
        nor chunked and closes: the client must get the whole body, framed
        by chunking or by closing the client connection too."""
        for n in (0, 1000, h.MiB):
            with self.subTest(size=n):
                with h.RawConn(self.port) as c:
                    c.request("GET", "/close-delimited/%d" % n)
                    r = c.response(timeout=30)
                    self.assertEqual(r.status, 200)
                    self.assertEqual(len(r.body), n, "close-delimited body length")
                    self.assertTrue(r.body == h.pattern_bytes(n),
                                    "close-delimited body bytes differ")

    def test_streaming_response_not_buffered(self):
        """The origin sends a first chunk, waits 3 s, sends the rest (as a
        Server-Sent-Events stream would). The first chunk must reach the
        client long before the origin finishes."""
        with h.RawConn(self.port) as c:
            start = time.monotonic()
            c.request("GET", "/drip?n=2&ms=3000")
            c.sock.settimeout(10)
            first_at = None
            seen = b""
            while b"piece-1" not in seen:
                data = c.sock.recv(65536)
                if not data:
                    break
                seen += data
                if first_at is None and b"piece-0" in seen:
                    first_at = time.monotonic() - start
            total = time.monotonic() - start
        self.assertIn(b"piece-0", seen, "first chunk never arrived: %r" % seen[:300])
        self.assertIn(b"piece-1", seen, "second chunk never arrived: %r" % seen[:300])
        self.assertLess(first_at, 2.0,
                        "the first chunk arrived after %.1f s, only with the rest "
                        "(%.1f s): the gateway buffers streamed responses"
                        % (first_at, total))

    # -- big bodies and memory -------------------------------------------------

    def test_big_bodies_streamed_with_bounded_memory(self):
        rss_samples = []

        def sample():
            rss_samples.append(self.gateway.rss_mib())

        # Download 100 MiB, but leave it unread for 2 s after the headers:
        # the origin writes as fast as it can, so the gateway must stop
        # reading it instead of buffering.
        status, cl, total, digest = self.download(BIG, pause_after_headers=2.0,
                                                  on_pause=sample)
        self.assertEqual(status, 200)
        self.assertEqual(total, BIG, "100 MiB download truncated or padded")
        self.assertEqual(digest, h.pattern_sha256(BIG), "100 MiB download corrupted")
        self.assertLess(rss_samples[0], RSS_LIMIT_MIB,
                        "gateway RSS %.1f MiB while a client left a 100 MiB "
                        "response unread: it buffers instead of applying "
                        "backpressure" % rss_samples[0])

        # Upload 100 MiB to an origin that only starts reading after 2 s.
        result = {}

        def do_upload():
            try:
                result["value"] = self.upload(BIG, path="/sha256?wait=2000")
            except Exception as e:  # reported below
                result["error"] = e
        t = threading.Thread(target=do_upload)
        t.start()
        time.sleep(1.5)
        sample()
        t.join(120)
        self.assertFalse(t.is_alive(), "100 MiB upload did not finish in 120 s")
        self.assertNotIn("error", result, "100 MiB upload failed: %r" % result.get("error"))
        status, info = result["value"]
        self.assertEqual(status, 200, repr(info)[:500])
        self.assertEqual(info["length"], BIG, "100 MiB upload length at origin")
        self.assertEqual(info["sha256"], h.pattern_sha256(BIG), "100 MiB upload corrupted")
        self.assertLess(rss_samples[1], RSS_LIMIT_MIB,
                        "gateway RSS %.1f MiB while the origin was not reading a "
                        "100 MiB upload: it buffers instead of applying "
                        "backpressure" % rss_samples[1])

        hwm = self.gateway.hwm_mib()
        sys.stderr.write("\n  [info] RSS while blocked: download %.1f MiB, upload %.1f MiB; "
                         "VmHWM %.1f MiB\n" % (rss_samples[0], rss_samples[1], hwm))
        self.assertLess(hwm, RSS_LIMIT_MIB,
                        "gateway peak RSS (VmHWM) %.1f MiB after 100 MiB each way; "
                        "bodies must be streamed, not buffered" % hwm)

    def test_full_duplex_streaming_echo(self):
        """The origin echoes an 8 MiB body while it is still arriving; the
        client reads concurrently. A gateway that reads the whole request
        before forwarding any response, or that stops reading one side, would
        deadlock here."""
        n = 8 * h.MiB
        s = h.connect(self.port, timeout=60)
        received = {"digest": hashlib.sha256(), "len": 0, "head": b""}
        done = threading.Event()

        def reader():
            try:
                rd = h._Reader(s)
                resp = h._read_response(
                    rd, sink=lambda p: (received["digest"].update(p),
                                        received.__setitem__("len", received["len"] + len(p))))
                received["status"] = resp.status
            except Exception as e:
                received["error"] = e
            finally:
                done.set()
        s.sendall(b"POST /stream-echo HTTP/1.1\r\nHost: app.test\r\n"
                  b"Content-Length: %d\r\n\r\n" % n)
        t = threading.Thread(target=reader)
        t.start()
        try:
            for piece in h.pattern_chunks(n):
                s.sendall(piece)
            self.assertTrue(done.wait(60), "full-duplex echo did not complete "
                            "in 60 s (deadlock?) - received %d of %d bytes"
                            % (received["len"], n))
        finally:
            s.close()
            t.join(5)
        self.assertNotIn("error", received, repr(received.get("error")))
        self.assertEqual(received.get("status"), 200)
        self.assertEqual(received["len"], n)
        self.assertEqual(received["digest"].hexdigest(), h.pattern_sha256(n))


if __name__ == "__main__":
    h.main()
