#!/usr/bin/python3
"""WebSockets on protected routes: cross-site WebSocket hijacking of an IDE
is refused. A browser sends the cookie with a WebSocket that any page opens,
so an upgrade authenticated by the cookie must carry an Origin whose
authority (host[:port], case-insensitive) is the Host; without Origin only a
bearer-header client is let through; a present but foreign Origin is 403
whatever the credential. No credentials is 401 as for plain HTTP. Neither
the cookie nor the Authorization header reaches the WebSocket peer (other
cookies do). A token that expires while its tunnel is open does not cut the
tunnel, but every new request with it (HTTP or another upgrade) is refused."""

import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GS = "gs1"
OWNER = "alice"


class WebSocketOriginTest(h.GatewayTestCase):
    WITH_WEBSOCKET = True

    @classmethod
    def extra_setup(cls):
        cls.keydir = tempfile.mkdtemp(prefix="spacegate-keys-", dir=cls.tmpdir)
        cls.k1 = h.TokenKey(cls.keydir, "k1")

    @classmethod
    def make_config(cls):
        routes = [
            h.route("ide-ws", "ide.test", cls.ws_peer.address, gitspace=GS, owner=OWNER,
                    access="owner"),
            h.route("ide-http", "ide.test", cls.origin.address, path_prefix="/api",
                    gitspace=GS, owner=OWNER, access="owner"),
            h.route("agent-ws", "agent.test", cls.ws_peer.address, gitspace=GS,
                    access="agent"),
            h.route("pub-ws", "pub.test", cls.ws_peer.address, gitspace=GS, access="public"),
        ]
        return h.base_config(cls.gateway_port, routes,
                             limits={"tunnel_idle_timeout": "1h"},
                             auth=h.auth_section(files=[cls.k1]))

    # -- helpers ---------------------------------------------------------------

    @property
    def host(self):
        return "ide.test:%d" % self.port

    @property
    def same_origin(self):
        return "http://ide.test:%d" % self.port

    def token(self, sub=OWNER, gs=GS, **kw):
        kw.setdefault("scopes", ["ide"])
        return self.k1.sign(sub, gs, **kw)

    def open_ws(self, headers, host=None, path="/ws"):
        return h.WebSocketClient(self.port, host or self.host, path, headers=headers)

    def upgrade_request(self, headers, host=None, path="/ws"):
        """A raw upgrade request; returns the response (not followed)."""
        fields = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                  ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                  ("Sec-WebSocket-Version", "13")] + list(headers)
        with h.RawConn(self.port) as c:
            return c.roundtrip("GET", path, host=host or self.host, headers=fields)

    def assertUpgradeRefused(self, status, headers, what, host=None):
        before = self.ws_peer.connections
        resp = self.upgrade_request(headers, host)
        self.assertEqual(resp.status, status, "%s: expected %d, got %r%s"
                         % (what, status, resp, self.gateway_context()))
        time.sleep(0.05)
        self.assertEqual(self.ws_peer.connections, before,
                         "%s: the refused upgrade reached the WebSocket peer" % what)
        return resp

    def last_peer_headers(self):
        return self.ws_peer.request_headers[-1]

    def assertNoCredentialsAtPeer(self, tokens, what):
        fields = self.last_peer_headers()
        for name, value in fields:
            self.assertNotEqual(name.lower(), "authorization",
                                "%s: Authorization reached the WebSocket peer" % what)
            for token in tokens:
                self.assertNotIn(token, value, "%s: a token reached the peer in %s"
                                 % (what, name))
            if name.lower() == "cookie":
                self.assertNotIn("sg_token", value, what)
        return fields

    # -- tests -----------------------------------------------------------------

    def test_matching_origin_with_cookie(self):
        token = self.token()
        with self.open_ws([("Origin", self.same_origin),
                           ("Cookie", "theme=dark; sg_token=%s; lang=en" % token)]) as ws:
            self.assertEqual(ws.echo("hello through the gateway"), "hello through the gateway")
            self.assertEqual(ws.echo(b"\x00\x01binary"), b"\x00\x01binary")
        fields = self.assertNoCredentialsAtPeer([token], "cookie + same Origin")
        self.assertIn(("Cookie", "theme=dark; lang=en"), fields,
                      "the other cookies reach the peer: %r" % fields)
        with self.open_ws([("Origin", "http://IDE.Test:%d" % self.port),
                           ("Cookie", "sg_token=" + token)]) as ws:
            self.assertEqual(ws.echo("case"), "case", "Origin host compared case-insensitively")
        with self.open_ws([("Origin", "http://ide.test"), ("Cookie", "sg_token=" + token)],
                          host="ide.test") as ws:
            self.assertEqual(ws.echo("no port"), "no port", "Host and Origin without a port")

    def test_mismatched_origin_refused(self):
        token = self.token()
        origins = [
            "http://evil.test:%d" % self.port,
            "http://ide.test:1",
            "http://ide.test",                           # Host carries the port
            "http://ide.test:%d.evil.test" % self.port,
            "http://evil.test/ide.test:%d" % self.port,
            "http://ide.test.evil.test:%d" % self.port,
            "null",
            "ide.test:%d" % self.port,                   # not a URL origin
            "",
        ]
        for origin in origins:
            self.assertUpgradeRefused(403, [("Origin", origin), ("Cookie", "sg_token=" + token)],
                                      "cookie, Origin %r" % origin)
        self.assertUpgradeRefused(403, [("Origin", "http://evil.test:%d" % self.port),
                                        ("Authorization", "Bearer " + token)],
                                  "bearer header with a foreign Origin")
        # The plain-HTTP route of the same host is not subject to the Origin check.
        resp = self.send_http([("Cookie", "sg_token=" + token),
                               ("Origin", "http://evil.test")])
        self.assertEqual(resp.status, 200, "plain HTTP with a foreign Origin: %r" % resp)

    def send_http(self, headers, token_path="/api/headers"):
        with h.RawConn(self.port) as c:
            return c.roundtrip("GET", token_path, host=self.host,
                               headers=list(headers) + [("Connection", "close")])

    def test_no_origin(self):
        token = self.token()
        self.assertUpgradeRefused(403, [("Cookie", "sg_token=" + token)],
                                  "cookie without Origin")
        with self.open_ws([("Authorization", "Bearer " + token)]) as ws:
            self.assertEqual(ws.echo("tool"), "tool")
        self.assertNoCredentialsAtPeer([token], "bearer without Origin")
        with self.open_ws([("Authorization", "Bearer " + token),
                           ("Origin", self.same_origin)]) as ws:
            self.assertEqual(ws.echo("tool with origin"), "tool with origin")
        with self.open_ws([("Authorization", "Bearer " + token),
                           ("Cookie", "sg_token=" + token + "; keep=1")]) as ws:
            self.assertEqual(ws.echo("both"), "both")
        fields = self.assertNoCredentialsAtPeer([token], "bearer + cookie without Origin")
        self.assertIn(("Cookie", "keep=1"), fields)

    def test_bad_or_missing_credentials(self):
        self.assertUpgradeRefused(401, [("Origin", self.same_origin)],
                                  "no credentials, same Origin")
        forged = h.tamper_token(self.token(sub="mallory"), sub=OWNER)
        self.assertUpgradeRefused(401, [("Origin", self.same_origin),
                                        ("Cookie", "sg_token=" + forged)], "forged cookie")
        self.assertUpgradeRefused(401, [("Authorization", "Bearer " + self.token(sub="bob"))],
                                  "bearer of another user")
        self.assertUpgradeRefused(401, [("Origin", "http://evil.test")],
                                  "no credentials, foreign Origin")

    def test_agent_and_public_websocket_routes(self):
        agent = self.k1.sign("delegate", GS, scopes=["agent"])
        with self.open_ws([("Authorization", "Bearer " + agent)],
                          host="agent.test:%d" % self.port) as ws:
            self.assertEqual(ws.echo("task"), "task")
        # The agent route forwards its bearer token (the agent checks it
        # again itself), and nothing else of the gateway's.
        self.assertIn(("authorization", "Bearer " + agent),
                      [(name.lower(), value) for name, value in self.last_peer_headers()])
        self.assertUpgradeRefused(401, [("Origin", "http://agent.test:%d" % self.port),
                                        ("Cookie", "sg_token=" + agent)],
                                  "agent token as a cookie on the agent route",
                                  host="agent.test:%d" % self.port)
        with self.open_ws([], host="pub.test:%d" % self.port) as ws:
            self.assertEqual(ws.echo("public"), "public")

    def test_token_expiring_mid_tunnel(self):
        now = int(time.time())
        exp = now + 5  # room to open both tunnels on a busy machine
        short = self.token(iat=now, exp=exp)
        bearer_ws = self.open_ws([("Authorization", "Bearer " + short)])
        cookie_ws = self.open_ws([("Origin", self.same_origin), ("Cookie", "sg_token=" + short)])
        with bearer_ws, cookie_ws:
            self.assertEqual(bearer_ws.echo("before"), "before")
            self.assertEqual(cookie_ws.echo("before"), "before")
            resp = self.send_http([("Authorization", "Bearer " + short)])
            self.assertEqual(resp.status, 200, "HTTP with the token before expiry: %r" % resp)
            # Keep the tunnels busy across the expiry.
            i = 0
            while time.time() < exp + 1.5:
                i += 1
                self.assertEqual(bearer_ws.echo("tick %d" % i), "tick %d" % i)
                self.assertEqual(cookie_ws.echo("tick %d" % i), "tick %d" % i)
                time.sleep(0.25)
            self.assertGreater(time.time(), exp + 1)
            for n in range(3):
                self.assertEqual(bearer_ws.echo("after %d" % n), "after %d" % n,
                                 "the bearer tunnel was cut when its token expired")
                self.assertEqual(cookie_ws.echo("after %d" % n), "after %d" % n,
                                 "the cookie tunnel was cut when its token expired")
            # Every new request is checked.
            self.assertUpgradeRefused(401, [("Authorization", "Bearer " + short)],
                                      "a new upgrade with the expired token (bearer)")
            self.assertUpgradeRefused(401, [("Origin", self.same_origin),
                                            ("Cookie", "sg_token=" + short)],
                                      "a new upgrade with the expired token (cookie)")
            resp = self.send_http([("Authorization", "Bearer " + short)])
            self.assertEqual(resp.status, 401, "HTTP with the expired token: %r" % resp)
            resp = self.send_http([("Authorization", "Bearer " + self.token())])
            self.assertEqual(resp.status, 200, "control: a fresh token: %r" % resp)
            # The old tunnels still work after all that.
            self.assertEqual(bearer_ws.echo("still"), "still")
            self.assertEqual(cookie_ws.echo("still"), "still")


if __name__ == "__main__":
    h.main()
