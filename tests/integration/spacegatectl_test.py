#!/usr/bin/python3
"""spacegatectl against a real gateway: routes apply (YAML list form,
{"routes": ...} form, JSON, --replace, a file with its own version), list
(an aligned table), get, delete, --json output, stats, activity, drain; over
the unix socket and over TCP with --url/--token-file. Error output and exit
codes: a bad file is refused locally (exit 2, "FILE:LINE: field: reason"),
an API refusal exits 1 naming the field (and, for apply, the file and line),
an unreachable gateway exits 3, usage errors exit 2."""

import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TOKEN = "cli-test-token-0123456789abcdef"


def line_of(text, needle, occurrence=1):
    """1-based number of the line holding the n-th occurrence of needle."""
    n = 0
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            n += 1
            if n == occurrence:
                return i
    raise AssertionError("%r not in %r" % (needle, text))


class SpacegatectlTest(h.ControlGatewayTestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.CTL_BINARY):
            raise unittest.SkipTest("spacegatectl binary not found: %s" % h.CTL_BINARY)
        super().setUpClass()

    @classmethod
    def make_config(cls):
        cls.tcp_port = h.free_port()
        cls.token_file = os.path.join(cls.tmpdir, "token")
        with open(cls.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(cls.token_file, 0o600)
        cls.CONTROL = {"address": "%s:%d" % (h.LOOPBACK, cls.tcp_port),
                       "token_file": cls.token_file}
        return super().make_config()

    # -- helpers ---------------------------------------------------------------

    def setUp(self):
        super().setUp()
        self.api.must(self.api.put_routes([]), "clearing the table")

    def ctl(self, *args, socket=True):
        return h.run_ctl(list(args), socket_path=self.control_socket if socket else None)

    def ok(self, *args, **kw):
        proc = self.ctl(*args, **kw)
        self.assertEqual(proc.returncode, 0, "expected exit 0\n" + h.describe_run(proc))
        return proc

    def refused(self, code, *args, **kw):
        proc = self.ctl(*args, **kw)
        self.assertEqual(proc.returncode, code, "expected exit %d\n%s" % (code, h.describe_run(proc)))
        self.assertTrue(proc.stderr.strip(), "no message on stderr\n" + h.describe_run(proc))
        return proc

    def write(self, name, text):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def list_yaml(self):
        port = self.origin.port
        return ("# routes for the spacegatectl test\n"
                "- id: cli-a\n"
                "  host: cli-a.test\n"
                "  upstream: 127.0.0.1:%d\n"
                "  access: public\n"
                "- id: cli-b\n"
                "  host: gateway.test\n"
                "  path_prefix: /gs/cli-b\n"
                "  strip_prefix: true\n"
                "  upstream: 127.0.0.1:%d\n"
                "  gitspace: gs-cli\n"
                "  access: public\n" % (port, port))

    def ids(self):
        return sorted(r["id"] for r in self.api.routes()["routes"])

    def tcp_args(self, token_file=None):
        return ["--url", "http://%s:%d" % (h.LOOPBACK, self.tcp_port),
                "--token-file", token_file or self.token_file]

    # -- apply -----------------------------------------------------------------

    def test_apply_yaml_list_form(self):
        version = self.api.version()
        path = self.write("list.yaml", self.list_yaml())
        proc = self.ok("routes", "apply", "-f", path)
        self.assertIn("version %d" % (version + 1), proc.stdout, proc.stdout)
        self.assertIn("2 routes", proc.stdout)
        self.assertEqual(self.ids(), ["cli-a", "cli-b"])
        self.assertEqual(self.api.version(), version + 1)
        status, _, _ = h.http_get(self.port, "/headers", "cli-a.test")
        self.assertEqual(status, 200)
        status, headers, _ = h.http_get(self.port, "/gs/cli-b/inner", "gateway.test")
        self.assertEqual((status, dict(headers).get("X-Origin-Path")), (200, "/inner"))

    def test_apply_routes_object_form_and_json_upsert(self):
        port = self.origin.port
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        obj = ("routes:\n"
               "  - id: cli-c\n"
               "    host: cli-c.test\n"
               "    upstream: 127.0.0.1:%d\n" % port)
        self.ok("routes", "apply", "-f", self.write("object.yaml", obj))
        self.assertEqual(self.ids(), ["cli-a", "cli-b", "cli-c"],
                         "apply without --replace should upsert, keeping the others")
        as_json = json.dumps({"routes": [{"id": "cli-d", "host": "cli-d.test",
                                          "upstream": "127.0.0.1:%d" % port}]})
        self.ok("routes", "apply", "-f", self.write("routes.json", as_json))
        self.assertEqual(self.ids(), ["cli-a", "cli-b", "cli-c", "cli-d"])
        # Upserting changes an existing route.
        changed = self.list_yaml().replace("host: cli-a.test", "host: cli-a2.test")
        self.ok("routes", "apply", "-f", self.write("changed.yaml", changed))
        table = {r["id"]: r for r in self.api.routes()["routes"]}
        self.assertEqual(table["cli-a"]["host"], "cli-a2.test")

    def test_apply_replace(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        only = ("- id: only\n  host: only.test\n  upstream: 127.0.0.1:%d\n" % self.origin.port)
        proc = self.ok("routes", "apply", "-f", self.write("only.yaml", only), "--replace")
        self.assertIn("1 routes", proc.stdout)
        self.assertEqual(self.ids(), ["only"], "--replace should leave only the file's routes")

    def test_apply_file_with_its_own_version(self):
        v = self.api.version() + 7
        text = ("version: %d\nroutes:\n  - id: fixed\n    host: fixed.test\n"
                "    upstream: 127.0.0.1:%d\n" % (v, self.origin.port))
        path = self.write("versioned.yaml", text)
        self.ok("routes", "apply", "-f", path)
        self.assertEqual(self.api.version(), v)
        self.assertEqual(self.ids(), ["fixed"])
        proc = self.refused(1, "routes", "apply", "-f", path)
        self.assertIn("version", proc.stderr, "a replayed versioned file: " + proc.stderr)
        self.assertIn("409", proc.stderr)

    # -- list, get, delete -------------------------------------------------------

    def test_list_is_an_aligned_table(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        proc = self.ok("routes", "list")
        lines = [l for l in proc.stdout.splitlines() if l.strip()]
        header = lines[0]
        columns = ["ID", "HOST", "PATH_PREFIX", "UPSTREAM", "ACCESS", "GITSPACE"]
        self.assertEqual(header.split(), columns, "header: %r" % header)
        starts = [header.index(c) for c in columns]
        table = {r["id"]: r for r in self.api.routes()["routes"]}
        rows = lines[1:-1]
        self.assertEqual(len(rows), 2, proc.stdout)
        for row in rows:
            route = table[row.split()[0]]
            expected = [route["id"], route["host"], route["path_prefix"], route["upstream"],
                        route["access"], route.get("gitspace", "-")]
            for column, start, value in zip(columns, starts, expected):
                self.assertEqual(row[start:].split()[0] if len(row) > start else None, value,
                                 "column %s not aligned in row %r\n%s" % (column, row, proc.stdout))
                if start:
                    self.assertEqual(row[start - 1], " ", "column %s not aligned: %r" % (column, row))
        self.assertRegex(lines[-1], r"^version %d, 2 routes$" % self.api.version())

    def test_list_json(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        proc = self.ok("--json", "routes", "list")
        self.assertEqual(json.loads(proc.stdout), self.api.routes())

    def test_get(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        proc = self.ok("routes", "get", "cli-b")
        fields = {}
        value_columns = set()
        for line in proc.stdout.splitlines():
            m = re.match(r"^(\S+):(\s+)(.*)$", line)
            self.assertTrue(m, "unexpected line %r in\n%s" % (line, proc.stdout))
            fields[m.group(1)] = m.group(3)
            value_columns.add(len(m.group(1)) + 1 + len(m.group(2)))
        self.assertEqual(len(value_columns), 1, "values not aligned:\n" + proc.stdout)
        self.assertEqual(fields.get("id"), "cli-b")
        self.assertEqual(fields.get("host"), "gateway.test")
        self.assertEqual(fields.get("path_prefix"), "/gs/cli-b")
        self.assertEqual(fields.get("upstream"), "127.0.0.1:%d" % self.origin.port)
        self.assertEqual(fields.get("gitspace"), "gs-cli")
        proc = self.ok("--json", "routes", "get", "cli-b")
        self.assertEqual(json.loads(proc.stdout), self.api.get("/routes/cli-b").json())

    def test_delete(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        version = self.api.version()
        self.ok("routes", "delete", "cli-a", "cli-b")
        self.assertEqual(self.ids(), [])
        self.assertEqual(self.api.version(), version + 1, "delete of two ids should be one write")
        status, _, _ = h.http_get(self.port, "/", "cli-a.test")
        self.assertEqual(status, 404)

    # -- stats, activity, drain ---------------------------------------------------

    def test_stats(self):
        proc = self.ok("stats")
        rows = {}
        for line in proc.stdout.splitlines():
            m = re.match(r"^(.*?)\s{2,}(\S+)$", line)
            if m:
                rows[m.group(1).strip()] = m.group(2)
        self.assertEqual(rows.get("route table version"), str(self.api.version()), proc.stdout)
        self.assertIn("control writes accepted", rows, proc.stdout)
        proc = self.ok("--json", "stats")
        stats = json.loads(proc.stdout)
        self.assertEqual(stats["route_table"]["version"], self.api.version())
        self.assertIn("totals", stats)

    def test_activity_shows_bytes_after_traffic(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        for i in range(3):
            status, _, _ = h.http_get(self.port, "/gs/cli-b/bytes/1000", "gateway.test")
            self.assertEqual(status, 200)

        def row():
            proc = self.ok("activity")
            lines = proc.stdout.splitlines()
            self.assertEqual(lines[0].split(), ["GITSPACE", "LAST_ACTIVITY", "BYTES_IN",
                                                "BYTES_OUT", "OPEN", "TUNNELS"], proc.stdout)
            for line in lines[1:]:
                parts = line.split()
                if parts and parts[0] == "gs-cli":
                    return parts
            return None
        parts = h.wait_until(lambda: (lambda r: r if r and int(r[3]) >= 3000 else None)(row()), 10)
        self.assertTrue(parts, "no gs-cli row with the bytes sent: %r" % (row(),))
        self.assertNotEqual(parts[1], "-", "LAST_ACTIVITY empty after traffic")
        self.assertRegex(parts[1], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertGreater(int(parts[2]), 0, "BYTES_IN")
        self.assertGreaterEqual(int(parts[3]), 3000, "BYTES_OUT")
        proc = self.ok("--json", "activity")
        data = json.loads(proc.stdout)
        entry = [g for g in data["gitspaces"] if g["gitspace"] == "gs-cli"][0]
        self.assertEqual(entry["routes"], ["cli-b"])
        self.assertGreaterEqual(entry["bytes_out"], 3000)

    def test_drain(self):
        # Its own gateway: draining is one-way.
        run_dir = os.path.join(self.tmpdir, "drain")
        os.mkdir(run_dir)
        socket_path = os.path.join(run_dir, "control.sock")
        gw = h.Gateway(h.control_config(h.free_port(), [], socket_path=socket_path),
                       tmpdir=run_dir)
        try:
            gw.start()
            self.assertTrue(h.wait_for_socket(socket_path))
            api = h.ControlClient(socket_path)
            self.assertEqual(api.get("/healthz").status, 200)
            proc = h.run_ctl(["drain"], socket_path=socket_path)
            self.assertEqual(proc.returncode, 0, h.describe_run(proc))
            self.assertIn("draining", proc.stdout)
            resp = api.get("/healthz")
            self.assertEqual(resp.status, 503, "healthz after drain: %r" % resp)
            self.assertEqual(resp.json().get("status"), "draining")
            proc = h.run_ctl(["--json", "stats"], socket_path=socket_path)
            self.assertTrue(json.loads(proc.stdout)["draining"])
        finally:
            gw.stop()

    # -- TCP ---------------------------------------------------------------------

    def test_url_with_token_file(self):
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        proc = self.ok(*(self.tcp_args() + ["routes", "list"]), socket=False)
        self.assertIn("cli-a", proc.stdout)
        self.assertIn("cli-b", proc.stdout)
        proc = self.ok(*(self.tcp_args() + ["--json", "stats"]), socket=False)
        self.assertEqual(json.loads(proc.stdout)["route_table"]["version"], self.api.version())
        only = ("- id: via-tcp\n  host: tcp.test\n  upstream: 127.0.0.1:%d\n" % self.origin.port)
        self.ok(*(self.tcp_args() + ["routes", "apply", "-f", self.write("tcp.yaml", only)]),
                socket=False)
        self.assertIn("via-tcp", self.ids())

    def test_url_with_wrong_token_is_refused(self):
        bad = self.write("bad-token", "not-the-right-token-at-all\n")
        before = self.api.routes()
        proc = self.refused(1, *(self.tcp_args(bad) + ["routes", "list"]), socket=False)
        self.assertIn("401", proc.stderr)
        only = ("- id: via-tcp\n  host: tcp.test\n  upstream: 127.0.0.1:%d\n" % self.origin.port)
        self.refused(1, *(self.tcp_args(bad) + ["routes", "apply", "-f",
                                                self.write("tcp.yaml", only)]), socket=False)
        self.assertEqual(self.api.routes(), before)

    # -- errors --------------------------------------------------------------------

    def test_bad_file_is_refused_locally_with_file_line_field(self):
        port = self.origin.port
        before = self.api.routes()
        text = self.list_yaml().replace("  upstream: 127.0.0.1:%d\n  gitspace" % port,
                                        "  upstream: 127.0.0.1\n  gitspace")
        path = self.write("bad-upstream.yaml", text)
        proc = self.refused(2, "routes", "apply", "-f", path)
        line = [i for i, l in enumerate(text.splitlines(), 1)
                if l.strip() == "upstream: 127.0.0.1"][0]
        self.assertRegex(proc.stderr, r"(?m)^spacegatectl: %s:%d: \[1\]\.upstream: \S.*$"
                         % (re.escape(path), line), h.describe_run(proc))

        obj = ("routes:\n"
               "  - id: fine\n"
               "    host: fine.test\n"
               "    upstream: 127.0.0.1:%d\n"
               "  - id: Bad_Id\n"
               "    host: bad.test\n"
               "    upstream: 127.0.0.1:%d\n" % (port, port))
        path = self.write("bad-id.yaml", obj)
        proc = self.refused(2, "routes", "apply", "-f", path)
        self.assertRegex(proc.stderr, r"(?m)^spacegatectl: %s:%d: routes\[1\]\.id: \S.*$"
                         % (re.escape(path), line_of(obj, "Bad_Id")), h.describe_run(proc))

        unknown = self.list_yaml().replace("  access: public\n- id: cli-b",
                                           "  colour: red\n- id: cli-b")
        path = self.write("unknown.yaml", unknown)
        proc = self.refused(2, "routes", "apply", "-f", path)
        self.assertRegex(proc.stderr, r"(?m)^spacegatectl: %s:%d: \[0\]\.colour: unknown field"
                         % (re.escape(path), line_of(unknown, "colour")), h.describe_run(proc))

        syntax = "- id: a\n  host: [unclosed\n"
        path = self.write("syntax.yaml", syntax)
        proc = self.refused(2, "routes", "apply", "-f", path)
        self.assertRegex(proc.stderr, r"%s:\d+: " % re.escape(path), h.describe_run(proc))

        proc = self.refused(2, "routes", "apply", "-f", os.path.join(self.tmpdir, "missing.yaml"))
        self.assertIn("missing.yaml", proc.stderr)
        self.assertEqual(self.api.routes(), before, "a refused file changed the table")

    def test_api_refusal_on_apply_names_file_line_and_field(self):
        port = self.origin.port
        self.ok("routes", "apply", "-f", self.write("list.yaml", self.list_yaml()))
        before = self.api.routes()
        # Valid as a route object, refused by this gateway (h2c is cleartext:
        # no upstream TLS with it).
        text = ("- id: fine\n"
                "  host: fine.test\n"
                "  upstream: 127.0.0.1:%d\n"
                "- id: h2\n"
                "  host: h2.test\n"
                "  upstream: 127.0.0.1:%d\n"
                "  protocol: h2c\n"
                "  upstream_tls: true\n" % (port, port))
        path = self.write("h2c.yaml", text)
        proc = self.refused(1, "routes", "apply", "-f", path)
        self.assertRegex(proc.stderr,
                         r"(?m)^spacegatectl: %s:%d: \[1\]\.upstream_tls: .*\b400\b"
                         % (re.escape(path), line_of(text, "upstream_tls: true")),
                         h.describe_run(proc))
        # Clashes with a route already in the table (cli-a's host).
        clash = ("- id: thief\n"
                 "  host: cli-a.test\n"
                 "  path_prefix: /\n"
                 "  upstream: 127.0.0.1:%d\n" % port)
        path = self.write("clash.yaml", clash)
        proc = self.refused(1, "routes", "apply", "-f", path)
        self.assertRegex(proc.stderr, r"(?m)^spacegatectl: %s:%d: \[0\]\.path_prefix: "
                         % (re.escape(path), line_of(clash, "path_prefix")), h.describe_run(proc))
        self.assertIn("cli-a", proc.stderr, "the message should name the holder")
        self.assertEqual(self.api.routes(), before)

    def test_api_refusal_names_the_field(self):
        proc = self.refused(1, "routes", "delete", "no-such-route")
        self.assertIn("delete[0]", proc.stderr, h.describe_run(proc))
        self.assertIn("no route with this id", proc.stderr)
        proc = self.refused(1, "routes", "get", "no-such-route")
        self.assertRegex(proc.stderr, r"\bid\b", h.describe_run(proc))
        self.assertIn("404", proc.stderr)

    def test_unreachable_gateway_is_exit_3(self):
        proc = h.run_ctl(["routes", "list"],
                         socket_path=os.path.join(self.tmpdir, "no-such.sock"))
        self.assertEqual(proc.returncode, 3, h.describe_run(proc))
        self.assertTrue(proc.stderr.strip())
        not_a_socket = self.write("plain-file.sock", "")
        proc = h.run_ctl(["stats"], socket_path=not_a_socket)
        self.assertEqual(proc.returncode, 3, h.describe_run(proc))
        proc = h.run_ctl(["--url", "http://127.0.0.1:%d" % h.free_port(),
                          "--token-file", self.token_file, "stats"])
        self.assertEqual(proc.returncode, 3, h.describe_run(proc))

    def test_usage_errors_are_exit_2(self):
        for args in ([], ["routes"], ["routes", "apply"], ["routes", "get"], ["routes", "delete"],
                     ["--bogus", "stats"], ["frobnicate"], ["routes", "list", "extra-arg"],
                     ["--url", "http://127.0.0.1:1", "stats"],
                     ["--url", "http://127.0.0.1:%d" % self.tcp_port, "--token-file",
                      os.path.join(self.tmpdir, "no-token-file"), "stats"]):
            with self.subTest(args=args):
                proc = h.run_ctl(args, socket_path=self.control_socket)
                self.assertEqual(proc.returncode, 2, h.describe_run(proc))
                self.assertTrue((proc.stderr + proc.stdout).strip(), "no message for usage error")
        proc = h.run_ctl(["--help"])
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertIn("routes", proc.stdout)


if __name__ == "__main__":
    h.main()
