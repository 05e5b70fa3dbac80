#!/usr/bin/python3
"""`spacegatectl gitspace ...` against a fake control plane written here
(stdlib http.server, the user API of docs/control-plane.md: create, list,
get, actions, delete, token, and the Server-Sent Events stream with
keep-alive comments). Checks the list table and --json, get, open (host and
path forms), --wait's lines when stderr is not a terminal (milestones, setup
log lines, the URLs at the end), a wait that ends in error, a stream that
drops and is resumed after the last event id, history skipped by start
--wait, --timeout, logs, ssh, the environment variables, and the exit codes:
0 done, 1 refused (the server's error and field printed) or failed, 2 usage,
3 unreachable."""

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TOKEN = "test-api-token-0123456789abcdef"
DOMAIN = "gitspaces.localhost"


def rfc3339(unix_s):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix_s)) + ".%03dZ" % (
        int(unix_s * 1000) % 1000)


class FakeControlPlane:
    """The control plane's user API with scripted Gitspace starts. What a
    Gitspace does after create/start depends on its repository's name:
    `fail` ends in error, `drop` cuts the first event stream after three
    events, `stuck` never gets past provisioning; anything else runs."""

    def __init__(self):
        self.lock = threading.Condition()
        self.gitspaces = {}      # id -> record
        self.events = {}         # id -> [event]
        self.next_event_id = 1
        self.stream_requests = []  # (gitspace id, after)
        self.requests = []       # (method, path, body)
        self.dropped = set()
        self.threads = []
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                plane.handle(self, "GET")

            def do_POST(self):
                plane.handle(self, "POST")

            def do_DELETE(self):
                plane.handle(self, "DELETE")

        self.server = ThreadingHTTPServer((h.LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d" % (h.LOOPBACK, self.port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- state ------------------------------------------------------------

    def add_event(self, gs_id, type_, message="", data=None, at=None):
        with self.lock:
            event = {"id": self.next_event_id, "gitspace": gs_id, "type": type_,
                     "message": message, "data": data or {},
                     "at": rfc3339(at if at is not None else time.time())}
            self.next_event_id += 1
            self.events.setdefault(gs_id, []).append(event)
            self.lock.notify_all()
            return event

    def set_state(self, gs_id, state, reason="", at=None):
        with self.lock:
            record = self.gitspaces[gs_id]
            before = record["state"]
            now = at if at is not None else time.time()
            record.update(state=state, state_reason=reason, state_since=rfc3339(now))
        # As the control plane writes them (control_plane.cc, transition()).
        message = "%s -> %s" % (before, state) + (": " + reason if reason else "")
        self.add_event(gs_id, "state_changed", message,
                       {"from": before, "to": state, "event": "x", "reason": reason}, at=now)
        if state == "error":
            self.add_event(gs_id, "error", reason, {"reason": reason}, at=now)

    def new_gitspace(self, name, repository, ide, state="starting"):
        with self.lock:
            gs_id = "gs-%08x" % (0xa0 + len(self.gitspaces))
            record = {
                "id": gs_id, "name": name, "owner": "u-00000001", "repository": repository,
                "branch": "", "ide": ide, "infra": "inf-00000001", "state": state,
                "state_reason": "", "state_since": rfc3339(time.time()),
                "idle_timeout_s": 1800, "machine_id": "",
                "url": "http://%s.%s:8080/gs/%s/" % (gs_id, DOMAIN, gs_id),
                "path_url": "http://%s:8080/gs/%s/" % (DOMAIN, gs_id),
                "forwarded_ports": [], "last_activity": None,
                "created_at": rfc3339(time.time())}
            self.gitspaces[gs_id] = record
            return gs_id

    def start_script(self, gs_id, created):
        """Runs the start of a Gitspace on a thread: events, then running."""
        repository = self.gitspaces[gs_id]["repository"]

        def script():
            step = 0.03
            if created:
                self.add_event(gs_id, "gitspace_created", "", {})
            time.sleep(step)
            self.add_event(gs_id, "infra_provisioning_started",
                           "machine m-1 from pool default")
            if "stuck" in repository:
                return
            time.sleep(step)
            self.add_event(gs_id, "infra_provisioning_completed", "")
            self.add_event(gs_id, "infra_gateway_route_completed", "")
            time.sleep(step)
            self.add_event(gs_id, "agent_gitspace_creation_started", "")
            self.add_event(gs_id, "agent_setup_log", "Cloning into 'sample'...")
            self.add_event(gs_id, "agent_setup_log", "postCreateCommand: \x1b[31mok\x1b[0m")
            time.sleep(step)
            if "fail" in repository:
                self.add_event(gs_id, "agent_gitspace_creation_failed",
                               "postCreateCommand exited with 3")
                self.set_state(gs_id, "error", "postCreateCommand exited with 3")
                return
            self.add_event(gs_id, "agent_gitspace_creation_completed", "")
            self.add_event(gs_id, "ide_routes_completed", "")
            time.sleep(step)
            self.set_state(gs_id, "running")

        thread = threading.Thread(target=script, daemon=True)
        thread.start()
        self.threads.append(thread)

    def later(self, delay, action):
        def run():
            time.sleep(delay)
            action()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    # -- HTTP ---------------------------------------------------------------

    def reply(self, handler, status, body):
        data = (json.dumps(body) + "\n").encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def error(self, handler, status, message, field=None):
        body = {"error": message}
        if field:
            body["field"] = field
        self.reply(handler, status, body)

    def handle(self, handler, method):
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        path = parts.path
        with self.lock:
            self.requests.append((method, handler.path, raw.decode("utf-8", "replace")))
        if handler.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.error(handler, 401, "missing or unknown API token")
        if method == "POST" and path == "/api/v1/gitspaces":
            try:
                body = json.loads(raw)
            except ValueError:
                return self.error(handler, 400, "invalid JSON")
            repository = body.get("repository", "")
            if not repository or repository.startswith("bad:"):
                return self.error(handler, 400, "not a Git repository URL", "repository")
            if body.get("ide") not in ("jupyter", "vscode-web", "ssh"):
                return self.error(handler, 400, "must be jupyter, vscode-web or ssh", "ide")
            gs_id = self.new_gitspace(body.get("name", ""), repository, body["ide"])
            self.start_script(gs_id, created=True)
            return self.reply(handler, 201, self.gitspaces[gs_id])
        if method == "GET" and path == "/api/v1/gitspaces":
            with self.lock:
                return self.reply(handler, 200, {"gitspaces": list(self.gitspaces.values())})
        match = re.fullmatch(r"/api/v1/gitspaces/([^/]+)(/.*)?", path)
        if not match or match.group(1) not in self.gitspaces:
            return self.error(handler, 404, "no such Gitspace")
        gs_id, rest = match.group(1), match.group(2) or ""
        record = self.gitspaces[gs_id]
        if method == "GET" and rest == "":
            with self.lock:
                return self.reply(handler, 200, dict(record))
        if method == "GET" and rest == "/events":
            after = int(parse_qs(parts.query).get("after", ["0"])[0])
            return self.stream(handler, gs_id, after)
        if method == "POST" and rest == "/token":
            token = "v1.fake-token-for-" + gs_id
            return self.reply(handler, 200, {"token": token,
                                             "url": record["url"] + "?sg_token=" + token,
                                             "expires_at": rfc3339(time.time() + 8 * 3600)})
        if method == "POST" and rest.startswith("/actions/"):
            return self.action(handler, gs_id, rest[len("/actions/"):])
        if method == "DELETE" and rest == "":
            self.set_state(gs_id, "cleaning")
            self.later(0.1, lambda: self.finish_delete(gs_id))
            return self.reply(handler, 202, dict(record))
        return self.error(handler, 405, "method not allowed")

    def finish_delete(self, gs_id):
        self.set_state(gs_id, "deleted")
        self.add_event(gs_id, "deleted", "the Gitspace was deleted")

    def action(self, handler, gs_id, action):
        record = self.gitspaces[gs_id]
        state = record["state"]
        allowed = {"start": ("stopped", "error"), "stop": ("running",),
                   "reset": ("running", "stopped", "error")}
        if action not in allowed:
            return self.error(handler, 404, "no such action")
        if state not in allowed[action]:
            return self.error(handler, 409, "cannot %s a Gitspace that is %s" % (action, state),
                              "state")
        if action == "stop":
            self.set_state(gs_id, "stopping")
            self.later(0.1, lambda: self.set_state(gs_id, "stopped"))
        elif action == "start":
            self.set_state(gs_id, "starting")
            self.start_script(gs_id, created=False)
        else:
            self.set_state(gs_id, "cleaning")

            def after_clean():
                self.set_state(gs_id, "cleaned")
                self.set_state(gs_id, "starting")
                self.start_script(gs_id, created=False)
            self.later(0.05, after_clean)
        with self.lock:
            return self.reply(handler, 202, dict(record))

    def stream(self, handler, gs_id, after):
        with self.lock:
            self.stream_requests.append((gs_id, after))
            first_of_drop = ("drop" in self.gitspaces[gs_id]["repository"]
                             and gs_id not in self.dropped)
            if first_of_drop:
                self.dropped.add(gs_id)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def chunk(text):
            data = text.encode()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        sent = after
        written = 0
        last_keepalive = time.time()
        try:
            chunk(": stream of %s\n\n" % gs_id)
            while True:
                with self.lock:
                    pending = [e for e in self.events.get(gs_id, []) if e["id"] > sent]
                    deleted = self.gitspaces[gs_id]["state"] == "deleted"
                    if not pending and not deleted:
                        self.lock.wait(0.2)
                        continue
                for event in pending:
                    # An event's data in two data lines would be legal SSE too;
                    # the id, event and data lines come in separate chunks.
                    chunk("id: %d\n" % event["id"])
                    chunk("event: %s\ndata: %s\n\n" % (event["type"], json.dumps(event)))
                    sent = event["id"]
                    written += 1
                    if first_of_drop and written == 3:
                        handler.close_connection = True
                        return  # no terminating chunk: the stream is cut
                if deleted and not pending:
                    handler.wfile.write(b"0\r\n\r\n")
                    handler.wfile.flush()
                    return
                if time.time() - last_keepalive > 0.5:
                    chunk(": keep-alive\n\n")
                    last_keepalive = time.time()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


class SpacegatectlGitspaceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(h.CTL_BINARY):
            raise unittest.SkipTest("spacegatectl binary not found: %s" % h.CTL_BINARY)
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegatectl-gitspace-")
        cls.token_file = os.path.join(cls.tmpdir, "token")
        with open(cls.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(cls.token_file, 0o600)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def setUp(self):
        self.plane = FakeControlPlane()

    def tearDown(self):
        self.plane.close()

    # -- helpers ---------------------------------------------------------

    def ctl(self, *args, env_extra=None, url=True, token=True, timeout=60):
        command = [h.CTL_BINARY, "gitspace"] + list(args)
        if url:
            command += ["--control-url", self.plane.url]
        if token:
            command += ["--control-token-file", self.token_file]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPACEGATE_CONTROL_")}
        env.update(env_extra or {})
        return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=env)

    def ok(self, *args, **kw):
        proc = self.ctl(*args, **kw)
        self.assertEqual(proc.returncode, 0, "expected exit 0\n" + h.describe_run(proc))
        return proc

    def fails(self, code, *args, **kw):
        proc = self.ctl(*args, **kw)
        self.assertEqual(proc.returncode, code,
                         "expected exit %d\n%s" % (code, h.describe_run(proc)))
        self.assertTrue(proc.stderr.strip(), "no message on stderr\n" + h.describe_run(proc))
        return proc

    def create_running(self, repo="https://example.com/org/sample.git", ide="jupyter"):
        proc = self.ok("create", "--repo", repo, "--ide", ide, "--wait", "--timeout", "20s")
        return proc, re.search(r"(gs-[0-9a-f]{8}) is running", proc.stdout).group(1)

    # -- create ------------------------------------------------------------

    def test_create_without_wait_prints_the_id(self):
        proc = self.ok("create", "--repo", "https://example.com/org/My.Sample-Repo.git")
        gs_id = proc.stdout.strip()
        self.assertRegex(gs_id, r"^gs-[0-9a-f]{8}$")
        method, path, body = self.plane.requests[0]
        self.assertEqual((method, path), ("POST", "/api/v1/gitspaces"))
        self.assertEqual(json.loads(body), {"name": "my-sample-repo", "ide": "jupyter",
                                            "repository":
                                                "https://example.com/org/My.Sample-Repo.git"})

    def test_create_sends_every_option(self):
        self.ok("create", "--repo", "/srv/git/sample.git", "--name", "nb", "--branch", "dev",
                "--ide", "vscode-web", "--infra", "local")
        self.assertEqual(json.loads(self.plane.requests[0][2]),
                         {"name": "nb", "repository": "/srv/git/sample.git", "branch": "dev",
                          "ide": "vscode-web", "infra": "local"})

    def test_create_wait_prints_milestones_then_the_urls(self):
        proc, gs_id = self.create_running()
        lines = proc.stderr.splitlines()
        self.assertEqual(lines, [
            "[1/8] created",
            "[2/8] provisioning started: machine m-1 from pool default",
            "[3/8] provisioning completed",
            "[4/8] gateway route",
            "[5/8] agent setup started",
            "      | Cloning into 'sample'...",
            # The escape sequences of the Gitspace's own output are not passed on.
            "      | postCreateCommand:  [31mok [0m",
            "[6/8] agent setup completed",
            "[7/8] IDE routes",
            "[8/8] running",
        ], h.describe_run(proc))
        token = "v1.fake-token-for-" + gs_id
        self.assertEqual(proc.stdout.splitlines(), [
            "%s is running" % gs_id,
            "  url:   http://%s.%s:8080/gs/%s/" % (gs_id, DOMAIN, gs_id),
            "  open:  http://%s.%s:8080/gs/%s/?sg_token=%s" % (gs_id, DOMAIN, gs_id, token),
            "  path:  http://%s:8080/gs/%s/?sg_token=%s" % (DOMAIN, gs_id, token),
        ])
        self.assertNotIn("\x1b", proc.stderr)
        self.assertNotIn("\r", proc.stderr)

    def test_create_wait_on_a_terminal_redraws_one_line(self):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
        proc = subprocess.Popen(
            [h.CTL_BINARY, "gitspace", "create", "--repo", "https://example.com/sample.git",
             "--wait", "--control-url", self.plane.url, "--control-token-file",
             self.token_file], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        out, _ = proc.communicate(timeout=30)
        screen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        os.close(master)
        self.assertEqual(proc.returncode, 0, screen)
        self.assertIn(b"is running", out)
        text = screen.decode()
        # Every update rewrites the one line: carriage return, clear to the end.
        updates = text.split("\r\x1b[K")[1:]
        self.assertGreaterEqual(len(updates), 8, text)
        self.assertTrue(updates[0].startswith("[##..............] 1/8 created"), text)
        self.assertTrue(updates[-1].startswith("[################] 8/8 running"), text)
        self.assertTrue(any("| Cloning into \u2026" in u for u in updates), text)  # cut to fit
        self.assertEqual(text.count("\n"), 1, text)  # only after the last redraw
        for update in updates:
            # Cut to the 60 columns of the terminal.
            self.assertLessEqual(len(update.rstrip("\r\n")), 59, update)

    def test_create_wait_ending_in_error_exits_1_with_the_reason(self):
        proc = self.fails(1, "create", "--repo", "https://example.com/fail.git", "--wait")
        self.assertIn("      agent_gitspace_creation_failed: postCreateCommand exited with 3",
                      proc.stderr.splitlines())
        self.assertRegex(proc.stderr,
                         r"spacegatectl: gs-[0-9a-f]{8} is in state error: postCreateCommand "
                         r"exited with 3")
        self.assertNotIn("[8/8]", proc.stderr)
        self.assertEqual(proc.stdout, "")

    def test_dropped_stream_is_resumed_after_the_last_event(self):
        proc, gs_id = self.create_running(repo="https://example.com/drop.git")
        self.assertIn("[8/8] running", proc.stderr)
        # Every milestone once: nothing repeated, nothing lost across the cut.
        for n in range(1, 9):
            self.assertEqual(proc.stderr.count("[%d/8]" % n), 1, proc.stderr)
        self.assertEqual(proc.stderr.count("Cloning into"), 1, proc.stderr)
        streams = [after for (gs, after) in self.plane.stream_requests if gs == gs_id]
        self.assertGreaterEqual(len(streams), 2, streams)
        self.assertEqual(streams[0], 0)
        third = self.plane.events[gs_id][2]["id"]
        self.assertEqual(streams[1], third)

    def test_wait_timeout_exits_1_and_says_how_to_follow(self):
        started = time.time()
        proc = self.fails(1, "create", "--repo", "https://example.com/stuck.git", "--wait",
                          "--timeout", "1500ms")
        self.assertLess(time.time() - started, 10)
        self.assertIn("[2/8] provisioning started", proc.stderr)
        self.assertRegex(proc.stderr, r"gs-[0-9a-f]{8} is not running after 1500ms; follow it "
                                      r"with: spacegatectl gitspace logs gs-[0-9a-f]{8} --follow")

    # -- list, get, open -----------------------------------------------------

    def test_list_is_an_aligned_table_and_json(self):
        self.ok("create", "--repo", "https://example.com/org/sample.git")
        self.ok("create", "--repo", "/srv/git/a-much-longer-repository-name.git", "--name", "x",
                "--ide", "ssh")
        proc = self.ok("list")
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 3, proc.stdout)
        self.assertEqual(lines[0].split(), ["ID", "NAME", "STATE", "IDE", "REPOSITORY", "URL"])
        columns = [lines[0].index(name) for name in ("NAME", "STATE", "IDE", "REPOSITORY",
                                                     "URL")]
        records = list(self.plane.gitspaces.values())
        for line, record in zip(lines[1:], records):
            self.assertTrue(line.startswith(record["id"] + " "), line)
            cells = [line[c:].split()[0] for c in columns]
            self.assertEqual(cells[0], record["name"])
            self.assertIn(cells[1], ("starting", "running"))
            self.assertEqual(cells[2], record["ide"])
            self.assertEqual(cells[3], record["repository"])
            self.assertEqual(cells[4], record["url"])
        listed = json.loads(self.ok("list", "--json").stdout)
        self.assertEqual([g["id"] for g in listed["gitspaces"]], [r["id"] for r in records])
        # The app-wide flag before the command works too.
        proc = subprocess.run([h.CTL_BINARY, "--json", "gitspace", "list", "--control-url",
                               self.plane.url, "--control-token-file", self.token_file],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))

        # The Gitspaces move on (starting -> running) between the two calls:
        # compare what does not.
        def settled(listing):
            return [{k: v for k, v in g.items() if not k.startswith("state")}
                    for g in listing["gitspaces"]]
        self.assertEqual(settled(json.loads(proc.stdout)), settled(listed))

    def test_empty_list_is_just_the_header(self):
        self.assertEqual(self.ok("list").stdout.split(),
                         ["ID", "NAME", "STATE", "IDE", "REPOSITORY", "URL"])

    def test_get_prints_the_json_and_404_exits_1(self):
        gs_id = self.ok("create", "--repo", "https://example.com/org/sample.git").stdout.strip()
        record = json.loads(self.ok("get", gs_id).stdout)
        self.assertEqual(record["id"], gs_id)
        self.assertEqual(record["repository"], "https://example.com/org/sample.git")
        proc = self.fails(1, "get", "gs-00000000")
        self.assertIn("refused by the control plane (404): no such Gitspace", proc.stderr)

    def test_open_prints_a_token_url_host_or_path_form(self):
        _, gs_id = self.create_running()
        token = "v1.fake-token-for-" + gs_id
        self.assertEqual(self.ok("open", gs_id).stdout,
                         "http://%s.%s:8080/gs/%s/?sg_token=%s\n" % (gs_id, DOMAIN, gs_id, token))
        self.assertEqual(self.ok("open", gs_id, "--path").stdout,
                         "http://%s:8080/gs/%s/?sg_token=%s\n" % (DOMAIN, gs_id, token))
        token_calls = [r for r in self.plane.requests if r[1].endswith("/token")]
        self.assertEqual(len(token_calls), 3)  # --wait's, then one per open

    # -- actions ----------------------------------------------------------------

    def test_stop_start_reset_delete_with_wait(self):
        _, gs_id = self.create_running()
        proc = self.ok("stop", gs_id, "--wait", "--timeout", "20s")
        self.assertEqual(proc.stdout, "%s stopped\n" % gs_id)
        self.assertIn("      state: stopped", proc.stderr.splitlines())
        # start --wait: the history (the first start's log, its `running`)
        # is not shown again and does not end the wait early.
        proc = self.ok("start", gs_id, "--wait", "--timeout", "20s")
        self.assertNotIn("[1/8]", proc.stderr)
        self.assertEqual(proc.stderr.count("Cloning into"), 1, proc.stderr)
        self.assertIn("[8/8] running", proc.stderr)
        self.assertTrue(proc.stdout.startswith("%s is running\n" % gs_id), proc.stdout)
        self.assertEqual(self.plane.gitspaces[gs_id]["state"], "running")
        proc = self.ok("reset", gs_id, "--wait", "--timeout", "20s")
        self.assertIn("[8/8] running", proc.stderr)
        proc = self.ok("delete", gs_id, "--wait", "--timeout", "20s")
        self.assertEqual(proc.stdout, "%s deleted\n" % gs_id)

    def test_wait_command_waits_without_acting(self):
        gs_id = self.ok("create", "--repo", "https://example.com/org/sample.git").stdout.strip()
        proc = self.ok("wait", gs_id, "--timeout", "20s")
        self.assertTrue(proc.stdout.startswith("%s is running\n" % gs_id), proc.stdout)
        proc = self.fails(1, "wait", gs_id, "--for", "stopped")
        self.assertIn("%s is in state running, not on its way to stopped" % gs_id, proc.stderr)
        self.ok("stop", gs_id)
        self.assertEqual(self.ok("wait", gs_id, "--for", "stopped").stdout, "%s stopped\n" % gs_id)
        posts = [r for r in self.plane.requests if r[0] != "GET"]
        self.assertEqual([p[1].split("/")[-1] for p in posts], ["gitspaces", "token", "stop"])

    def test_actions_without_wait_print_the_new_state(self):
        _, gs_id = self.create_running()
        self.assertEqual(self.ok("stop", gs_id).stdout, "%s stopping\n" % gs_id)
        self.assertTrue(h.wait_until(lambda: self.plane.gitspaces[gs_id]["state"] == "stopped",
                                     5))
        self.assertEqual(self.ok("delete", gs_id).stdout, "%s cleaning\n" % gs_id)

    def test_refused_action_exits_1_with_error_and_field(self):
        gs_id = self.ok("create", "--repo", "https://example.com/stuck.git").stdout.strip()
        proc = self.fails(1, "stop", gs_id)
        self.assertIn("spacegatectl: refused by the control plane (409): state: cannot stop a "
                      "Gitspace that is starting", proc.stderr)

    def test_refused_create_exits_1_with_error_and_field(self):
        proc = self.fails(1, "create", "--repo", "bad:repo", "--wait")
        self.assertIn("spacegatectl: refused by the control plane (400): repository: not a Git "
                      "repository URL", proc.stderr)
        self.assertEqual(proc.stdout, "")

    # -- logs, ssh ----------------------------------------------------------------

    def test_logs_prints_setup_lines_and_state_changes(self):
        _, gs_id = self.create_running()
        proc = self.ok("logs", gs_id)
        self.assertEqual(proc.stdout.splitlines(), [
            "Cloning into 'sample'...",
            "postCreateCommand:  [31mok [0m",
            "==> running",
        ])

    def test_logs_follow_ends_when_the_gitspace_is_deleted(self):
        _, gs_id = self.create_running()
        self.plane.later(0.5, lambda: (self.plane.set_state(gs_id, "cleaning"),
                                       self.plane.finish_delete(gs_id)))
        proc = self.ok("logs", gs_id, "--follow", timeout=30)
        self.assertEqual(proc.stdout.splitlines()[-3:], ["==> running", "==> cleaning",
                                                         "==> deleted"])

    def test_ssh_prints_the_command_and_says_what_it_needs(self):
        gs_id = self.ok("create", "--repo", "https://example.com/s.git", "--ide",
                        "ssh").stdout.strip()
        # No ssh port yet (the fake's records have none): port 22, and a note.
        proc = self.ok("ssh", gs_id)
        proxy = "%s ssh-proxy %s --control-url %s --control-token-file %s" % (
            os.path.realpath(h.CTL_BINARY), gs_id, self.plane.url,
            os.path.abspath(self.token_file))
        self.assertEqual(proc.stdout, "ssh -o ProxyCommand='%s' -o HostKeyAlias=%s -p 22 "
                         "root@%s\n" % (proxy, gs_id, gs_id))
        self.assertIn("no ssh port yet", proc.stderr)
        self.assertNotIn("sshd runs for ide ssh", proc.stderr)
        # The machine's ssh port, and another user.
        self.plane.gitspaces[gs_id]["ssh_port"] = 2222
        proc = self.ok("ssh", gs_id, "--user", "vscode")
        self.assertTrue(proc.stdout.endswith(" -o HostKeyAlias=%s -p 2222 vscode@%s\n"
                                             % (gs_id, gs_id)), proc.stdout)
        self.assertEqual(proc.stderr, "")
        # A Gitspace without sshd gets the command and a word of warning.
        other = self.ok("create", "--repo", "https://example.com/j.git").stdout.strip()
        self.assertIn("sshd runs for ide ssh", self.ok("ssh", other).stderr)

    # -- options, usage and exit codes ----------------------------------------------

    def test_environment_gives_url_and_token(self):
        proc = self.ctl("list", url=False, token=False,
                        env_extra={"SPACEGATE_CONTROL_URL": self.plane.url,
                                   "SPACEGATE_CONTROL_TOKEN_FILE": self.token_file})
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))

    def test_missing_token_file_says_how_to_pass_one(self):
        proc = self.fails(2, "list", token=False)
        self.assertIn("--control-token-file", proc.stderr)
        self.assertIn("SPACEGATE_CONTROL_TOKEN_FILE", proc.stderr)
        self.assertIn("admin.token", proc.stderr)
        self.assertEqual(self.plane.requests, [])

    def test_wrong_token_exits_1(self):
        wrong = os.path.join(self.tmpdir, "wrong")
        with open(wrong, "w") as f:
            f.write("not-the-token-0123456789\n")
        proc = subprocess.run([h.CTL_BINARY, "gitspace", "list", "--control-url", self.plane.url,
                               "--control-token-file", wrong], capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 1, h.describe_run(proc))
        self.assertIn("(401): missing or unknown API token", proc.stderr)

    def test_usage_errors_exit_2(self):
        self.fails(2, "create")                                  # no --repo
        self.fails(2, "create", "--repo", "x", "--ide", "emacs")  # not an IDE
        self.fails(2, "get")                                     # no id
        self.fails(2, "frobnicate", "gs-1")                      # no such command
        proc = self.fails(2, "create", "--repo", "x", "--wait", "--timeout", "soon")
        self.assertIn("--timeout", proc.stderr)
        self.fails(2, "list", "--control-token-file", os.path.join(self.tmpdir, "missing"),
                   token=False)
        proc = self.fails(2, "list", "--control-url", "https://cp.example", url=False)
        self.assertIn("https", proc.stderr)
        proc = subprocess.run([h.CTL_BINARY, "gitspace"], capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 2, h.describe_run(proc))
        self.assertEqual(self.plane.requests, [])

    def test_unreachable_control_plane_exits_3(self):
        dead = "http://%s:%d" % (h.LOOPBACK, h.free_port())
        for args in (["list"], ["create", "--repo", "x", "--wait"], ["logs", "gs-1"],
                     ["open", "gs-1"]):
            proc = subprocess.run([h.CTL_BINARY, "gitspace"] + args +
                                  ["--control-url", dead, "--control-token-file", self.token_file],
                                  capture_output=True, text=True, timeout=30)
            self.assertEqual(proc.returncode, 3, h.describe_run(proc))
            self.assertIn("cannot reach the control plane at " + dead, proc.stderr)

    def test_help_exits_0(self):
        proc = subprocess.run([h.CTL_BINARY, "gitspace", "create", "--help"],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertIn("--repo", proc.stdout)


if __name__ == "__main__":
    unittest.main()
