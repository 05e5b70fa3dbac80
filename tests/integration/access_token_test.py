#!/usr/bin/python3
"""Access tokens at the gateway, one check at a time, against the real
binary with keys and tokens made by `spacegatectl token keygen/sign`.

Refused (401, `WWW-Authenticate: Bearer realm="spacegate"`, the same body
whatever failed, nothing reaches the origin): forged signatures (payload
edited, signature bit flipped, signed by another key under the same kid,
signed by a configured key under another configured kid), an unknown kid,
expired, issued too far in the future, wrong Gitspace, wrong owner, wrong
scope (ssh, another port, no ide), an `ide` token on an `agent` route, an
`agent` token on `owner` and `authenticated` routes, an agent token from a
cookie or the query on the agent route, a share link on another port's route
or for another Gitspace, an aud for someone else, truncated, oversized
(validly signed, > 4096 bytes), bad base64, bad JSON, wrong field types.

Accepted: the owner's `ide` token (header, cookie), a `gs: *` token of the
owner, iat within the 60 s skew, aud equal to the route id or the host, a
`port:N` share link for the route whose upstream port is N (any sub), an
agent token from the bearer header on the agent route, any user's token on an
`authenticated` route, no token at all on a `public` route. Header and
cookie together: the header wins with no fallback, and neither reaches the
origin. A keep-alive connection checks every request again."""

import json
import re
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GS = "gs1"
OWNER = "alice"


class AccessTokenTest(h.GatewayTestCase):

    @classmethod
    def extra_setup(cls):
        cls.origin2 = h.Origin("origin2")
        cls.keydir = tempfile.mkdtemp(prefix="spacegate-keys-", dir=cls.tmpdir)
        cls.k1 = h.TokenKey(cls.keydir, "k1")          # in the config as a file
        cls.k2 = h.TokenKey(cls.keydir, "k2")          # in the config inline
        cls.k9 = h.TokenKey(cls.keydir, "k9")          # never configured
        cls.evil = h.TokenKey(cls.keydir, "k1", name="evil-k1")  # another key, same kid

    @classmethod
    def extra_teardown(cls):
        cls.origin2.stop()

    @classmethod
    def make_config(cls):
        cls.port1 = cls.origin.port
        cls.port2 = cls.origin2.port
        routes = [
            h.route("ide", "ide.test", cls.origin.address, gitspace=GS, owner=OWNER,
                    access="owner"),
            h.route("port2", "p2.test", cls.origin2.address, gitspace=GS, owner=OWNER,
                    access="owner"),
            h.route("agent", "agent.test", cls.origin.address, gitspace=GS,
                    access="agent"),
            h.route("auth", "auth.test", cls.origin.address, access="authenticated"),
            h.route("pub", "pub.test", cls.origin.address, gitspace=GS, access="public"),
            h.route("bobs", "bob.test", cls.origin2.address, gitspace="gs2", owner="bob",
                    access="owner"),
        ]
        return h.base_config(cls.gateway_port, routes,
                             auth=h.auth_section(keys=[cls.k2], files=[cls.k1]))

    # -- helpers ---------------------------------------------------------------

    def send(self, host, path="/headers", bearer=None, cookie=None, headers=(),
             method="GET"):
        fields = []
        if bearer is not None:
            fields.append(("Authorization", "Bearer " + bearer))
        if cookie is not None:
            fields.append(("Cookie", cookie))
        fields += list(headers)
        fields.append(("Connection", "close"))
        with h.RawConn(self.port) as c:
            return c.roundtrip(method, path, host=host, headers=fields)

    def assertRefused(self, what, host, **kw):
        before = self.origin.requests + self.origin2.requests
        resp = self.send(host, **kw)
        self.assertEqual(resp.status, 401, "%s: expected 401, got %r%s"
                         % (what, resp, self.gateway_context()))
        self.assertEqual(resp.reason, "Unauthorized", what)
        self.assertEqual(resp.header("WWW-Authenticate"), h.WWW_AUTHENTICATE,
                         "%s: WWW-Authenticate" % what)
        # The same body whatever failed: no hint of which check it was.
        self.assertEqual(resp.body, h.UNAUTHORIZED_BODY, "%s: 401 body" % what)
        self.assertIsNone(resp.header("Set-Cookie"), "%s: no cookie on a refusal" % what)
        time.sleep(0.02)
        self.assertEqual(self.origin.requests + self.origin2.requests, before,
                         "%s: a refused request reached an origin" % what)
        return resp

    def assertAllowed(self, what, host, forwards_bearer=False, **kw):
        resp = self.send(host, **kw)
        self.assertEqual(resp.status, 200, "%s: expected 200 from the origin, got %r%s"
                         % (what, resp, self.gateway_context()))
        report = resp.json()
        names = [k.lower() for k, _ in report["headers"]]
        for secret in (None if forwards_bearer else kw.get("bearer"), kw.get("cookie")):
            if secret:
                for token in [p.split("=", 1)[-1] for p in secret.split(";")]:
                    if token.strip().startswith("v1."):
                        self.assertNotIn(token.strip(), json.dumps(report),
                                         "%s: the token reached the origin" % what)
        if forwards_bearer:
            # Agent routes: the agent checks the token again itself.
            self.assertIn(("authorization", "Bearer " + kw["bearer"]),
                          [(k.lower(), v) for k, v in report["headers"]],
                          "%s: the agent route must forward the bearer token" % what)
        elif kw.get("bearer") is not None:
            self.assertNotIn("authorization", names,
                             "%s: the consumed Authorization header was forwarded: %r"
                             % (what, report["headers"]))
        for k, v in report["headers"]:
            if k.lower() == "cookie":
                self.assertNotIn("sg_token", v, "%s: the gateway's cookie was forwarded" % what)
        return report

    def alice(self, **kw):
        kw.setdefault("scopes", ["ide"])
        return self.k1.sign(OWNER, GS, **kw)

    # -- the good cases first (each negative test below has its control here) --

    def test_owner_token_by_header_and_by_cookie(self):
        token = self.alice()
        self.assertAllowed("owner ide token, bearer header", "ide.test", bearer=token)
        self.assertAllowed("owner ide token, cookie", "ide.test", cookie="sg_token=" + token)
        token2 = self.k2.sign(OWNER, GS, scopes=["ide"])
        self.assertAllowed("owner token signed by the inline key k2", "ide.test",
                           bearer=token2)
        self.assertAllowed("the CLI's default scope is ide", "ide.test",
                           bearer=self.k1.sign(OWNER, GS))
        self.assertAllowed("ide among several scopes", "ide.test",
                           bearer=self.alice(scopes=["ssh", "ide", "port:1"]))

    def test_no_credentials_refused(self):
        self.assertRefused("no token at all", "ide.test")
        self.assertRefused("empty bearer", "ide.test",
                           headers=[("Authorization", "Bearer ")])
        self.assertRefused("empty cookie", "ide.test", cookie="sg_token=")
        self.assertRefused("browser navigation without login_url gets 401 too", "ide.test",
                           headers=[("Sec-Fetch-Mode", "navigate"),
                                    ("Accept", "text/html")])

    def test_refusals_look_the_same(self):
        # Whatever check failed, the client gets byte-identical answers
        # (apart from the request id): the reason is for the log only.
        now = int(time.time())
        bad = {
            "none": None,
            "malformed": "v1.garbage",
            "unknown key": self.k9.sign(OWNER, GS),
            "bad signature": h.tamper_token(self.alice(), sub="alice2"),
            "expired": self.alice(iat=now - 100, exp=now - 5),
            "not yet valid": self.alice(iat=now + 3600, exp=now + 7200),
            "wrong owner": self.k1.sign("bob", GS),
            "wrong aud": self.alice(aud="elsewhere"),
        }
        heads = {}
        for what, token in bad.items():
            resp = self.assertRefused(what, "ide.test", bearer=token)
            heads[what] = re.sub(rb"X-Request-Id: [^\r]*\r\n", b"", resp.raw_head) + resp.body
        first = heads["none"]
        for what, head in heads.items():
            self.assertEqual(head, first, "the answer for %r differs from the one for no "
                             "token" % what)

    def test_forged_signature(self):
        good = self.k1.sign("mallory", GS, scopes=["ide"])
        forged = h.tamper_token(good, sub=OWNER)
        self.assertRefused("payload edited (sub mallory -> alice), signature kept",
                           "ide.test", bearer=forged)
        self.assertRefused("the same forgery as a cookie", "ide.test",
                           cookie="sg_token=" + forged)
        real = self.alice()
        payload, payload_part, signature = h.split_token(real)
        raw = bytearray(h.b64url_decode(payload_part))
        i = raw.index(b'"gs":"')  # flip a byte of the Gitspace id: still JSON
        raw[i + 6] ^= 0x01  # "gs1" -> "fs1"
        self.assertRefused("one payload byte flipped", "ide.test",
                           bearer=h.join_token(bytes(raw), signature))
        flipped = bytearray(signature)
        flipped[10] ^= 0x40
        self.assertRefused("one signature bit flipped", "ide.test",
                           bearer=h.join_token(payload, bytes(flipped)))
        self.assertRefused("another key's signature under the same kid (k1)", "ide.test",
                           bearer=self.evil.sign(OWNER, GS, scopes=["ide"]))
        self.assertAllowed("control: the real token", "ide.test", bearer=real)

    def test_wrong_key_id(self):
        # Signed by k1's private key but naming k2, which is configured.
        token = self.k1.sign(OWNER, GS, scopes=["ide"],
                             key_path=self.k1.key_file_with_kid("k2"))
        self.assertEqual(h.split_token(token)[0]["kid"], "k2")
        self.assertRefused("k1 signature under kid k2", "ide.test", bearer=token)
        self.assertRefused("kid field edited k1 -> k2", "ide.test",
                           bearer=h.tamper_token(self.alice(), kid="k2"))

    def test_unknown_key(self):
        self.assertRefused("token of an unconfigured key k9", "ide.test",
                           bearer=self.k9.sign(OWNER, GS, scopes=["ide"]))
        self.assertRefused("unknown key as a cookie", "ide.test",
                           cookie="sg_token=" + self.k9.sign(OWNER, GS, scopes=["ide"]))

    def test_expired(self):
        now = int(time.time())
        self.assertRefused("expired 10 s ago", "ide.test",
                           bearer=self.alice(iat=now - 3600, exp=now - 10))
        self.assertRefused("expired long ago, as a cookie", "ide.test",
                           cookie="sg_token=" + self.alice(iat=now - 86400, exp=now - 3600))
        self.assertAllowed("control: exp in 30 s", "ide.test",
                           bearer=self.alice(iat=now, exp=now + 30))

    def test_not_yet_valid(self):
        now = int(time.time())
        self.assertRefused("iat one hour ahead", "ide.test",
                           bearer=self.alice(iat=now + 3600, exp=now + 7200))
        self.assertRefused("iat 5 minutes ahead", "ide.test",
                           bearer=self.alice(iat=now + 300, exp=now + 7200))
        self.assertAllowed("iat 20 s ahead is within the 60 s clock skew", "ide.test",
                           bearer=self.alice(iat=now + 20, exp=now + 7200))

    def test_wrong_gitspace_owner_or_scope(self):
        self.assertRefused("wrong Gitspace", "ide.test",
                           bearer=self.k1.sign(OWNER, "gs2", scopes=["ide"]))
        self.assertRefused("wrong owner", "ide.test",
                           bearer=self.k1.sign("bob", GS, scopes=["ide"]))
        self.assertRefused("wrong scope: ssh on an owner route", "ide.test",
                           bearer=self.alice(scopes=["ssh"]))
        self.assertRefused("wrong scope: another port", "ide.test",
                           bearer=self.alice(scopes=["port:1"]))
        self.assertRefused("scope spelled differently (IDE)", "ide.test",
                           bearer=self.alice(scopes=["IDE"]))
        self.assertRefused("bob's token on alice's route", "ide.test",
                           bearer=self.k1.sign("bob", "gs2", scopes=["ide"]))
        self.assertAllowed("control: bob's token on bob's route", "bob.test",
                           bearer=self.k1.sign("bob", "gs2", scopes=["ide"]))

    def test_deployment_wide_token(self):
        self.assertAllowed("gs * token of the owner", "ide.test",
                           bearer=self.k1.sign(OWNER, "*", scopes=["ide"]))
        self.assertAllowed("gs * token of the owner, cookie", "ide.test",
                           cookie="sg_token=" + self.k1.sign(OWNER, "*", scopes=["ide"]))
        self.assertRefused("gs * token of another user", "ide.test",
                           bearer=self.k1.sign("bob", "*", scopes=["ide"]))
        self.assertRefused("gs * token of the owner without ide scope", "ide.test",
                           bearer=self.k1.sign(OWNER, "*", scopes=["ssh"]))

    def test_agent_route(self):
        agent = self.k1.sign("delegate-7", GS, scopes=["agent"])
        self.assertAllowed("agent token, bearer header, agent route", "agent.test",
                           bearer=agent, forwards_bearer=True)
        self.assertRefused("agent token as a cookie on the agent route", "agent.test",
                           cookie="sg_token=" + agent)
        resp = self.send("agent.test", path="/headers?sg_token=" + agent)
        self.assertEqual(resp.status, 401,
                         "agent token in the query on the agent route: %r" % resp)
        self.assertRefused("ide token of the owner on the agent route", "agent.test",
                           bearer=self.alice())
        self.assertRefused("agent token of another Gitspace", "agent.test",
                           bearer=self.k1.sign("delegate-7", "gs2", scopes=["agent"]))
        self.assertRefused("agent token with gs *", "agent.test",
                           bearer=self.k1.sign("delegate-7", "*", scopes=["agent"]))
        self.assertRefused("agent token on the owner route", "ide.test", bearer=agent)
        self.assertRefused("agent token whose sub is the owner, on the owner route",
                           "ide.test",
                           bearer=self.k1.sign(OWNER, GS, scopes=["agent"]))
        self.assertRefused("agent+ide token on the owner route", "ide.test",
                           bearer=self.k1.sign(OWNER, GS, scopes=["ide", "agent"]))
        self.assertRefused("agent token on an authenticated route", "auth.test",
                           bearer=agent)
        self.assertRefused("expired agent token", "agent.test",
                           bearer=self.k1.sign("delegate-7", GS, scopes=["agent"],
                                               iat=time.time() - 100, exp=time.time() - 5))

    def test_port_share_link(self):
        link = self.k1.sign("anyone-with-the-link", GS, scopes=["port:%d" % self.port1],
                            ttl="10m")
        self.assertAllowed("port:%d share link on the route to port %d"
                           % (self.port1, self.port1), "ide.test", bearer=link)
        self.assertAllowed("share link as a cookie", "ide.test", cookie="sg_token=" + link)
        self.assertRefused("port:%d share link on the route to port %d"
                           % (self.port1, self.port2), "p2.test", bearer=link)
        link2 = self.k1.sign("someone", GS, scopes=["port:%d" % self.port2], ttl="10m")
        self.assertAllowed("port:%d link on its own route" % self.port2, "p2.test",
                           bearer=link2)
        self.assertRefused("port:%d link on the port %d route" % (self.port2, self.port1),
                           "ide.test", bearer=link2)
        self.assertRefused("share link for another Gitspace", "ide.test",
                           bearer=self.k1.sign("x", "gs2", scopes=["port:%d" % self.port1]))
        self.assertRefused("share link with gs *", "ide.test",
                           bearer=self.k1.sign("x", "*", scopes=["port:%d" % self.port1]))
        self.assertRefused("share link on the agent route of that port", "agent.test",
                           bearer=link)
        now = int(time.time())
        self.assertRefused("expired share link", "ide.test",
                           bearer=self.k1.sign("x", GS, scopes=["port:%d" % self.port1],
                                               iat=now - 600, exp=now - 1))

    def test_audience(self):
        self.assertAllowed("aud = route id", "ide.test",
                           bearer=self.alice(aud="ide"))
        self.assertAllowed("aud = host", "ide.test", bearer=self.alice(aud="ide.test"))
        self.assertAllowed("aud = host, Host header with a port", "ide.test:%d" % self.port,
                           bearer=self.alice(aud="ide.test"))
        self.assertRefused("aud for another route id", "ide.test",
                           bearer=self.alice(aud="port2"))
        self.assertRefused("aud for another host", "ide.test",
                           bearer=self.alice(aud="p2.test"))
        self.assertRefused("aud for another host, as a cookie", "ide.test",
                           cookie="sg_token=" + self.alice(aud="evil.test"))
        self.assertRefused("aud mismatch on an authenticated route", "auth.test",
                           bearer=self.alice(aud="ide.test"))

    def test_truncated_tokens(self):
        token = self.alice()
        cuts = {
            "last character dropped": token[:-1],
            "two characters dropped": token[:-2],
            "signature part empty": token[:token.rindex(".") + 1],
            "no signature part": token[:token.rindex(".")],
            "half the token": token[:len(token) // 2],
            "only v1.": "v1.",
            "only v1": "v1",
            "payload part empty": "v1.." + token.rsplit(".", 1)[1],
            "first character dropped": token[1:],
        }
        for what, bad in cuts.items():
            self.assertRefused("truncated token (%s), header" % what, "ide.test", bearer=bad)
            self.assertRefused("truncated token (%s), cookie" % what, "ide.test",
                               cookie="sg_token=" + bad)
        self.assertAllowed("control: the whole token", "ide.test", bearer=token)

    def test_malformed_tokens(self):
        token = self.alice()
        payload, payload_part, signature = h.split_token(token)
        sig_part = token.rsplit(".", 1)[1]
        bad = {
            "v2 prefix": "v2" + token[2:],
            "standard base64 padding": token + "==",
            "a '+' in the signature": token[:-3] + "+" + token[-2:],
            "a '/' in the payload": "v1." + payload_part[:5] + "/" + payload_part[6:] + "." +
                                    sig_part,
            "a fourth part": token + ".AAAA",
            "spaces inside": token[:20] + " " + token[20:],
            "payload not JSON": h.join_token(b"not json", signature),
            "payload a JSON list": h.join_token(b"[1,2]", signature),
        }
        for what, text in bad.items():
            self.assertRefused("malformed token (%s)" % what, "ide.test", bearer=text)

    def test_validly_signed_but_invalid_payloads(self):
        if not h.ed25519_available():
            self.skipTest("python3-cryptography not installed")
        now = int(time.time())
        base = {"kid": "k1", "sub": OWNER, "gs": GS, "iat": now, "exp": now + 600,
                "scope": "ide"}
        self.assertAllowed("control: a Python-signed token", "ide.test",
                           bearer=self.k1.sign_payload(base))
        self.assertAllowed("an unknown extra field is ignored", "ide.test",
                           bearer=self.k1.sign_payload(dict(base, note="x" * 200)))
        cases = {
            "payload not JSON": b"{not json",
            "exp a string": dict(base, exp=str(now + 600)),
            "exp a float": dict(base, exp=now + 600.5),
            "no exp": {k: v for k, v in base.items() if k != "exp"},
            "no sub": {k: v for k, v in base.items() if k != "sub"},
            "sub empty": dict(base, sub=""),
            "scope a list": dict(base, scope=["ide"]),
            "scope empty": dict(base, scope=""),
            "gs a number": dict(base, gs=1),
            "kid absent": {k: v for k, v in base.items() if k != "kid"},
        }
        for what, payload in cases.items():
            self.assertRefused("validly signed, %s" % what, "ide.test",
                               bearer=self.k1.sign_payload(payload))

    def test_oversized_tokens(self):
        if not h.ed25519_available():
            self.skipTest("python3-cryptography not installed")
        now = int(time.time())
        base = {"kid": "k1", "sub": OWNER, "gs": GS, "iat": now, "exp": now + 600,
                "scope": "ide"}
        small = self.k1.sign_payload(dict(base, pad="p" * 2000))
        self.assertLess(len(small), 4096)
        self.assertAllowed("control: a padded token of %d bytes" % len(small), "ide.test",
                           bearer=small)
        for pad in (3000, 3100, 6000, 20000):
            big = self.k1.sign_payload(dict(base, pad="p" * pad))
            if len(big) <= 4096:
                continue
            self.assertRefused("validly signed token of %d bytes (> 4096), header"
                               % len(big), "ide.test", bearer=big)
            self.assertRefused("validly signed token of %d bytes, cookie" % len(big),
                               "ide.test", cookie="sg_token=" + big)
            resp = self.send("ide.test", path="/headers?sg_token=" + big)
            self.assertEqual(resp.status, 401, "oversized token in the query: %r" % resp)
        # Just over the limit, exactly: pad so the token is 4097 bytes.
        probe = self.k1.sign_payload(dict(base, pad=""))
        grow = (4097 - len(probe)) * 3 // 4  # base64: 4 characters per 3 bytes
        seen = set()
        for extra in range(grow - 6, grow + 6):
            t = self.k1.sign_payload(dict(base, pad="p" * extra))
            if len(t) == 4097:
                self.assertRefused("token of exactly 4097 bytes", "ide.test", bearer=t)
            if len(t) == 4096:
                self.assertAllowed("token of exactly 4096 bytes", "ide.test", bearer=t)
            seen.add(len(t))
        self.assertTrue({4096, 4097} <= seen, "padding did not hit 4096 and 4097: %s"
                        % sorted(seen))
        self.assertRefused("5000 bytes of junk", "ide.test", bearer="v1." + "A" * 5000)

    def test_header_and_cookie_together(self):
        good = self.alice()
        bad = self.k1.sign("bob", GS, scopes=["ide"])
        report = self.assertAllowed(
            "good header + bad cookie: the header wins", "ide.test", bearer=good,
            cookie="a=1; sg_token=%s; b=2" % bad)
        cookies = [v for k, v in report["headers"] if k.lower() == "cookie"]
        self.assertEqual(cookies, ["a=1; b=2"],
                         "the cookie the gateway did not use is still its cookie: stripped")
        self.assertNotIn(bad, json.dumps(report))
        self.assertRefused("bad header + good cookie: no fallback", "ide.test",
                           bearer=bad, cookie="sg_token=" + good)
        self.assertRefused("garbage header + good cookie: no fallback", "ide.test",
                           bearer="garbage", cookie="sg_token=" + good)
        report = self.assertAllowed("good header + good cookie", "ide.test", bearer=good,
                                    cookie="sg_token=" + good)
        self.assertFalse([v for k, v in report["headers"] if k.lower() == "cookie"],
                         "a Cookie field holding only the gateway's cookie is dropped")
        report = self.assertAllowed("good header + another good token as cookie",
                                    "ide.test", bearer=good,
                                    cookie="sg_token=" + self.k2.sign(OWNER, GS))
        self.assertNotIn("authorization", [k.lower() for k, _ in report["headers"]])

    def test_authenticated_route(self):
        for who, gs, scopes in [("alice", GS, ["ide"]), ("bob", "gs2", ["ide"]),
                                ("carol", "*", ["ide"]), ("dave", "gs9", ["ide", "ssh"])]:
            self.assertAllowed("%s's token (gs %s, %s) on the authenticated route"
                               % (who, gs, scopes), "auth.test",
                               bearer=self.k1.sign(who, gs, scopes=scopes))
        # Only a user's IDE token: a one-port share link or an ssh-only token
        # must not open every authenticated route of the deployment.
        for scopes in (["port:3000"], ["ssh"]):
            self.assertRefused("a %s-only token on the authenticated route" % scopes[0],
                               "auth.test", bearer=self.k1.sign("dave", "gs9", scopes=scopes))
        self.assertAllowed("a cookie on the authenticated route", "auth.test",
                           cookie="sg_token=" + self.k2.sign("erin", "gs3"))
        self.assertRefused("no token on the authenticated route", "auth.test")
        self.assertRefused("forged token on the authenticated route", "auth.test",
                           bearer=h.tamper_token(self.k1.sign("bob", "gs2"), sub="root"))
        self.assertRefused("expired token on the authenticated route", "auth.test",
                           bearer=self.k1.sign("bob", "gs2", iat=time.time() - 100,
                                               exp=time.time() - 5))

    def test_public_route(self):
        report = self.assertAllowed("no token on the public route", "pub.test")
        self.assertEqual(report["path"], "/headers")
        token = self.alice()
        report = self.assertAllowed(
            "public route with the gateway's cookie and query parameter", "pub.test",
            path="/headers?a=1&sg_token=%s&b=2" % token,
            cookie="x=1; sg_token=%s; y=2" % token)
        self.assertEqual(report["path"], "/headers?a=1&b=2",
                         "the sg_token parameter is removed on public routes")
        self.assertEqual([v for k, v in report["headers"] if k.lower() == "cookie"],
                         ["x=1; y=2"], "the gateway's cookie is removed on public routes")
        self.assertNotIn(token, json.dumps(report))
        self.assertAllowed("garbage credentials do not matter on a public route",
                           "pub.test", cookie="sg_token=garbage")

    def test_keepalive_connection_checks_every_request(self):
        good = self.alice()
        with h.RawConn(self.port) as c:
            resp = c.roundtrip("GET", "/headers", host="ide.test",
                               headers=[("Authorization", "Bearer " + good)])
            self.assertEqual(resp.status, 200, "first request with the token: %r" % resp)
            resp = c.roundtrip("GET", "/headers", host="ide.test")
            self.assertEqual(resp.status, 401,
                             "second request on the same connection without a token: %r"
                             % resp)
            resp = c.roundtrip("GET", "/headers", host="ide.test",
                               headers=[("Authorization",
                                         "Bearer " + self.k1.sign("bob", GS))])
            self.assertEqual(resp.status, 401, "third request, wrong owner: %r" % resp)
            resp = c.roundtrip("GET", "/headers", host="ide.test",
                               headers=[("Cookie", "sg_token=" + good)])
            self.assertEqual(resp.status, 200, "fourth request, cookie: %r" % resp)
            resp = c.roundtrip("GET", "/headers", host="p2.test",
                               headers=[("Authorization", "Bearer " + self.k1.sign(
                                   "x", GS, scopes=["port:%d" % self.port1]))])
            self.assertEqual(resp.status, 401,
                             "fifth request, share link of port %d on the port %d route: %r"
                             % (self.port1, self.port2, resp))

    def test_authorization_other_schemes_not_consumed(self):
        # Basic credentials are not the gateway's: with a good cookie they go on.
        report = self.assertAllowed(
            "Basic Authorization + good cookie", "ide.test",
            cookie="sg_token=" + self.alice(),
            headers=[("Authorization", "Basic dXNlcjpwYXNz")])
        self.assertIn(["Authorization", "Basic dXNlcjpwYXNz"], report["headers"])
        self.assertRefused("Basic Authorization alone", "ide.test",
                           headers=[("Authorization", "Basic dXNlcjpwYXNz")])


if __name__ == "__main__":
    h.main()
