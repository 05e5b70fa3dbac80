#!/usr/bin/python3
"""1,000 concurrent WebSockets through the gateway.

The origin is a python3-websockets echo server in its own process; the
clients are python3-websockets in one asyncio loop. All 1,000 are open at
the same time (/stats tunnels_open says 1,000), each echoes a few messages
(text and binary), all succeed; after they close, the gateway's open tunnels
and its descriptor count (/proc/PID/fd) return to their baseline. Runs in
well under 30 s."""

import asyncio
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tunnel_harness as th  # noqa: E402
import websockets  # noqa: E402

SOCKETS = 1000
MESSAGES = 4
HANDSHAKES_IN_FLIGHT = 200

ORIGIN_SCRIPT = r"""
import asyncio, resource, sys
import websockets

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass

async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, ping_interval=None,
                                compression=None, max_size=None, backlog=4096) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        # Until the test closes our stdin (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class EchoOriginProcess:
    def __init__(self):
        self.proc = subprocess.Popen(["/usr/bin/python3", "-c", ORIGIN_SCRIPT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=h._die_with_parent)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise AssertionError("the WebSocket origin did not start: %r %r"
                                 % (line, self.proc.stderr.read()[-2000:]))
        self.port = int(line)

    @property
    def address(self):
        return "%s:%d" % (h.LOOPBACK, self.port)

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)


class WebSocketScaleTest(h.ControlGatewayTestCase):
    WORKERS = 2

    @classmethod
    def extra_setup(cls):
        cls.nofile = raise_nofile()
        cls.ws_origin = EchoOriginProcess()

    @classmethod
    def extra_teardown(cls):
        cls.ws_origin.stop()

    @classmethod
    def config_routes(cls):
        return [h.route("ws", "ws.test", cls.ws_origin.address)]

    def connect(self):
        return websockets.connect("ws://ws.test/echo", host=h.LOOPBACK, port=self.port,
                                  ping_interval=None, compression=None, open_timeout=20,
                                  close_timeout=10, max_size=None)

    def test_1000_concurrent_websockets(self):
        if self.nofile < 2 * SOCKETS + 100:
            self.fail("RLIMIT_NOFILE of the test is %d: too low for %d sockets"
                      % (self.nofile, SOCKETS))
        # Warm up (first-use allocations), then take the baseline.
        async def warm():
            async with self.connect() as ws:
                await ws.send("warm")
                self.assertEqual(await ws.recv(), "warm")
        asyncio.run(asyncio.wait_for(warm(), 30))
        self.assertEqual(th.wait_tunnels_open(self.api, 0, 5), 0)
        time.sleep(0.3)
        baseline = self.gateway.fd_count()
        start = time.monotonic()
        report = {}

        async def go():
            loop = asyncio.get_running_loop()
            gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
            all_open = asyncio.Event()
            opened = [0]
            failures = []
            echoed = [0]

            async def one(i):
                async with gate:
                    ws = await self.connect()
                try:
                    opened[0] += 1
                    if opened[0] == SOCKETS:
                        all_open.set()
                    await asyncio.wait_for(all_open.wait(), 60)
                    for j in range(MESSAGES):
                        message = ("s%d-m%d" % (i, j)) if j % 2 == 0 else \
                            os.urandom(64 + i % 512)
                        await ws.send(message)
                        back = await asyncio.wait_for(ws.recv(), 20)
                        if back != message:
                            raise AssertionError("socket %d message %d: %r != %r"
                                                 % (i, j, back, message))
                        echoed[0] += 1
                    await all_done.wait()
                finally:
                    await ws.close()

            all_done = asyncio.Event()

            async def guarded(i):
                try:
                    await one(i)
                except Exception as e:  # noqa: BLE001 - report every failure
                    failures.append("socket %d: %r" % (i, e))
                    all_open.set()  # do not leave the others waiting

            tasks = [asyncio.ensure_future(guarded(i)) for i in range(SOCKETS)]
            await asyncio.wait_for(all_open.wait(), 60)
            report["open_seconds"] = time.monotonic() - start
            report["tunnels_open_peak"] = await loop.run_in_executor(
                None, lambda: th.totals(self.api)["tunnels_open"])
            report["fds_peak"] = self.gateway.fd_count()
            # Every socket echoes, then all close together.
            while echoed[0] < SOCKETS * MESSAGES and not failures and \
                    not all(t.done() for t in tasks):
                await asyncio.sleep(0.05)
            all_done.set()
            await asyncio.gather(*tasks)
            report["failures"] = failures
            report["echoed"] = echoed[0]
            report["opened"] = opened[0]

        asyncio.run(asyncio.wait_for(go(), 90))
        elapsed = time.monotonic() - start
        self.assertEqual(report["failures"], [], "%d of %d sockets failed; first: %s%s"
                         % (len(report["failures"]), SOCKETS, report["failures"][:5],
                            self.gateway_context()))
        self.assertEqual(report["opened"], SOCKETS)
        self.assertEqual(report["echoed"], SOCKETS * MESSAGES)
        self.assertEqual(report["tunnels_open_peak"], SOCKETS,
                         "/stats tunnels_open with every socket open")
        self.assertGreaterEqual(report["fds_peak"], baseline + 2 * SOCKETS,
                                "the gateway should hold two descriptors per tunnel")
        value = th.wait_tunnels_open(self.api, 0, 10)
        self.assertEqual(value, 0, "tunnels_open %s after every socket closed" % value)
        fds = h.wait_until(lambda: self.gateway.fd_count() <= baseline and
                           self.gateway.fd_count(), 10, 0.2)
        self.assertTrue(fds, "gateway descriptors: %d at the start, %d now (peak %d)%s"
                        % (baseline, self.gateway.fd_count(), report["fds_peak"],
                           self.gateway_context()))
        self.assertLess(elapsed, 60, "1,000 WebSockets took %.1f s" % elapsed)
        print("  %d WebSockets open in %.1f s, all done in %.1f s; fds %d -> %d -> %d"
              % (SOCKETS, report["open_seconds"], elapsed, baseline, report["fds_peak"],
                 self.gateway.fd_count()), file=sys.stderr)
        # And the gateway still serves.
        asyncio.run(asyncio.wait_for(warm(), 30))


if __name__ == "__main__":
    h.main()
