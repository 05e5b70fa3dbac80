#!/usr/bin/python3
"""The browser path to a Gitspace through the gateway: a link carrying
`?sg_token=` is answered with a 302 to the same URL without the token (other
query parameters kept) and a host-only cookie `sg_token=<token>; Path=/;
Max-Age=<token life left>; HttpOnly; SameSite=Lax` (no Secure on a plaintext
listener, no Domain, no Expires); curl's cookie jar (`-c jar -b jar -L`)
follows it end to end and later requests with only the cookie work. No
token, by query, cookie or header, ever reaches the origin: the origin
records every request head it gets and each test checks that none holds a
token it issued. Other cookies are kept, in order, byte for byte. With
auth.login_url set, a browser navigation without valid credentials (GET or
HEAD with `Sec-Fetch-Mode: navigate`, or `Accept: text/html` with no
Sec-Fetch-Mode, and no bearer header) gets a 302 to
`login_url?return_to=<percent-encoded http://host/path>`; a tool gets 401.
Tokens do not appear in the gateway's access log or its stderr either."""

import json
import os
import re
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GS = "gs1"
OWNER = "alice"
LOGIN_URL = "https://login.test/signin"
COOKIE_RE = re.compile(r"^sg_token=(?P<value>[^;]+); Path=/; Max-Age=(?P<max_age>\d+); "
                       r"HttpOnly; SameSite=Lax$")


def redact(text, tokens):
    """text with each token replaced by <token N> (short failure messages)."""
    for i, token in enumerate(tokens):
        text = text.replace(token, "<token %d>" % i)
    return text


def percent_encode(text):
    # Everything but ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 unreserved).
    return urllib.parse.quote(text, safe="-._~")


class CookieFlowBase(h.GatewayTestCase):
    LOGIN = LOGIN_URL

    @classmethod
    def extra_setup(cls):
        cls.keydir = tempfile.mkdtemp(prefix="spacegate-keys-", dir=cls.tmpdir)
        cls.k1 = h.TokenKey(cls.keydir, "k1")

    @classmethod
    def make_config(cls):
        cls.log_path = os.path.join(cls.tmpdir, "access.log")
        routes = [
            h.route("ide", "ide.test", cls.origin.address, gitspace=GS, owner=OWNER,
                    access="owner"),
            h.route("ide-prefixed", "ide.test", cls.origin.address, gitspace=GS,
                    owner=OWNER, access="owner", path_prefix="/gs/alice",
                    strip_prefix=True),
            h.route("pub", "pub.test", cls.origin.address, gitspace=GS, access="public"),
        ]
        return h.base_config(cls.gateway_port, routes, access_log=cls.log_path,
                             auth=h.auth_section(files=[cls.k1], login_url=cls.LOGIN))

    def setUp(self):
        super().setUp()
        self.issued = []
        self.heads_before = len(self.origin.heads)

    CHECK_ORIGIN_IN_TEARDOWN = True

    def tearDown(self):
        # Whatever the test did: no token it issued reached the origin.
        heads = self.origin.heads[self.heads_before:]
        for token in (self.issued if self.CHECK_ORIGIN_IN_TEARDOWN else []):
            for head in heads:
                # The token, or even its signature part alone.
                if token in head or token.rsplit(".", 1)[1] in head:
                    self.fail("a token reached the origin in:\n%s"
                              % redact(head, self.issued))
        super().tearDown()

    # -- helpers ---------------------------------------------------------------

    def token(self, sub=OWNER, gs=GS, **kw):
        kw.setdefault("scopes", ["ide"])
        token = self.k1.sign(sub, gs, **kw)
        self.issued.append(token)
        return token

    def url(self, host, path):
        return "http://%s:%d%s" % (host, self.port, path)

    def curl(self, *args):
        resolve = []
        for host in ("ide.test", "pub.test"):
            resolve += ["--resolve", "%s:%d:%s" % (host, self.port, h.LOOPBACK)]
        proc = h.curl(resolve + ["--max-time", "20"] + list(args), timeout=60)
        return proc

    def send(self, host, path, headers=(), method="GET"):
        with h.RawConn(self.port) as c:
            return c.roundtrip(method, path, host=host,
                               headers=list(headers) + [("Connection", "close")])

    def origin_cookies(self, report):
        return [v for k, v in report["headers"] if k.lower() == "cookie"]

    def assertLoginRedirect(self, resp, return_to, what):
        self.assertEqual(resp.status, 302, "%s: expected a 302 to the login page, got %r"
                         % (what, resp))
        expected = "%s%sreturn_to=%s" % (self.LOGIN, "&" if "?" in self.LOGIN else "?",
                                        percent_encode(return_to))
        self.assertEqual(resp.header("Location"), expected, "%s: Location" % what)
        self.assertIsNone(resp.header("Set-Cookie"), "%s: no cookie with a login redirect"
                          % what)
        self.assertIsNone(resp.header("WWW-Authenticate"), what)

    def assertUnauthorized(self, resp, what):
        self.assertEqual(resp.status, 401, "%s: expected 401, got %r" % (what, resp))
        self.assertEqual(resp.header("WWW-Authenticate"), h.WWW_AUTHENTICATE, what)
        self.assertEqual(resp.body, h.UNAUTHORIZED_BODY, what)
        self.assertIsNone(resp.header("Location"), "%s: a tool is not redirected" % what)
        self.assertIsNone(resp.header("Set-Cookie"), what)


class CookieFlowTest(CookieFlowBase):

    def test_redirect_flow_with_curl_cookie_jar(self):
        token = self.token(ttl="2h")
        jar = os.path.join(self.tmpdir, "jar-flow.txt")
        head_file = os.path.join(self.tmpdir, "flow-heads.txt")
        start = int(time.time())
        proc = self.curl("-c", jar, "-b", jar, "-L", "-D", head_file,
                         "-w", "\n%{http_code} %{num_redirects} %{url_effective}",
                         self.url("ide.test", "/app/page?x=1&sg_token=%s&y=2" % token))
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        body, _, summary = proc.stdout.decode().rpartition("\n")
        self.assertEqual(summary, "200 1 %s" % self.url("ide.test", "/app/page?x=1&y=2"),
                         "curl: status, redirects followed, final URL")
        report = json.loads(body)
        self.assertEqual(report["path"], "/app/page?x=1&y=2", "what the origin was asked for")
        self.assertEqual(self.origin_cookies(report), [],
                         "the redirected request's only cookie was the gateway's: "
                         "no Cookie field at the origin")
        with open(head_file, "rb") as f:
            heads = f.read().decode("latin-1")
        first = heads.split("\r\n\r\n")[0]
        self.assertTrue(first.startswith("HTTP/1.1 302"), first)
        self.assertIn("\r\nLocation: /app/page?x=1&y=2\r\n", first + "\r\n")
        self.assertIn("\r\nCache-Control: no-store", first)

        # The jar: one host-only, HttpOnly, non-Secure cookie for ide.test, path /.
        with open(jar) as f:
            lines = [l.rstrip("\n") for l in f if l.strip() and
                     (not l.startswith("#") or l.startswith("#HttpOnly_"))]
        self.assertEqual(len(lines), 1, "cookies in the jar: %r" % lines)
        domain, subdomains, path, secure, expiry, name, value = lines[0].split("\t")
        self.assertEqual(domain, "#HttpOnly_ide.test", "HttpOnly and host-only for ide.test")
        self.assertEqual(subdomains, "FALSE", "host-only cookie (no Domain attribute)")
        self.assertEqual(path, "/")
        self.assertEqual(secure, "FALSE", "no Secure on a plaintext listener")
        self.assertEqual((name, value), ("sg_token", token))
        self.assertLessEqual(abs(int(expiry) - (start + 7200)), 10,
                             "jar expiry %s vs now + 2h (%d)" % (expiry, start + 7200))

        # Later requests with only the cookie from the jar work.
        for path in ("/other?z=3", "/", "/deep/er/path"):
            proc = self.curl("-b", jar, "-c", jar, "-w", "\n%{http_code}",
                             self.url("ide.test", path))
            body, _, code = proc.stdout.decode().rpartition("\n")
            self.assertEqual(code, "200", "cookie-only request for %s: %s" % (path, body))
            report = json.loads(body)
            self.assertEqual(report["path"], path)
            self.assertEqual(self.origin_cookies(report), [], path)
        # Without the jar: refused.
        proc = self.curl("-w", "\n%{http_code}", self.url("ide.test", "/other"))
        self.assertTrue(proc.stdout.decode().endswith("\n401"), proc.stdout)
        # The jar's cookie is host-only: curl does not send it to pub.test.
        proc = self.curl("-b", jar, self.url("pub.test", "/headers"))
        self.assertNotIn("sg_token", proc.stdout.decode())

    def test_set_cookie_attributes_exact(self):
        token = self.token(ttl="2h")
        before = self.origin.requests
        resp = self.send("ide.test", "/p?sg_token=" + token)
        self.assertEqual(resp.status, 302, repr(resp))
        self.assertEqual(resp.header("Location"), "/p")
        cookies = resp.header_all("Set-Cookie")
        self.assertEqual(len(cookies), 1, "Set-Cookie fields: %r" % cookies)
        m = COOKIE_RE.match(cookies[0])
        self.assertIsNotNone(m, "Set-Cookie %r is not exactly 'sg_token=<token>; Path=/; "
                                "Max-Age=N; HttpOnly; SameSite=Lax'" % cookies[0])
        self.assertEqual(m.group("value"), token)
        self.assertTrue(7190 <= int(m.group("max_age")) <= 7200,
                        "Max-Age %s for a 2 h token" % m.group("max_age"))
        for attribute in ("Domain", "Secure", "Expires"):
            self.assertNotIn(attribute.lower(), cookies[0].lower())
        self.assertEqual(resp.header("Cache-Control"), "no-store")
        self.assertNotIn(token.encode(), resp.body, "the 302 body repeats the token")
        time.sleep(0.05)
        self.assertEqual(self.origin.requests, before, "the exchange reached the origin")

        now = int(time.time())
        short = self.token(iat=now, exp=now + 90)
        resp = self.send("ide.test", "/?sg_token=" + short)
        m = COOKIE_RE.match(resp.header("Set-Cookie") or "")
        self.assertIsNotNone(m, repr(resp))
        self.assertTrue(85 <= int(m.group("max_age")) <= 90,
                        "Max-Age %s for a token with 90 s left" % m.group("max_age"))
        self.assertEqual(resp.header("Location"), "/")

        resp = self.send("ide.test", "/p?sg_token=" + token, method="HEAD")
        self.assertEqual(resp.status, 302, "HEAD: %r" % resp)
        self.assertEqual(resp.header("Location"), "/p")
        self.assertIsNotNone(COOKIE_RE.match(resp.header("Set-Cookie") or ""), repr(resp))

    def test_location_keeps_other_query_parameters(self):
        token = self.token()
        cases = [
            ("/p?sg_token=T", "/p"),
            ("/p?a=1&sg_token=T", "/p?a=1"),
            ("/p?sg_token=T&a=1", "/p?a=1"),
            ("/p?a=1&sg_token=T&b=2", "/p?a=1&b=2"),
            ("/a/b/?a=%2F%20x&sg_token=T&b=&c", "/a/b/?a=%2F%20x&b=&c"),
            ("/p?my_sg_token=x&sg_token=T&sg_token2=y", "/p?my_sg_token=x&sg_token2=y"),
            ("/gs/alice/file.txt?sg_token=T&v=2", "/gs/alice/file.txt?v=2"),
        ]
        for target, location in cases:
            resp = self.send("ide.test", target.replace("=T", "=" + token))
            self.assertEqual(resp.status, 302, "%s: %r" % (target, resp))
            self.assertEqual(resp.header("Location"), location, target)
            self.assertIsNotNone(COOKIE_RE.match(resp.header("Set-Cookie") or ""), target)
        # The prefixed route: after the exchange the cookie opens it, prefix stripped.
        resp = self.send("ide.test", "/gs/alice/file.txt?v=2",
                         headers=[("Cookie", "sg_token=" + token)])
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.json()["path"], "/file.txt?v=2")

    def test_exchange_redirect_stays_on_this_host(self):
        # A link holder (a share link is for anyone) builds
        # http://ide.test//evil.example/x?sg_token=<link>: the 302 must not
        # send the browser to another site ("//host" and "/\host" are
        # network-path references to browsers).
        link = self.token(sub="anyone", scopes=["port:%d" % self.origin.port])
        for target in ("//evil.example/x", "/\\evil.example/x", "///evil.example/x"):
            resp = self.send("ide.test", target + "?sg_token=" + link)
            location = resp.header("Location") or ""
            if resp.status == 302:
                self.assertTrue(location.startswith("/") and location[1:2] not in ("/", "\\"),
                                "open redirect: GET %s?sg_token=<valid share link> on "
                                "ide.test answered 302 with Location: %s (a browser goes to "
                                "http://evil.example/x)" % (target, location))

    def test_bad_query_token_is_refused(self):
        now = int(time.time())
        bad = {
            "forged": h.tamper_token(self.token(sub="bob"), sub=OWNER),
            "expired": self.token(iat=now - 100, exp=now - 5),
            "wrong owner": self.token(sub="bob"),
            "empty": "",
            "garbage": "garbage",
        }
        for what, token in bad.items():
            resp = self.send("ide.test", "/p?a=1&sg_token=" + token)
            self.assertUnauthorized(resp, "query token (%s), tool" % what)
            resp = self.send("ide.test", "/p?a=1&sg_token=" + token,
                             headers=[("Sec-Fetch-Mode", "navigate")])
            self.assertLoginRedirect(resp, "http://ide.test/p?a=1",
                                     "query token (%s), browser navigation: return_to "
                                     "without the token" % what)
            self.assertNotIn(token or "@@", resp.header("Location") or "")

    def test_cookie_only_requests_on_keepalive(self):
        token = self.token()
        with h.RawConn(self.port) as c:
            for i in range(5):
                resp = c.roundtrip("GET", "/headers?i=%d" % i, host="ide.test",
                                   headers=[("Cookie", "sg_token=" + token)])
                self.assertEqual(resp.status, 200, "request %d: %r" % (i, resp))
                self.assertEqual(self.origin_cookies(resp.json()), [])

    def test_other_cookies_preserved(self):
        token = self.token()
        t = token
        cases = [
            (["a=1; sg_token=%s; b=2" % t], ["a=1; b=2"]),
            (["sg_token=%s; theme=dark%%20mode; json=\"{\\\"k\\\":1}\"; empty=" % t],
             ["theme=dark%20mode; json=\"{\\\"k\\\":1}\"; empty="]),
            (["sg_token2=abc; my_sg_token=def; sg_token=%s; SG_TOKEN=ghi; x-sg_token=j" % t],
             ["sg_token2=abc; my_sg_token=def; SG_TOKEN=ghi; x-sg_token=j"]),
            (["a=1", "sg_token=%s; b=2" % t, "c=3"], ["a=1", "b=2", "c=3"]),
            (["sg_token=%s" % t, "z=26"], ["z=26"]),
            (["q=\"quoted value\"; sg_token=\"%s\"" % t], ["q=\"quoted value\""]),
            (["sid=AbC/+=="] + ["sg_token=%s" % t], ["sid=AbC/+=="]),
        ]
        for sent, expected in cases:
            resp = self.send("ide.test", "/headers", headers=[("Cookie", v) for v in sent])
            self.assertEqual(resp.status, 200, "Cookie %r: %r" % (sent, resp))
            self.assertEqual(self.origin_cookies(resp.json()), expected,
                             "Cookie fields %r" % sent)
        # A Cookie field without the gateway's cookie is forwarded untouched,
        # even with odd spacing (here the request is authorised by the header).
        resp = self.send("ide.test", "/headers",
                         headers=[("Authorization", "Bearer " + token),
                                  ("Cookie", "x=1;y=2 ;  z=3")])
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(self.origin_cookies(resp.json()), ["x=1;y=2 ;  z=3"])
        # And on the public route.
        resp = self.send("pub.test", "/headers",
                         headers=[("Cookie", "a=1; sg_token=%s; b=2" % t)])
        self.assertEqual(self.origin_cookies(resp.json()), ["a=1; b=2"])

    def test_login_redirect_for_browser_navigation(self):
        navigate = [("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-Dest", "document"),
                    ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")]
        host = "ide.test:%d" % self.port
        resp = self.send(host, "/app/page?x=1&y=%2F", headers=navigate)
        self.assertLoginRedirect(resp, "http://%s/app/page?x=1&y=%%2F" % host,
                                 "browser navigation without a token")
        self.assertEqual(resp.header("Cache-Control"), "no-store")
        self.assertNotIn(b"token", resp.body.lower(), "no hint in the body")

        resp = self.send(host, "/doc", headers=[("Accept", "text/html")])
        self.assertLoginRedirect(resp, "http://%s/doc" % host,
                                 "Accept: text/html without Sec-Fetch-Mode")
        resp = self.send(host, "/doc", headers=navigate, method="HEAD")
        self.assertLoginRedirect(resp, "http://%s/doc" % host, "HEAD navigation")
        resp = self.send("IDE.Test:%d" % self.port, "/Case", headers=navigate)
        self.assertLoginRedirect(resp, "http://%s/Case" % host,
                                 "host lower-cased in return_to, path kept")
        now = int(time.time())
        expired = self.token(iat=now - 100, exp=now - 5)
        resp = self.send(host, "/x", headers=navigate + [("Cookie", "sg_token=" + expired)])
        self.assertLoginRedirect(resp, "http://%s/x" % host, "navigation, expired cookie")
        resp = self.send(host, "/x", headers=navigate + [
            ("Cookie", "sg_token=" + self.token(sub="mallory"))])
        self.assertLoginRedirect(resp, "http://%s/x" % host, "navigation, wrong owner cookie")

        tools = {
            "no Accept": [],
            "Accept: */*": [("Accept", "*/*")],
            "Accept: application/json": [("Accept", "application/json")],
            "fetch() from a page (cors) accepting html": [("Sec-Fetch-Mode", "cors"),
                                                          ("Accept", "text/html")],
            "navigate with a bad bearer header": navigate + [("Authorization",
                                                              "Bearer garbage")],
        }
        for what, headers in tools.items():
            self.assertUnauthorized(self.send(host, "/doc", headers=headers), what)
        for method in ("POST", "PUT", "DELETE"):
            resp = self.send(host, "/doc", headers=navigate, method=method)
            self.assertUnauthorized(resp, "%s with Sec-Fetch-Mode: navigate" % method)

        # curl as a tool, and curl pretending to be a browser.
        proc = self.curl("-D", "-", "-o", "/dev/null", self.url("ide.test", "/doc"))
        out = proc.stdout.decode()
        self.assertTrue(out.startswith("HTTP/1.1 401"), out)
        self.assertIn('WWW-Authenticate: Bearer realm="spacegate"', out)
        proc = self.curl("-H", "Accept: text/html", "-w", "%{http_code} %{redirect_url}",
                         "-o", "/dev/null", self.url("ide.test", "/doc?q=a%20b"))
        self.assertEqual(proc.stdout.decode(), "302 %s?return_to=%s" % (
            LOGIN_URL, percent_encode("http://ide.test:%d/doc?q=a%%20b" % self.port)))

        # A public route never redirects to the login page.
        resp = self.send("pub.test", "/headers", headers=navigate)
        self.assertEqual(resp.status, 200, repr(resp))

    def test_token_not_in_access_log_or_stderr(self):
        good = self.token()
        bad = h.tamper_token(self.token(sub="bob"), sub=OWNER)
        ids = []
        for n, (token, expected) in enumerate([(good, 302), (bad, 401)]):
            rid = "tok-log-%d-%d" % (n, os.getpid())
            ids.append(rid)
            resp = self.send("ide.test", "/logged?sg_token=%s&k=v" % token,
                             headers=[("X-Request-Id", rid)])
            self.assertEqual(resp.status, expected, repr(resp))
        resp = self.send("pub.test", "/logged?sg_token=%s" % good,
                         headers=[("X-Request-Id", "tok-log-pub-%d" % os.getpid())])
        ids.append("tok-log-pub-%d" % os.getpid())

        def logged():
            try:
                with open(self.log_path) as f:
                    text = f.read()
            except OSError:
                return None
            return text if all(i in text for i in ids) else None
        text = h.wait_until(logged, 10)
        self.assertTrue(text, "access log lines for %s did not appear" % ids)
        lines = [l for l in text.splitlines() if any(i in l for i in ids)]
        for token in (good, bad):
            for line in lines:
                if token in line:
                    self.fail("the access log records the token from the query "
                              "(%d of %d lines hold one); e.g.\n%s"
                              % (sum(1 for l in lines if good in l or bad in l), len(lines),
                                 redact(line, [good, bad])))
        for token in (good, bad):
            if token in self.gateway.stderr():
                self.fail("a token in the gateway's stderr")


class DuplicateCredentialsTest(CookieFlowBase):
    """A request may carry the gateway's credential more than once; none of
    the copies may reach the origin."""

    CHECK_ORIGIN_IN_TEARDOWN = False  # each test checks and reports itself

    def assertNothingForwarded(self, host, path, headers, what):
        resp = self.send(host, path, headers)
        self.assertEqual(resp.status, 200, "%s: %r" % (what, resp))
        report = resp.json()
        for token in self.issued:
            if token in json.dumps(report):
                self.fail(redact("%s: the origin got a token.\nsent: GET %s %r\norigin saw: "
                                 "%s, Cookie %r" % (what, path, headers, report["request_line"],
                                                    self.origin_cookies(report)),
                                 self.issued))
        return report

    def test_second_sg_token_query_parameter_on_public_route(self):
        a, b = self.token(), self.token(sub="bob")
        self.assertNothingForwarded("pub.test", "/headers?sg_token=%s&sg_token=%s" % (a, b),
                                    [], "two sg_token parameters on a public route")

    def test_empty_then_real_sg_token_cookie_on_public_route(self):
        t = self.token()
        self.assertNothingForwarded("pub.test", "/headers",
                                    [("Cookie", "sg_token=; sg_token=%s; a=1" % t)],
                                    "an empty sg_token cookie before the real one (public)")

    def test_empty_then_real_sg_token_cookie_with_bearer(self):
        t = self.token()
        other = self.token(sub="carol")
        self.assertNothingForwarded("ide.test", "/headers",
                                    [("Authorization", "Bearer " + t),
                                     ("Cookie", "sg_token=\"\"; sg_token=%s" % other)],
                                    "an empty sg_token cookie before another token, "
                                    "bearer-authorised request")

    def test_two_real_sg_token_cookies(self):
        t, u = self.token(), self.token()
        report = self.assertNothingForwarded(
            "ide.test", "/headers", [("Cookie", "sg_token=%s; a=1; sg_token=%s" % (t, u))],
            "two sg_token cookies in one field")
        self.assertEqual(self.origin_cookies(report), ["a=1"])
        report = self.assertNothingForwarded(
            "ide.test", "/headers", [("Cookie", "sg_token=%s" % t), ("Cookie", "sg_token=%s" % u)],
            "two Cookie fields with an sg_token each")
        self.assertEqual(self.origin_cookies(report), [])


class LoginUrlWithQueryTest(CookieFlowBase):
    LOGIN = "https://login.test/auth?client=spacegate"

    def test_return_to_appended_with_ampersand(self):
        resp = self.send("ide.test", "/w?x=1", headers=[("Sec-Fetch-Mode", "navigate")])
        self.assertLoginRedirect(resp, "http://ide.test/w?x=1", "login_url with a query")


if __name__ == "__main__":
    h.main()
