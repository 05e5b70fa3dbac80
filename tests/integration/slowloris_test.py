#!/usr/bin/python3
"""Slowloris: a client that trickles its header block is cut off after
header_read_timeout (408 or a plain close), nothing reaches the origin, and
many such clients do not starve a normal one."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class SlowlorisTest(h.GatewayTestCase):

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port,
                             [h.route("r1", "app.test", cls.origin.address)],
                             limits={"header_read_timeout": "1s",
                                     "keepalive_idle_timeout": "75s"})

    def trickle(self, sock, data, interval, stop_after):
        """Send data one byte per interval until stop_after seconds or an
        error. Returns (bytes received, closed, seconds until closed)."""
        start = time.monotonic()
        received = b""
        sock.setblocking(True)
        for i in range(len(data)):
            if time.monotonic() - start > stop_after:
                break
            try:
                sock.sendall(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return received, True, time.monotonic() - start
            sock.settimeout(interval)
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, True, time.monotonic() - start
                received += chunk
            except socket.timeout:
                pass
            except ConnectionResetError:
                return received, True, time.monotonic() - start
        rest, closed, _ = h.read_until_close(sock, max(0.1, stop_after - (time.monotonic() - start)))
        return received + rest, closed, time.monotonic() - start

    def check_cut_off(self, received, closed, elapsed, what):
        self.assertTrue(closed, "%s: connection still open after %.1f s "
                        "(header_read_timeout is 1s)" % (what, elapsed))
        self.assertLess(elapsed, 4.5, "%s: closed only after %.1f s" % (what, elapsed))
        if received:
            responses, err = h.parse_responses(received)
            self.assertTrue(responses, "%s: unparsable bytes before close: %r"
                            % (what, received[:300]))
            self.assertEqual(responses[0].status, 408,
                             "%s: expected 408 Request Timeout (or a plain close), "
                             "got %r" % (what, responses[0]))

    def test_partial_header_sent_slowly(self):
        before = self.origin.requests
        s = h.connect(self.port)
        try:
            s.sendall(b"GET /headers HTTP/1.1\r\nHost: app.test\r\n")
            received, closed, elapsed = self.trickle(
                s, b"X-Slow: " + b"a" * 200, interval=0.25, stop_after=8)
        finally:
            s.close()
        self.check_cut_off(received, closed, elapsed, "header trickled one byte/250 ms")
        self.assertEqual(self.origin.requests, before,
                         "a slowloris request reached the origin")

    def test_partial_request_line_then_silence(self):
        s = h.connect(self.port)
        try:
            s.sendall(b"GET /headers HT")
            received, closed, elapsed = h.read_until_close(s, 8)
        finally:
            s.close()
        self.check_cut_off(received, closed, elapsed, "partial request line then silence")

    def test_connection_with_no_bytes(self):
        """A connection that never sends a byte should not be held for the
        75 s keep-alive timeout; the header timer covers the first request."""
        s = h.connect(self.port)
        try:
            received, closed, elapsed = h.read_until_close(s, 8)
        finally:
            s.close()
        self.check_cut_off(received, closed, elapsed, "connection that sends nothing")

    def test_timeout_is_not_too_eager(self):
        s = h.connect(self.port)
        try:
            req = h.build_request("GET", "/headers?patient")
            third = max(1, len(req) // 3)
            for i in range(0, len(req), third):
                s.sendall(req[i:i + third])
                time.sleep(0.15)
            conn_reader = h._Reader(s)
            s.settimeout(10)
            r = h._read_response(conn_reader)
        finally:
            s.close()
        self.assertEqual(r.status, 200, "a request completed within 0.5 s was "
                         "refused with header_read_timeout 1s: %r" % r)

    def test_many_slow_clients_do_not_block_a_normal_one(self):
        socks = []
        stop = threading.Event()
        try:
            for i in range(50):
                s = h.connect(self.port)
                s.sendall(b"GET /headers HTTP/1.1\r\nHost: app.test\r\n")
                socks.append(s)

            def dribble():
                while not stop.is_set():
                    for s in socks:
                        try:
                            s.send(b"X")
                        except OSError:
                            pass
                    stop.wait(0.2)
            t = threading.Thread(target=dribble, daemon=True)
            t.start()
            time.sleep(0.3)
            start = time.monotonic()
            status, _, _ = self.get("/headers?normal", timeout=10)
            took = time.monotonic() - start
            self.assertEqual(status, 200)
            self.assertLess(took, 5, "a normal request took %.1f s among 50 "
                            "slowloris connections" % took)
            # All slow connections are gone after the timeout.
            time.sleep(3)
            still_open = 0
            for s in socks:
                s.settimeout(0.5)
                try:
                    while True:
                        d = s.recv(65536)
                        if not d:
                            break
                except socket.timeout:
                    still_open += 1
                except OSError:
                    pass
            self.assertEqual(still_open, 0, "%d of 50 slowloris connections still open "
                             "3 s after header_read_timeout (1s)" % still_open)
        finally:
            stop.set()
            for s in socks:
                s.close()


if __name__ == "__main__":
    h.main()
