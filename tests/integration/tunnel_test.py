#!/usr/bin/python3
"""Tunnels through the real gateway (docs/tunnels.md), against origins
written here with plain sockets (tunnel_harness.TunnelOrigin):

  * WebSocket-upgrade tunnels (the origin answers 101, then speaks raw
    bytes): 100 MiB both ways at once, intact (sha256 on both sides); a
    half-close from either side passes on while the other direction keeps
    flowing; a reset from either side ends the tunnel promptly and /stats
    tunnels_open goes back to 0.
  * Per-route `tunnel_idle_timeout_ms`: a 1 s route closes an idle tunnel in
    about a second (traffic keeps it open), a route without it does not;
    /stats tunnels_idle_closed counts it.
  * CONNECT to a Gitspace port: 407 (no, garbage, forged or expired token,
    with Proxy-Authenticate), 403 (another Gitspace, another owner, no
    `ssh` scope, a port not in tunnel_ports), 404 (unknown host), 400 (no
    port), public routes refused, 502 (refused port), 504 (port that does not
    answer), and 200 with 100 MiB both ways intact.
  * The WebSocket tunnel endpoint /.spacegate/tunnel/<port> with
    python3-websockets: binary frames to a raw TCP echo, 401/403/502
    refusals, ping/pong, text frame -> 1003, frame over 1 MiB -> 1009, the
    port's EOF -> close 1000 and the client's close -> EOF at the port.
  * Descriptor limit: a gateway under RLIMIT_NOFILE 64 refuses or closes new
    connections at the limit, keeps serving the ones it has and does not
    die; once they close, new connections work again. (With the counters:
    connections_refused_descriptors and the "accept failed" log line.)
  * Counters: splice for plaintext tunnels, copies for the endpoint,
    tunnels_closed.

Features that have not landed yet are detected at the start of the test that
needs them (CONNECT answered 405; the tunnel endpoint path forwarded to the
route's HTTP upstream; `tunnel_idle_timeout_ms` refused as an unknown route
field; a counter missing from /stats) and only then is the test skipped."""

import asyncio
import hashlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tunnel_harness as th  # noqa: E402
import websockets  # noqa: E402

GS = "gs1"
OWNER = "alice"
BIG = 100 * h.MiB
GS1_HOST = "gs1.tunnel.test"
PROXY_AUTHENTICATE = 'Bearer realm="spacegate"'


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class TunnelTestBase(h.ControlGatewayTestCase):
    """One gateway (control socket, one key) with:
      up.test           public route to an upgrade origin (path = mode)
      gs1.tunnel.test   alice's Gitspace gs1; HTTP upstream = the harness
                        origin; tunnel_ports: raw echo, raw duplex (100 MiB),
                        raw greeter, a refused port, a stuck port
      gs2.tunnel.test   bob's gs2, tunnel_ports: raw echo
      pub.tunnel.test   a public route of gs1 with tunnel_ports: raw echo
    """

    LIMITS = {"upstream_connect_timeout": "1s", "tunnel_idle_timeout": "1h"}

    @classmethod
    def extra_setup(cls):
        cls.keydir = tempfile.mkdtemp(prefix="spacegate-keys-", dir=cls.tmpdir)
        cls.key = h.TokenKey(cls.keydir, "k1")
        cls.up = th.TunnelOrigin("upgrade", http=True)
        cls.raw_echo = th.TunnelOrigin("raw-echo", mode="echo")
        cls.raw_duplex = th.TunnelOrigin("raw-duplex", mode="duplex", n=BIG)
        cls.raw_greet = th.TunnelOrigin("raw-greet", mode="send_then_sink", n=0)
        cls.raw_unlisted = th.TunnelOrigin("raw-unlisted", mode="echo")
        cls.stuck = h.StuckConnectUpstream()
        cls.refused_port = h.free_port()
        cls.raw_origins = [cls.raw_echo, cls.raw_duplex, cls.raw_greet, cls.raw_unlisted]
        now = int(time.time())
        sign = cls.key.sign
        cls.ssh_token = sign(OWNER, GS, scopes=["ssh"], ttl="1h")
        cls.ide_token = sign(OWNER, GS, scopes=["ide"], ttl="1h")
        cls.both_token = sign(OWNER, GS, scopes=["ide", "ssh"], ttl="1h")
        cls.other_gs_token = sign(OWNER, "gs2", scopes=["ssh"], ttl="1h")
        cls.other_owner_token = sign("bob", GS, scopes=["ssh"], ttl="1h")
        cls.expired_token = sign(OWNER, GS, scopes=["ssh"], iat=now - 7200, exp=now - 3600)
        cls.forged_token = h.tamper_token(cls.other_gs_token, gs=GS)

    @classmethod
    def extra_teardown(cls):
        for o in [cls.up] + cls.raw_origins:
            o.stop()
        cls.stuck.stop()

    @classmethod
    def tunnel_ports(cls):
        return [cls.raw_echo.port, cls.raw_duplex.port, cls.raw_greet.port,
                cls.refused_port, cls.stuck.port]

    @classmethod
    def make_config(cls):
        cls.control_socket = os.path.join(cls.tmpdir, "control.sock")
        routes = [
            h.route("up", "up.test", cls.up.address, access="public"),
            h.route("gs1", GS1_HOST, cls.origin.address, gitspace=GS, owner=OWNER,
                    access="owner", tunnel_ports=cls.tunnel_ports()),
            h.route("gs2", "gs2.tunnel.test", cls.origin.address, gitspace="gs2",
                    owner="bob", access="owner", tunnel_ports=[cls.raw_echo.port]),
            h.route("pub", "pub.tunnel.test", cls.origin.address, gitspace=GS,
                    access="public", tunnel_ports=[cls.raw_echo.port]),
        ]
        return h.control_config(cls.gateway_port, routes, socket_path=cls.control_socket,
                                workers=1, access_log="off", limits=dict(cls.LIMITS),
                                auth=h.auth_section(keys=[cls.key]))

    # -- helpers ---------------------------------------------------------------

    def totals(self):
        return th.totals(self.api)

    def assertTunnelsBackToZero(self, what, timeout=5.0):
        value = th.wait_tunnels_open(self.api, 0, timeout)
        self.assertEqual(value, 0, "%s: /stats tunnels_open is %s, not back to 0 after %.0f s%s"
                         % (what, value, timeout, self.gateway_context()))

    def mark(self, origin):
        """Index of the next connection's record at `origin` (waits until
        every accepted connection has its record)."""
        h.wait_until(lambda: len(origin.records) >= origin.connections, 2, 0.01)
        return len(origin.records)

    _connect_checked = None

    def require_connect(self):
        """Skip when the gateway does not do CONNECT yet (405 today)."""
        cls = type(self)
        if cls._connect_checked is None:
            resp = th.head_exchange(self.port, th.connect_request(
                "%s:%d" % (GS1_HOST, self.raw_echo.port)))
            resp.tunnel.close()
            cls._connect_checked = resp.status
        if cls._connect_checked == 405:
            raise AssertionError("CONNECT tunnels missing (a regression) (the gateway "
                                    "answers 405 to CONNECT)")

    _endpoint_checked = None

    def require_tunnel_endpoint(self):
        """Skip when /.spacegate/tunnel/<port> is still forwarded to the
        route's HTTP upstream like any other path."""
        cls = type(self)
        if cls._endpoint_checked is None:
            path = "/.spacegate/tunnel/%d" % self.raw_echo.port
            before = len(self.origin.paths)
            resp = th.head_exchange(self.port, th.upgrade_request(
                GS1_HOST, path, [("Authorization", "Bearer " + self.both_token)]))
            resp.tunnel.close()
            time.sleep(0.05)
            forwarded = (resp.header("X-Origin-Name") is not None or
                         path in self.origin.paths[before:])
            cls._endpoint_checked = "forwarded" if forwarded else resp.status
        if cls._endpoint_checked == "forwarded":
            raise AssertionError("the WebSocket tunnel endpoint is missing (a regression) "
                                    "(/.spacegate/tunnel/<port> reaches the route's upstream)")

    def require_counter(self, name):
        if name not in self.totals():
            raise AssertionError("/stats counter %s missing (a regression)" % name)


# --------------------------------------------------------------------------
# (a)-(c) WebSocket-upgrade tunnels: bytes, half-close, resets
# --------------------------------------------------------------------------

class UpgradeTunnelTest(TunnelTestBase):

    def test_100mib_both_ways_at_once(self):
        before = self.totals()
        t = th.open_upgrade(self.port, "up.test", "/duplex?tag=big&n=%d" % BIG)
        try:
            res = th.run_duplex(t, BIG)
        finally:
            t.close()
        rec = self.up.record(tag="big")
        self.assertTrue(rec.done.wait(60), "origin still busy: %r" % rec)
        self.assertIsNone(res["error"], "client send failed: %r" % res)
        self.assertEqual(res["how"], "eof", "client read ended by %s: %r%s"
                         % (res["how"], res, self.gateway_context()))
        self.assertIsNone(rec.error, repr(rec))
        self.assertEqual(res["received"], BIG, "bytes origin -> client: %r" % res)
        self.assertEqual(rec.received, BIG, "bytes client -> origin: %r" % rec)
        self.assertEqual(res["recv_sha"], rec.sent_sha, "origin -> client stream corrupted")
        self.assertEqual(rec.recv_sha, res["sent_sha"], "client -> origin stream corrupted")
        self.assertEqual(rec.end, "eof", "the origin saw the client's end as %s" % rec.end)
        self.assertTunnelsBackToZero("after the 100 MiB tunnel")
        after = self.totals()
        self.assertEqual(after["tunnels_opened"] - before["tunnels_opened"], 1)
        print("  100 MiB both ways through the upgrade tunnel in %.1f s" % res["seconds"],
              file=sys.stderr)

    def test_half_close_client_first(self):
        """Client shuts its write side: the origin sees EOF and still sends
        (1 MiB) to the client, then closes."""
        t = th.open_upgrade(self.port, "up.test", "/sink_then_send?tag=hc1&n=%d" % h.MiB)
        try:
            payload = os.urandom(300000)
            t.sendall(payload)
            t.shutdown_write()
            rec = self.up.record(tag="hc1")
            self.assertEqual(rec.wait_end(10), "eof",
                             "the origin did not see the client's half-close as EOF: %r%s"
                             % (rec, self.gateway_context()))
            line = t.read_line(10)
            self.assertEqual(line, b"eof-seen %d %s\n" % (
                len(payload), hashlib.sha256(payload).hexdigest().encode()),
                "what the origin got before EOF")
            got = hashlib.sha256(line)
            how, _, total, _ = t.read_to_end(15, sink=got.update, keep=0)
            self.assertTrue(rec.done.wait(10), repr(rec))
            self.assertEqual(total, h.MiB, "bytes the origin sent after the client's EOF")
            self.assertEqual(got.hexdigest(), rec.sent_sha,
                             "data sent after the half-close corrupted")
            self.assertEqual(how, "eof", "the origin's close reached the client as %s" % how)
        finally:
            t.close()
        self.assertTunnelsBackToZero("after the client-first half-close")

    def test_half_close_origin_first(self):
        """The origin shuts its write side: the client sees EOF and can still
        send (2 MiB) to the origin."""
        t = th.open_upgrade(self.port, "up.test", "/send_then_sink?tag=hc2&n=%d" % h.MiB)
        try:
            got = hashlib.sha256()
            how, first, total, _ = t.read_to_end(15, sink=got.update, keep=64)
            rec = self.up.record(tag="hc2")
            self.assertEqual(how, "eof", "the origin's half-close reached the client as %s%s"
                             % (how, self.gateway_context()))
            self.assertTrue(first.startswith(b"origin-first\n"), first)
            self.assertEqual(total, len(b"origin-first\n") + h.MiB)
            self.assertIsNone(rec.end, "the origin's read side ended early: %r" % rec)
            payload = os.urandom(2 * h.MiB)
            t.sendall(payload)   # a reset here fails the test: the tunnel must stay half-open
            t.shutdown_write()
            self.assertEqual(rec.wait_end(10), "eof", repr(rec))
            self.assertTrue(rec.done.wait(10), repr(rec))
            self.assertEqual(got.hexdigest(), rec.sent_sha, "origin -> client corrupted")
            self.assertEqual(rec.received, len(payload),
                             "bytes the client sent after the origin's EOF")
            self.assertEqual(rec.recv_sha, hashlib.sha256(payload).hexdigest())
        finally:
            t.close()
        self.assertTunnelsBackToZero("after the origin-first half-close")

    def test_origin_reset_mid_stream(self):
        t = th.open_upgrade(self.port, "up.test", "/reset?tag=ors&n=%d" % (4 * h.MiB))
        stop = threading.Event()

        def stream():  # the client keeps sending while the origin resets
            try:
                while not stop.is_set():
                    t.sendall(os.urandom(65536))
            except OSError:
                pass

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        try:
            how, _, total, _ = t.read_to_end(15, keep=0)
            ended = time.monotonic()
        finally:
            stop.set()
            sender.join(10)
            t.close()
        rec = self.up.record(tag="ors")
        self.assertTrue(rec.done.wait(5), repr(rec))
        reset_at = [at for at, what in rec.events if what == "reset"]
        self.assertTrue(reset_at, repr(rec))
        self.assertIn(how, ("eof", "reset"), "the client's side did not end (%s) after the "
                      "origin's reset%s" % (how, self.gateway_context()))
        self.assertLess(ended - reset_at[0], 3.0,
                        "the client saw the end %.1f s after the origin's reset"
                        % (ended - reset_at[0]))
        self.assertLessEqual(total, 4 * h.MiB)
        self.assertTunnelsBackToZero("after the origin's reset")

    def test_client_reset_mid_stream(self):
        t = th.open_upgrade(self.port, "up.test", "/echo?tag=crs")
        rec = self.up.record(tag="crs")
        t.sendall(os.urandom(h.MiB))      # echoed back, unread by the client
        h.wait_until(lambda: rec.received >= h.MiB // 2, 10)
        self.assertGreater(rec.received, 0, "nothing reached the origin: %r" % rec)
        t.reset()
        reset_at = time.monotonic()
        end = rec.wait_end(5)
        self.assertIsNotNone(end, "the origin's side still open 5 s after the client's "
                             "reset: %r%s" % (rec, self.gateway_context()))
        self.assertNotEqual(end, "timeout", repr(rec))
        self.assertLess(rec.end_time - reset_at, 3.0,
                        "the origin saw the end %.1f s after the client's reset"
                        % (rec.end_time - reset_at))
        self.assertTunnelsBackToZero("after the client's reset")

    def test_splice_counters(self):
        """Plaintext both sides: the bytes move with splice(2)."""
        self.require_counter("tunnel_bytes_spliced")
        before = self.totals()
        n = 8 * h.MiB
        t = th.open_upgrade(self.port, "up.test", "/duplex?tag=splice&n=%d" % n)
        try:
            res = th.run_duplex(t, n)
        finally:
            t.close()
        self.assertEqual((res["how"], res["received"]), ("eof", n), repr(res))
        self.assertTunnelsBackToZero("after the spliced tunnel")
        after = self.totals()
        spliced = after["tunnel_bytes_spliced"] - before["tunnel_bytes_spliced"]
        copied = after.get("tunnel_bytes_copied", 0) - before.get("tunnel_bytes_copied", 0)
        # Every byte is counted once; what either side sent before splice(2)
        # took over (bytes already read when the tunnel began, a few KiB at
        # most) goes the buffered way, the rest is spliced.
        self.assertGreaterEqual(spliced + copied, 2 * n,
                                "spliced %d + copied %d for %d bytes both ways" % (
                                    spliced, copied, n))
        self.assertGreaterEqual(spliced, 2 * n - 256 * 1024,
                                "tunnel_bytes_spliced grew by %d for %d bytes both ways "
                                "(copied: %d)" % (spliced, n, copied))
        if "tunnels_closed" in after:
            self.assertEqual(after["tunnels_closed"] - before["tunnels_closed"],
                             after["tunnels_opened"] - before["tunnels_opened"])


class BufferedUpgradeTunnelTest(UpgradeTunnelTest):
    """The same cases on the buffered path (limits.tunnel_splice: false),
    the path TLS tunnels take: read buffers handed to the other side."""

    LIMITS = dict(TunnelTestBase.LIMITS, tunnel_splice=False)

    def test_splice_counters(self):
        before = self.totals()
        n = 8 * h.MiB
        t = th.open_upgrade(self.port, "up.test", "/duplex?tag=copied&n=%d" % n)
        try:
            res = th.run_duplex(t, n)
        finally:
            t.close()
        self.assertEqual((res["how"], res["received"]), ("eof", n), repr(res))
        self.assertTunnelsBackToZero("after the buffered tunnel")
        after = self.totals()
        self.assertEqual(after["tunnel_bytes_spliced"], before["tunnel_bytes_spliced"],
                         "tunnel_splice: false, yet bytes were spliced")
        self.assertGreaterEqual(after["tunnel_bytes_copied"] - before["tunnel_bytes_copied"], 2 * n)


# --------------------------------------------------------------------------
# (d) tunnel_idle_timeout_ms
# --------------------------------------------------------------------------

class IdleTimeoutTest(TunnelTestBase):
    _idle_routes = None

    def require_idle_routes(self):
        """Push idle1.test (tunnel_idle_timeout_ms 1000) and idle0.test (no
        such field); skip if the route field is still unknown."""
        cls = type(self)
        if cls._idle_routes is None:
            resp = self.api.patch_routes(upsert=[
                h.route("idle1", "idle1.test", self.up.address, access="public",
                        tunnel_idle_timeout_ms=1000),
                h.route("idle0", "idle0.test", self.up.address, access="public"),
                h.route("idle-gs", "idle-gs.tunnel.test", self.origin.address,
                        gitspace=GS, owner=OWNER, access="owner",
                        tunnel_ports=[self.raw_echo.port], tunnel_idle_timeout_ms=1000),
            ])
            cls._idle_routes = resp
        resp = cls._idle_routes
        if resp.status == 400 and b"tunnel_idle_timeout_ms" in resp.body and \
                b"unknown field" in resp.body:
            raise AssertionError("route field tunnel_idle_timeout_ms missing (a regression) "
                                    "(%s)" % resp.body.decode().strip())
        self.assertEqual(resp.status, 200, "PATCH /routes: %r" % resp)

    def echo(self, t, data, timeout=5.0):
        t.sendall(data)
        self.assertEqual(t.read_exact(len(data), timeout), data)

    def test_idle_tunnel_closed_after_1s_other_route_stays_open(self):
        self.require_idle_routes()
        before = self.totals()["tunnels_idle_closed"]
        a = th.open_upgrade(self.port, "idle1.test", "/echo?tag=idle-a")
        b = th.open_upgrade(self.port, "idle0.test", "/echo?tag=idle-b")
        try:
            self.echo(b, b"b-before")
            self.echo(a, b"a-before")
            how, data, _, elapsed = a.read_to_end(6)
            self.assertEqual(data, b"")
            self.assertIn(how, ("eof", "reset"), "idle tunnel on the 1 s route still open "
                          "6 s later%s" % self.gateway_context())
            self.assertGreater(elapsed, 0.7, "closed %.2f s after the last byte: before its "
                               "idle timeout" % elapsed)
            self.assertLess(elapsed, 3.0, "closed %.2f s after the last byte (timeout 1 s)"
                            % elapsed)
            self.assertIsNotNone(self.up.record(tag="idle-a").wait_end(3),
                                 "the origin side of the idle-closed tunnel is still open")
            time.sleep(1.0)   # b has now been idle for over 2 s
            self.echo(b, b"b-after-idle")
            self.assertIsNone(self.up.record(tag="idle-b").end)
            self.assertEqual(self.totals()["tunnels_idle_closed"] - before, 1,
                             "tunnels_idle_closed")
            self.assertEqual(self.totals()["tunnels_open"], 1)
        finally:
            a.close()
            b.close()
        self.assertTunnelsBackToZero("after the idle test")

    def test_traffic_keeps_the_tunnel_open(self):
        self.require_idle_routes()
        a = th.open_upgrade(self.port, "idle1.test", "/echo?tag=busy")
        try:
            start = time.monotonic()
            while time.monotonic() - start < 3.0:   # 3 s > the 1 s timeout
                time.sleep(0.3)
                self.echo(a, b"tick")
            how, _, _, elapsed = a.read_to_end(6)
            self.assertIn(how, ("eof", "reset"))
            self.assertGreater(elapsed, 0.7)
            self.assertLess(elapsed, 3.0)
        finally:
            a.close()

    def test_one_way_traffic_keeps_the_tunnel_open(self):
        """No byte *either* way closes it: client -> origin only is traffic."""
        self.require_idle_routes()
        a = th.open_upgrade(self.port, "idle1.test", "/hold?tag=oneway")
        try:
            rec = self.up.record(tag="oneway")
            start = time.monotonic()
            while time.monotonic() - start < 3.0:
                time.sleep(0.3)
                a.sendall(b"x")
            time.sleep(0.1)
            self.assertIsNone(rec.end, "tunnel with client -> origin traffic was closed: %r"
                              % rec)
            self.assertGreaterEqual(rec.received, 9)
        finally:
            a.close()

    def test_connect_tunnel_idle_timeout(self):
        self.require_idle_routes()
        self.require_connect()
        resp = th.head_exchange(self.port, th.connect_request(
            "idle-gs.tunnel.test:%d" % self.raw_echo.port, self.ssh_token))
        t = resp.tunnel
        try:
            self.assertEqual(resp.status, 200, repr(resp))
            self.echo(t, b"hello")
            how, _, _, elapsed = t.read_to_end(6)
            self.assertIn(how, ("eof", "reset"), "idle CONNECT tunnel still open")
            self.assertGreater(elapsed, 0.7)
            self.assertLess(elapsed, 3.0)
        finally:
            t.close()


# --------------------------------------------------------------------------
# (e) CONNECT
# --------------------------------------------------------------------------

class ConnectTest(TunnelTestBase):

    def setUp(self):
        super().setUp()
        self.require_connect()

    def connect(self, authority, token=None, header_name="Proxy-Authorization", **kw):
        return th.head_exchange(self.port, th.connect_request(authority, token, header_name,
                                                              **kw))

    def assertRefused(self, status, what, authority, token=None, **kw):
        counts = [o.connections for o in self.raw_origins]
        start = time.monotonic()
        resp = self.connect(authority, token, **kw)
        try:
            self.assertEqual(resp.status, status, "%s: expected %s, got %r%s"
                             % (what, status, resp, self.gateway_context()))
            how, extra, _, _ = resp.tunnel.read_to_end(3)
            self.assertEqual(extra, b"", "%s: bytes after the refusal" % what)
            self.assertIn(how, ("eof", "reset"),
                          "%s: the connection stays open after the refusal" % what)
        finally:
            resp.tunnel.close()
        if status == 407:
            self.assertEqual(resp.header("Proxy-Authenticate"), PROXY_AUTHENTICATE,
                             "%s: Proxy-Authenticate" % what)
        self.assertEqual([o.connections for o in self.raw_origins], counts,
                         "%s: a refused CONNECT reached a port" % what)
        return resp, time.monotonic() - start

    def authority(self, port=None, host=GS1_HOST):
        return "%s:%d" % (host, port if port is not None else self.raw_echo.port)

    def test_407_without_token(self):
        self.assertRefused(407, "no token", self.authority())

    def test_407_garbage_forged_and_expired_tokens(self):
        for what, token in [("garbage", "garbage"), ("v1 garbage", "v1.abc.def"),
                            ("forged (payload edited)", self.forged_token),
                            ("expired", self.expired_token)]:
            with self.subTest(token=what):
                self.assertRefused(407, what, self.authority(), token)

    def test_403_token_for_another_gitspace(self):
        self.assertRefused(403, "alice's token for gs2", self.authority(), self.other_gs_token)

    def test_403_token_of_another_owner(self):
        self.assertRefused(403, "bob's ssh token for gs1", self.authority(),
                           self.other_owner_token)

    def test_403_without_ssh_scope(self):
        self.assertRefused(403, "ide-only token", self.authority(), self.ide_token)

    def test_403_port_not_in_tunnel_ports(self):
        self.assertRefused(403, "unlisted port", self.authority(self.raw_unlisted.port),
                           self.ssh_token)

    def test_404_unknown_host(self):
        self.assertRefused(404, "unknown host",
                           self.authority(host="nobody.tunnel.test"), self.ssh_token)

    def test_400_target_without_port(self):
        self.assertRefused(400, "target without a port", GS1_HOST, self.ssh_token)

    def test_public_route_refuses_connect(self):
        counts = [o.connections for o in self.raw_origins]
        resp = self.connect(self.authority(host="pub.tunnel.test"), self.ssh_token)
        try:
            self.assertTrue(400 <= resp.status < 500,
                            "CONNECT on an access: public route: %r" % resp)
        finally:
            resp.tunnel.close()
        self.assertEqual([o.connections for o in self.raw_origins], counts)

    def test_502_refused_port(self):
        self.assertRefused(502, "refused port", self.authority(self.refused_port),
                           self.ssh_token)

    def test_504_port_that_does_not_answer(self):
        _, elapsed = self.assertRefused(504, "stuck port", self.authority(self.stuck.port),
                                        self.ssh_token)
        self.assertLess(elapsed, 5.0, "504 after %.1f s (upstream_connect_timeout 1s)" % elapsed)

    def test_200_and_100mib_both_ways(self):
        before = self.totals()
        mark = self.mark(self.raw_duplex)
        resp = self.connect(self.authority(self.raw_duplex.port), self.ssh_token)
        t = resp.tunnel
        try:
            self.assertEqual(resp.status, 200, "CONNECT with alice's ssh token: %r%s"
                             % (resp, self.gateway_context()))
            self.assertIsNone(resp.header("Content-Length"), repr(resp))
            self.assertIsNone(resp.header("Transfer-Encoding"), repr(resp))
            res = th.run_duplex(t, BIG)
        finally:
            t.close()
        rec = self.raw_duplex.record(index=mark)
        self.assertTrue(rec.done.wait(60), repr(rec))
        self.assertIsNone(res["error"], repr(res))
        self.assertEqual(res["how"], "eof", "%r%s" % (res, self.gateway_context()))
        self.assertEqual(res["received"], BIG)
        self.assertEqual(rec.received, BIG)
        self.assertEqual(res["recv_sha"], rec.sent_sha, "port -> client stream corrupted")
        self.assertEqual(rec.recv_sha, res["sent_sha"], "client -> port stream corrupted")
        self.assertTunnelsBackToZero("after the CONNECT tunnel")
        self.assertEqual(self.totals()["tunnels_opened"] - before["tunnels_opened"], 1)
        print("  100 MiB both ways through CONNECT in %.1f s" % res["seconds"],
              file=sys.stderr)

    def test_authorization_header_works_too_and_counts_as_a_tunnel(self):
        resp = self.connect(self.authority(), self.ssh_token, header_name="Authorization")
        t = resp.tunnel
        try:
            self.assertEqual(resp.status, 200, repr(resp))
            t.sendall(b"hello over CONNECT")
            self.assertEqual(t.read_exact(18, 5), b"hello over CONNECT")
            self.assertEqual(self.totals()["tunnels_open"], 1)
            t.shutdown_write()
            how, rest, _, _ = t.read_to_end(5)
            self.assertEqual((how, rest), ("eof", b""), "the echo's EOF after our EOF")
        finally:
            t.close()
        self.assertTunnelsBackToZero("after the small CONNECT tunnel")


# --------------------------------------------------------------------------
# (f) the WebSocket tunnel endpoint
# --------------------------------------------------------------------------

class WebSocketEndpointTest(TunnelTestBase):

    def setUp(self):
        super().setUp()
        self.require_tunnel_endpoint()

    def ws(self, port, token=None, host=GS1_HOST, **kw):
        headers = [("Authorization", "Bearer " + token)] if token else []
        return websockets.connect("ws://%s/.spacegate/tunnel/%d" % (host, port),
                                  host=h.LOOPBACK, port=self.port, extra_headers=headers,
                                  max_size=None, ping_interval=None, compression=None,
                                  open_timeout=10, close_timeout=5, **kw)

    def refused_status(self, port, token=None, host=GS1_HOST):
        counts = [o.connections for o in self.raw_origins]

        async def go():
            try:
                async with self.ws(port, token, host):
                    return 101
            except websockets.InvalidStatusCode as e:
                return e.status_code
        status = run(go(), 30)
        self.assertEqual([o.connections for o in self.raw_origins], counts,
                         "a refused tunnel reached a port")
        return status

    async def collect(self, ws, n):
        """Binary messages until n bytes came; returns the bytes."""
        parts = []
        got = 0
        while got < n:
            message = await asyncio.wait_for(ws.recv(), 15)
            self.assertIsInstance(message, bytes, "the tunnel sent a text frame")
            parts.append(message)
            got += len(message)
        return b"".join(parts)

    def test_binary_frames_echo_through_a_raw_tcp_port(self):
        async def go():
            async with self.ws(self.raw_echo.port, self.ssh_token) as ws:
                for size in (1, 1000, 65536, 512 * 1024):
                    data = os.urandom(size)
                    await ws.send(data)
                    back = await self.collect(ws, size)
                    self.assertEqual(back, data, "echo of %d bytes" % size)
                # 16 MiB in 128 KiB messages, read while sending.
                n, piece = 16 * h.MiB, 128 * 1024
                sent = hashlib.sha256()

                async def sender():
                    for _ in range(n // piece):
                        data = os.urandom(piece)
                        sent.update(data)
                        await ws.send(data)
                task = asyncio.ensure_future(sender())
                got = hashlib.sha256()
                total = 0
                while total < n:
                    message = await asyncio.wait_for(ws.recv(), 15)
                    self.assertIsInstance(message, bytes)
                    got.update(message)
                    total += len(message)
                await task
                self.assertEqual(total, n)
                self.assertEqual(got.hexdigest(), sent.hexdigest(), "16 MiB stream corrupted")
                await ws.close()
        run(go())
        self.assertTunnelsBackToZero("after the endpoint tunnel")

    def test_401_without_token(self):
        self.assertEqual(self.refused_status(self.raw_echo.port), 401)

    def test_401_expired_token(self):
        self.assertEqual(self.refused_status(self.raw_echo.port, self.expired_token), 401)

    def test_403_token_for_another_gitspace(self):
        self.assertEqual(self.refused_status(self.raw_echo.port, self.other_gs_token), 403)

    def test_403_ide_only_token(self):
        self.assertEqual(self.refused_status(self.raw_echo.port, self.ide_token), 403)

    def test_403_port_not_in_tunnel_ports(self):
        self.assertEqual(self.refused_status(self.raw_unlisted.port, self.ssh_token), 403)

    def test_502_refused_port(self):
        self.assertEqual(self.refused_status(self.refused_port, self.ssh_token), 502)

    def test_ping_gets_a_pong(self):
        async def go():
            async with self.ws(self.raw_echo.port, self.ssh_token) as ws:
                waiter = await ws.ping(b"are-you-there")
                await asyncio.wait_for(waiter, 5)
                await ws.send(b"after ping")
                self.assertEqual(await self.collect(ws, 10), b"after ping")
        run(go())

    def close_code_after(self, message):
        async def go():
            async with self.ws(self.raw_echo.port, self.ssh_token) as ws:
                await ws.send(message)
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None
                except asyncio.TimeoutError:
                    return "still open"
        return run(go())

    def test_text_frame_closes_with_1003(self):
        self.assertEqual(self.close_code_after("text is not allowed"), 1003)
        self.assertTunnelsBackToZero("after the 1003 close")

    def test_frame_over_1mib_closes_with_1009(self):
        self.assertEqual(self.close_code_after(os.urandom(h.MiB + 1)), 1009)
        self.assertTunnelsBackToZero("after the 1009 close")

    def test_port_eof_is_close_1000_and_client_close_is_eof_at_the_port(self):
        mark = self.mark(self.raw_greet)

        async def go():
            async with self.ws(self.raw_greet.port, self.ssh_token) as ws:
                data = await self.collect(ws, len(b"origin-first\n"))
                self.assertEqual(data, b"origin-first\n")
                try:
                    extra = await asyncio.wait_for(ws.recv(), 10)
                    self.fail("data after the port's EOF: %r" % extra)
                except websockets.ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None
        self.assertEqual(run(go()), 1000, "the port's EOF as a close frame")
        rec = self.raw_greet.record(index=mark)
        self.assertEqual(rec.wait_end(5), "eof", "the client's close frame did not reach "
                         "the port as EOF: %r" % rec)
        self.assertTunnelsBackToZero("after the close handshake")

    def test_bytes_are_copied_not_spliced(self):
        """The endpoint must see the bytes (framing): buffered path."""
        self.require_counter("tunnel_bytes_copied")
        before = self.totals()

        async def go():
            async with self.ws(self.raw_echo.port, self.ssh_token) as ws:
                data = os.urandom(256 * 1024)
                await ws.send(data)
                self.assertEqual(await self.collect(ws, len(data)), data)
        run(go())
        self.assertTunnelsBackToZero("after the copied tunnel")
        after = self.totals()
        self.assertGreaterEqual(after["tunnel_bytes_copied"] - before["tunnel_bytes_copied"],
                                2 * 256 * 1024)


# --------------------------------------------------------------------------
# (g) the descriptor limit
# --------------------------------------------------------------------------

class LimitedGateway(h.Gateway):
    """The gateway started under RLIMIT_NOFILE = nofile (soft and hard)."""

    def __init__(self, config, nofile, **kw):
        super().__init__(config, **kw)
        self.nofile = nofile

    def start(self, timeout=10.0):
        nofile = self.nofile

        def preexec():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            h._die_with_parent()
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        self.write_config()
        self.starts += 1
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([h.BINARY, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, cwd=self.tmpdir, preexec_fn=preexec)
        h._live_gateways.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise h.GatewayError("gateway exited with %s at start-up:\n%s"
                                     % (self.proc.returncode, h.tail(self.stderr())))
            try:
                socket.create_connection((h.LOOPBACK, self.port), timeout=1.0).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise h.GatewayError("gateway did not start:\n%s" % h.tail(self.stderr()))
            time.sleep(0.05)


class DescriptorLimitTest(unittest.TestCase):
    NOFILE = 64

    def setUp(self):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        self.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        self.port = h.free_port()
        self.control_socket = os.path.join(self.tmpdir, "control.sock")
        config = h.control_config(
            self.port, [], socket_path=self.control_socket, workers=1,
            limits={"header_read_timeout": "60s", "keepalive_idle_timeout": "60s"})
        self.gateway = LimitedGateway(config, self.NOFILE, tmpdir=self.tmpdir)
        self.gateway.start()
        self.api = h.ControlClient(self.control_socket)
        self.assertTrue(h.wait_for_socket(self.control_socket), "no control socket")
        self.held = []

    def tearDown(self):
        for s in self.held:
            s.close()
        alive = self.gateway.alive()
        stderr = self.gateway.stderr()
        self.gateway.stop()
        if not h.KEEP_TMP:
            import shutil
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if not alive:
            self.fail("the gateway died at the descriptor limit:\n%s" % h.tail(stderr))

    REQUEST = b"GET /x HTTP/1.1\r\nHost: nobody.test\r\n\r\n"

    def served(self, sock, timeout=2.0):
        """True if a request on sock gets its 404."""
        try:
            sock.settimeout(timeout)
            sock.sendall(self.REQUEST)
            head, got = th.read_head(sock)
            status, _, headers = th.parse_head(head)
            length = int(th.header(headers, "Content-Length", "0"))
            while len(got) < length:
                data = sock.recv(length - len(got))
                if not data:
                    return False
                got += data
            return status == 404
        except (OSError, EOFError, ValueError):
            return False

    def new_connection_served(self, timeout=2.0):
        try:
            s = h.connect(self.port, timeout)
        except OSError:
            return False
        try:
            return self.served(s, timeout)
        finally:
            s.close()

    def fill_to_the_limit(self):
        """Open connections (each served once, then kept open) until a new
        one is not served. Returns how many were served."""
        self.assertTrue(self.new_connection_served(), "the gateway does not serve at all")
        for _ in range(4 * self.NOFILE):
            try:
                s = h.connect(self.port, 2.0)
            except OSError:
                break
            if self.served(s):
                self.held.append(s)
                continue
            s.close()
            break
        else:
            self.fail("%d connections served under RLIMIT_NOFILE %d: the limit was never "
                      "reached" % (len(self.held), self.NOFILE))
        return len(self.held)

    def test_refuses_at_the_limit_keeps_serving_and_recovers(self):
        n = self.fill_to_the_limit()
        self.assertGreater(n, 5, "only %d connections before the limit" % n)
        self.assertTrue(self.gateway.alive(), "the gateway died at the limit")
        # More new connections are refused or closed, not served...
        for i in range(3):
            self.assertFalse(self.new_connection_served(1.0),
                             "connection %d over the limit was served" % i)
        # ...while the ones it has are still served.
        for s in (self.held[0], self.held[-1]):
            self.assertTrue(self.served(s, 5.0), "a connection held at the limit is not "
                            "served any more%s" % h.tail(self.gateway.stderr(), 1500))
        self.assertTrue(self.gateway.alive())
        for s in self.held:
            s.close()
        self.held = []
        ok = h.wait_until(lambda: self.new_connection_served(2.0), 10, 0.2)
        self.assertTrue(ok, "new connections are not served after the held ones closed%s"
                        % h.tail(self.gateway.stderr(), 1500))
        for i in range(20):
            self.assertTrue(self.new_connection_served(), "request %d after recovery" % i)
        # And the limit can be reached again, then recovered from again.
        again = self.fill_to_the_limit()
        self.assertGreaterEqual(again, n - 2, "fewer connections the second time: a "
                                "descriptor leaked at the limit")
        for s in self.held:
            s.close()
        self.held = []
        self.assertTrue(h.wait_until(lambda: self.new_connection_served(2.0), 10, 0.2))

    def test_refusals_are_logged_and_counted(self):
        totals = th.totals(self.api)
        if "connections_refused_descriptors" not in totals:
            raise AssertionError("/stats connections_refused_descriptors missing (a regression)")
        self.fill_to_the_limit()
        for _ in range(3):
            self.new_connection_served(1.0)
        for s in self.held:
            s.close()
        self.held = []
        self.assertTrue(h.wait_until(lambda: self.new_connection_served(2.0), 10, 0.2))
        refused = th.totals(self.api)["connections_refused_descriptors"]

        def accept_failures():
            out = []
            for line in self.gateway.stderr().splitlines():
                low = line.lower()
                if "accept" in low and ("too many open files" in low or "emfile" in low
                                        or "descriptor" in low):
                    out.append(line)
            return out
        lines = h.wait_until(accept_failures, 3) or []
        self.assertTrue(refused > 0 and lines,
                        "at the descriptor limit: /stats connections_refused_descriptors = %d, "
                        "%d log lines about accept failing (both must be > 0); gateway "
                        "stderr:\n%s" % (refused, len(lines), h.tail(self.gateway.stderr(), 2000)))
        self.assertLess(len(lines), 30, "accept failures logged %d times: not rate limited"
                        % len(lines))


if __name__ == "__main__":
    h.main()
