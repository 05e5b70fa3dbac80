#!/usr/bin/python3
"""Descriptor leaks: after 10,000 requests (keep-alive and fresh connections,
successes and errors, clients vanishing mid-response) and 100 WebSockets,
the gateway's open descriptors return to their count after start-up."""

import asyncio
import os
import socket
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import websockets  # noqa: E402

TOTAL_REQUESTS = 10000


def kind(target):
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return target
    return "file"


class DescriptorLeakTest(h.GatewayTestCase):
    WITH_WEBSOCKET = True

    @classmethod
    def make_config(cls):
        cls.dead_port = h.free_port()
        return h.base_config(cls.gateway_port, [
            h.route("r1", "app.test", cls.origin.address),
            h.route("ws", "app.test", cls.ws_peer.address, path_prefix="/ws"),
            h.route("dead", "dead.test", "127.0.0.1:%d" % cls.dead_port),
        ], upstream_pool={"idle_connections": 32, "idle_timeout": "1s"},
            limits={"keepalive_idle_timeout": "75s"})

    def settled_count(self, target, timeout):
        return h.wait_until(lambda: self.gateway.fd_count() <= target and
                            self.gateway.fd_count(), timeout, 0.2)

    def test_no_descriptor_leak(self):
        # Warm up, let the pool empty (idle_timeout 1s), take the baseline.
        status, _, _ = self.get("/headers")
        self.assertEqual(status, 200)
        h.wait_until(lambda: self.origin.open_connections == 0, 5)
        time.sleep(0.5)
        baseline = self.gateway.fd_count()
        base_targets = self.gateway.fd_targets()

        done = Counter()
        errors = []
        lock = threading.Lock()

        def keepalive_worker(n, tag):
            # Keep-alive connections, reopened every 100 requests.
            c = None
            try:
                for i in range(n):
                    if c is None or i % 100 == 0:
                        if c:
                            c.close()
                        c = h.RawConn(self.port, timeout=30)
                    path = ["/headers", "/bytes/100", "/chunked/300"][i % 3]
                    r = c.roundtrip("GET", "%s?%s-%d" % (path, tag, i))
                    if r.status != 200:
                        raise AssertionError("status %d" % r.status)
                    with lock:
                        done["keepalive"] += 1
            except Exception as e:
                with lock:
                    errors.append("keepalive %s: %r" % (tag, e))
            finally:
                if c:
                    c.close()

        def fresh_worker(n, tag):
            # A new connection per request; a few error routes mixed in.
            try:
                for i in range(n):
                    if i % 50 == 7:
                        host, want = "nobody.test", 404
                    elif i % 50 == 13:
                        host, want = "dead.test", 502
                    else:
                        host, want = "app.test", 200
                    data, closed, _ = h.raw_exchange(
                        self.port,
                        h.build_request("GET", "/headers?%s-%d" % (tag, i), host=host,
                                        headers=[("Connection", "close")]),
                        timeout=30)
                    rs, _ = h.parse_responses(data)
                    if not rs or rs[0].status != want:
                        raise AssertionError("wanted %d, got %r" % (want, data[:200]))
                    with lock:
                        done["fresh"] += 1
            except Exception as e:
                with lock:
                    errors.append("fresh %s: %r" % (tag, e))

        def rude_worker(n):
            # Clients that vanish: mid-response, mid-request, or with nothing.
            try:
                for i in range(n):
                    s = h.connect(self.port)
                    mode = i % 4
                    if mode == 0:
                        s.sendall(h.build_request("GET", "/bytes/%d" % (4 * h.MiB)))
                        s.recv(1000)
                    elif mode == 1:
                        s.sendall(b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\n"
                                  b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
                        time.sleep(0.01)
                    elif mode == 2:
                        s.sendall(b"GET /headers HTTP/1.1\r\nHost: app")
                    if mode == 0:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                    s.close()
                    with lock:
                        done["rude"] += 1
            except Exception as e:
                with lock:
                    errors.append("rude: %r" % e)

        rude = 200
        fresh_per_thread = 1000
        ka_per_thread = (TOTAL_REQUESTS - rude - 4 * fresh_per_thread) // 4
        threads = ([threading.Thread(target=keepalive_worker, args=(ka_per_thread, "k%d" % i))
                    for i in range(4)] +
                   [threading.Thread(target=fresh_worker, args=(fresh_per_thread, "f%d" % i))
                    for i in range(4)] +
                   [threading.Thread(target=rude_worker, args=(rude,))])
        for t in threads:
            t.start()
        for t in threads:
            t.join(100)
        self.assertFalse(any(t.is_alive() for t in threads),
                         "load threads did not finish within 100 s: %r" % dict(done))
        self.assertEqual(errors, [], "errors under load (%r done)" % dict(done))
        total = sum(done.values())
        self.assertEqual(total, TOTAL_REQUESTS, "requests done: %r" % dict(done))

        # 100 WebSockets opened, used once and closed.
        async def websockets_round():
            for i in range(100):
                async with websockets.connect(
                        "ws://app.test/ws/leak", host=h.LOOPBACK, port=self.port,
                        ping_interval=None, open_timeout=10, close_timeout=5) as ws:
                    await ws.send("n%d" % i)
                    if await ws.recv() != "n%d" % i:
                        raise AssertionError("bad echo")
        asyncio.run(asyncio.wait_for(websockets_round(), 60))

        during = self.gateway.fd_count()
        sys.stderr.write("\n  [info] descriptors: %d after start-up, %d right after the "
                         "load\n" % (baseline, during))
        final = self.settled_count(baseline, 10)
        if not final:
            now = self.gateway.fd_targets()
            extra = {fd: t for fd, t in now.items() if base_targets.get(fd) != t}
            self.fail("descriptor leak: %d open after start-up, %d right after the "
                      "load, %d after 10 s of settling (pool idle_timeout 1s). New "
                      "descriptors by kind: %r; examples: %r; upstream connections "
                      "still open at the origin: %d"
                      % (baseline, during, self.gateway.fd_count(),
                         dict(Counter(kind(t) for t in extra.values())),
                         sorted(extra.items())[:15], self.origin.open_connections))
        status, _, _ = self.get("/headers")
        self.assertEqual(status, 200, "gateway unusable after the load")


if __name__ == "__main__":
    h.main()
