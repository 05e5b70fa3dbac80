#!/usr/bin/python3
"""Access token keys rotate without a restart. A gateway (two workers) with
a control socket and a state dir starts with key k1 from its config file;
PUT /auth/keys {"keys": [...]} replaces the key ring: k1 -> k1+k2 (both
work, and a k2 token refused a moment before works at once) -> k2 (k1
tokens refused, also on a keep-alive connection that a k1 token opened) ->
no keys at all (every token refused, public routes unaffected), all with the
same process. GET /auth/keys shows the ring. A bad body is a 400 naming the
field (`keys[1].kid`, `keys[0].public_key`, ...) and changes nothing, in
memory or on disk. The ring is written to state_dir/keys.json (0600) and a
restarted gateway uses it rather than its config file's keys.
`spacegatectl keys apply -f A.pub -f B.pub` and `keys list` (table and
--json) drive the same API; a bad file is exit 2 with FILE:1, an API refusal
exit 1 naming the field. Bad `auth.public_keys` entries in the config file
are refused at start naming the entry."""

import json
import os
import stat
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GS = "gs1"
OWNER = "alice"


class KeyRotationTest(h.ControlGatewayTestCase):
    STATE_DIR = True
    WORKERS = 2

    @classmethod
    def extra_setup(cls):
        cls.keydir = tempfile.mkdtemp(prefix="spacegate-keys-", dir=cls.tmpdir)
        cls.k1 = h.TokenKey(cls.keydir, "k1")
        cls.k2 = h.TokenKey(cls.keydir, "k2")
        cls.k1_other = h.TokenKey(cls.keydir, "k1", name="k1-other")  # same kid, other key

    @classmethod
    def config_routes(cls):
        return [
            h.route("ide", "ide.test", cls.origin.address, gitspace=GS, owner=OWNER,
                    access="owner"),
            h.route("pub", "pub.test", cls.origin.address, access="public"),
        ]

    @classmethod
    def make_config(cls):
        config = super().make_config()
        config["auth"] = h.auth_section(files=[cls.k1])
        return config

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.CTL_BINARY):
            raise unittest.SkipTest("spacegatectl binary not found: %s" % h.CTL_BINARY)
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.t1 = self.k1.sign(OWNER, GS, scopes=["ide"])
        self.t2 = self.k2.sign(OWNER, GS, scopes=["ide"])

    # -- helpers ---------------------------------------------------------------

    @property
    def keys_path(self):
        return os.path.join(self.state_dir, "keys.json")

    def put_keys(self, keys):
        resp = self.api.put("/auth/keys", {"keys": [k.entry() for k in keys]})
        self.assertEqual(resp.status, 200, "PUT /auth/keys: %r" % resp)
        return resp.json()

    def get_keys(self):
        resp = self.api.get("/auth/keys")
        self.assertEqual(resp.status, 200, "GET /auth/keys: %r" % resp)
        return resp.json()

    def expected(self, keys):
        return {"keys": sorted([k.entry() for k in keys], key=lambda e: e["kid"])}

    def assertRing(self, keys, what):
        got = self.get_keys()
        self.assertEqual(sorted(got["keys"], key=lambda e: e["kid"]),
                         self.expected(keys)["keys"], "GET /auth/keys %s" % what)

    def status(self, token, host="ide.test", cookie=False):
        fields = [("Connection", "close")]
        if token:
            fields.append(("Cookie", "sg_token=" + token) if cookie
                          else ("Authorization", "Bearer " + token))
        with h.RawConn(self.port) as c:
            return c.roundtrip("GET", "/headers", host=host, headers=fields).status

    def assertWorks(self, token, what, tries=6):
        # Fresh connections, so that both workers are likely asked.
        got = [self.status(token, cookie=bool(i % 2)) for i in range(tries)]
        self.assertEqual(got, [200] * tries, "%s: statuses %r%s"
                         % (what, got, self.gateway_context()))

    def assertRefused(self, token, what, tries=6):
        got = [self.status(token, cookie=bool(i % 2)) for i in range(tries)]
        self.assertEqual(got, [401] * tries, "%s: statuses %r" % (what, got))

    def wait_api(self):
        def answers():
            try:
                return self.api.get("/healthz", timeout=2).status == 200
            except OSError:
                return False
        self.assertTrue(h.wait_until(answers, 10), "the control API does not answer"
                        + self.gateway_context())

    def restart(self):
        self.assertEqual(self.gateway.stop(), 0, "SIGTERM exit code\n" +
                         h.tail(self.gateway.stderr()))
        self.gateway.start()
        self.wait_api()

    def ctl(self, *args):
        return h.run_ctl(list(args), socket_path=self.control_socket)

    # -- tests -----------------------------------------------------------------

    def test_rotation_without_restart(self):
        pid = self.gateway.pid
        self.put_keys([self.k1])
        self.assertRing([self.k1], "after PUT [k1]")
        self.assertWorks(self.t1, "k1 token, ring [k1]")
        self.assertRefused(self.t2, "k2 token, ring [k1]")

        body = self.put_keys([self.k1, self.k2])
        self.assertEqual(sorted(body["keys"], key=lambda e: e["kid"]),
                         self.expected([self.k1, self.k2])["keys"], "the PUT's reply")
        self.assertWorks(self.t1, "k1 token, ring [k1, k2]")
        self.assertWorks(self.t2, "k2 token refused a moment ago, ring [k1, k2]")

        with h.RawConn(self.port) as keep:
            resp = keep.roundtrip("GET", "/headers", host="ide.test",
                                  headers=[("Authorization", "Bearer " + self.t1)])
            self.assertEqual(resp.status, 200, "k1 token on a keep-alive connection")

            self.put_keys([self.k2])
            self.assertRing([self.k2], "after PUT [k2]")
            self.assertRefused(self.t1, "k1 token, ring [k2]")
            self.assertWorks(self.t2, "k2 token, ring [k2]")
            resp = keep.roundtrip("GET", "/headers", host="ide.test",
                                  headers=[("Authorization", "Bearer " + self.t1)])
            self.assertEqual(resp.status, 401,
                             "k1 token again on the keep-alive connection it opened, after "
                             "k1 was removed: %r" % resp)
        resp = self.api.get("/healthz")
        self.assertEqual(resp.status, 200)
        # A link with a retired key is no longer exchanged for a cookie.
        with h.RawConn(self.port) as c:
            resp = c.roundtrip("GET", "/p?sg_token=" + self.t1, host="ide.test")
        self.assertEqual(resp.status, 401, "?sg_token with a retired key: %r" % resp)

        self.put_keys([self.k2, self.k1])
        self.assertWorks(self.t1, "k1 token back")
        self.assertEqual(self.gateway.pid, pid, "the gateway was restarted")
        self.assertTrue(self.gateway.alive())

    def test_empty_ring_refuses_every_token(self):
        self.put_keys([])
        self.assertRing([], "after PUT []")
        self.assertRefused(self.t1, "k1 token, no keys")
        self.assertRefused(self.t2, "k2 token, no keys")
        self.assertEqual(self.status(None, host="pub.test"), 200, "a public route needs no key")
        self.put_keys([self.k1])
        self.assertWorks(self.t1, "k1 token after keys are back")

    def test_same_kid_other_key_replaces(self):
        self.put_keys([self.k1])
        forged_kid = self.k1_other.sign(OWNER, GS, scopes=["ide"])
        self.assertRefused(forged_kid, "a token of another key under kid k1")
        self.put_keys([self.k1_other])
        self.assertWorks(forged_kid, "the new k1 key's token")
        self.assertRefused(self.t1, "the old k1 key's token, its kid now names another key")
        self.put_keys([self.k1])

    def test_bad_key_bodies_refused(self):
        self.put_keys([self.k1, self.k2])
        with open(self.keys_path, "rb") as f:
            on_disk = f.read()
        good = self.k1.public_key
        raw = h.b64url_decode(good)
        import base64
        k1, k2 = self.k1.entry(), self.k2.entry()
        cases = [
            ({}, "keys"),
            ({"keys": "k1"}, "keys"),
            ({"keys": {"kid": "k1", "public_key": good}}, "keys"),
            ({"keys": [k1, "k2"]}, "keys[1]"),
            ({"keys": [{"kid": "k3"}]}, "keys[0].public_key"),
            ({"keys": [{"public_key": good}]}, "keys[0].kid"),
            ({"keys": [{"kid": "", "public_key": good}]}, "keys[0].kid"),
            ({"keys": [{"kid": "k" * 65, "public_key": good}]}, "keys[0].kid"),
            ({"keys": [{"kid": 7, "public_key": good}]}, "keys[0].kid"),
            ({"keys": [k2, {"kid": "k3", "public_key": good[:-2]}]}, "keys[1].public_key"),
            ({"keys": [{"kid": "k3", "public_key": h.b64url_encode(raw + b"x")}]},
             "keys[0].public_key"),
            ({"keys": [{"kid": "k3", "public_key": base64.b64encode(raw).decode()}]},
             "keys[0].public_key"),
            ({"keys": [{"kid": "k3", "public_key": raw.hex()}]}, "keys[0].public_key"),
            ({"keys": [{"kid": "k3", "public_key": None}]}, "keys[0].public_key"),
            ({"keys": [k1, dict(k2, kid="k1")]}, "keys[1].kid"),
            ({"keys": [dict(k1, private_key=self.k1.private["private_key"])]},
             "keys[0].private_key"),
            ({"keys": [k1], "extra": 1}, "extra"),
            ({"keys": [{"kid": "k%d" % i, "public_key": good} for i in range(65)]}, "keys"),
        ]
        for body, field in cases:
            resp = self.api.put("/auth/keys", body)
            short = json.dumps(body)[:120]
            self.assertEqual(resp.status, 400, "PUT /auth/keys %s: %r" % (short, resp))
            reply = resp.json()
            self.assertEqual(reply.get("field"), field, "field named for %s: %r"
                             % (short, reply))
            self.assertTrue(reply.get("error"), "a reason for %s" % short)
            self.assertRing([self.k1, self.k2], "after the refused %s" % short)
        for raw_body in (b"not json", b"[]", b'{"keys": [', b""):
            resp = self.api.put("/auth/keys", raw_body)
            self.assertEqual(resp.status, 400, "PUT /auth/keys %r: %r" % (raw_body, resp))
            self.assertRing([self.k1, self.k2], "after the refused %r" % raw_body)
        resp = self.api.post("/auth/keys", {"keys": [k1]})
        self.assertEqual(resp.status, 405, "POST /auth/keys: %r" % resp)
        with open(self.keys_path, "rb") as f:
            self.assertEqual(f.read(), on_disk, "keys.json changed by refused writes")
        self.assertWorks(self.t1, "k1 token after the refused writes")
        self.assertWorks(self.t2, "k2 token after the refused writes")

    def test_keys_persisted_across_restart(self):
        self.put_keys([self.k2])
        st = os.stat(self.keys_path)
        self.assertEqual(stat.S_IMODE(st.st_mode) & 0o077, 0,
                         "keys.json mode %o is readable by others" % stat.S_IMODE(st.st_mode))
        with open(self.keys_path) as f:
            saved = json.load(f)
        self.assertEqual(sorted(saved["keys"], key=lambda e: e["kid"]),
                         self.expected([self.k2])["keys"], "keys.json holds the ring")
        self.restart()
        self.assertRing([self.k2], "after a restart (the config file names k1 only)")
        self.assertRefused(self.t1, "k1 token after the restart")
        self.assertWorks(self.t2, "k2 token after the restart")

        self.put_keys([self.k1, self.k2])
        self.gateway.kill()  # kill -9: the last accepted ring is on disk already
        self.gateway.start()
        self.wait_api()
        self.assertRing([self.k1, self.k2], "after kill -9 and a restart")
        self.assertWorks(self.t1, "k1 token after kill -9")
        self.assertWorks(self.t2, "k2 token after kill -9")

    def test_spacegatectl_keys_apply_and_list(self):
        proc = self.ctl("keys", "apply", "-f", self.k1.pub_path, "-f", self.k2.pub_path)
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertIn("applied: 2 keys", proc.stdout)
        self.assertWorks(self.t1, "k1 token after keys apply k1 k2")
        self.assertWorks(self.t2, "k2 token after keys apply k1 k2")

        proc = self.ctl("keys", "list")
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
        self.assertEqual(rows[0], ["KID", "PUBLIC_KEY"], proc.stdout)
        self.assertEqual(sorted(rows[1:]), [["k1", self.k1.public_key],
                                            ["k2", self.k2.public_key]], proc.stdout)
        proc = self.ctl("--json", "keys", "list")
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertEqual(sorted(json.loads(proc.stdout)["keys"], key=lambda e: e["kid"]),
                         self.expected([self.k1, self.k2])["keys"])

        proc = self.ctl("keys", "apply", "-f", self.k2.pub_path)
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertIn("applied: 1 keys", proc.stdout)
        self.assertRefused(self.t1, "k1 token after keys apply k2")
        self.assertWorks(self.t2, "k2 token after keys apply k2")

        # A bad file is refused before anything is sent: exit 2, FILE:1.
        bad = os.path.join(self.keydir, "bad.pub")
        with open(bad, "w") as f:
            f.write('{"kid": "k3", "public_key": "tooshort"}\n')
        proc = self.ctl("keys", "apply", "-f", self.k1.pub_path, "-f", bad)
        self.assertEqual(proc.returncode, 2, h.describe_run(proc))
        self.assertIn(bad + ":1:", proc.stderr, h.describe_run(proc))
        missing = os.path.join(self.keydir, "missing.pub")
        proc = self.ctl("keys", "apply", "-f", missing)
        self.assertEqual(proc.returncode, 2, h.describe_run(proc))
        self.assertIn(missing, proc.stderr)
        # The API refuses a duplicate kid: exit 1 naming the field.
        proc = self.ctl("keys", "apply", "-f", self.k1.pub_path, "-f", self.k1_other.pub_path)
        self.assertEqual(proc.returncode, 1, h.describe_run(proc))
        self.assertIn("keys[1].kid", proc.stderr, h.describe_run(proc))
        self.assertRing([self.k2], "after the refused applies")
        self.assertWorks(self.t2, "k2 token after the refused applies")
        # A private key file is not a public key file... but it holds the
        # public key too; only kid and public_key are sent.
        proc = self.ctl("keys", "apply", "-f", self.k1.key_path)
        if proc.returncode == 0:
            self.assertRing([self.k1], "after keys apply -f k1.key")
        self.assertNotIn(self.k1.private["private_key"], json.dumps(self.get_keys()))
        with open(self.keys_path) as f:
            self.assertNotIn(self.k1.private["private_key"], f.read(),
                             "a private key was written to keys.json")
        self.put_keys([self.k1])

        proc = h.run_ctl(["keys", "list"], socket_path=os.path.join(self.tmpdir, "nope.sock"))
        self.assertEqual(proc.returncode, 3, h.describe_run(proc))


class AuthConfigErrorsTest(unittest.TestCase):
    """Bad `auth:` sections are refused at start (exit 2) naming the entry."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.BINARY) or not os.path.exists(h.CTL_BINARY):
            raise unittest.SkipTest("binaries not found")
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        cls.k1 = h.TokenKey(cls.tmpdir, "k1")
        cls.k2 = h.TokenKey(cls.tmpdir, "k2")

    @classmethod
    def tearDownClass(cls):
        if not h.KEEP_TMP:
            import shutil
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def check(self, auth, field):
        path = os.path.join(self.tmpdir, "config.yaml")
        config = h.base_config(h.free_port(), [], auth=auth)
        with open(path, "w") as f:
            json.dump(config, f)
        proc = h.run_gateway_once(path, ["--check"])
        self.assertEqual(proc.returncode, 2, "auth %s\n%s" % (json.dumps(auth)[:200],
                                                              h.describe_run(proc)))
        self.assertIn(field, proc.stderr, h.describe_run(proc))
        return proc

    def test_bad_auth_sections(self):
        good = self.k1.entry()
        self.check({"public_keys": [good, {"kid": "k2", "public_key": "short"}]},
                   "auth.public_keys[1].public_key")
        self.check({"public_keys": [good, dict(self.k2.entry(), kid="k1")]},
                   "auth.public_keys[1].kid")
        self.check({"public_keys": [{"file": self.k1.pub_path}, good]},
                   "auth.public_keys[1].kid")
        self.check({"public_keys": [{"file": os.path.join(self.tmpdir, "missing.pub")}]},
                   "auth.public_keys[0].file")
        self.check({"public_keys": "k1"}, "auth.public_keys")
        self.check({"public_keys": [good], "login_url": "login.test"}, "auth.login_url")
        self.check({"public_keys": [good], "cookie_name": "bad name"}, "auth.cookie_name")
        self.check({"public_keys": [good], "secret": "x"}, "auth.secret")

    def test_good_auth_section_passes_check(self):
        path = os.path.join(self.tmpdir, "good.yaml")
        config = h.base_config(h.free_port(), [], auth=h.auth_section(
            keys=[self.k2], files=[self.k1], login_url="https://login.test/x",
            cookie_name="sg_token"))
        with open(path, "w") as f:
            json.dump(config, f)
        proc = h.run_gateway_once(path, ["--check"])
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))


if __name__ == "__main__":
    h.main()
