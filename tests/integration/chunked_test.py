#!/usr/bin/python3
"""Chunked transfer coding through the gateway: chunked requests (raw socket,
curl, with extensions and trailers) and chunked responses (with trailers)
arrive intact, and framing stays right on a kept-alive connection."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def split_sizes(data, sizes):
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i += n
        k += 1
    return out


class ChunkedTest(h.GatewayTestCase):

    def post_chunked(self, conn, path, pieces, trailers=(), extra=b""):
        head = (b"POST %s HTTP/1.1\r\nHost: app.test\r\n"
                b"Transfer-Encoding: chunked\r\n%s\r\n" % (path.encode(), extra))
        conn.send(head + h.chunk_encode(pieces, trailers))
        return conn.response(timeout=30)

    def test_chunked_request_raw(self):
        data = h.pattern_bytes(300000)
        for sizes in ([1], [7, 100, 4096], [65536], [300000]):
            if sizes == [1]:
                payload = data[:2000]  # 2000 one-byte chunks
            else:
                payload = data
            with self.subTest(chunk_sizes=sizes):
                with h.RawConn(self.port) as c:
                    r = self.post_chunked(c, "/sha256", split_sizes(payload, sizes))
                    self.assertEqual(r.status, 200, repr(r))
                    info = r.json()
                    self.assertEqual(info["length"], len(payload),
                                     "chunked upload length at origin")
                    self.assertEqual(info["sha256"],
                                     hashlib.sha256(payload).hexdigest(),
                                     "chunked upload bytes differ at origin")

    def test_chunked_request_with_trailers_and_extensions(self):
        body = b"hello, chunked world"
        raw = (b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
               b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
               b"5;name=value\r\nhello\r\n"
               b"F\r\n, chunked world\r\n"
               b"0\r\nX-Checksum: abc\r\n\r\n")
        with h.RawConn(self.port) as c:
            c.send(raw)
            r = c.response(timeout=15)
            self.assertEqual(r.status, 200, "chunk extension/trailer rejected: %r" % r)
            info = r.json()
            self.assertEqual(info["sha256"], hashlib.sha256(body).hexdigest())
            # The same connection must still be in sync afterwards.
            r2 = c.roundtrip("GET", "/bytes/3")
            self.assertEqual((r2.status, r2.body), (200, h.pattern_bytes(3)),
                             "connection out of sync after a chunked request "
                             "with trailers")

    def test_chunked_request_uppercase_hex_and_empty_body(self):
        with h.RawConn(self.port) as c:
            payload = h.pattern_bytes(0xAB)
            c.send(b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\nAB\r\n" + payload + b"\r\n0\r\n\r\n")
            r = c.response(timeout=15)
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(r.json()["sha256"], hashlib.sha256(payload).hexdigest())
            r = self.post_chunked(c, "/sha256", [])
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["length"], 0, "empty chunked body")

    def test_chunked_request_to_echo(self):
        payload = h.pattern_bytes(100000)
        with h.RawConn(self.port) as c:
            r = self.post_chunked(c, "/echo", split_sizes(payload, [999, 5000]))
            self.assertEqual(r.status, 200)
            self.assertTrue(r.body == payload, "echo of a chunked body differs")

    def test_chunked_request_10mib_streamed(self):
        n = 10 * h.MiB
        with h.RawConn(self.port) as c:
            c.send(b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            for piece in h.pattern_chunks(n, 32768):
                c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            c.send(b"0\r\n\r\n")
            r = c.response(timeout=60)
            self.assertEqual(r.status, 200)
            info = r.json()
            self.assertEqual((info["length"], info["sha256"]),
                             (n, h.pattern_sha256(n)), "10 MiB chunked upload")

    def test_curl_chunked_upload(self):
        src = os.path.join(self.tmpdir, "chunked-up.bin")
        with open(src, "wb") as f:
            for piece in h.pattern_chunks(h.MiB):
                f.write(piece)
        r = h.curl(["-H", "Host: app.test", "-H", "Transfer-Encoding: chunked",
                    "--data-binary", "@" + src,
                    "http://127.0.0.1:%d/sha256" % self.port])
        self.assertEqual(r.returncode, 0, "curl failed: %s" % r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual((info["length"], info["sha256"]),
                         (h.MiB, h.pattern_sha256(h.MiB)),
                         "curl chunked upload arrived wrong")

    def test_chunked_response(self):
        for n in (0, 1, 100000, h.MiB):
            with self.subTest(size=n):
                with h.RawConn(self.port) as c:
                    c.request("GET", "/chunked/%d" % n)
                    r = c.response(timeout=30)
                    self.assertEqual(r.status, 200)
                    self.assertEqual(len(r.body), n, "chunked response length")
                    self.assertEqual(hashlib.sha256(r.body).hexdigest(),
                                     h.pattern_sha256(n),
                                     "chunked response bytes differ")
                    # Kept alive and in sync afterwards.
                    r2 = c.roundtrip("GET", "/bytes/4")
                    self.assertEqual(r2.body, h.pattern_bytes(4),
                                     "connection out of sync after a chunked response")

    def test_chunked_response_with_trailers(self):
        n = 200000
        with h.RawConn(self.port) as c:
            c.request("GET", "/chunked/%d?trailers=1" % n, headers=[("TE", "trailers")])
            r = c.response(timeout=30)
            self.assertEqual(r.status, 200)
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), h.pattern_sha256(n),
                             "chunked response with trailers corrupted")
            if r.chunked and r.trailers:
                # If trailers are passed on, they must be the origin's.
                names = {k.lower(): v for k, v in r.trailers}
                self.assertEqual(names.get("x-body-sha256"), h.pattern_sha256(n))
            r2 = c.roundtrip("GET", "/bytes/4")
            self.assertEqual(r2.body, h.pattern_bytes(4),
                             "connection out of sync after a response with trailers")

    def test_chunked_response_via_curl(self):
        r = h.curl(["-H", "Host: app.test", "--raw", "-D", "-",
                    "http://127.0.0.1:%d/chunked/1000" % self.port])
        self.assertEqual(r.returncode, 0, r.stderr)
        r2 = h.curl(["-H", "Host: app.test",
                     "http://127.0.0.1:%d/chunked/%d?trailers=1" % (self.port, h.MiB)])
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(hashlib.sha256(r2.stdout).hexdigest(), h.pattern_sha256(h.MiB))


if __name__ == "__main__":
    h.main()
