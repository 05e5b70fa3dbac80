#!/usr/bin/python3
"""WebSocket through the gateway: the Upgrade handshake reaches the peer and
its 101 comes back, then messages (text, binary, 1 MiB) flow both ways, pings
work, both sides can close cleanly; tunnels are not cut by the HTTP
keep-alive timeout but are by tunnel_idle_timeout."""

import asyncio
import base64
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import websockets  # noqa: E402

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class WebSocketTest(h.GatewayTestCase):
    WITH_WEBSOCKET = True

    @classmethod
    def make_config(cls):
        cls.dead_port = h.free_port()
        return h.base_config(cls.gateway_port, [
            h.route("r1", "app.test", cls.origin.address),
            h.route("ws", "app.test", cls.ws_peer.address, path_prefix="/ws"),
            h.route("deadws", "dead.test", "127.0.0.1:%d" % cls.dead_port),
        ], limits={"keepalive_idle_timeout": "1s", "tunnel_idle_timeout": "1h"})

    def connect(self, path="/ws", **kw):
        return websockets.connect("ws://app.test%s" % path, host=h.LOOPBACK,
                                  port=self.port, max_size=None, ping_interval=None,
                                  open_timeout=10, close_timeout=10,
                                  compression=None, **kw)

    def test_echo_text_binary_and_1mib(self):
        async def go():
            async with self.connect() as ws:
                for msg in ["hello", "", "ünïcødé ✓", b"\x00\x01\x02\xff",
                            b"", "x" * 70000]:
                    await ws.send(msg)
                    back = await ws.recv()
                    self.assertEqual(back, msg, "echo of %r..." % (msg[:20],))
                big = h.pattern_bytes(h.MiB)
                await ws.send(big)
                back = await ws.recv()
                self.assertEqual(len(back), len(big), "1 MiB binary message length")
                self.assertTrue(back == big, "1 MiB binary message corrupted")
                big_text = "abcdefghij" * (h.MiB // 10)
                await ws.send(big_text)
                self.assertEqual(await ws.recv(), big_text, "1 MiB text message")
                await ws.close()
                return ws.close_code
        code = run(go())
        self.assertEqual(code, 1000, "clean close code")

    def test_many_messages_in_flight(self):
        async def go():
            async with self.connect() as ws:
                msgs = ["m%d" % i for i in range(500)]
                for m in msgs:
                    await ws.send(m)
                got = [await ws.recv() for _ in msgs]
                self.assertEqual(got, msgs, "messages lost or reordered")
        run(go())

    def test_ping_pong(self):
        async def go():
            async with self.connect() as ws:
                waiter = await ws.ping(b"are-you-there")
                await asyncio.wait_for(waiter, 10)
        run(go())

    def test_server_initiated_close(self):
        async def go():
            async with self.connect("/ws/close") as ws:
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                    self.fail("expected the peer to close")
                except websockets.ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else None
        code, reason = run(go())
        self.assertEqual((code, reason), (4001, "bye"),
                         "the peer's close frame did not come through intact")

    def test_concurrent_websockets(self):
        async def one(i):
            async with self.connect() as ws:
                for j in range(20):
                    m = "c%d-%d" % (i, j)
                    await ws.send(m)
                    self.assertEqual(await ws.recv(), m)

        async def go():
            await asyncio.gather(*(one(i) for i in range(20)))
        run(go())

    def test_raw_upgrade_handshake(self):
        key = base64.b64encode(os.urandom(16)).decode()
        expect = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        with h.RawConn(self.port) as c:
            c.request("GET", "/ws/raw", headers=[
                ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")])
            r = c.response(timeout=10)
            self.assertEqual(r.status, 101, "upgrade answer: %r" % r)
            self.assertTrue(r.has_token("Upgrade", "websocket"), repr(r.headers))
            self.assertTrue(r.has_token("Connection", "upgrade"),
                            "101 must carry Connection: Upgrade: %r" % r.headers)
            self.assertEqual(r.header("Sec-WebSocket-Accept"), expect)
            # A masked text frame "hi", then expect the unmasked echo.
            mask = b"\x01\x02\x03\x04"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
            c.send(b"\x81\x82" + mask + payload)
            c.sock.settimeout(10)
            frame = c.reader.read_exact(4)
            self.assertEqual(frame, b"\x81\x02hi", "echoed frame through the tunnel")

    def test_idle_websocket_outlives_http_keepalive_timeout(self):
        async def go():
            async with self.connect() as ws:
                await ws.send("before")
                self.assertEqual(await ws.recv(), "before")
                await asyncio.sleep(3)  # keepalive_idle_timeout is 1s
                await ws.send("after")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "after",
                                 "idle WebSocket was cut by the HTTP keep-alive "
                                 "timeout; tunnels use tunnel_idle_timeout")
        run(go())

    def test_upgrade_to_dead_upstream_gets_502(self):
        key = base64.b64encode(os.urandom(16)).decode()
        data = h.build_request("GET", "/ws", host="dead.test", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")])
        resp, err, _, got = h.raw_response(self.port, data, timeout=10)
        self.assertIsNotNone(resp, "no response (%r): %r" % (err, got[:200]))
        self.assertEqual(resp.status, 502)

    def test_upgrade_refused_by_origin_stays_http(self):
        """The HTTP origin ignores the Upgrade and answers 200: the gateway
        must pass the 200 on as a normal response, not start a tunnel."""
        key = base64.b64encode(os.urandom(16)).decode()
        with h.RawConn(self.port) as c:
            c.request("GET", "/headers?upgrade-ignored", headers=[
                ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")])
            r = c.response(timeout=10)
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(r.json()["path"], "/headers?upgrade-ignored")


class TunnelIdleTimeoutTest(h.GatewayTestCase):
    WITH_WEBSOCKET = True

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port, [
            h.route("ws", "app.test", cls.ws_peer.address),
        ], limits={"tunnel_idle_timeout": "2s"})

    def test_idle_tunnel_is_closed(self):
        async def go():
            ws = await websockets.connect("ws://app.test/ws", host=h.LOOPBACK,
                                          port=self.port, ping_interval=None,
                                          close_timeout=2, compression=None)
            try:
                await ws.send("x")
                self.assertEqual(await ws.recv(), "x")
                start = time.monotonic()
                try:
                    await asyncio.wait_for(ws.recv(), 12)
                    self.fail("received a message on an idle tunnel")
                except websockets.ConnectionClosed:
                    return time.monotonic() - start
                except asyncio.TimeoutError:
                    return None
            finally:
                await ws.close()
        elapsed = run(go())
        self.assertIsNotNone(elapsed, "idle WebSocket still open 12 s later "
                             "(tunnel_idle_timeout is 2s)")
        self.assertGreater(elapsed, 1.0, "tunnel closed before its idle timeout")


if __name__ == "__main__":
    h.main()
