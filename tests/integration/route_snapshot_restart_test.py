#!/usr/bin/python3
"""Route persistence: every accepted write is written to
state_dir/routes.json (0600, valid JSON, the same table as GET /routes);
after `kill -9` a gateway restarted with the same state dir and no routes in
its config serves the same routes at once (the first request after the port
opens) at the same version, so a stale push is still a 409. A corrupt
snapshot is moved aside (routes.json.corrupt-<time>) with a log line and
the gateway starts with an empty table instead of refusing to start."""

import glob
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class SnapshotTestBase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        cls.origin_a = h.Origin("A")
        cls.origin_b = h.Origin("B")

    @classmethod
    def tearDownClass(cls):
        cls.origin_a.stop()
        cls.origin_b.stop()

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        self.gateways = []
        self.count = 0

    def tearDown(self):
        for gw in self.gateways:
            gw.stop()
        if not h.KEEP_TMP:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        else:
            print("kept temp dir %s" % self.tmpdir, file=sys.stderr)

    def make_gateway(self, state_dir, routes=()):
        self.count += 1
        run_dir = os.path.join(self.tmpdir, "gw%d" % self.count)
        os.mkdir(run_dir)
        socket_path = os.path.join(run_dir, "control.sock")
        config = h.control_config(h.free_port(), list(routes), socket_path=socket_path,
                                  state_dir=state_dir, workers=2)
        gw = h.Gateway(config, tmpdir=run_dir)
        self.gateways.append(gw)
        gw.api = h.ControlClient(socket_path)
        gw.socket_path = socket_path
        return gw

    def start(self, gw):
        gw.start()
        self.assertTrue(h.wait_for_socket(gw.socket_path), "no control socket")
        return gw

    def snapshot_path(self, state_dir):
        return os.path.join(state_dir, "routes.json")

    def read_snapshot(self, state_dir):
        with open(self.snapshot_path(state_dir), "rb") as f:
            data = f.read()
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as e:
            self.fail("routes.json is not valid JSON (%s): %r" % (e, data[:300]))

    def table(self):
        a, b = self.origin_a.address, self.origin_b.address
        return [
            h.route("r-a", "a.test", a),
            h.route("r-b", "gateway.test", b, path_prefix="/gs/b", strip_prefix=True),
            h.route("r-c", "c.test", a, gitspace="gs-c", access="public"),
            h.route("r-w", "*.w.test", b),
        ]

    def apply_history(self, api):
        """A few writes of every kind; returns the final GET /routes."""
        a, b = self.origin_a.address, self.origin_b.address
        api.must(api.put_routes(self.table(), version=1))
        api.must(api.patch_routes(version=2, upsert=[h.route("r-d", "d.test", b)],
                                  delete=["r-c"]))
        api.must(api.put("/routes/r-e?version=5",
                         h.route("r-e", "e.test", a, gitspace="gs-e", access="public")))
        api.must(api.patch_routes(version=6, upsert=[h.route("r-a", "a.test", b)]))
        api.must(api.delete("/routes/r-d?version=9"))
        final = api.routes()
        self.assertEqual(final["version"], 9)
        return final

    def expected_answers(self):
        """(host, path, origin name, path the origin sees) for the final table."""
        return [("a.test", "/x", "B", "/x"),
                ("gateway.test", "/gs/b/inner?q=1", "B", "/inner?q=1"),
                ("e.test", "/", "A", "/"),
                ("3000--gs.w.test", "/w", "B", "/w")]

    def assertServes(self, gw, context):
        for host, path, origin, seen in self.expected_answers():
            status, headers, body = h.http_get(gw.port, path, host)
            headers = dict((k.lower(), v) for k, v in headers)
            self.assertEqual((status, headers.get("x-origin-name"), headers.get("x-origin-path")),
                             (200, origin, seen),
                             "%s: %s%s: %r%s" % (context, host, path, body[:200],
                                                 "\n--- stderr ---\n" + h.tail(gw.stderr(), 1500)))
        for host in ("c.test", "d.test"):
            status, _, _ = h.http_get(gw.port, "/", host)
            self.assertEqual(status, 404, "%s: deleted route %s still served" % (context, host))


class SnapshotRestartTest(SnapshotTestBase):

    def test_routes_answer_at_once_after_kill_9(self):
        state = os.path.join(self.tmpdir, "state")
        gw = self.start(self.make_gateway(state))
        self.assertEqual(gw.api.routes(), {"version": 0, "routes": []})
        final = self.apply_history(gw.api)
        self.assertTrue(gw.api.wait_snapshot(final["version"], 30),
                        "stats snapshot_version never reached %d: %r"
                        % (final["version"], gw.api.stats()["route_table"]))
        on_disk = self.read_snapshot(state)
        self.assertEqual(on_disk, final, "routes.json differs from GET /routes")
        mode = stat.S_IMODE(os.stat(self.snapshot_path(state)).st_mode)
        self.assertEqual(mode, 0o600, "routes.json mode is %o" % mode)
        self.assertServes(gw, "before the kill")

        gw.kill()
        self.assertEqual(gw.returncode, -signal.SIGKILL)
        gw.start()
        # The very first requests after the port opens: no push has happened.
        self.assertServes(gw, "right after the restart")
        self.assertEqual(gw.api.routes(), final, "GET /routes after the restart")
        stats = gw.api.stats()
        self.assertEqual(stats["route_table"]["version"], final["version"])
        self.assertEqual(stats["control"]["writes_accepted"], 0)
        # The version survived: a replayed old push is refused.
        resp = gw.api.put_routes([], version=final["version"])
        self.assertEqual(resp.status, 409, "a push at the restored version: %r" % resp)
        resp = gw.api.put_routes([], version=3)
        self.assertEqual(resp.status, 409, "a push below the restored version: %r" % resp)
        gw.api.must(gw.api.patch_routes(version=final["version"] + 1,
                                        upsert=[h.route("r-f", "f.test", self.origin_a.address)]))
        self.assertTrue(gw.api.wait_snapshot(final["version"] + 1, 30))
        self.assertEqual(self.read_snapshot(state)["version"], final["version"] + 1)

    def test_snapshot_version_reported_after_restart(self):
        """After a restart from the snapshot, /stats snapshot_version says
        what is on disk (the restored version), not 0."""
        state = os.path.join(self.tmpdir, "state")
        gw = self.start(self.make_gateway(state))
        final = self.apply_history(gw.api)
        self.assertTrue(gw.api.wait_snapshot(final["version"], 30))
        gw.kill()
        gw.start()
        table = gw.api.stats()["route_table"]
        self.assertEqual(self.read_snapshot(state)["version"], final["version"])
        self.assertEqual(table["snapshot_version"], table["version"],
                         "after a restart from routes.json (version %d on disk), /stats says "
                         "snapshot_version %r" % (final["version"], table["snapshot_version"]))

    def test_sigterm_right_after_writes_persists_them(self):
        state = os.path.join(self.tmpdir, "state")
        gw = self.start(self.make_gateway(state))
        final = self.apply_history(gw.api)
        self.assertEqual(gw.stop(), 0, "SIGTERM exit code; stderr:\n%s" % h.tail(gw.stderr()))
        self.assertEqual(self.read_snapshot(state), final,
                         "routes.json after SIGTERM right after the writes")
        gw.start()
        self.assertEqual(gw.api.routes(), final)
        self.assertServes(gw, "after a SIGTERM restart")

    def test_kill_9_during_writes_leaves_a_whole_snapshot(self):
        state = os.path.join(self.tmpdir, "state")
        gw = self.start(self.make_gateway(state))
        a = self.origin_a.address
        accepted = []
        stop = threading.Event()

        def writer():
            v = 0
            while not stop.is_set():
                v += 1
                try:
                    resp = gw.api.put_routes(
                        [h.route("k-%d" % i, "k%d.test" % i, a) for i in range(v % 50 + 1)],
                        version=v)
                except (OSError, h.IncompleteResponse):
                    return   # the gateway was killed mid-request
                if resp.status == 200:
                    accepted.append(v)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        self.assertTrue(h.wait_until(lambda: len(accepted) >= 60, 60),
                        "only %d writes accepted in 60 s" % len(accepted))
        gw.kill()
        stop.set()
        t.join(30)
        self.assertTrue(os.path.exists(self.snapshot_path(state)), "no routes.json after %d writes"
                        % len(accepted))
        snap = self.read_snapshot(state)
        self.assertIn(snap["version"], accepted, "snapshot version %r was never accepted"
                      % snap["version"])
        self.assertEqual(len(snap["routes"]), snap["version"] % 50 + 1,
                         "the snapshot's routes do not belong to its version")
        gw.start()
        self.assertEqual(gw.api.routes(), snap, "the restarted gateway does not serve routes.json")
        status, _, _ = h.http_get(gw.port, "/headers", "k0.test")
        self.assertEqual(status, 200)

    def test_snapshot_wins_over_the_config_routes(self):
        state = os.path.join(self.tmpdir, "state")
        gw = self.start(self.make_gateway(state))
        final = self.apply_history(gw.api)
        self.assertTrue(gw.api.wait_snapshot(final["version"], 30))
        gw.kill()
        other = self.make_gateway(state, routes=[h.route("cfg", "config.test",
                                                         self.origin_a.address)])
        self.start(other)
        self.assertEqual(other.api.routes(), final,
                         "with a snapshot, the config file's routes replaced it")
        self.assertServes(other, "restarted with other routes in the config")

    def test_snapshot_file_and_state_dir_modes(self):
        state = os.path.join(self.tmpdir, "fresh-state")   # the gateway creates it
        gw = self.make_gateway(state)
        old = os.umask(0)
        try:
            self.start(gw)
        finally:
            os.umask(old)
        self.assertTrue(os.path.isdir(state), "the state dir was not created")
        gw.api.must(gw.api.put_routes(self.table(), version=1))
        self.assertTrue(gw.api.wait_snapshot(1, 30))
        dir_mode = stat.S_IMODE(os.stat(state).st_mode)
        self.assertEqual(dir_mode & 0o077, 0, "state dir created with mode %o" % dir_mode)
        file_mode = stat.S_IMODE(os.stat(self.snapshot_path(state)).st_mode)
        self.assertEqual(file_mode, 0o600, "routes.json mode %o under umask 0" % file_mode)
        snap = self.read_snapshot(state)
        self.assertEqual(snap, gw.api.routes())
        self.assertEqual(sorted(os.listdir(state)), ["routes.json"],
                         "leftovers in the state dir: %r" % os.listdir(state))


class CorruptSnapshotTest(SnapshotTestBase):

    CASES = [
        ("garbage bytes", bytes(range(256)) * 4),
        ("empty file", b""),
        ("truncated JSON", b'{"version": 4, "routes": [{"id": "r-a", "host": "a.te'),
        ("not an object", b'[1, 2, 3]\n'),
        ("bad route", b'{"version": 4, "routes": [{"id": "BAD", "host": "a.test", '
                      b'"upstream": "127.0.0.1:1"}]}\n'),
        ("version 0", b'{"version": 0, "routes": []}\n'),
        ("unknown field", b'{"version": 4, "routes": [], "extra": true}\n'),
    ]

    def prepare(self, name, contents):
        state = os.path.join(self.tmpdir, "state-" + name.replace(" ", "-"))
        os.mkdir(state, 0o700)
        with open(self.snapshot_path(state), "wb") as f:
            f.write(contents)
        os.chmod(self.snapshot_path(state), 0o600)
        return state

    def test_corrupt_snapshot_is_moved_aside_and_the_gateway_starts_empty(self):
        for name, contents in self.CASES:
            with self.subTest(case=name):
                state = self.prepare(name, contents)
                gw = self.make_gateway(state)
                try:
                    self.start(gw)
                except h.GatewayError as e:
                    self.fail("a %s snapshot kept the gateway from starting: %s" % (name, e))
                self.assertEqual(gw.api.routes(), {"version": 0, "routes": []},
                                 "%s snapshot: the table should be empty" % name)
                self.assertFalse(os.path.exists(self.snapshot_path(state)),
                                 "%s snapshot: routes.json was not moved aside" % name)
                aside = glob.glob(self.snapshot_path(state) + ".corrupt-*")
                self.assertEqual(len(aside), 1, "%s snapshot: files in the state dir: %r"
                                 % (name, os.listdir(state)))
                with open(aside[0], "rb") as f:
                    self.assertEqual(f.read(), contents, "%s: the set-aside file differs" % name)
                self.assertRegex(os.path.basename(aside[0]), r"^routes\.json\.corrupt-\d+$")
                log = gw.stderr()
                self.assertIn("corrupt", log.lower(), "%s: no log line about the corrupt "
                              "snapshot:\n%s" % (name, h.tail(log, 1500)))
                self.assertIn(aside[0], log, "%s: the log line should say where the file went"
                              % name)
                # Traffic and writes work; the next write makes a good snapshot.
                gw.api.must(gw.api.put_routes(self.table(), version=1))
                status, _, _ = h.http_get(gw.port, "/", "a.test")
                self.assertEqual(status, 200)
                self.assertTrue(gw.api.wait_snapshot(1, 30))
                self.assertEqual(self.read_snapshot(state), gw.api.routes())
                gw.stop()

    def test_corrupt_snapshot_with_config_routes_serves_the_config(self):
        state = self.prepare("with-config", b"\x00\x01not json")
        gw = self.start(self.make_gateway(state, routes=[
            h.route("cfg", "config.test", self.origin_a.address)]))
        ids = [r["id"] for r in gw.api.routes()["routes"]]
        self.assertEqual(ids, ["cfg"], "after a corrupt snapshot the config routes should serve")
        status, _, _ = h.http_get(gw.port, "/", "config.test")
        self.assertEqual(status, 200)
        self.assertTrue(glob.glob(self.snapshot_path(state) + ".corrupt-*"))


if __name__ == "__main__":
    h.main()
