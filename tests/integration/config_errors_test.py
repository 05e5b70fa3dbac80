#!/usr/bin/python3
"""Configuration: bad files are refused at start and by --check with exit
code 2 and a message 'FILE:LINE: key.path: reason'; good files (JSON and
real YAML) start; command-line flags override the file."""

import json
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


UNKNOWN = r"unknown|not allowed|unexpected|unrecogni[sz]ed|invalid key|no such"


def line_of(text, needle, occurrence=1):
    """1-based line number of the n-th line containing needle."""
    n = 0
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            n += 1
            if n == occurrence:
                return i
    raise AssertionError("%r not in config text" % needle)


class ConfigTestBase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        cls.origin = h.Origin("origin")

    @classmethod
    def tearDownClass(cls):
        cls.origin.stop()

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        self.port = h.free_port()

    def tearDown(self):
        if not h.KEEP_TMP:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def good_config(self):
        return h.base_config(self.port, [h.route("r1", "app.test", self.origin.address)])

    def write(self, text, name="config.yaml"):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def write_json(self, config):
        return self.write(json.dumps(config, indent=2) + "\n")


class BadConfigTest(ConfigTestBase):

    def assert_refused(self, path, key_path, needle=None, occurrence=1, reason_hint=None):
        text = open(path).read()
        for args, how in (((), "start"), (("--check",), "--check")):
            r = h.run_gateway_once(path, args, timeout=10)
            self.assertEqual(r.returncode, 2,
                             "%s with a bad config (%s): exit code %r, expected 2; "
                             "stderr: %r" % (how, key_path, r.returncode, r.stderr[-1500:]))
            self.assertTrue(h.port_refuses(self.port),
                            "%s: the gateway listened despite the bad config" % how)
            pattern = r"%s:(\d+): %s: (.+)" % (re.escape(path), re.escape(key_path))
            m = re.search(pattern, r.stderr)
            self.assertIsNotNone(m, "%s: stderr should contain a line like "
                                 "'%s:LINE: %s: reason'; got:\n%s"
                                 % (how, path, key_path, r.stderr[-1500:]))
            if needle is not None:
                expected_line = line_of(text, needle, occurrence)
                self.assertEqual(int(m.group(1)), expected_line,
                                 "%s: the message names line %s, but %r is on line %d"
                                 % (how, m.group(1), needle, expected_line))
            self.assertTrue(m.group(2).strip(), "empty reason")
            if reason_hint:
                self.assertRegex(m.group(2).lower(), reason_hint)

    def test_unknown_top_level_key(self):
        c = self.good_config()
        c["listen_addr"] = "127.0.0.1:1"
        self.assert_refused(self.write_json(c), "listen_addr", '"listen_addr"',
                            reason_hint=UNKNOWN)

    def test_unknown_route_key(self):
        c = self.good_config()
        c["routes"][0]["upstreem"] = "127.0.0.1:1"
        self.assert_refused(self.write_json(c), "routes[0].upstreem", '"upstreem"',
                            reason_hint=UNKNOWN)

    def test_unknown_limits_key(self):
        c = self.good_config()
        c["limits"] = {"header_read_timout": "1s"}
        self.assert_refused(self.write_json(c), "limits.header_read_timout",
                            '"header_read_timout"')

    def test_bad_upstream(self):
        for bad in ["not-a-host", "127.0.0.1:", "127.0.0.1:99999", "unix:", "http://x:80"]:
            with self.subTest(upstream=bad):
                c = self.good_config()
                c["routes"].append(h.route("r2", "two.test", bad))
                self.assert_refused(self.write_json(c), "routes[1].upstream",
                                    json.dumps(bad))

    def test_duplicate_route_id(self):
        c = self.good_config()
        c["routes"].append(h.route("r1", "other.test", self.origin.address))
        self.assert_refused(self.write_json(c), "routes[1].id", '"id": "r1"',
                            occurrence=2, reason_hint=r"duplicate|already|unique|twice")

    def test_bad_route_id(self):
        c = self.good_config()
        c["routes"][0]["id"] = "Bad ID!"
        self.assert_refused(self.write_json(c), "routes[0].id", '"Bad ID!"')

    def test_bad_duration(self):
        for bad in ["ten seconds", "10", "10 parsecs", "-5s", ""]:
            with self.subTest(duration=bad):
                c = self.good_config()
                c["limits"] = {"header_read_timeout": bad}
                self.assert_refused(self.write_json(c), "limits.header_read_timeout",
                                    '"header_read_timeout"')

    def test_bad_size(self):
        c = self.good_config()
        c["limits"] = {"header_block_size": "lots"}
        self.assert_refused(self.write_json(c), "limits.header_block_size",
                            '"header_block_size"')

    def test_bad_protocol(self):
        c = self.good_config()
        c["routes"][0]["protocol"] = "http3"
        self.assert_refused(self.write_json(c), "routes[0].protocol", '"http3"')

    def test_bad_workers(self):
        c = self.good_config()
        c["workers"] = "many"
        self.assert_refused(self.write_json(c), "workers", '"workers"')

    def test_bad_listen(self):
        c = self.good_config()
        c["listen"] = ["127.0.0.1:99999"]
        self.assert_refused(self.write_json(c), "listen[0]", "99999")

    def test_route_missing_upstream(self):
        c = self.good_config()
        del c["routes"][0]["upstream"]
        path = self.write_json(c)
        r = h.run_gateway_once(path, ("--check",))
        self.assertEqual(r.returncode, 2, "route without upstream: %r" % r.stderr)
        self.assertIn(path, r.stderr)
        self.assertIn("routes[0]", r.stderr)

    def test_yaml_error_line_number(self):
        text = ("listen:\n"
                "  - \"127.0.0.1:%d\"\n"
                "workers: 1\n"
                "access_log: \"off\"\n"
                "limits:\n"
                "  header_block_size: 65536\n"
                "  header_read_timeout: 10 parsecs\n"
                "routes:\n"
                "  - id: r1\n"
                "    host: app.test\n"
                "    upstream: %s\n" % (self.port, self.origin.address))
        path = self.write(text)
        self.assert_refused(path, "limits.header_read_timeout", "10 parsecs")

    def test_yaml_syntax_error(self):
        path = self.write("listen: [\"127.0.0.1:%d\"\nroutes: {{{\n" % self.port)
        r = h.run_gateway_once(path)
        self.assertEqual(r.returncode, 2, "unparsable YAML: exit %r, stderr %r"
                         % (r.returncode, r.stderr))
        self.assertIn(path, r.stderr, "message should name the file")

    def test_missing_file(self):
        path = os.path.join(self.tmpdir, "does-not-exist.yaml")
        r = h.run_gateway_once(path)
        self.assertEqual(r.returncode, 2, "missing config file: exit %r, stderr %r"
                         % (r.returncode, r.stderr))
        self.assertIn(path, r.stderr, "message should name the file")


class GoodConfigTest(ConfigTestBase):

    def test_check_accepts_good_config_without_listening(self):
        path = self.write_json(self.good_config())
        r = h.run_gateway_once(path, ("--check",))
        self.assertEqual(r.returncode, 0, "--check on a good config: %r" % r.stderr)
        self.assertTrue(h.port_refuses(self.port), "--check must not start serving")

    def test_real_yaml_config(self):
        text = ("# a hand-written YAML config\n"
                "listen:\n"
                "  - \"127.0.0.1:%d\"\n"
                "workers: 1\n"
                "access_log: \"off\"\n"
                "limits:\n"
                "  header_read_timeout: 10s\n"
                "  upstream_response_timeout: 1m\n"
                "  request_body_size: 0\n"
                "upstream_pool:\n"
                "  idle_connections: 4\n"
                "  idle_timeout: 500ms\n"
                "routes:\n"
                "  - id: yaml-route\n"
                "    host: app.test\n"
                "    path_prefix: /\n"
                "    upstream: %s\n"
                "    protocol: http1\n" % (self.port, self.origin.address))
        path = self.write(text)
        r = h.run_gateway_once(path, ("--check",))
        self.assertEqual(r.returncode, 0, "--check on a YAML config: %r" % r.stderr)
        gw = h.Gateway({}, tmpdir=self.tmpdir, port=self.port)
        gw.write_config = lambda: None  # keep the YAML text
        gw.config_path = path
        try:
            gw.start()
            status, _, body = h.http_get(self.port, "/headers")
            self.assertEqual(status, 200, "request through a YAML-configured gateway")
        finally:
            gw.stop()

    def test_listen_flag_overrides_file(self):
        other = h.free_port()
        gw = h.Gateway(self.good_config(), tmpdir=self.tmpdir, port=other,
                       extra_args=["--listen", "127.0.0.1:%d" % other])
        try:
            gw.start()
            status, _, _ = h.http_get(other, "/headers")
            self.assertEqual(status, 200, "request on the --listen port")
            self.assertTrue(h.port_refuses(self.port),
                            "the file's listen address is still served although "
                            "--listen was given")
        finally:
            self.assertEqual(gw.stop(), 0, "exit code after SIGTERM")

    def test_two_listen_addresses(self):
        other = h.free_port()
        c = self.good_config()
        c["listen"].append("127.0.0.1:%d" % other)
        gw = h.Gateway(c, tmpdir=self.tmpdir)
        try:
            gw.start()
            for port in (self.port, other):
                status, _, _ = h.http_get(port, "/headers")
                self.assertEqual(status, 200, "request on listen port %d" % port)
        finally:
            self.assertEqual(gw.stop(), 0)

    def test_workers_flag(self):
        gw = h.Gateway(self.good_config(), tmpdir=self.tmpdir,
                       extra_args=["--workers", "2"])
        try:
            gw.start()
            for i in range(20):
                status, _, _ = h.http_get(self.port, "/headers?w=%d" % i)
                self.assertEqual(status, 200)
        finally:
            self.assertEqual(gw.stop(), 0)


if __name__ == "__main__":
    h.main()
