#!/usr/bin/python3
"""spacegate-control, the real binary, driven over HTTP with the standard
library; this file plays the users and a fake delegate.

First start (state_dir 0700, admin.token, delegate.token and signing.key
0600, the log naming each path; a second start reuses them) and
`export-gateway-config` (accepted by the gateway's --check); authentication
(401 with WWW-Authenticate, 403 for the wrong kind of token or role, 404 for
another user's Gitspace, 405 with Allow, 413 for a body over 1 MiB); infra
and Gitspace validation (400 naming the field, 409 for duplicates and the
per-user limit); the delegate API: register, a long poll answered as soon as
a task is queued and 204 after `wait`, events, results, a lease that runs out
and is handed out again, a result from the wrong delegate (409), start tasks
held until a gateway reports healthy (`waiting_for_gateway`); the lifecycle
create -> running -> stop -> stopped -> start -> running -> reset -> running
-> delete -> deleted driven by results; a deadline turning `starting` into
`error`; the SSE stream live, resumed with Last-Event-ID and ?after, kept
alive, and ended by the delete; the route table's contents and growing
version (and a real gateway taking it with PUT /routes); auto-stop from
activity reports; restarts (SIGTERM and kill -9) losing nothing.

Environment: SPACEGATE_CONTROL_BINARY (default
/work/main/build-control/control/server/spacegate-control); SPACEGATE_BINARY
for the two checks against a real gateway (skipped without it)."""

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BINARY as GATEWAY_BINARY, KEEP_TMP, LOOPBACK,  # noqa: E402
                     ControlClient, Gateway, _die_with_parent, control_config,
                     free_port, tail, wait_for_socket, wait_until)

CONTROL_BINARY = os.environ.get(
    "SPACEGATE_CONTROL_BINARY",
    "/work/main/build-control/control/server/spacegate-control")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body) if self.body else None

    def header(self, name):
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.status, self.body[:300])


class Control:
    """The spacegate-control binary with a config file in a temp dir."""

    def __init__(self, tmpdir, **config):
        self.tmpdir = tmpdir
        self.state_dir = os.path.join(tmpdir, "state")
        self.port = free_port()
        self.config = {"listen": "%s:%d" % (LOOPBACK, self.port),
                       "state_dir": self.state_dir}
        self.config.update(config)
        self.config_path = os.path.join(tmpdir, "control.json")
        self.log_path = os.path.join(tmpdir, "control.log")
        self.proc = None
        self.starts = 0
        self.log_offset = 0

    def start(self, timeout=10.0):
        if not os.path.exists(CONTROL_BINARY):
            raise unittest.SkipTest("spacegate-control not found: %s" % CONTROL_BINARY)
        with open(self.config_path, "w") as f:
            json.dump(self.config, f)
        self.starts += 1
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([CONTROL_BINARY, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("spacegate-control exited with %s:\n%s"
                                     % (self.proc.returncode, tail(self.log())))
            try:
                if self.request("GET", "/healthz", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("spacegate-control did not answer:\n" + tail(self.log()))
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self._log.close()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def log(self, since_start=False):
        with open(self.log_path, "rb") as f:
            if since_start:
                f.seek(self.log_offset)
            return f.read().decode("utf-8", "replace")

    def log_lines(self, since_start=False):
        lines = []
        for line in self.log(since_start).splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
        return lines

    def file(self, name):
        return os.path.join(self.state_dir, name)

    def secret(self, name):
        with open(self.file(name)) as f:
            return f.read().strip()

    def request(self, method, path, body=None, token=None, headers=None, timeout=10):
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            all_headers = dict(headers or {})
            if token:
                all_headers["Authorization"] = "Bearer " + token
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                all_headers.setdefault("Content-Type", "application/json")
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            connection.close()


class User:
    """API calls with one user's token."""

    def __init__(self, control, token):
        self.control = control
        self.token = token

    def call(self, method, path, body=None, **kw):
        return self.control.request(method, "/api/v1" + path, body, token=self.token, **kw)

    def ok(self, method, path, body=None, status=200):
        reply = self.call(method, path, body)
        if reply.status != status:
            raise AssertionError("%s %s: expected %d, got %r" % (method, path, status, reply))
        return reply.json()

    def gitspace(self, gs):
        return self.ok("GET", "/gitspaces/" + gs)

    def state(self, gs):
        return self.gitspace(gs)["state"]

    def create_gitspace(self, name="notebooks", **fields):
        body = {"name": name, "repository": "https://example.com/r.git", "ide": "jupyter"}
        body.update(fields)
        return self.ok("POST", "/gitspaces", body, status=201)

    def wait_state(self, gs, state, timeout=10):
        return wait_until(lambda: self.state(gs) == state, timeout)


class FakeDelegate:
    """Plays a delegate against the delegate API."""

    def __init__(self, control, name="d1", gateways=True, selectors=("default",)):
        self.control = control
        self.token = control.secret("delegate.token")
        body = {"name": name, "version": "test", "selectors": list(selectors)}
        if gateways:
            body["gateways"] = [{"name": "gw1", "version": "0.1", "healthy": True}]
        reply = self.call("POST", "/register", body, with_id=False)
        assert reply.status == 200, reply
        self.id = reply.json()["delegate_id"]

    def call(self, method, path, body=None, with_id=True, timeout=10):
        headers = {"X-Spacegate-Delegate": self.id} if with_id else {}
        return self.control.request(method, "/api/v1/delegate" + path, body, token=self.token,
                                    headers=headers, timeout=timeout)

    def poll(self, wait=0):
        reply = self.call("GET", "/tasks?wait=%d" % wait, timeout=wait + 10)
        if reply.status == 204:
            return None
        assert reply.status == 200, reply
        return reply.json()

    def poll_until(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.poll(wait=1)
            if task:
                return task
        raise AssertionError("no task within %s s" % timeout)

    def events(self, task, events):
        return self.call("POST", "/tasks/%s/events" % task["id"], {"events": events})

    def result(self, task, ok=True, data=None, error=None):
        body = {"ok": ok}
        if ok:
            body["data"] = data if data is not None else {}
        else:
            body["error"] = error or "it broke"
        return self.call("POST", "/tasks/%s/result" % task["id"], body)

    def routes(self):
        reply = self.call("GET", "/routes")
        assert reply.status == 200, reply
        return reply.json()

    def report(self, gateways=None, activity=None):
        body = {}
        if gateways is not None:
            body["gateways"] = gateways
        if activity is not None:
            body["activity"] = activity
        return self.call("POST", "/report", body)


MACHINE = {"machine_id": "m-1", "address": "127.0.0.1", "agent_port": 41001,
           "ide_port": 41002, "ide_protocol": "http1", "forwarded_ports": [3000]}


def finish_start(test, delegate, task, machine=None):
    test.assertEqual(task["kind"], "start")
    reply = delegate.result(task, data=machine or MACHINE)
    test.assertEqual(reply.status, 200, reply)


class EventStream:
    """A Server-Sent Events client on http.client (chunked), line by line."""

    def __init__(self, control, token, gs, after=None, last_event_id=None, timeout=10,
                 read_timeout=None):
        self.connection = http.client.HTTPConnection(LOOPBACK, control.port, timeout=timeout)
        headers = {"Authorization": "Bearer " + token, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        path = "/api/v1/gitspaces/%s/events" % gs
        if after is not None:
            path += "?after=%d" % after
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        if read_timeout is not None:
            self.connection.sock.settimeout(read_timeout)
        self.comments = []

    def next_event(self):
        """The next event as {"id", "event", "data"}; None at the end."""
        event = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line)
                continue
            if not line:
                if event:
                    event["data"] = json.loads(event.get("data", "null"))
                    event["id"] = int(event["id"])
                    return event
                continue
            key, _, value = line.partition(": ")
            event[key] = value

    def events_until(self, predicate, limit=200):
        seen = []
        for _ in range(limit):
            event = self.next_event()
            if event is None:
                break
            seen.append(event)
            if predicate(event):
                return seen
        raise AssertionError("event not seen; got %r" % [e["event"] for e in seen])

    def close(self):
        self.connection.close()


class ControlTestCase(unittest.TestCase):
    CONFIG = {}

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="spacegate-control-it-")
        self.control = Control(self.tmpdir, **self.CONFIG)
        self.control.start()
        self.admin = User(self.control, self.control.secret("admin.token"))

    def tearDown(self):
        self.control.stop()
        result = getattr(self._outcome, "result", None)
        problems = (getattr(result, "failures", []) or []) + (getattr(result, "errors", []) or [])
        if any(test is self for test, _ in problems):
            sys.stderr.write("\n--- control log ---\n%s\n" % tail(self.control.log()))
        if not KEEP_TMP:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def make_infra(self, **fields):
        body = {"name": "default", "gateway_domain": "gs.test", "url_scheme": "http",
                "gateway_port": 8080}
        body.update(fields)
        return self.admin.ok("POST", "/infra", body, status=201)

    def events_of(self, gs, token=None):
        """The stored events of a Gitspace: the backlog of a new stream (which
        stays open, so reading stops at the first pause)."""
        stream = EventStream(self.control, token or self.admin.token, gs, read_timeout=0.3)
        events = []
        try:
            while True:
                event = stream.next_event()
                if event is None:
                    break
                events.append(event)
        except (socket.timeout, TimeoutError):
            pass
        finally:
            stream.close()
        return events

    def assertField(self, reply, status, field):
        self.assertEqual(reply.status, status, reply)
        self.assertEqual(reply.json().get("field"), field, reply)


class FirstStartTest(ControlTestCase):
    def test_files_modes_and_log_lines(self):
        state = self.control.state_dir
        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o700)
        for name in ("admin.token", "delegate.token", "signing.key"):
            self.assertEqual(stat.S_IMODE(os.stat(self.control.file(name)).st_mode), 0o600, name)
        self.assertTrue(os.path.exists(self.control.file("control.db")))
        for name in ("admin.token", "delegate.token"):
            self.assertRegex(self.control.secret(name), HEX64)
        with open(self.control.file("signing.key")) as f:
            key = json.load(f)
        self.assertEqual(set(key), {"kid", "public_key", "private_key"})
        self.assertRegex(key["kid"], r"^cp-[0-9a-f]{8}$")
        with open(self.control.file("signing.pub")) as f:
            public = json.load(f)
        self.assertEqual(public, {"kid": key["kid"], "public_key": key["public_key"]})
        reply = self.control.request("GET", "/api/v1/public-key")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json(), public)

        lines = self.control.log_lines()
        said = {line["msg"]: line for line in lines}
        self.assertEqual(said["first start: wrote the admin token"]["path"],
                         self.control.file("admin.token"))
        self.assertEqual(said["first start: wrote the delegate token"]["path"],
                         self.control.file("delegate.token"))
        self.assertEqual(said["first start: wrote the signing key pair"]["path"],
                         self.control.file("signing.key"))
        log = self.control.log()
        for name in ("admin.token", "delegate.token"):
            self.assertNotIn(self.control.secret(name), log)

        # A second start reuses everything.
        admin_token = self.control.secret("admin.token")
        delegate_token = self.control.secret("delegate.token")
        self.control.stop()
        self.control.start()
        self.assertEqual(self.control.secret("admin.token"), admin_token)
        self.assertEqual(self.control.secret("delegate.token"), delegate_token)
        messages = [line["msg"] for line in self.control.log_lines(since_start=True)]
        self.assertFalse([m for m in messages if m.startswith("first start")], messages)
        self.assertIn("admin token (made at first start)", messages)
        self.assertEqual(self.control.request("GET", "/api/v1/public-key").json(), public)
        self.assertEqual(self.admin.ok("GET", "/users/me")["name"], "admin")

    def test_export_gateway_config(self):
        proc = subprocess.run([CONTROL_BINARY, "--state-dir", self.control.state_dir,
                               "export-gateway-config"], capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(self.control.file("signing.pub")) as f:
            public = json.load(f)
        self.assertIn("auth:\n  public_keys:\n", proc.stdout)
        self.assertIn('- kid: "%s"' % public["kid"], proc.stdout)
        self.assertIn('public_key: "%s"' % public["public_key"], proc.stdout)
        missing = subprocess.run([CONTROL_BINARY, "--state-dir",
                                  os.path.join(self.tmpdir, "nothing"), "export-gateway-config"],
                                 capture_output=True, text=True, timeout=30)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("signing.pub", missing.stderr)
        if not os.path.exists(GATEWAY_BINARY):
            self.skipTest("gateway binary not found: %s" % GATEWAY_BINARY)
        config = os.path.join(self.tmpdir, "gateway.yaml")
        with open(config, "w") as f:
            f.write("listen: [\"127.0.0.1:%d\"]\nworkers: 1\naccess_log: \"off\"\n" % free_port())
            f.write(proc.stdout)
        check = subprocess.run([GATEWAY_BINARY, "--config", config, "--check"],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_bad_config_is_refused_with_file_and_line(self):
        path = os.path.join(self.tmpdir, "bad.yaml")
        with open(path, "w") as f:
            f.write("listen: 127.0.0.1:1\nstate_dir: /tmp/x\ndeadlines:\n  starting: soon\n")
        proc = subprocess.run([CONTROL_BINARY, "--config", path], capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(path + ":4: deadlines.starting: must be a duration", proc.stderr)


class AuthTest(ControlTestCase):
    def test_tokens_roles_and_visibility(self):
        control = self.control
        self.assertEqual(control.request("GET", "/healthz").json(), {"status": "ok"})
        reply = control.request("GET", "/api/v1/gitspaces")
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.header("WWW-Authenticate"), "Bearer")
        self.assertEqual(control.request("GET", "/api/v1/gitspaces", token="0" * 64).status, 401)
        self.assertEqual(control.request("GET", "/api/v1/gitspaces", token="x" * 5000).status,
                         401)

        alice = self.admin.ok("POST", "/users", {"name": "alice"}, status=201)
        self.assertEqual(alice["role"], "user")
        self.assertRegex(alice["token"], HEX64)
        self.assertNotIn("token", self.admin.ok("GET", "/users/me"))
        bob = self.admin.ok("POST", "/users", {"name": "bob", "role": "user"}, status=201)
        alice_api = User(control, alice["token"])
        bob_api = User(control, bob["token"])
        self.assertEqual(alice_api.ok("GET", "/users/me"),
                         {"id": alice["id"], "name": "alice", "role": "user"})
        self.assertEqual(alice_api.call("POST", "/users", {"name": "carol"}).status, 403)
        self.assertEqual(alice_api.call("POST", "/infra", {"name": "x",
                                                           "gateway_domain": "x.test"}).status,
                         403)
        self.assertEqual(self.admin.call("POST", "/users", {"name": "alice"}).status, 409)

        self.make_infra()
        gs = alice_api.create_gitspace()
        self.assertEqual(gs["owner"], alice["id"])
        for method, path in (("GET", ""), ("POST", "/actions/stop"), ("POST", "/token"),
                             ("DELETE", ""), ("GET", "/events")):
            reply = bob_api.call(method, "/gitspaces/" + gs["id"] + path)
            self.assertEqual(reply.status, 404, (method, path, reply))
        self.assertEqual(bob_api.ok("GET", "/gitspaces")["gitspaces"], [])
        self.assertEqual(len(self.admin.ok("GET", "/gitspaces")["gitspaces"]), 1)
        self.assertEqual(self.admin.ok("GET", "/gitspaces/" + gs["id"])["id"], gs["id"])

        delegate_token = control.secret("delegate.token")
        reply = control.request("GET", "/api/v1/gitspaces", token=delegate_token)
        self.assertEqual(reply.status, 403)
        reply = control.request("GET", "/api/v1/delegate/routes", token=alice["token"])
        self.assertEqual(reply.status, 403)
        reply = control.request("GET", "/api/v1/delegate/routes")
        self.assertEqual(reply.status, 401)

    def test_methods_paths_and_sizes(self):
        reply = self.admin.call("PUT", "/gitspaces")
        self.assertEqual(reply.status, 405)
        self.assertEqual(reply.header("Allow"), "GET, POST")
        self.assertEqual(self.admin.call("GET", "/nothing").status, 404)
        self.assertEqual(self.admin.call("GET", "/gitspaces/gs-zz").status, 404)
        self.assertEqual(self.admin.call("POST", "/gitspaces/gs-00000000/actions/fly").status,
                         404)
        # A body declared over 1 MiB is refused before it is read.
        with socket.create_connection((LOOPBACK, self.control.port), timeout=10) as raw:
            raw.sendall(b"POST /api/v1/gitspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                        + self.admin.token.encode() + b"\r\nContent-Length: 1048577\r\n\r\n")
            self.assertTrue(raw.recv(4096).startswith(b"HTTP/1.1 413 "))
        # Exactly 1 MiB is read (and refused for what it says).
        reply = self.admin.call("POST", "/gitspaces", b"{" + b" " * ((1 << 20) - 2) + b"}")
        self.assertField(reply, 400, "name")
        reply = self.admin.call("POST", "/gitspaces", b"not json")
        self.assertEqual(reply.status, 400)
        self.assertEqual(reply.json()["error"], "the body is not valid JSON")
        self.assertEqual(self.admin.call("POST", "/gitspaces", [1, 2]).status, 400)


class ValidationTest(ControlTestCase):
    CONFIG = {"limits": {"max_gitspaces_per_user": 3}}

    def test_infra(self):
        cases = [
            ({"gateway_domain": "gs.test"}, "name"),
            ({"name": "x"}, "gateway_domain"),
            ({"name": "x", "gateway_domain": "GS.test"}, "gateway_domain"),
            ({"name": "x", "gateway_domain": "bad_domain"}, "gateway_domain"),
            ({"name": "x", "gateway_domain": "gs.test", "url_scheme": "ftp"}, "url_scheme"),
            ({"name": "x", "gateway_domain": "gs.test", "gateway_port": 70000}, "gateway_port"),
            ({"name": "x", "gateway_domain": "gs.test", "gateway_port": "80"}, "gateway_port"),
            ({"name": "x", "gateway_domain": "gs.test", "runner_pool": "Big Pool"},
             "runner_pool"),
            ({"name": "x", "gateway_domain": "gs.test", "idle_timeout": "soon"}, "idle_timeout"),
            ({"name": "x", "gateway_domain": "gs.test", "colour": 1}, "colour"),
            ({"name": "Has Space", "gateway_domain": "gs.test"}, "name"),
        ]
        for body, field in cases:
            self.assertField(self.admin.call("POST", "/infra", body), 400, field)
        infra = self.make_infra(idle_timeout="10m", delegate_selector="eu")
        self.assertRegex(infra["id"], r"^inf-[0-9a-f]{8}$")
        self.assertEqual(infra["idle_timeout_s"], 600)
        self.assertEqual(infra["delegate_selector"], "eu")
        self.assertEqual(self.admin.call("POST", "/infra", {"name": "default",
                                                            "gateway_domain": "b.test"}).status,
                         409)
        self.assertEqual([i["name"] for i in self.admin.ok("GET", "/infra")["infra"]],
                         ["default"])

    def test_gitspaces(self):
        # No infra yet.
        self.assertField(self.admin.call("POST", "/gitspaces", {
            "name": "a", "repository": "r", "ide": "jupyter"}), 400, "infra")
        self.make_infra()
        good = {"name": "a", "repository": "https://example.com/r.git", "ide": "jupyter"}
        cases = [
            ({"repository": "r", "ide": "ssh"}, "name"),
            (dict(good, name="x" * 65), "name"),
            (dict(good, name="-dash"), "name"),
            (dict(good, repository=""), "repository"),
            (dict(good, repository="has space"), "repository"),
            (dict(good, repository="r" * 2049), "repository"),
            (dict(good, branch="a b"), "branch"),
            (dict(good, branch="-x"), "branch"),
            (dict(good, ide="emacs"), "ide"),
            ({"name": "a", "repository": "r"}, "ide"),
            (dict(good, infra="nope"), "infra"),
            (dict(good, idle_timeout="1d"), "idle_timeout"),
            (dict(good, extra=True), "extra"),
            (dict(good, name=5), "name"),
        ]
        for body, field in cases:
            self.assertField(self.admin.call("POST", "/gitspaces", body), 400, field)

        gs = self.admin.create_gitspace("a", branch="main", idle_timeout="5m", infra="default")
        self.assertRegex(gs["id"], r"^gs-[0-9a-f]{8}$")
        self.assertEqual(gs["state"], "starting")
        self.assertEqual(gs["branch"], "main")
        self.assertEqual(gs["idle_timeout_s"], 300)
        self.assertEqual(gs["url"], "http://%s.gs.test:8080/gs/%s/" % (gs["id"], gs["id"]))
        self.assertEqual(gs["path_url"], "http://gs.test:8080/gs/%s/" % gs["id"])
        for key in ("id", "name", "owner", "repository", "branch", "ide", "infra", "state",
                    "state_reason", "state_since", "idle_timeout_s", "machine_id", "url",
                    "path_url", "forwarded_ports", "last_activity", "created_at"):
            self.assertIn(key, gs)
        self.assertField(self.admin.call("POST", "/gitspaces", dict(good)), 409, "name")
        self.admin.create_gitspace("b")
        self.admin.create_gitspace("c")
        reply = self.admin.call("POST", "/gitspaces", dict(good, name="d"))
        self.assertEqual(reply.status, 409)
        self.assertIn("most allowed", reply.json()["error"])
        self.assertEqual(len(self.admin.ok("GET", "/gitspaces")["gitspaces"]), 3)
        reply = self.admin.call("DELETE", "/gitspaces/" + gs["id"])
        self.assertEqual(reply.status, 202)
        self.assertEqual(reply.json()["state"], "cleaning")
        reply = self.admin.call("POST", "/gitspaces/%s/actions/stop" % gs["id"])
        self.assertEqual(reply.status, 409)
        self.assertIn("cleaning", reply.json()["error"])


class DelegateTest(ControlTestCase):
    CONFIG = {"task_lease": "3s"}

    def setUp(self):
        super().setUp()
        self.make_infra()

    def test_long_poll_is_answered_when_a_task_is_queued(self):
        delegate = FakeDelegate(self.control)
        got = {}

        def poll():
            started = time.monotonic()
            got["task"] = delegate.poll(wait=20)
            got["elapsed"] = time.monotonic() - started

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.5)
        gs = self.admin.create_gitspace()
        thread.join(25)
        self.assertFalse(thread.is_alive())
        self.assertIsNotNone(got["task"])
        self.assertLess(got["elapsed"], 5)
        task = got["task"]
        self.assertRegex(task["id"], r"^t-[0-9a-f]+$")
        self.assertEqual(task["kind"], "start")
        self.assertEqual(task["attempt"], 1)
        self.assertEqual(task["gitspace"]["id"], gs["id"])
        self.assertEqual(task["gitspace"]["owner"], gs["owner"])
        self.assertEqual(task["gitspace"]["repository"], gs["repository"])
        self.assertEqual(task["infra"], {"gateway_domain": "gs.test", "url_scheme": "http",
                                         "gateway_port": 8080, "runner_pool": "default"})
        self.assertTrue(task["agent_token"].startswith("v1."))
        self.assertGreater(task["lease_until_ms"], time.time() * 1000)

    def test_poll_gives_204_after_wait_and_bounds_wait(self):
        delegate = FakeDelegate(self.control)
        started = time.monotonic()
        self.assertIsNone(delegate.poll(wait=1))
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 4)
        self.assertIsNone(delegate.poll(wait=0))
        self.assertField(delegate.call("GET", "/tasks?wait=31"), 400, "wait")
        self.assertField(delegate.call("GET", "/tasks?wait=x"), 400, "wait")
        # Several delegates: the header names which.
        FakeDelegate(self.control, name="d2")
        self.assertField(self.control.request("GET", "/api/v1/delegate/tasks",
                                              token=delegate.token),
                         400, "X-Spacegate-Delegate")
        self.assertEqual(delegate.call("GET", "/tasks", with_id=False).status, 400)
        reply = self.control.request("GET", "/api/v1/delegate/tasks", token=delegate.token,
                                     headers={"X-Spacegate-Delegate": "dg-00000000"})
        self.assertEqual(reply.status, 403)

    def test_register_again_keeps_the_id(self):
        first = FakeDelegate(self.control, name="same")
        second = FakeDelegate(self.control, name="same")
        self.assertEqual(first.id, second.id)
        self.assertRegex(first.id, r"^dg-[0-9a-f]{8}$")
        gateways = self.admin.ok("GET", "/gateways")
        self.assertEqual(len(gateways), 1)
        self.assertEqual(gateways[0]["delegate"], "same")
        self.assertEqual(gateways[0]["gateway"], "gw1")
        self.assertTrue(gateways[0]["healthy"])
        self.assertIn("reported_at", gateways[0])
        self.assertField(first.call("POST", "/register", {"version": "1"}, with_id=False), 400,
                         "name")

    def test_lease_expiry_and_the_wrong_delegate(self):
        d1 = FakeDelegate(self.control, name="d1")
        d2 = FakeDelegate(self.control, name="d2")
        gs = self.admin.create_gitspace()
        task = d1.poll()
        self.assertIsNotNone(task)
        self.assertIsNone(d2.poll())  # the only task is leased to d1
        self.assertEqual(d2.result(task, data=MACHINE).status, 409)
        self.assertEqual(d2.events(task, [{"type": "agent_setup_log", "message": "x"}]).status,
                         409)
        self.assertEqual(d1.call("POST", "/tasks/t-0123/result", {"ok": True}).status, 404)
        # d1 goes silent; after the 3 s lease the task goes to d2.
        again = d2.poll(wait=10)
        self.assertIsNotNone(again)
        self.assertEqual(again["id"], task["id"])
        self.assertEqual(again["attempt"], 2)
        self.assertEqual(d1.result(task, data=MACHINE).status, 409)
        # Events extend the lease: d2 keeps it across 4 s of events.
        for _ in range(4):
            time.sleep(1)
            reply = d2.events(again, [{"type": "agent_setup_log", "message": "cloning"}])
            self.assertEqual(reply.status, 200, reply)
        self.assertIsNone(d1.poll())
        finish_start(self, d2, again)
        self.assertEqual(self.admin.state(gs["id"]), "running")

    def test_start_waits_for_a_healthy_gateway(self):
        delegate = FakeDelegate(self.control, gateways=False)
        gs = self.admin.create_gitspace()
        self.assertIsNone(delegate.poll())
        self.assertIsNone(delegate.poll())
        types = [e["event"] for e in self.events_of(gs["id"])]
        self.assertEqual(types.count("waiting_for_gateway"), 1, types)
        self.assertEqual(delegate.report(gateways=[{"name": "gw", "healthy": False}]).status,
                         200)
        self.assertIsNone(delegate.poll())
        self.assertEqual(delegate.report(gateways=[{"name": "gw", "version": "1",
                                                    "healthy": True}]).status, 200)
        task = delegate.poll()
        self.assertIsNotNone(task)
        self.assertEqual(task["kind"], "start")

    def test_failure_result_is_an_error_and_start_retries(self):
        delegate = FakeDelegate(self.control)
        gs = self.admin.create_gitspace()
        task = delegate.poll()
        self.assertEqual(delegate.result(task, ok=False, error="clone failed: no such repo")
                         .status, 200)
        got = self.admin.gitspace(gs["id"])
        self.assertEqual(got["state"], "error")
        self.assertEqual(got["state_reason"], "start failed: clone failed: no such repo")
        self.assertEqual(self.admin.call("POST", "/gitspaces/%s/actions/start" % gs["id"]).status,
                         202)
        finish_start(self, delegate, delegate.poll())
        self.assertEqual(self.admin.state(gs["id"]), "running")

    def test_bad_results_and_events_name_the_field(self):
        delegate = FakeDelegate(self.control)
        self.admin.create_gitspace()
        task = delegate.poll()
        self.assertField(delegate.call("POST", "/tasks/%s/result" % task["id"], {}), 400, "ok")
        bad = dict(MACHINE)
        del bad["ide_port"]
        self.assertField(delegate.result(task, data=bad), 400, "data.ide_port")
        self.assertField(delegate.result(task, data=dict(MACHINE, address="a b")), 400,
                         "data.address")
        self.assertField(delegate.result(task, data=dict(MACHINE, forwarded_ports=[0])), 400,
                         "data.forwarded_ports[0]")
        self.assertField(delegate.events(task, [{"type": "Nope"}]), 400, "events[0].type")
        self.assertField(delegate.events(task, [{"type": "state_changed"}]), 400,
                         "events[0].type")
        self.assertField(delegate.events(task, [{"type": "x", "data": [1]}]), 400,
                         "events[0].data")
        self.assertField(delegate.report(activity=[{"gitspace": "gs-1"}]), 400,
                         "activity[0].last_activity_unix_ms")
        finish_start(self, delegate, task)


class LifecycleTest(ControlTestCase):
    def setUp(self):
        super().setUp()
        self.make_infra()

    def test_the_whole_flow_driven_by_results(self):
        delegate = FakeDelegate(self.control)
        api = self.admin
        gs = api.create_gitspace()["id"]
        v0 = delegate.routes()["version"]
        self.assertEqual(delegate.routes()["routes"], [])

        task = delegate.poll()
        reply = delegate.events(task, [
            {"type": "infra_provisioning_started", "message": "asking the runner"},
            {"type": "machine_assigned", "message": "machine m-1",
             "data": {"machine_id": "m-1", "address": "127.0.0.1", "agent_port": 41001,
                      "ide_port": 41002}},
            {"type": "infra_provisioning_completed", "message": "machine ready"},
        ])
        self.assertEqual(reply.status, 200, reply)
        table = delegate.routes()
        self.assertGreater(table["version"], v0)
        self.assertEqual(table["routes"], [{
            "id": "agent--" + gs, "host": "agent--%s.gs.test" % gs, "path_prefix": "/",
            "strip_prefix": False, "upstream": "127.0.0.1:41001", "protocol": "http1",
            "gitspace": gs, "access": "agent"}])
        self.assertEqual(api.gitspace(gs)["machine_id"], "m-1")
        v1 = table["version"]

        finish_start(self, delegate, task)
        got = api.gitspace(gs)
        self.assertEqual(got["state"], "running")
        self.assertEqual(got["forwarded_ports"], [3000])
        table = delegate.routes()
        self.assertGreater(table["version"], v1)
        owner = got["owner"]
        by_id = {r["id"]: r for r in table["routes"]}
        self.assertEqual(set(by_id), {"agent--" + gs, gs, gs + "--3000", gs + "--path"})
        self.assertEqual(by_id[gs], {
            "id": gs, "host": "%s.gs.test" % gs, "path_prefix": "/", "strip_prefix": False,
            "upstream": "127.0.0.1:41002", "protocol": "http1", "gitspace": gs,
            "owner": owner, "access": "owner"})
        self.assertEqual(by_id[gs + "--3000"]["host"], "3000--%s.gs.test" % gs)
        self.assertEqual(by_id[gs + "--3000"]["upstream"], "127.0.0.1:3000")
        self.assertEqual(by_id[gs + "--path"]["host"], "gs.test")
        self.assertEqual(by_id[gs + "--path"]["path_prefix"], "/gs/" + gs)
        v2 = table["version"]
        self.assertEqual(delegate.routes()["version"], v2)  # no change, same version

        token = api.ok("POST", "/gitspaces/%s/token" % gs)
        self.assertTrue(token["token"].startswith("v1."))
        self.assertEqual(token["url"], got["url"] + "?sg_token=" + token["token"])
        self.assertIn("expires_at", token)

        # stop -> stopped
        self.assertEqual(api.ok("POST", "/gitspaces/%s/actions/stop" % gs, status=202)["state"],
                         "stopping")
        self.assertEqual(api.call("POST", "/gitspaces/%s/actions/stop" % gs).status, 409)
        task = delegate.poll()
        self.assertEqual(task["kind"], "stop")
        self.assertEqual(task["gitspace"]["machine_id"], "m-1")
        self.assertEqual(delegate.result(task).status, 200)
        self.assertEqual(api.state(gs), "stopped")
        table = delegate.routes()
        self.assertEqual(table["routes"], [])
        self.assertGreater(table["version"], v2)

        # start -> running
        api.ok("POST", "/gitspaces/%s/actions/start" % gs, status=202)
        task = delegate.poll()
        self.assertEqual(task["gitspace"]["machine_id"], "m-1")
        finish_start(self, delegate, task)
        self.assertEqual(api.state(gs), "running")

        # reset -> cleaning -> (cleaned) -> starting -> running
        api.ok("POST", "/gitspaces/%s/actions/reset" % gs, status=202)
        task = delegate.poll()
        self.assertEqual(task["kind"], "reset")
        self.assertEqual(delegate.result(task).status, 200)
        got = api.gitspace(gs)
        self.assertEqual(got["state"], "starting")
        self.assertEqual(got["machine_id"], "")
        task = delegate.poll()
        self.assertEqual(task["kind"], "start")
        self.assertEqual(task["gitspace"]["machine_id"], "")
        finish_start(self, delegate, task, dict(MACHINE, machine_id="m-2"))
        self.assertEqual(api.gitspace(gs)["machine_id"], "m-2")

        # delete -> cleaning -> deleted
        self.assertEqual(api.call("DELETE", "/gitspaces/" + gs).status, 202)
        task = delegate.poll()
        self.assertEqual(task["kind"], "delete")
        self.assertEqual(delegate.result(task).status, 200)
        self.assertEqual(api.state(gs), "deleted")
        self.assertEqual(delegate.routes()["routes"], [])
        self.assertEqual(api.call("DELETE", "/gitspaces/" + gs).status, 409)
        self.assertEqual(api.call("POST", "/gitspaces/%s/token" % gs).status, 409)

        transitions = [(e["data"]["data"]["from"], e["data"]["data"]["to"])
                       for e in self.events_of(gs) if e["event"] == "state_changed"]
        self.assertEqual(transitions, [
            ("uninitialized", "starting"), ("starting", "running"), ("running", "stopping"),
            ("stopping", "stopped"), ("stopped", "starting"), ("starting", "running"),
            ("running", "cleaning"), ("cleaning", "cleaned"), ("cleaned", "starting"),
            ("starting", "running"), ("running", "cleaning"), ("cleaning", "deleted")])
        types = [e["event"] for e in self.events_of(gs)]
        self.assertEqual(types[0], "gitspace_created")
        self.assertIn("infra_provisioning_started", types)
        self.assertIn("machine_assigned", types)
        self.assertEqual(types[-1], "deleted")

    def test_ssh_tokens_name_their_tunnel(self):
        delegate = FakeDelegate(self.control)
        api = self.admin
        gs = api.create_gitspace()["id"]
        path = "/gitspaces/%s/token" % gs
        self.assertField(api.call("POST", path, {"scope": "root"}), 400, "scope")
        self.assertField(api.call("POST", path, {"scope": ["ssh"]}), 400, "scope")
        self.assertEqual(api.call("POST", path, {"scope": "ssh"}).status, 409)  # starting
        finish_start(self, delegate, delegate.poll(), dict(MACHINE, ssh_port=41003))
        self.assertEqual(api.gitspace(gs)["ssh_port"], 41003)
        by_id = {r["id"]: r for r in delegate.routes()["routes"]}
        self.assertEqual(by_id[gs]["tunnel_ports"], [41003])
        self.assertNotIn("tunnel_ports", by_id[gs + "--3000"])

        reply = api.ok("POST", path, {"scope": "ssh"})
        self.assertEqual(reply["scope"], "ssh")
        self.assertNotIn("url", reply)
        self.assertEqual(reply["ssh"], {
            "host": "%s.gs.test" % gs, "port": 41003, "gateway": "http://gs.test:8080",
            "websocket_url": "ws://%s.gs.test:8080/.spacegate/tunnel/41003" % gs})
        # The payload (not checked for its signature here): scope ssh only.
        payload = reply["token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self.assertEqual(claims.get("scope"), "ssh")
        # No body, an empty one and "ide" are the IDE token, as before.
        for body in (None, {}, {"scope": "ide"}):
            ide = api.ok("POST", path, body)
            self.assertEqual(ide["scope"], "ide")
            self.assertIn("url", ide)
            self.assertNotIn("ssh", ide)

    def test_route_table_is_taken_by_a_real_gateway(self):
        if not os.path.exists(GATEWAY_BINARY):
            self.skipTest("gateway binary not found: %s" % GATEWAY_BINARY)
        delegate = FakeDelegate(self.control)
        for name, ide in (("j", "jupyter"), ("v", "vscode-web"), ("s", "ssh")):
            self.admin.create_gitspace(name, ide=ide)
            finish_start(self, delegate, delegate.poll(),
                         dict(MACHINE, forwarded_ports=[3000, 8000], ssh_port=41003))
        self.admin.create_gitspace("starting")
        task = delegate.poll()
        delegate.events(task, [{"type": "machine_assigned", "data": {
            "machine_id": "m-9", "address": "127.0.0.2", "agent_port": 41009}}])
        table = delegate.routes()
        self.assertEqual(len(table["routes"]), 3 * 5 + 1)
        socket_path = os.path.join(self.tmpdir, "gw.sock")
        port = free_port()
        gateway = Gateway(control_config(port, [], socket_path=socket_path),
                          tmpdir=os.path.join(self.tmpdir, "gw"), port=port)
        os.makedirs(gateway.tmpdir)
        gateway.start()
        try:
            self.assertTrue(wait_for_socket(socket_path))
            api = ControlClient(socket_path)
            reply = api.put("/routes", table)
            self.assertEqual(reply.status, 200, reply.body)
            self.assertEqual(api.routes()["version"], table["version"])
            # A stale push (a lower version) is refused by the gateway.
            self.assertEqual(api.put("/routes", dict(table, version=table["version"] - 1))
                             .status, 409)
        finally:
            gateway.stop()


class DeadlineTest(ControlTestCase):
    CONFIG = {"deadlines": {"starting": "2s", "stopping": "2s", "cleaning": "2s"}}

    def test_starting_past_its_deadline_is_an_error(self):
        self.make_infra()
        gs = self.admin.create_gitspace()["id"]
        self.assertTrue(self.admin.wait_state(gs, "error", timeout=6))
        got = self.admin.gitspace(gs)
        self.assertEqual(got["state_reason"], "starting took longer than its deadline of 2s")
        events = self.events_of(gs)
        errors = [e for e in events if e["event"] == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["data"]["message"], got["state_reason"])
        # The start task was cancelled: a delegate that comes now gets nothing.
        delegate = FakeDelegate(self.control)
        self.assertIsNone(delegate.poll())
        # error -> start retries.
        self.admin.ok("POST", "/gitspaces/%s/actions/start" % gs, status=202)
        finish_start(self, delegate, delegate.poll())
        self.assertEqual(self.admin.state(gs), "running")


class EventStreamTest(ControlTestCase):
    CONFIG = {"limits": {"stream_keepalive": "1s"}}

    def test_live_events_resume_keepalive_and_end(self):
        self.make_infra()
        delegate = FakeDelegate(self.control)
        gs = self.admin.create_gitspace()["id"]
        stream = EventStream(self.control, self.admin.token, gs)
        self.assertEqual(stream.response.status, 200)
        self.assertEqual(stream.response.getheader("Content-Type"), "text/event-stream")
        first = stream.next_event()
        self.assertEqual(first["event"], "gitspace_created")
        self.assertEqual(first["data"]["gitspace"], gs)
        self.assertEqual(first["data"]["id"], first["id"])
        self.assertEqual(stream.next_event()["event"], "state_changed")

        # Live: a delegate's event and the running transition arrive as they happen.
        task = delegate.poll()
        delegate.events(task, [{"type": "agent_setup_log", "message": "Cloning into 'r'..."}])
        live = stream.next_event()
        self.assertEqual(live["event"], "agent_setup_log")
        self.assertEqual(live["data"]["message"], "Cloning into 'r'...")
        self.assertEqual(live["data"]["data"]["task"], task["id"])
        finish_start(self, delegate, task)
        seen = stream.events_until(lambda e: e["event"] == "state_changed" and
                                   e["data"]["data"]["to"] == "running")
        last_id = seen[-1]["id"]
        # Keep-alive comments on a quiet stream.
        time.sleep(1.5)
        self.admin.ok("POST", "/gitspaces/%s/actions/stop" % gs, status=202)
        stream.next_event()
        self.assertIn(": keep-alive", stream.comments)

        # Resume from Last-Event-ID: only what came after it.
        resumed = EventStream(self.control, self.admin.token, gs, last_event_id=last_id)
        event = resumed.next_event()
        self.assertGreater(event["id"], last_id)
        self.assertEqual(event["data"]["data"]["to"], "stopping")
        after = EventStream(self.control, self.admin.token, gs, after=first["id"])
        self.assertGreater(after.next_event()["id"], first["id"])
        after.close()

        # Delete: the streams end after the `deleted` event.
        self.assertEqual(delegate.result(delegate.poll()).status, 200)
        self.admin.call("DELETE", "/gitspaces/" + gs)
        self.assertEqual(delegate.result(delegate.poll()).status, 200)
        for s in (stream, resumed):
            seen = s.events_until(lambda e: e["event"] == "deleted")
            self.assertIsNone(s.next_event())
            s.close()
        # A stream opened on a deleted Gitspace gives the backlog and ends.
        late = EventStream(self.control, self.admin.token, gs, after=last_id)
        self.assertEqual(late.events_until(lambda e: e["event"] == "deleted")[-1]["event"],
                         "deleted")
        self.assertIsNone(late.next_event())
        late.close()
        reply = self.admin.call("GET", "/gitspaces/%s/events?after=x" % gs)
        self.assertEqual(reply.status, 400)


class LimitsTest(ControlTestCase):
    CONFIG = {"limits": {"max_event_streams": 3, "max_event_streams_per_user": 2,
                         "max_polls_per_delegate": 1}}

    def test_streams_and_polls_are_bounded(self):
        self.make_infra()
        alice = User(self.control, self.admin.ok("POST", "/users", {"name": "alice"},
                                                 status=201)["token"])
        mine = self.admin.create_gitspace()["id"]
        hers = alice.create_gitspace()["id"]
        open_streams = [EventStream(self.control, self.admin.token, mine) for _ in range(2)]
        for stream in open_streams:
            self.assertEqual(stream.response.status, 200)
            self.assertEqual(stream.next_event()["event"], "gitspace_created")
        self.assertEqual(self.admin.call("GET", "/gitspaces/%s/events" % mine).status, 429)
        open_streams.append(EventStream(self.control, alice.token, hers))
        self.assertEqual(open_streams[-1].response.status, 200)
        open_streams[-1].next_event()
        extra = EventStream(self.control, alice.token, hers)
        self.assertEqual(extra.response.status, 503)
        extra.close()
        # A closed stream frees its place.
        open_streams.pop().close()
        self.assertTrue(wait_until(lambda: self._stream_opens(alice.token, hers), 5))
        for stream in open_streams:
            stream.close()

        delegate = FakeDelegate(self.control, gateways=False)
        parked = threading.Thread(target=lambda: delegate.poll(wait=3))
        parked.start()
        time.sleep(0.5)
        self.assertEqual(delegate.call("GET", "/tasks?wait=3").status, 429)
        parked.join(10)

    def _stream_opens(self, token, gs):
        stream = EventStream(self.control, token, gs)
        try:
            return stream.response.status == 200
        finally:
            stream.close()

    def test_messages_are_cut_and_cleaned(self):
        self.make_infra()
        delegate = FakeDelegate(self.control)
        gs = self.admin.create_gitspace()["id"]
        task = delegate.poll()
        reply = delegate.events(task, [{"type": "agent_setup_log",
                                        "message": "\x1b[31mred\x07" + "é" * 5000}])
        self.assertEqual(reply.status, 200, reply)
        logged = [e for e in self.events_of(gs) if e["event"] == "agent_setup_log"][0]
        message = logged["data"]["message"]
        self.assertTrue(message.startswith(" [31mred "), message[:20])
        self.assertLessEqual(len(message.encode()), 8192)
        self.assertTrue(message.endswith("é"))


class AutoStopTest(ControlTestCase):
    def test_idle_gitspace_is_stopped(self):
        self.make_infra(idle_timeout="2s")
        delegate = FakeDelegate(self.control)
        gs = self.admin.create_gitspace()["id"]
        finish_start(self, delegate, delegate.poll())
        # Activity keeps it running past its idle timeout.
        for _ in range(6):
            reply = delegate.report(activity=[{
                "gitspace": gs, "last_activity_unix_ms": int(time.time() * 1000),
                "open_connections": 1, "open_tunnels": 0}])
            self.assertEqual(reply.status, 200)
            time.sleep(0.5)
        self.assertEqual(self.admin.state(gs), "running")
        self.assertIsNotNone(self.admin.gitspace(gs)["last_activity"])
        # Then silence: stopped within a few seconds.
        self.assertTrue(self.admin.wait_state(gs, "stopping", timeout=6))
        stopped = [e for e in self.events_of(gs) if e["event"] == "auto_stopped"]
        self.assertEqual(len(stopped), 1)
        self.assertRegex(stopped[0]["data"]["message"], r"^idle for \d+ seconds$")
        task = delegate.poll()
        self.assertEqual(task["kind"], "stop")
        self.assertEqual(delegate.result(task).status, 200)
        self.assertEqual(self.admin.state(gs), "stopped")

    def test_no_activity_counts_from_running(self):
        self.make_infra(idle_timeout="2s")
        delegate = FakeDelegate(self.control)
        gs = self.admin.create_gitspace()["id"]
        task = delegate.poll()
        time.sleep(2.5)  # starting for longer than the idle timeout does not count
        finish_start(self, delegate, task)
        self.assertEqual(self.admin.state(gs), "running")
        self.assertTrue(self.admin.wait_state(gs, "stopping", timeout=6))


class RestartTest(ControlTestCase):
    CONFIG = {"task_lease": "3s"}

    def build_state(self):
        self.make_infra()
        user = self.admin.ok("POST", "/users", {"name": "alice"}, status=201)
        delegate = FakeDelegate(self.control)
        running = self.admin.create_gitspace("running")["id"]
        finish_start(self, delegate, delegate.poll())
        starting = self.admin.create_gitspace("starting")["id"]
        leased = delegate.poll()
        self.assertEqual(leased["gitspace"]["id"], starting)
        queued = self.admin.create_gitspace("queued")["id"]
        before = {
            "gitspaces": self.admin.ok("GET", "/gitspaces"),
            "routes": delegate.routes(),
            "events": {gs: self.events_of(gs) for gs in (running, starting, queued)},
        }
        return user, delegate, running, starting, queued, leased, before

    def check_after_restart(self, user, delegate, running, starting, queued, leased, before):
        self.assertEqual(self.admin.ok("GET", "/gitspaces"), before["gitspaces"])
        self.assertEqual(User(self.control, user["token"]).ok("GET", "/users/me")["name"],
                         "alice")
        self.assertEqual(delegate.routes(), before["routes"])
        for gs, events in before["events"].items():
            self.assertEqual(self.events_of(gs), events)
        # The leased task comes back once its lease runs out; the queued one
        # is handed out too.
        kinds = {}
        deadline = time.monotonic() + 15
        while len(kinds) < 2 and time.monotonic() < deadline:
            task = delegate.poll(wait=1)
            if task:
                kinds[task["gitspace"]["id"]] = task
        self.assertEqual(set(kinds), {starting, queued})
        self.assertEqual(kinds[starting]["id"], leased["id"])
        self.assertEqual(kinds[starting]["attempt"], 2)
        for task in kinds.values():
            finish_start(self, delegate, task)
        version = before["routes"]["version"]
        self.assertGreater(delegate.routes()["version"], version)
        for gs in (running, starting, queued):
            self.assertEqual(self.admin.state(gs), "running")
        # Event ids keep growing.
        last = before["events"][starting][-1]["id"]
        self.assertGreater(self.events_of(starting)[-1]["id"], last)

    def test_sigterm_restart_keeps_everything(self):
        state = self.build_state()
        self.assertEqual(self.control.stop(), 0)
        self.control.start()
        self.check_after_restart(*state)

    def test_kill9_keeps_everything(self):
        state = self.build_state()
        self.control.kill9()
        self.control.start()
        self.check_after_restart(*state)


if __name__ == "__main__":
    unittest.main(verbosity=2)
