#!/usr/bin/env python3
"""spacegate-delegate with the real gateway, the real runner and agent, and a
small control plane written here (Python's http.server) that hands out
tasks, records events and results, and serves the desired route table it
derives from them (as docs/control-plane.md has it).

A start: the runner gives a machine, machine_assigned is posted before the
route table is fetched, the agent route reaches the gateway, and the agent
is driven only through the gateway (every agent call the delegate logs is in
the gateway's access log under `agent--<gs>.<domain>`, answered by the
agent, and the agent token was accepted); the events come in the documented
order with the setup log; the result carries the machine and the IDE; the
IDE routes reach the gateway after the result and the IDE answers through
it with an owner token. A restarted delegate (SIGTERM exits 0) given the
same task again posts the same result and calls nothing. Stop (the agent
and the machine stopped, routes gone), a second start (the stopped machine
and Gitspace woken), and delete (the machine gone, the gateway's table
empty). The gateway's health and activity are reported.

Machines use the runner's `processes` sandbox (loopback ports), so no root
is needed. Environment: SPACEGATE_BINARY, SPACEGATECTL_BINARY,
SPACEGATE_RUNNER_BINARY, SPACEGATE_AGENT_BINARY, SPACEGATE_DELEGATE_BINARY.
"""

import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from runner_harness import Runner, make_repository, require_binaries  # noqa: E402

DELEGATE_BINARY = os.path.abspath(os.environ.get(
    "SPACEGATE_DELEGATE_BINARY", "/work/main/build-delegate/delegate/spacegate-delegate"))
DELEGATE_TOKEN = "delegate-token-0123456789abcdef"
DOMAIN = "gs.test"
GS = "gs-0d1e2f3a"
OWNER = "u-owner"


def jupyter_available():
    return subprocess.run(["/usr/bin/python3", "-c", "import notebook"],
                          capture_output=True).returncode == 0


class FakeControlPlane:
    """The delegate API of docs/control-plane.md, in memory: one Gitspace,
    tasks queued by the test, events and results recorded, the desired
    route table derived from the Gitspace's state and machine."""

    def __init__(self):
        self.lock = threading.Condition()
        self.queue = []            # tasks waiting for a poll
        self.events = {}           # task id -> [event]
        self.results = {}          # task id -> [result]
        self.reports = []
        self.registrations = []
        self.unauthorized = 0
        self.route_fetches = []    # (time, version)
        self.kinds = {}            # task id -> kind
        self.state = "uninitialized"
        self.machine = None        # machine_assigned data, then the result's
        self.version = 1
        self.routes = []
        self.order = []            # "events:<type>" / "routes" as they came
        control = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a delegate that exited mid-poll

            def body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def authorized(self):
                if self.headers.get("Authorization") == "Bearer " + DELEGATE_TOKEN:
                    return True
                with control.lock:
                    control.unauthorized += 1
                self.reply(401, {"error": "bad token"})
                return False

            def do_GET(self):
                if not self.authorized():
                    return
                if self.path.startswith("/api/v1/delegate/tasks"):
                    wait = 1
                    if "wait=" in self.path:
                        wait = int(self.path.split("wait=")[1].split("&")[0])
                    task = control.lease(min(wait, 30), self.connection)
                    return self.reply(200, task) if task else self.reply(204)
                if self.path == "/api/v1/delegate/routes":
                    with control.lock:
                        control.order.append("routes")
                        control.route_fetches.append((time.monotonic(), control.version))
                        return self.reply(200, {"version": control.version,
                                                "routes": list(control.routes)})
                self.reply(404, {"error": "no such endpoint"})

            def do_POST(self):
                if not self.authorized():
                    return
                body = self.body()
                path = self.path
                if path == "/api/v1/delegate/register":
                    with control.lock:
                        control.registrations.append(body)
                    return self.reply(200, {"delegate_id": "dg-1"})
                if path == "/api/v1/delegate/report":
                    with control.lock:
                        control.reports.append(body)
                    return self.reply(200, {})
                parts = path.split("/")
                if len(parts) == 7 and parts[4] == "tasks":
                    task_id, what = parts[5], parts[6]
                    if what == "events":
                        control.take_events(task_id, body["events"])
                        return self.reply(200, {"lease_until_ms": 0})
                    if what == "result":
                        control.take_result(task_id, body)
                        return self.reply(200, {})
                self.reply(404, {"error": "no such endpoint"})

        self.server = ThreadingHTTPServer((h.LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d" % (h.LOOPBACK, self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # -- the test's side --

    def queue_task(self, task):
        with self.lock:
            self.kinds[task["id"]] = task["kind"]
            self.queue.append(task)
            self.lock.notify_all()

    def wait_result(self, task_id, count=1, timeout=180):
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.results.get(task_id, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no result for %s in %ss; events: %s" % (
                        task_id, timeout, json.dumps(self.events.get(task_id, []))[-3000:]))
                self.lock.wait(left)
            return self.results[task_id][count - 1]

    def event_types(self, task_id):
        with self.lock:
            return [e["type"] for e in self.events.get(task_id, [])]

    # -- the delegate's side --

    @staticmethod
    def client_gone(connection):
        """The poller closed its end (a delegate that exited mid-poll): a
        task must not be leased to it (the real control plane drops such a
        parked poll too)."""
        try:
            readable, _, _ = select.select([connection], [], [], 0)
            return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def lease(self, wait, connection):
        deadline = time.monotonic() + wait
        with self.lock:
            while not self.queue:
                left = deadline - time.monotonic()
                if left <= 0 or self.client_gone(connection):
                    return None
                self.lock.wait(min(left, 0.2))
            if self.client_gone(connection):
                return None
            task = self.queue.pop(0)
            busy = {"start": "starting", "stop": "stopping", "delete": "cleaning",
                    "reset": "cleaning"}
            self.state = busy[task["kind"]]
            self.recompute()
            return task

    def take_events(self, task_id, events):
        with self.lock:
            self.events.setdefault(task_id, []).extend(events)
            for event in events:
                self.order.append("events:" + event["type"])
                if event["type"] == "machine_assigned":
                    self.machine = dict(event["data"])
            self.recompute()
            self.lock.notify_all()

    def take_result(self, task_id, result):
        with self.lock:
            self.results.setdefault(task_id, []).append(result)
            kind = self.kinds.get(task_id)
            if result.get("ok"):
                if kind == "start":
                    self.machine.update(result["data"])
                    self.state = "running"
                elif kind == "stop":
                    self.state = "stopped"
                else:
                    self.state = "deleted"
                    self.machine = None
            else:
                self.state = "error"
            self.recompute()
            self.lock.notify_all()

    def recompute(self):
        routes = []
        m = self.machine
        if m and self.state in ("starting", "running", "stopping", "cleaning"):
            routes.append({"id": "agent--" + GS, "host": "agent--%s.%s" % (GS, DOMAIN),
                           "path_prefix": "/", "strip_prefix": False,
                           "upstream": "%s:%d" % (m["address"], m["agent_port"]),
                           "protocol": "http1", "gitspace": GS, "access": "agent"})
        if m and self.state == "running":
            upstream = "%s:%d" % (m["address"], m["ide_port"])
            routes.append({"id": GS, "host": "%s.%s" % (GS, DOMAIN), "path_prefix": "/",
                           "strip_prefix": False, "upstream": upstream, "protocol": "http1",
                           "gitspace": GS, "owner": OWNER, "access": "owner"})
            routes.append({"id": GS + "--path", "host": DOMAIN, "path_prefix": "/gs/" + GS,
                           "strip_prefix": False, "upstream": upstream, "protocol": "http1",
                           "gitspace": GS, "owner": OWNER, "access": "owner"})
        if routes != self.routes:
            self.routes = routes
            self.version += 1


class Delegate:
    """The real spacegate-delegate with a config file of its own."""

    def __init__(self, tmp, config):
        self.tmp = tmp
        self.config_path = os.path.join(tmp, "delegate.json")
        self.log_path = os.path.join(tmp, "delegate.log")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.process = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [DELEGATE_BINARY, "--config", self.config_path, "--log-level", "debug"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            preexec_fn=h._die_with_parent)
        return self

    def stop(self, timeout=30):
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        self.log.close()
        return code

    def lines(self):
        out = []
        try:
            with open(self.log_path, "rb") as f:
                for raw in f:
                    try:
                        out.append(json.loads(raw))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return h.tail(f.read().decode("utf-8", "replace"), 6000)
        except OSError:
            return ""

    def agent_calls(self):
        """(method, target, status) of every agent call the delegate made."""
        return [(l["method"], l["target"], l["status"]) for l in self.lines()
                if l.get("msg") == "agent call"]


class DelegateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DELEGATE_BINARY):
            raise unittest.SkipTest("delegate binary not found: %s" % DELEGATE_BINARY)
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        require_binaries()
        cls.ide = "jupyter" if jupyter_available() else None
        if cls.ide is None:
            raise unittest.SkipTest("Jupyter (python3-notebook) is not installed for /usr/bin/python3")
        cls.tmp = tempfile.mkdtemp(prefix="sg-delegate-it-")
        os.chmod(cls.tmp, 0o711)
        cls.key = h.TokenKey(cls.tmp, "cp-delegate-test")
        cls.resources = []
        try:
            cls._start_everything()
        except BaseException:
            cls._stop_everything()
            raise

    @classmethod
    def _start_everything(cls):
        # The gateway: control socket, access log, the control plane's key.
        cls.gateway_port = h.free_port()
        cls.control_socket = os.path.join(cls.tmp, "control.sock")
        cls.access_log = os.path.join(cls.tmp, "access.log")
        config = h.control_config(cls.gateway_port, [], socket_path=cls.control_socket,
                                  state_dir=os.path.join(cls.tmp, "gateway-state"),
                                  access_log=cls.access_log,
                                  auth=h.auth_section(keys=[cls.key]))
        cls.gateway = h.Gateway(config, tmpdir=os.path.join(cls.tmp, "gateway"))
        os.makedirs(cls.gateway.tmpdir)
        cls.gateway.start()
        cls.resources.append(cls.gateway.kill)
        h.wait_for_socket(cls.control_socket)
        cls.api = h.ControlClient(cls.control_socket)

        # The runner: loopback machines (no root needed), the same key.
        port_base = 22000 + (os.getpid() % 400) * 12  # below the ephemeral range
        cls.runner = Runner([{"name": "default", "min": 0, "max": 2,
                              "process": {"sandbox": "processes", "port_base": port_base}}],
                            keys_file=cls.key.pub_path).start()
        cls.resources.append(cls.runner.clean_up)

        cls.repository = make_repository(cls.tmp, {
            "README.md": "delegate test\n",
            ".devcontainer/devcontainer.json":
                '{"name": "delegate-test", "postCreateCommand": "echo created > created.txt"}\n',
        })
        cls.control = FakeControlPlane()
        cls.resources.append(cls.control.stop)
        token_file = os.path.join(cls.tmp, "delegate.token")
        with open(token_file, "w") as f:
            f.write(DELEGATE_TOKEN + "\n")
        cls.state_file = os.path.join(cls.tmp, "delegate-state", "state.json")
        cls.delegate_config = {
            "name": "delegate-it",
            "control_url": cls.control.url,
            "token_file": token_file,
            "selectors": ["default"],
            "state_file": cls.state_file,
            "runner": {"url": "http://%s:%d" % (h.LOOPBACK, cls.runner.port)},
            "gateways": [{"name": "local", "control_socket": cls.control_socket,
                          "data_url": "http://%s:%d" % (h.LOOPBACK, cls.gateway_port)}],
            "route_sync_interval": "60s",
            "report_interval": "1s",
        }
        cls.delegate = Delegate(cls.tmp, cls.delegate_config).start()
        cls.resources.append(cls.delegate.stop)

    @classmethod
    def _stop_everything(cls):
        for stop in reversed(getattr(cls, "resources", [])):
            try:
                stop()
            except Exception:
                pass
        if not h.KEEP_TMP:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls._stop_everything()

    # -- helpers --

    def task(self, task_id, kind):
        return {"id": task_id, "kind": kind, "attempt": 1,
                "gitspace": {"id": GS, "name": "demo", "owner": OWNER,
                             "repository": self.repository, "branch": "main",
                             "ide": self.ide,
                             "machine_id": (self.control.machine or {}).get("machine_id", "")},
                "infra": {"gateway_domain": DOMAIN, "url_scheme": "http",
                          "gateway_port": self.gateway_port, "runner_pool": "default"},
                "agent_token": self.key.sign("delegate", GS, scopes=("agent",), ttl="15m"),
                "lease_until_ms": 0}

    def run_task(self, task_id, kind, timeout=180):
        self.control.queue_task(self.task(task_id, kind))
        result = self.control.wait_result(task_id, timeout=timeout)
        self.assertTrue(result.get("ok"), "%s failed: %s\ndelegate log:\n%s\nrunner log:\n%s" % (
            task_id, result, self.delegate.log_text(), self.runner.log_text()[-6000:]))
        return result

    def access_entries(self):
        time.sleep(0.5)  # the gateway flushes its access log every 200 ms
        entries = []
        with open(self.access_log, "rb") as f:
            for raw in f:
                try:
                    entries.append(json.loads(raw))
                except ValueError:
                    pass
        return entries

    def agent_entries(self):
        host = "agent--%s.%s" % (GS, DOMAIN)
        return [e for e in self.access_entries() if e["host"].split(":")[0] == host]

    def assert_agent_calls_went_through_the_gateway(self):
        calls = self.delegate.agent_calls()
        self.assertTrue(calls, "the delegate made no agent call")
        entries = self.agent_entries()
        made = sorted((m, t) for m, t, _ in calls)
        seen = sorted((e["method"], e["path"]) for e in entries)
        self.assertEqual(made, seen, "agent calls and the gateway's access log differ")
        for entry in entries:
            self.assertEqual(entry["route"], "agent--" + GS, entry)
            # The agent answered (not the gateway refusing): no 401/403/5xx.
            self.assertLess(entry["status"], 400, entry)
            self.assertNotIn("error", entry, entry)

    def require_machine(self):
        if not self.control.machine or self.control.state == "error":
            self.skipTest("an earlier step failed: the Gitspace has no machine")

    def wait_gateway_routes(self, predicate, what, timeout=30):
        last = {}

        def check():
            last["t"] = self.api.routes()
            return predicate(last["t"])
        if not h.wait_until(check, timeout, 0.1):
            raise AssertionError("gateway routes: %s not reached; last: %s\ndelegate log:\n%s"
                                 % (what, json.dumps(last.get("t"))[:2000],
                                    self.delegate.log_text()))
        return last["t"]

    # -- the tests, in order --

    def test_01_start_drives_the_agent_only_through_the_gateway(self):
        result = self.run_task("t-start-1", "start")
        data = result["data"]
        self.assertEqual(data["address"], "127.0.0.1")
        self.assertEqual(data["ide_protocol"], "http")
        self.assertTrue(data["machine_id"].startswith("m-"), data)
        for key in ("agent_port", "ide_port"):
            self.assertIsInstance(data[key], int)
        self.assertEqual(data["forwarded_ports"], [])

        types = self.control.event_types("t-start-1")
        milestones = [t for t in types if t not in ("agent_setup_log", "progress")]
        self.assertEqual(milestones, [
            "infra_provisioning_started", "infra_provisioning_completed", "machine_assigned",
            "infra_gateway_route_completed", "agent_gitspace_creation_started",
            "agent_gitspace_creation_completed"])
        self.assertIn("agent_setup_log", types)
        # machine_assigned came before the first route fetch that had to
        # carry the agent route.
        order = self.control.order
        self.assertLess(order.index("events:machine_assigned"),
                        order.index("events:infra_gateway_route_completed"))
        assigned = [e for e in self.control.events["t-start-1"]
                    if e["type"] == "machine_assigned"][0]["data"]
        self.assertEqual(assigned["machine_id"], data["machine_id"])
        machine = self.runner.machine(data["machine_id"])
        self.assertEqual(machine["gitspace_id"], GS)
        self.assertEqual(assigned["agent_port"], machine["agent_port"])

        self.assert_agent_calls_went_through_the_gateway()
        methods = [(m, t.split("?")[0]) for m, t, _ in self.delegate.agent_calls()]
        self.assertEqual(methods[0], ("PUT", "/v1/gitspace"))
        self.assertIn(("GET", "/v1/gitspace/logs"), methods)

        # After the result, the IDE routes reach the gateway.
        table = self.wait_gateway_routes(
            lambda t: {r["id"] for r in t["routes"]} == {"agent--" + GS, GS, GS + "--path"},
            "agent and IDE routes")
        self.assertEqual(table["version"], self.control.version)

        # The gateway's health and route version are reported.
        self.assertTrue(h.wait_until(lambda: self.control.reports, 10))
        report = self.control.reports[-1]
        self.assertEqual(report["gateways"][0]["name"], "local")
        self.assertTrue(report["gateways"][0]["healthy"])
        self.assertIsInstance(report["gateways"][0]["version"], str)
        self.assertEqual(self.control.registrations[0]["name"], "delegate-it")
        self.assertEqual(self.control.unauthorized, 0)

    def test_01b_the_ide_answers_through_the_gateway(self):
        if self.control.state != "running":
            self.skipTest("the start did not finish")
        token = self.key.sign(OWNER, GS, scopes=("ide",), ttl="10m")
        status, _, body = h.http_get(self.gateway_port, "/gs/%s/api" % GS,
                                     host="%s.%s" % (GS, DOMAIN),
                                     headers={"Authorization": "Bearer " + token})
        entry = [e for e in self.access_entries() if e["host"].startswith(GS + ".")][-1]
        self.assertEqual(entry["route"], GS, entry)
        self.assertGreaterEqual(entry["upstream_time"], 0, entry)  # the IDE answered
        if status == 403 and b'"Forbidden"' in body:
            self.fail("Jupyter refused the gateway's Host (%s.%s): the agent must start it "
                      "with --NotebookApp.allow_remote_access=True" % (GS, DOMAIN))
        self.assertEqual(status, 200, body[:500])
        self.assertIn(b"version", body)

    def test_02_a_restarted_delegate_repeats_nothing(self):
        self.require_machine()
        code = self.delegate.stop()
        calls_before = len(self.agent_entries())
        events_before = len(self.control.events.get("t-start-1", []))
        type(self).delegate = Delegate(self.tmp, self.delegate_config).start()
        self.resources.append(self.delegate.stop)
        self.assertEqual(code, 0, self.delegate.log_text())
        with open(self.state_file) as f:
            state = json.load(f)
        self.assertTrue(state["tasks"]["t-start-1"]["result"]["ok"])
        # The control plane never took the result (say): the same task again.
        task = self.task("t-start-1", "start")
        self.control.queue_task(task)
        second = self.control.wait_result("t-start-1", count=2, timeout=60)
        self.assertEqual(second, self.control.results["t-start-1"][0])
        self.assertEqual(len(self.control.events["t-start-1"]), events_before)
        self.assertEqual(len(self.agent_entries()), calls_before)
        self.assertTrue(any(l.get("msg") == "task finished before; posting its result again"
                            for l in self.delegate.lines()), self.delegate.log_text())
        # Registered again, routes synced again.
        self.assertGreaterEqual(len(self.control.registrations), 2)

    def test_03_stop(self):
        self.require_machine()
        machine_id = self.control.machine["machine_id"]
        self.run_task("t-stop-1", "stop", timeout=120)
        self.assertEqual(self.runner.machine(machine_id)["state"], "stopped")
        entries = self.agent_entries()
        stops = [e for e in entries if e["method"] == "POST" and e["path"] == "/v1/gitspace/stop"]
        self.assertEqual(len(stops), 1, entries[-5:])
        self.assertEqual(stops[0]["status"], 200)
        self.wait_gateway_routes(lambda t: t["routes"] == [], "no routes once stopped")

    def test_04_start_again_wakes_the_machine(self):
        self.require_machine()
        machine_id = self.control.machine["machine_id"]
        result = self.run_task("t-start-2", "start")
        self.assertEqual(result["data"]["machine_id"], machine_id)
        self.assertEqual(self.runner.machine(machine_id)["state"], "in_use")
        starts = [e for e in self.agent_entries()
                  if e["method"] == "POST" and e["path"] == "/v1/gitspace/start"]
        self.assertEqual(len(starts), 1)
        self.assert_agent_calls_went_through_the_gateway()

    def test_05_delete(self):
        self.require_machine()
        machine_id = self.control.machine["machine_id"]
        self.run_task("t-delete-1", "delete", timeout=120)
        self.assertIsNone(self.runner.machine(machine_id))
        deletes = [e for e in self.agent_entries()
                   if e["method"] == "DELETE" and e["path"] == "/v1/gitspace"]
        self.assertEqual(len(deletes), 1)
        self.assertEqual(deletes[0]["status"], 200)
        self.wait_gateway_routes(lambda t: t["routes"] == [], "no routes once deleted")
        self.assert_agent_calls_went_through_the_gateway()


if __name__ == "__main__":
    unittest.main(verbosity=2)
