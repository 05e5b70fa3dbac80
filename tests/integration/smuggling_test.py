#!/usr/bin/python3
"""Request smuggling defences. Every ambiguous or malformed framing is
answered with 400 (or, where no status can be sent, a bare close), the
connection is closed afterwards, and the origin receives nothing - in
particular not the request hidden behind the ambiguous one."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"

# (name, bytes). All must be rejected before anything reaches the origin.
# Status 400 is expected; for a Transfer-Encoding naming a coding the gateway
# does not implement, RFC 9112 6.1 also allows 501 (see UNKNOWN_CODING).
REJECT_CASES = [
    ("CL and TE together (CL.TE)",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN),
    ("TE and CL together (TE.CL)",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 48\r\n\r\n0\r\n\r\n" + HIDDEN),
    ("two different Content-Length headers",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
     b"Content-Length: 6\r\n\r\nhello!" + HIDDEN),
    ("Content-Length list with different values",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 6\r\n\r\n"
     b"hello!" + HIDDEN),
    ("Transfer-Encoding not ending in chunked",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, gzip\r\n"
     b"\r\n0\r\n\r\n" + HIDDEN),
    ("Transfer-Encoding chunked twice",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN),
    ("Transfer-Encoding with an unknown coding",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\n"
     b"\r\n0\r\n\r\n" + HIDDEN),
    ("whitespace between header name and colon",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding : chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n" + HIDDEN),
    ("obs-fold (header line starting with a space)",
     b"GET /headers HTTP/1.1\r\nHost: app.test\r\nX-Fold: a\r\n b\r\n\r\n"),
    ("obs-fold hiding Transfer-Encoding",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding:\r\n chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n" + HIDDEN),
    ("bare CR inside a header value",
     b"GET /headers HTTP/1.1\r\nHost: app.test\r\nX: a\rTransfer-Encoding: chunked\r\n"
     b"\r\n0\r\n\r\n" + HIDDEN),
    ("bare LF line endings",
     b"GET /headers HTTP/1.1\nHost: app.test\n\n"),
    ("bare LF hiding Transfer-Encoding",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nX-A: 1\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n" + HIDDEN),
    ("NUL byte in a header value",
     b"GET /headers HTTP/1.1\r\nHost: app.test\r\nX-Nul: a\x00b\r\n\r\n"),
    ("NUL byte in the request target",
     b"GET /head\x00ers HTTP/1.1\r\nHost: app.test\r\n\r\n"),
    ("Content-Length with a plus sign",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: +5\r\n\r\nhello"),
    ("Content-Length overflowing 64 bits",
     b"POST /echo HTTP/1.1\r\nHost: app.test\r\n"
     b"Content-Length: 18446744073709551621\r\n\r\nhello"),
]


UNKNOWN_CODING = {"Transfer-Encoding not ending in chunked",
                  "Transfer-Encoding with an unknown coding"}


class SmugglingTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        # A long header timeout, so a gateway that merely waits is caught
        # by the 5 s read below rather than rescued by its own timer.
        return h.base_config(cls.gateway_port,
                             [h.route("r1", "app.test", cls.origin.address)],
                             limits={"header_read_timeout": "30s"})

    def exchange(self, data, timeout=5.0):
        before = self.origin.requests
        got, closed, elapsed = self.raw(data, timeout=timeout)
        time.sleep(0.3)  # anything forwarded lands by now
        reached = self.origin.request_lines[before:]
        return got, closed, reached

    def assert_rejected(self, name, data, origin_untouched=True, allow_silent_close=True):
        got, closed, reached = self.exchange(data)
        responses, err = h.parse_responses(got)
        allowed = (400, 501) if name in UNKNOWN_CODING else (400,)
        if got:
            self.assertTrue(responses, "%s: unparsable reply %r" % (name, got[:300]))
            self.assertIn(responses[0].status, allowed,
                          "%s: expected %s, got %r" % (name, allowed, responses[0]))
            self.assertEqual(len(responses), 1,
                             "%s: more than one response came back: %r" % (name, responses))
            problem = h.short_text_body_problem(responses[0])
            self.assertIsNone(problem, "%s: the error should have a short text body: %s"
                              % (name, problem))
        else:
            self.assertTrue(allow_silent_close,
                            "%s: no response at all (a 400 was expected)" % name)
        self.assertTrue(closed, "%s: connection not closed within 5 s after the "
                        "rejection (got %r)" % (name, got[:300]))
        if origin_untouched:
            self.assertEqual(reached, [], "%s: the origin received %r" % (name, reached))

    def test_rejected_shapes(self):
        for name, data in REJECT_CASES:
            with self.subTest(case=name):
                self.assert_rejected(name, data)

    def test_http09_request(self):
        self.assert_rejected("HTTP/0.9 request", b"GET /\n")

    def test_http09_request_crlf(self):
        self.assert_rejected("HTTP/0.9 request with CRLF", b"GET /headers\r\n\r\n")

    def test_bad_chunk_size(self):
        # The head may already have been forwarded when the bad chunk shows
        # up, so the origin may see the request start; the client must still
        # get a 400 (or a close), never a 200.
        for name, chunk in [("non-hex chunk size", b"zz\r\nhello\r\n0\r\n\r\n"),
                            ("chunk size overflow", b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
                            ("negative chunk size", b"-5\r\nhello\r\n0\r\n\r\n"),
                            ("chunk data longer than its size",
                             b"3\r\nhello\r\n0\r\n\r\n")]:
            with self.subTest(case=name):
                data = (b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunk + HIDDEN)
                got, closed, reached = self.exchange(data)
                responses, _ = h.parse_responses(got)
                if responses:
                    self.assertEqual(responses[0].status, 400,
                                     "%s: expected 400, got %r" % (name, responses[0]))
                self.assertTrue(closed, "%s: connection not closed" % name)
                self.assertNotIn(b"GET /smuggled HTTP/1.1\r\n", reached,
                                 "%s: the hidden request reached the origin" % name)

    def test_control_valid_pipeline_reaches_origin(self):
        """Sanity check of the method: a valid request followed by a valid
        second request both reach the origin (so 'origin untouched' above
        means something)."""
        data = (b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
                + HIDDEN.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        got, closed, reached = self.exchange(data)
        responses, _ = h.parse_responses(got)
        self.assertEqual([r.status for r in responses], [200, 200], repr(responses))
        self.assertEqual(len(reached), 2, "origin saw %r" % reached)
        self.assertTrue(reached[1].startswith(b"GET /smuggled "))

    def test_gateway_survives_all_cases(self):
        for name, data in REJECT_CASES:
            self.exchange(data, timeout=2)
        status, _, _ = self.get("/headers")
        self.assertEqual(status, 200, "gateway unusable after the smuggling attempts")


if __name__ == "__main__":
    h.main()
