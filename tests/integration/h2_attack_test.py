#!/usr/bin/python3
"""HTTP/2 abuse defences (issue 10): one test per attack, each named after
it. Every test checks three things: (a) the attacker got what the contract
says (GOAWAY with an error code, or RST_STREAM on the offending stream, or a
4xx) and, where the contract says so, its connection was closed within a
few seconds; (b) the gateway process is still alive; (c) a normal client
running at the same time (a thread doing h2 GETs on one long-lived
connection, and an HTTP/1.1 GET every fourth round) got only 200s, during
the attack and after it. Where a defence could be over-eager, a control
that stays just inside the limit must still be served.

Each test prints one outcome line ("h2 attack NAME: <what the attacker
saw> | normal client: N h2 + M HTTP/1.1 requests, all 200").

The attacker is h2_client.H2Client with track=False: python3-h2 only
serializes, frames h2 refuses to make are built by hand, and everything
the gateway sends back is parsed by the client's tolerant reader.
"""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2_client as hc  # noqa: E402

HOST = "app.test"

# The gateway's http2 section for this file. Defaults from the contract,
# except a smaller reset budget (fewer frames to send, so quicker) and the
# short zero-window timeout the stall test needs.
HTTP2 = {
    "max_concurrent_streams": 100,
    "initial_window_size": 65535,
    "max_continuations": 8,
    "max_settings": 32,
    "max_outbound_ack": 1000,
    "stream_reset_burst": 200,
    "stream_reset_rate": 20,
    "zero_window_timeout": "1s",
}

CLOSE_WITHIN = 5.0      # seconds for "the connection was closed"
FLOOD_CLOSE_WITHIN = 8.0
HIDDEN_REQUEST = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"


class NormalTraffic:
    """A well-behaved client running beside an attack, on its own thread:
    h2 GETs on one long-lived H2Client connection (reconnecting only after a
    failure, which is recorded), and every `h1_every`-th round an HTTP/1.1
    GET on a fresh connection. Each request is recorded as (kind, ok,
    detail, started, finished); anything but a complete 200 is a failure."""

    def __init__(self, port, host=HOST, h1_every=4, request_timeout=5.0):
        self.port = port
        self.host = host
        self.h1_every = h1_every
        self.request_timeout = request_timeout
        self.records = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="normal-traffic",
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(self.request_timeout * 3)

    def _record(self, kind, ok, detail, started):
        with self._lock:
            self.records.append((kind, ok, detail, started, time.monotonic()))

    def _run(self):
        client = None
        n = 0
        while not self._stop.is_set():
            n += 1
            path = "/headers?normal=%d" % n
            if n % self.h1_every == 0:
                started = time.monotonic()
                try:
                    status, _, _ = h.http_get(self.port, path, self.host,
                                              timeout=self.request_timeout)
                    self._record("http/1.1", status == 200,
                                 "" if status == 200 else "status %s" % status, started)
                except Exception as e:
                    self._record("http/1.1", False, "%s: %s" % (e.__class__.__name__, e),
                                 started)
            else:
                client = self._h2_get(client, path)
            time.sleep(0.01)
        if client is not None:
            client.close()

    def _h2_get(self, client, path):
        started = time.monotonic()
        try:
            if client is None:
                client = hc.H2Client(self.port, timeout=self.request_timeout)
            sid = client.request("GET", path, self.host)
            r = client.response(sid, self.request_timeout)
            ok = r.ended and r.status == 200
            detail = "" if ok else "%r; connection: %s" % (r, client.describe())
        except Exception as e:
            ok = False
            detail = "%s: %s; connection: %s" % (
                e.__class__.__name__, e, client.describe() if client else "none")
        self._record("h2", ok, detail, started)
        if client is not None and (not ok or client.closed or client.goaways):
            client.close()
            client = None
        return client

    def successes(self):
        with self._lock:
            return sum(1 for r in self.records if r[1])

    def wait_progress(self, n, timeout):
        """True once n more requests have succeeded (within timeout)."""
        target = self.successes() + n
        return bool(h.wait_until(lambda: self.successes() >= target, timeout, 0.02))

    def failures(self):
        with self._lock:
            return [(r[0], r[2]) for r in self.records if not r[1]]

    def count(self, kind=None, since=None, until=None):
        """Successful requests of `kind` finished in [since, until]."""
        with self._lock:
            return sum(1 for r in self.records
                       if r[1] and (kind is None or r[0] == kind)
                       and (since is None or r[4] >= since)
                       and (until is None or r[3] <= until))


class H2AttackTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port, [h.route("r1", HOST, cls.origin.address)],
                             http2=dict(HTTP2))

    # -- helpers -------------------------------------------------------------

    def attacker(self, **kw):
        """A raw (track=False) h2c connection that has seen the gateway's
        SETTINGS and acknowledged them."""
        c = hc.H2Client(self.port, track=False, timeout=5.0, **kw)
        self.addCleanup(c.close)
        settings = c.handshake(5.0)
        self.assertIsNotNone(settings, "the gateway sent no SETTINGS for an h2c "
                             "prior-knowledge connection: %s%s"
                             % (c.describe(), self.gateway_context()))
        return c

    def run_attack(self, name, attack):
        """Run attack(traffic) beside NormalTraffic. The attack asserts (a)
        and returns a line on what the attacker saw; this checks (b) and (c)
        and prints the outcome line."""
        traffic = NormalTraffic(self.port).start()
        try:
            self.assertTrue(traffic.wait_progress(4, 10),
                            "the normal client got nowhere before the attack: %r"
                            % traffic.failures()[:3])
            start = time.monotonic()
            verdict = attack(traffic)
            end = time.monotonic()
            # Enough rounds after the attack to include an HTTP/1.1 one.
            after = traffic.wait_progress(2 * traffic.h1_every, 15)
        finally:
            traffic.stop()
        self.assertTrue(self.gateway.alive(), "the gateway died during the %s attack%s"
                        % (name, self.gateway_context()))
        failures = traffic.failures()
        self.assertEqual(failures, [], "the normal client failed during the %s attack "
                         "(attacker: %s)" % (name, verdict))
        self.assertTrue(after, "the normal client stopped getting answers after the %s "
                        "attack" % name)
        during = traffic.count(since=start, until=end)
        self.assertGreater(during, 0, "no normal request completed while the %s attack "
                           "ran" % name)
        n2, n1 = traffic.count("h2"), traffic.count("http/1.1")
        self.assertGreater(n1, 0, "no HTTP/1.1 request was made beside the attack")
        print("h2 attack %s: %s | normal client: %d h2 + %d HTTP/1.1 requests, all 200 "
              "(%d completed during the attack)" % (name, verdict, n2, n1, during),
              flush=True)

    def assert_cut(self, c, what, close_within=CLOSE_WITHIN):
        """(a) for connection-level defences: a GOAWAY with an error code,
        and the connection closed within close_within seconds."""
        closed = c.wait_closed(close_within)
        self.assertIsNotNone(c.error_goaway(), "%s: expected a GOAWAY with an error "
                             "code; the attacker saw: %s" % (what, c.describe()))
        self.assertTrue(closed, "%s: the gateway sent GOAWAY but kept the connection "
                        "open %.0f s: %s" % (what, close_within, c.describe()))

    def assert_served(self, c, path, what):
        """A control request on connection c gets a complete 200."""
        sid = c.new_stream_id()
        c.send_raw(c.headers_bytes(sid, hc.request_fields("GET", path, HOST)))
        r = c.response(sid, 5)
        self.assertTrue(r.ended and r.status == 200,
                        "%s: a request inside the limits was not served: %r; "
                        "connection: %s" % (what, r, c.describe()))
        self.assertIsNone(c.error_goaway(), "%s: cut although inside the limits: %s"
                          % (what, c.describe()))

    def origin_saw(self, marker):
        """Origin request targets containing marker."""
        return [p for p in self.origin.paths if marker in p]

    def stream_refused(self, c, sid, codes=None):
        """True if stream sid got RST_STREAM (with one of `codes`, if
        given; else also a 4xx response), or a GOAWAY excluding it."""
        st = c.streams.get(sid)
        if st is not None and st.reset_code is not None:
            return codes is None or st.reset_code in codes
        if codes is None and st is not None and st.status is not None \
                and 400 <= st.status < 500:
            return True
        return any(g.last_stream_id < sid for g in c.goaways)

    # -- Rapid Reset (CVE-2023-44487) -------------------------------------

    def test_rapid_reset(self):
        # Control: a client that cancels a few of its requests is not cut.
        ctl = self.attacker()
        out = bytearray()
        for _ in range(50):
            sid = ctl.new_stream_id()
            out += ctl.headers_bytes(sid, hc.request_fields("GET", "/rr-control", HOST))
            ctl.h2.reset_stream(sid, hc.CANCEL)
            out += ctl.h2_bytes()
        ctl.send_raw(bytes(out))
        self.assert_served(ctl, "/headers?rr-control-after", "50 cancelled requests")

        def attack(traffic):
            c = self.attacker()
            pairs = 0
            for _ in range(40):  # up to 2,000 HEADERS + RST_STREAM pairs
                out = bytearray()
                for _ in range(50):
                    sid = c.new_stream_id()
                    out += c.headers_bytes(sid, hc.request_fields(
                        "GET", "/rapid-reset?s=%d" % sid, HOST))
                    c.h2.reset_stream(sid, hc.CANCEL)
                    out += c.h2_bytes()
                if not c.send_raw(bytes(out)):
                    break
                pairs += 50
                c.drain()
                if c.closed or c.error_goaway():
                    break
            traffic.wait_progress(2, 5)
            self.assert_cut(c, "Rapid Reset (%d HEADERS+RST_STREAM pairs)" % pairs)
            return "sent %d HEADERS+RST_STREAM pairs: %s" % (pairs, c.describe())
        self.run_attack("Rapid Reset", attack)

    # -- MadeYouReset: the client makes the gateway reset, over and over -

    def test_made_you_reset(self):
        def attack(traffic):
            c = self.attacker()
            streams = 0
            for _ in range(40):  # up to 2,000 streams the gateway must reset
                out = bytearray()
                for _ in range(50):
                    sid = c.new_stream_id()
                    out += c.headers_bytes(sid, hc.request_fields(
                        "GET", "/made-you-reset?s=%d" % sid, HOST))
                    # 65535 + 2^31-1 overflows the stream's send window: a
                    # stream error, FLOW_CONTROL_ERROR (RFC 9113 6.9.1).
                    out += hc.window_update_frame(sid, hc.MAX_WINDOW)
                if not c.send_raw(bytes(out)):
                    break
                streams += 50
                # Wait for this batch's resets: a reset stream is closed, so
                # the batches never add up to max_concurrent_streams and the
                # cut can only come from the reset budget.
                answered = c.wait(lambda: len(c.resets) >= streams or c.error_goaway(), 2)
                if not answered or c.closed or c.error_goaway():
                    break
            traffic.wait_progress(2, 5)
            self.assert_cut(c, "MadeYouReset (%d overflowing WINDOW_UPDATEs)" % streams)
            self.assertTrue(c.resets, "MadeYouReset: the gateway never reset a stream "
                            "whose window overflowed: %s" % c.describe())
            return "made the gateway reset %d streams (sent %d): %s" % (
                len(c.resets), streams, c.describe())
        self.run_attack("MadeYouReset", attack)

    # -- CONTINUATION flood and oversized header blocks ----------------------

    def test_continuation_flood(self):
        # Control: exactly max_continuations (8) CONTINUATION frames are fine.
        ctl = self.attacker()
        sid = ctl.new_stream_id()
        block = hc.header_block(hc.request_fields("GET", "/headers?cont-control", HOST)
                                + [("x-split", "c" * 800)])
        bounds = [len(block) * i // 9 for i in range(10)]
        pieces = [block[bounds[i]:bounds[i + 1]] for i in range(9)]
        out = hc.headers_frame(sid, pieces[0], end_headers=False)
        for i, piece in enumerate(pieces[1:]):
            out += hc.continuation_frame(sid, piece, end_headers=i == len(pieces) - 2)
        ctl.send_raw(out)
        r = ctl.response(sid, 5)
        self.assertTrue(r.ended and r.status == 200, "a header block in HEADERS + 8 "
                        "CONTINUATION frames was not served: %r; %s" % (r, ctl.describe()))

        def attack(traffic):
            # 1,000 CONTINUATION frames of 16 bytes, never END_HEADERS: one
            # 16 KB field, far inside the block size, far over the count.
            c = self.attacker()
            sid = c.new_stream_id()
            block = hc.header_block(hc.request_fields("GET", "/continuation-flood", HOST)
                                    + [("x-long", "a" * 16000)])
            out = bytearray(hc.headers_frame(sid, block[:24], end_headers=False))
            rest = block[24:]
            for i in range(0, len(rest), 16):
                out += hc.continuation_frame(sid, rest[i:i + 16])
            c.send_raw(bytes(out))
            traffic.wait_progress(2, 5)
            self.assert_cut(c, "CONTINUATION flood")
            verdict = "1,000 CONTINUATION frames: %s" % c.describe()

            # A header block over limits.header_block_size (80 KB > 64 KiB)
            # in HEADERS + 4 CONTINUATION frames (inside max_continuations).
            big = self.attacker()
            sid = big.new_stream_id()
            block = hc.header_block(hc.request_fields("GET", "/continuation-big", HOST)
                                    + [("x-big-%d" % i, "b" * 10000) for i in range(8)])
            pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
            out = hc.headers_frame(sid, pieces[0], end_headers=False)
            for i, piece in enumerate(pieces[1:]):
                out += hc.continuation_frame(sid, piece, end_headers=i == len(pieces) - 2)
            big.send_raw(out)
            big.wait(lambda: self.stream_refused(big, sid) or big.closed, 5)
            self.assertTrue(self.stream_refused(big, sid) or big.error_goaway(),
                            "an %d-byte header block was not refused (RST_STREAM, 431 or "
                            "GOAWAY): %s" % (len(block), big.describe()))
            st = big.streams.get(sid)
            if st is not None and st.status is not None:
                self.assertEqual(st.status, 431, "oversized header block: %r" % st)
            time.sleep(0.2)
            self.assertEqual(self.origin_saw("/continuation-"), [],
                             "a refused header block reached the origin")
            return verdict + "; %d-byte block in %d frames: %s" % (
                len(block), len(pieces), big.describe())
        self.run_attack("CONTINUATION flood", attack)

    # -- HPACK bomb ----------------------------------------------------------

    def bomb(self, path, table_entry, references):
        """A raw connection sending one request whose block inserts
        table_entry into the dynamic table, then names it `references`
        times with 1-byte indexed fields (split over HEADERS +
        CONTINUATION frames of 16384 bytes). Returns (client, stream id)."""
        c = self.attacker()
        sid = c.new_stream_id()
        block = (hc.header_block(hc.request_fields("GET", path, HOST))
                 + hc.hpack_literal(table_entry[0], table_entry[1], index=True)
                 + hc.hpack_indexed(62) * references)
        pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = hc.headers_frame(sid, pieces[0], end_headers=len(pieces) == 1)
        for i, piece in enumerate(pieces[1:]):
            out += hc.continuation_frame(sid, piece, end_headers=i == len(pieces) - 2)
        c.send_raw(out)
        return c, sid

    def test_hpack_bomb(self):
        # Control: a table entry named 50 times (5 KB decoded, 55 fields) is fine.
        ctl, sid = self.bomb("/headers?bomb-control", ("x-rep", "r" * 100), 50)
        r = ctl.response(sid, 5)
        self.assertTrue(r.ended and r.status == 200, "a block naming one table entry "
                        "50 times was not served: %r; %s" % (r, ctl.describe()))

        def attack(traffic):
            hwm_before = self.gateway.hwm_mib()
            cases = [
                # 4,000-byte entry x 28,000: 112 MB decoded from 32 KB sent.
                ("big entry x28000", "/hpack-bomb-big", ("x-bomb", "a" * 4000), 28000),
                # A 2-byte field 15,000 times: the field count, not the size.
                ("tiny field x15000", "/hpack-bomb-tiny", ("x", "y"), 15000),
                # 1,000 cookie crumbs: each one counts as a field.
                ("cookie crumbs x1000", "/hpack-bomb-cookie", ("cookie", "c=1"), 1000),
            ]
            lines = []
            for name, path, entry, refs in cases:
                c, sid = self.bomb(path, entry, refs)
                c.wait(lambda: self.stream_refused(c, sid) or c.closed is not None, 5)
                self.assertTrue(self.stream_refused(c, sid) or c.error_goaway(),
                                "HPACK bomb (%s) was not refused (431, RST_STREAM or "
                                "GOAWAY): %s" % (name, c.describe()))
                st = c.streams.get(sid)
                if st is not None and st.status is not None:
                    self.assertEqual(st.status, 431, "HPACK bomb (%s): %r" % (name, st))
                lines.append("%s: %s" % (name, c.describe()))
                c.close()
            traffic.wait_progress(2, 5)
            time.sleep(0.2)
            self.assertEqual(self.origin_saw("/hpack-bomb"), [],
                             "a request from an HPACK bomb reached the origin")
            grew = self.gateway.hwm_mib() - hwm_before
            self.assertLess(grew, 32, "the gateway's peak RSS grew by %.0f MiB decoding "
                            "HPACK bombs (memory must stay bounded)" % grew)
            return "; ".join(lines) + "; peak RSS +%.1f MiB" % grew
        self.run_attack("HPACK bomb", attack)

    # -- SETTINGS: flood, and too many entries -------------------------------

    def flood(self, name, one_frame, traffic, max_frames=400000):
        """Send one_frame over and over without reading (small receive
        buffer) until the gateway stops taking them for 3 s, the write
        fails, or max_frames went out. Then read: the connection must end
        within FLOOD_CLOSE_WITHIN seconds. Returns (client, frames sent)."""
        c = self.attacker(rcvbuf=4096)
        batch = one_frame * 500
        sent = 0
        deadline = time.monotonic() + 10
        while sent < max_frames and time.monotonic() < deadline:
            if not c.send_raw(batch, timeout=3.0):
                break
            sent += 500
        traffic.wait_progress(2, 5)
        closed = c.wait_closed(FLOOD_CLOSE_WITHIN)
        self.assertTrue(closed, "%s: after %d frames not read, the gateway still kept "
                        "the connection %.0f s later (expected GOAWAY/close once "
                        "max_outbound_ack ACKs are queued): %s"
                        % (name, sent, FLOOD_CLOSE_WITHIN, c.describe()))
        g = c.error_goaway()
        if c.goaways and g is None:
            self.fail("%s: GOAWAY without an error code: %s" % (name, c.describe()))
        return c, sent

    def test_settings_flood(self):
        def attack(traffic):
            frame = hc.settings_frame([(hc.SETTINGS_INITIAL_WINDOW_SIZE, 65535)])
            c, sent = self.flood("SETTINGS flood", frame, traffic)
            return "%d SETTINGS frames, ACKs not read (%d read afterwards): %s" % (
                sent, c.settings_acks, c.describe())
        self.run_attack("SETTINGS flood", attack)

    def test_settings_too_many_entries(self):
        # Control: max_settings (32) entries in one frame are fine.
        ctl = self.attacker()
        ctl.send_raw(hc.settings_frame([(hc.SETTINGS_ENABLE_PUSH, 0)] * 32))
        self.assertTrue(ctl.wait(lambda: ctl.settings_acks >= 2, 5),
                        "a SETTINGS frame with 32 entries was not acknowledged: %s"
                        % ctl.describe())
        self.assert_served(ctl, "/headers?settings-32", "SETTINGS with 32 entries")

        def attack(traffic):
            c = self.attacker()
            c.send_raw(hc.settings_frame([(hc.SETTINGS_ENABLE_PUSH, 0)] * 40))
            traffic.wait_progress(2, 5)
            self.assert_cut(c, "SETTINGS with 40 entries")
            return "one SETTINGS frame with 40 entries: %s" % c.describe()
        self.run_attack("SETTINGS too many entries", attack)

    # -- PING flood ----------------------------------------------------------

    def test_ping_flood(self):
        def attack(traffic):
            c, sent = self.flood("PING flood", hc.ping_frame(b"floodpng"), traffic)
            return "%d PINGs, ACKs not read (%d read afterwards): %s" % (
                sent, len(c.ping_acks), c.describe())
        self.run_attack("PING flood", attack)

    # -- Zero-window stall ---------------------------------------------------

    def test_zero_window_stall(self):
        size = 64 * h.MiB

        def attack(traffic):
            hwm_before = self.gateway.hwm_mib()
            # Stream windows of 0 from the start.
            zero = self.attacker(auto_window=False,
                                 settings={hc.SETTINGS_INITIAL_WINDOW_SIZE: 0})
            # Default windows, never a WINDOW_UPDATE: stalls after 65,535 bytes.
            never = self.attacker(auto_window=False)
            sids = {}
            for c in (zero, never):
                sid = c.new_stream_id()
                c.send_raw(c.headers_bytes(sid, hc.request_fields(
                    "GET", "/bytes/%d" % size, HOST)))
                sids[c] = (sid, time.monotonic())
            traffic.wait_progress(2, 5)
            lines = []
            for c, what, window in ((zero, "window 0", 0),
                                    (never, "no WINDOW_UPDATE", 65535)):
                sid, sent_at = sids[c]
                st = c.response(sid, max(0.5, sent_at + 8 - time.monotonic()))
                self.assertIsNotNone(st.reset_code, "zero-window stall (%s): the stream "
                                     "was not reset within 8 s (zero_window_timeout is 1s): "
                                     "%r; %s" % (what, st, c.describe()))
                took = st.finished_at - sent_at
                self.assertGreater(took, 0.8, "zero-window stall (%s): reset after %.2f s, "
                                   "before zero_window_timeout (1 s)" % (what, took))
                self.assertLessEqual(len(st.body), window, "more DATA than the window "
                                     "allowed: %r" % st)
                lines.append("%s: RST_STREAM(%s) after %.1f s with %d body bytes" % (
                    what, hc.error_name(st.reset_code), took, len(st.body)))
            grew = self.gateway.hwm_mib() - hwm_before
            self.assertLess(grew, 32, "the gateway's peak RSS grew by %.0f MiB while two "
                            "64 MiB responses were stalled (it must not buffer them)" % grew)
            return "; ".join(lines) + "; peak RSS +%.1f MiB" % grew
        self.run_attack("zero-window stall", attack)

    # -- Too many streams ----------------------------------------------------

    def test_too_many_streams(self):
        def attack(traffic):
            c = self.attacker()
            c.drain()  # our SETTINGS ACK is out before the burst
            out = bytearray()
            sids = []
            for i in range(130):
                sid = c.new_stream_id()
                sids.append(sid)
                out += c.headers_bytes(sid, hc.request_fields(
                    "GET", "/slow/1500?too-many=%d" % i, HOST))
            c.send_raw(bytes(out))
            traffic.wait_progress(2, 5)
            extra = sids[100:]
            c.wait(lambda: all(self.stream_refused(c, s) for s in extra) or c.closed, 5)
            refused = [s for s in extra if self.stream_refused(
                c, s, (hc.REFUSED_STREAM, hc.PROTOCOL_ERROR))]
            self.assertEqual(len(refused), len(extra), "streams beyond "
                             "max_concurrent_streams (100) were not refused "
                             "(RST_STREAM REFUSED_STREAM/PROTOCOL_ERROR or GOAWAY): %d of "
                             "30; %s" % (len(refused), c.describe()))
            c.wait(lambda: all(c.stream_done(s) for s in sids), 5)
            seen = len(self.origin_saw("too-many="))
            self.assertLessEqual(seen, 100, "the origin got %d of the 130 streams opened "
                                 "at once" % seen)
            return "130 streams at once: %s; origin got %d" % (c.describe(), seen)
        self.run_attack("too many streams", attack)

    # -- Invalid pseudo-headers and connection-specific fields ----------------

    def test_invalid_pseudo_headers(self):
        def req(path, extra=()):
            return hc.request_fields("GET", path, HOST, extra=list(extra))
        mark = [("x-shape", "invalid")]
        shapes = [
            ("missing :method", [(":scheme", "http"), (":authority", HOST),
                                 (":path", "/bad-pseudo-1")] + mark),
            ("missing :scheme", [(":method", "GET"), (":authority", HOST),
                                 (":path", "/bad-pseudo-2")] + mark),
            ("missing :path", [(":method", "GET"), (":scheme", "http"),
                               (":authority", HOST)] + mark),
            ("empty :path", req("", mark)),
            ("duplicate :path", req("/bad-pseudo-3", [(":path", "/bad-pseudo-3b")] + mark)),
            ("unknown pseudo-header", req("/bad-pseudo-4", [(":foo", "bar")] + mark)),
            ("pseudo-header after a regular field",
             [(":method", "GET"), (":scheme", "http"), (":authority", HOST)] + mark
             + [(":path", "/bad-pseudo-5")]),
            ("uppercase field name", req("/bad-pseudo-6", [("X-Upper", "1")] + mark)),
            ("connection", req("/bad-pseudo-7", [("connection", "keep-alive")] + mark)),
            ("transfer-encoding", req("/bad-pseudo-8", [("transfer-encoding", "chunked")]
                                      + mark)),
            ("keep-alive", req("/bad-pseudo-9", [("keep-alive", "timeout=5")] + mark)),
            ("proxy-connection", req("/bad-pseudo-10", [("proxy-connection", "close")]
                                     + mark)),
            ("upgrade", req("/bad-pseudo-11", [("upgrade", "websocket")] + mark)),
        ]

        def attack(traffic):
            answers = []
            for name, fields in shapes:
                c = self.attacker()
                sid = c.new_stream_id()
                c.send_raw(hc.headers_frame(sid, hc.header_block(fields)))
                st = c.response(sid, 5)
                ok = (st.reset_code == hc.PROTOCOL_ERROR
                      or (st.status == 400 and st.ended))
                self.assertTrue(ok, "invalid request (%s) not answered with RST_STREAM "
                                "PROTOCOL_ERROR or 400: %r; %s" % (name, st, c.describe()))
                answers.append("RST_STREAM" if st.reset_code is not None else "400")
                c.close()
            traffic.wait_progress(2, 5)
            time.sleep(0.2)
            leaked = [head for head in self.origin.heads if "x-shape" in head.lower()]
            self.assertEqual(leaked, [], "invalid h2 requests reached the origin")
            return "%d shapes, each on its own connection: %s; origin got none" % (
                len(shapes), ", ".join("%s x%d" % (a, answers.count(a))
                                       for a in sorted(set(answers))))
        self.run_attack("invalid pseudo-headers", attack)

    # -- h2 request smuggling into the HTTP/1.1 upstream ----------------------

    def test_h2_smuggling(self):
        def post(path, extra):
            return hc.request_fields("POST", path, HOST, extra=extra)
        # (name, header fields, DATA payload or None for END_STREAM on
        # HEADERS, path marker that must never reach the origin or None)
        cases = [
            ("content-length without body", post("/smuggle-cl0", [("content-length", "10")]),
             None, "/smuggle-cl0"),
            ("content-length shorter than DATA",
             post("/smuggle-clshort", [("content-length", "5")]), b"hello" + HIDDEN_REQUEST,
             None),
            ("content-length longer than DATA",
             post("/smuggle-cllong", [("content-length", "100")]), b"hello", None),
            ("te: chunked", post("/smuggle-te", [("te", "chunked")]),
             b"0\r\n\r\n" + HIDDEN_REQUEST, "/smuggle-te"),
            ("CR in a value", post("/smuggle-cr", [("x-a", "v\rx-injected: 1")]), b"",
             "/smuggle-cr"),
            ("LF in a value", post("/smuggle-lf", [("x-a", "v\nx-injected: 1")]), b"",
             "/smuggle-lf"),
            ("CRLF in a value", post("/smuggle-crlf", [("x-a", "v\r\nx-injected: 1")]), b"",
             "/smuggle-crlf"),
            ("NUL in a value", post("/smuggle-nul", [("x-a", "v\x00x-injected: 1")]), b"",
             "/smuggle-nul"),
            ("CRLF in :path", post("/smuggle-path HTTP/1.1\r\nx-injected: 1\r\n\r\n"
                                   "GET /smuggled", []), b"", "/smuggle-path"),
        ]

        def attack(traffic):
            answers = []
            for name, fields, body, marker in cases:
                c = self.attacker()
                sid = c.new_stream_id()
                out = hc.headers_frame(sid, hc.header_block(fields), end_stream=body is None)
                if body is not None:
                    out += hc.data_frame(sid, body, end_stream=True)
                c.send_raw(out)
                st = c.response(sid, 5)
                ok = st.reset_code is not None or (st.status == 400 and st.ended)
                self.assertTrue(ok, "h2 smuggling (%s) not answered with RST_STREAM or 400: "
                                "%r; %s" % (name, st, c.describe()))
                answers.append("RST_STREAM(%s)" % hc.error_name(st.reset_code)
                               if st.reset_code is not None else "400")
                c.close()
                if marker:
                    time.sleep(0.05)
                    self.assertEqual(self.origin_saw(marker), [], "h2 smuggling (%s): the "
                                     "origin got a request built from it" % name)
            traffic.wait_progress(2, 5)
            time.sleep(0.2)
            self.assertEqual(self.origin_saw("/smuggled"), [],
                             "a request hidden in an h2 body reached the origin")
            injected = [hd for hd in self.origin.heads if "x-injected" in hd.lower()]
            self.assertEqual(injected, [], "a header injected through CR/LF/NUL reached "
                             "the origin")
            return "%d cases, each on its own connection: %s; origin got no smuggled " \
                   "request" % (len(cases), ", ".join(
                       "%s x%d" % (a, answers.count(a)) for a in sorted(set(answers))))
        self.run_attack("h2 smuggling", attack)


if __name__ == "__main__":
    unittest.main(verbosity=2)
