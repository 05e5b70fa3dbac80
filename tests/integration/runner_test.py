#!/usr/bin/env python3
"""The runner with real machines (network, mount, PID, UTS and IPC
namespaces, a bridge, control groups) running the real agent: pools fill
and refill, `max` holds under concurrent requests, a Gitspace is set up in a
machine and its IDE answers from the host through the machine's address,
stop/start keep the disk, delete leaves nothing, and a runner or an agent
killed with SIGKILL leaves a consistent state and no orphan.

Needs root (namespaces); skips with the reason otherwise. CI runs as root.
"""

import asyncio
import http.client
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import TokenKey, wait_until  # noqa: E402
from runner_harness import (AGENT_BINARY, Runner, execute_in_kernel,  # noqa: E402
                            host_footprint, http_json, make_repository, namespaces_reason,
                            processes_mentioning, require_binaries)

DEVCONTAINER = """{
  // A devcontainer.json as people write them: comments, trailing commas.
  "name": "runner-test",
  "image": "mcr.microsoft.com/devcontainers/python:3",
  "containerEnv": { "GREETING": "hello from containerEnv", },
  "remoteUser": "nobody",
  "forwardPorts": [3000, "localhost:5000",],
  /* run once */
  "postCreateCommand": "echo \\"$GREETING\\" > created.txt",
  "postStartCommand": ["sh", "-c", "date +%s >> started.txt"],
}
"""


def pool(name, subnet, minimum=0, maximum=4, **process):
    spec = {"subnet": subnet, "sandbox": "namespaces", "memory": 1024, "max_processes": 512}
    spec.update(process)
    return {"name": name, "driver": "process", "min": minimum, "max": maximum, "process": spec}


class NamespaceTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binaries()
        reason = namespaces_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.keys_dir = tempfile.mkdtemp(prefix="sg-runner-keys-")
        cls.key = TokenKey(cls.keys_dir, "cp-1")

    def start_runner(self, pools, **kwargs):
        runner = Runner(pools, keys_file=self.key.pub_path, **kwargs).start()
        self.addCleanup(self.cleanup_runner, runner)
        return runner

    def cleanup_runner(self, runner):
        runner.clean_up()

    def agent_token(self, gitspace_id, scopes=("agent",)):
        return self.key.sign("delegate", gitspace_id, scopes=scopes, ttl="10m")

    def acquire(self, runner, pool_name, gitspace_id):
        status, body = runner.api("POST", "/v1/machines",
                                  {"pool": pool_name, "gitspace_id": gitspace_id})
        self.assertIn(status, (200, 201), body)
        return body

    def wait_ready(self, runner, machine_id, timeout=30):
        return runner.wait_machine(machine_id, lambda m: m["ready"], timeout, "ready")


class PoolTest(NamespaceTestCase):
    def test_pool_fills_to_min_and_a_taken_machine_is_replaced(self):
        runner = self.start_runner([pool("fill", "10.213.11.0/24", minimum=2, maximum=4)])
        state = runner.wait_pool("fill", lambda p: p["warm"] == 2, 30, "2 warm")
        self.assertIn("namespaces", state["isolation"])
        started = time.monotonic()
        machine = self.acquire(runner, "fill", "gs-fill-1")
        self.assertEqual(machine["source"], "warm")
        self.assertEqual(machine["state"], "in_use")
        machine = self.wait_ready(runner, machine["id"])
        warm_ready_s = time.monotonic() - started
        self.assertEqual(machine["gitspace_id"], "gs-fill-1")
        # The agent answers from the host at the machine's own address.
        status, health = http_json(machine["address"], machine["agent_port"], "GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(health["gitspace_id"], "gs-fill-1")
        self.assertEqual(health["machine_id"], machine["id"])
        self.assertTrue(machine["address"].startswith("10.213.11."))
        # The pool is refilled to min.
        runner.wait_pool("fill", lambda p: p["warm"] == 2 and p["in_use"] == 1, 30, "refilled")
        # Asking again for the same Gitspace gives the same machine.
        again = self.acquire(runner, "fill", "gs-fill-1")
        self.assertEqual(again["id"], machine["id"])
        self.assertEqual(again["source"], "existing")
        print("warm machine ready in %.3f s" % warm_ready_s, file=sys.stderr)

    def test_max_is_never_exceeded_under_20_concurrent_requests(self):
        runner = self.start_runner([pool("max", "10.213.12.0/24", minimum=1, maximum=4)])
        runner.wait_pool("max", lambda p: p["warm"] == 1, 30, "1 warm")
        results = []
        seen_max = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen_max.append(len(runner.machines()))
                time.sleep(0.01)

        def ask(index):
            status, body = runner.api("POST", "/v1/machines",
                                      {"pool": "max", "gitspace_id": "gs-max-%d" % index})
            results.append((status, body))

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(status for status, _ in results)
        self.assertEqual(statuses.count(201), 4, results)
        self.assertEqual(statuses.count(429), 16, results)
        for status, body in results:
            if status == 429:
                self.assertEqual(body["field"], "pool")
                self.assertIn("maximum of 4", body["error"])
        # The pool does not refill past max while the machines come up.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        watcher.join()
        self.assertLessEqual(max(seen_max), 4)
        for status, body in results:
            if status == 201:
                self.wait_ready(runner, body["id"])
        self.assertEqual(len(runner.machines()), 4)

    def test_bad_requests_get_clear_errors_and_change_nothing(self):
        runner = self.start_runner([pool("bad", "10.213.13.0/24", minimum=0, maximum=2)])
        cases = [
            ("POST", "/v1/machines", "not json", 400, None),
            ("POST", "/v1/machines", {"pool": "bad"}, 400, "gitspace_id"),
            ("POST", "/v1/machines", {"pool": "bad", "gitspace_id": "a b"}, 400, "gitspace_id"),
            ("POST", "/v1/machines", {"pool": "bad", "gitspace_id": "x" * 129}, 400,
             "gitspace_id"),
            ("POST", "/v1/machines", {"pool": "nope", "gitspace_id": "gs"}, 404, "pool"),
            ("POST", "/v1/machines", {"pool": "bad", "gitspace_id": "gs", "extra": 1}, 400,
             "extra"),
            ("GET", "/v1/machines/m-00000000", None, 404, "id"),
            ("POST", "/v1/machines/m-00000000/stop", None, 404, "id"),
            ("DELETE", "/v1/machines/m-00000000?keep_storage=maybe", None, 400, "keep_storage"),
            ("PUT", "/v1/pools", None, 405, None),
        ]
        for method, path, body, want_status, want_field in cases:
            status, answer = runner.api(method, path, body)
            self.assertEqual(status, want_status, (method, path, body, answer))
            if want_field:
                self.assertEqual(answer.get("field"), want_field, answer)
        self.assertEqual(runner.machines(), [])


class GitspaceMachineTest(NamespaceTestCase):
    def test_jupyter_gitspace_in_a_machine_stop_start_delete(self):
        runner = self.start_runner([pool("gs", "10.213.14.0/24", minimum=1, maximum=2)])
        runner.wait_pool("gs", lambda p: p["warm"] == 1, 30, "1 warm")
        before = host_footprint(runner.state_dir)
        machine = self.acquire(runner, "gs", "gs-jupyter")
        machine = self.wait_ready(runner, machine["id"])
        address, agent_port = machine["address"], machine["agent_port"]
        token = self.agent_token("gs-jupyter")
        repository = make_repository(tempfile.mkdtemp(prefix="sg-repo-"),
                                     {".devcontainer/devcontainer.json": DEVCONTAINER,
                                      "README.md": "# test\n",
                                      # Must not shadow Jupyter's own module.
                                      "notebook.py": "raise SystemExit('shadowed')\n"})
        # The agent refuses what it should.
        status, _ = http_json(address, agent_port, "GET", "/v1/gitspace")
        self.assertEqual(status, 401)
        status, _ = http_json(address, agent_port, "GET", "/v1/gitspace",
                              token=self.agent_token("gs-other"))
        self.assertEqual(status, 403)
        status, _ = http_json(address, agent_port, "GET", "/v1/gitspace",
                              token=self.agent_token("gs-jupyter", scopes=("ide",)))
        self.assertEqual(status, 403)

        spec = {"repository": repository, "ide": "jupyter"}
        started = time.monotonic()
        status, body = http_json(address, agent_port, "PUT", "/v1/gitspace", spec, token)
        self.assertIn(status, (200, 202), body)
        def running():
            status, body = http_json(address, agent_port, "GET", "/v1/gitspace", token=token)
            if body.get("state") == "error":
                raise AssertionError("setup failed: %s" % body)
            return body.get("state") == "running"
        self.assertTrue(wait_until(running, 120, interval=0.2), "Gitspace never ran")
        ide_ready_s = time.monotonic() - started
        status, gitspace = http_json(address, agent_port, "GET", "/v1/gitspace", token=token)
        self.assertEqual(gitspace["ide"]["port"], machine["ide_port"])
        self.assertEqual(gitspace["image"], "mcr.microsoft.com/devcontainers/python:3")
        # Jupyter answers from the host through the machine's address, and
        # a kernel runs code over its WebSocket.
        connection = http.client.HTTPConnection(address, machine["ide_port"], timeout=10)
        connection.request("GET", "/api")
        response = connection.getresponse()
        body = response.read()
        self.assertEqual(response.status, 200, body)
        self.assertIn("version", json.loads(body))
        connection.close()
        self.assertEqual(run_in_kernel(address, machine["ide_port"],
                                       "open('kernel.txt','w').write('from the kernel'); "
                                       "print(6*7)"), "42\n")
        disk = os.path.join(runner.state_dir, "pools", "gs", "machines", machine["id"], "disk")
        workspace = os.path.join(disk, "workspace", "repo")
        with open(os.path.join(workspace, "created.txt")) as f:
            self.assertEqual(f.read(), "hello from containerEnv\n")
        # The devcontainer's remoteUser ran the commands and the IDE.
        nobody = pwd.getpwnam("nobody").pw_uid
        self.assertEqual(os.stat(os.path.join(workspace, "created.txt")).st_uid, nobody)
        self.assertEqual(os.stat(os.path.join(workspace, "kernel.txt")).st_uid, nobody)

        # Stop: no process of the machine is left; the disk stays.
        status, body = runner.api("POST", "/v1/machines/%s/stop" % machine["id"])
        self.assertEqual(status, 202, body)
        runner.wait_machine(machine["id"], lambda m: m["state"] == "stopped", 30, "stopped")
        self.assertEqual(processes_mentioning(os.path.join(runner.state_dir, "pools", "gs",
                                                           "machines", machine["id"])), [])
        self.assertTrue(os.path.exists(os.path.join(workspace, "kernel.txt")))
        # Start: the agent comes back with the Gitspace stopped; starting it
        # runs postStartCommand again, not postCreateCommand.
        status, body = runner.api("POST", "/v1/machines/%s/start" % machine["id"])
        self.assertEqual(status, 202, body)
        self.wait_ready(runner, machine["id"])
        status, body = http_json(address, agent_port, "GET", "/v1/gitspace", token=token)
        self.assertEqual(body["state"], "stopped", body)
        status, body = http_json(address, agent_port, "POST", "/v1/gitspace/start", token=token)
        self.assertIn(status, (200, 202), body)
        self.assertTrue(wait_until(running, 120, interval=0.2))
        with open(os.path.join(workspace, "kernel.txt")) as f:
            self.assertEqual(f.read(), "from the kernel")
        with open(os.path.join(workspace, "started.txt")) as f:
            self.assertEqual(len(f.read().split()), 2)
        with open(os.path.join(workspace, "created.txt")) as f:
            self.assertEqual(f.read(), "hello from containerEnv\n")

        # Delete: nothing of the machine is left on the host.
        status, body = runner.api("DELETE", "/v1/machines/" + machine["id"])
        self.assertEqual(status, 202, body)
        self.assertTrue(wait_until(lambda: runner.machine(machine["id"]) is None, 30))
        footprint = host_footprint(runner.state_dir, [machine["id"]])
        self.assertEqual(footprint, {"netns": [], "veth": [], "processes": processes_of_others(
            runner, machine["id"]), "folders": [], "cgroups": []})
        after = host_footprint(runner.state_dir)
        self.assertEqual(len(after["folders"]), len(before["folders"]))
        print("warm machine to Jupyter answering: %.2f s" % ide_ready_s, file=sys.stderr)

    def test_agent_killed_makes_the_machine_unhealthy(self):
        runner = self.start_runner([pool("kill", "10.213.15.0/24", minimum=0, maximum=2)])
        machine = self.acquire(runner, "kill", "gs-kill")
        self.assertEqual(machine["source"], "cold")
        machine = self.wait_ready(runner, machine["id"])
        folder = os.path.join(runner.state_dir, "pools", "kill", "machines", machine["id"])
        agents = [pid for pid in processes_mentioning(folder)
                  if command_line(pid).startswith(AGENT_BINARY)]
        self.assertEqual(len(agents), 1, agents)
        os.kill(agents[0], signal.SIGKILL)
        machine = runner.wait_machine(machine["id"], lambda m: not m["health"]["healthy"], 15,
                                      "unhealthy")
        self.assertEqual(machine["state"], "in_use")
        self.assertIn("agent does not answer", machine["health"]["reason"])
        self.assertIn("not running", machine["health"]["reason"])
        self.assertEqual(runner.pool("kill")["unhealthy"], 1)
        # Asking for the Gitspace's machine again boots it again (same
        # machine, same disk), instead of handing back a dead one.
        again = self.acquire(runner, "kill", "gs-kill")
        self.assertEqual(again["id"], machine["id"])
        self.assertEqual(again["source"], "rebooted")
        machine = self.wait_ready(runner, machine["id"])
        self.assertTrue(machine["health"]["healthy"])


class CrashRecoveryTest(NamespaceTestCase):
    def test_runner_killed_during_provisioning_leaves_no_orphan(self):
        subnet = "10.213.16.0/24"
        runner = self.start_runner([pool("crash", subnet, minimum=0, maximum=3)])
        status, body = runner.api("POST", "/v1/machines",
                                  {"pool": "crash", "gitspace_id": "gs-crash"})
        self.assertEqual(status, 201, body)
        machine_id = body["id"]
        # SIGKILL while the driver is making the machine.
        runner.kill9()
        restarted = Runner(runner.config["pools"], state_dir=runner.state_dir,
                           keys_file=self.key.pub_path).start()
        self.addCleanup(self.cleanup_runner, restarted)
        # The interrupted machine is redone for its Gitspace, once.
        machine = self.wait_ready(restarted, machine_id)
        self.assertEqual(machine["gitspace_id"], "gs-crash")
        machines = restarted.machines()
        self.assertEqual([m["id"] for m in machines], [machine_id])
        # Nothing else of this runner's exists (the folder is made first and
        # removed last, so an orphan would show as a folder).
        footprint = host_footprint(restarted.state_dir)
        self.assertEqual([os.path.basename(f) for f in footprint["folders"]], [machine_id])
        self.assertIn("sg-" + machine_id, footprint["netns"])

    def test_restart_destroys_orphans_and_marks_lost_machines(self):
        runner = self.start_runner([pool("recon", "10.213.17.0/24", minimum=0, maximum=3)])
        kept = self.wait_ready(runner, self.acquire(runner, "recon", "gs-kept")["id"])
        lost = self.wait_ready(runner, self.acquire(runner, "recon", "gs-lost")["id"])
        runner.kill9()
        # Behind the runner's back: one machine vanishes entirely ...
        lost_folder = os.path.join(runner.state_dir, "pools", "recon", "machines", lost["id"])
        for pid in processes_mentioning(lost_folder):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not processes_mentioning(lost_folder), 10)
        subprocess.run(["ip", "netns", "del", "sg-" + lost["id"]], check=True)
        subprocess.run(["rm", "-rf", lost_folder], check=True)
        # ... and a machine nobody knows appears.
        orphan_folder = os.path.join(runner.state_dir, "pools", "recon", "machines",
                                     "m-0badc0de")
        os.makedirs(os.path.join(orphan_folder, "disk"))
        restarted = Runner(runner.config["pools"], state_dir=runner.state_dir,
                           keys_file=self.key.pub_path).start()
        self.addCleanup(self.cleanup_runner, restarted)
        self.assertFalse(os.path.exists(orphan_folder))
        machine = restarted.machine(lost["id"])
        self.assertEqual(machine["state"], "lost")
        self.assertIn("no longer has this machine", machine["reason"])
        # The surviving machine carries on, and its agent never restarted.
        machine = self.wait_ready(restarted, kept["id"])
        self.assertEqual(machine["state"], "in_use")
        # A lost machine's record can be deleted.
        status, _ = restarted.api("DELETE", "/v1/machines/" + lost["id"])
        self.assertEqual(status, 200)
        self.assertIsNone(restarted.machine(lost["id"]))


class FallbackTest(unittest.TestCase):
    """`sandbox: processes`: machines are plain processes on loopback ports
    (what a runner that is not root gets), and it says so."""

    def test_processes_sandbox_works_and_says_so(self):
        require_binaries()
        keys_dir = tempfile.mkdtemp(prefix="sg-runner-keys-")
        key = TokenKey(keys_dir, "cp-1")
        port_base = 27000 + (os.getpid() % 250) * 8  # below the ephemeral range
        runner = Runner([{"name": "plain", "min": 1, "max": 2,
                          "process": {"sandbox": "processes", "port_base": port_base}}],
                        keys_file=key.pub_path).start()
        try:
            state = runner.wait_pool("plain", lambda p: p["warm"] == 1, 30, "1 warm")
            self.assertIn("no namespaces", state["isolation"])
            status, machine = runner.api("POST", "/v1/machines",
                                         {"pool": "plain", "gitspace_id": "gs-plain"})
            self.assertEqual(status, 201, machine)
            machine = runner.wait_machine(machine["id"], lambda m: m["ready"], 30, "ready")
            self.assertEqual(machine["address"], "127.0.0.1")
            self.assertGreaterEqual(machine["agent_port"], port_base)
            token = key.sign("delegate", "gs-plain", scopes=("agent",), ttl="10m")
            status, body = http_json("127.0.0.1", machine["agent_port"], "GET", "/v1/gitspace",
                                     token=token)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "uninitialized")
            folder = os.path.join(runner.state_dir, "pools", "plain", "machines", machine["id"])
            self.assertNotEqual(processes_mentioning(folder), [])
            status, _ = runner.api("DELETE", "/v1/machines/" + machine["id"])
            self.assertEqual(status, 202)
            self.assertTrue(wait_until(lambda: runner.machine(machine["id"]) is None, 30))
            self.assertEqual(processes_mentioning(folder), [])
            self.assertFalse(os.path.exists(folder))
        finally:
            runner.clean_up()


class NotRootFallbackTest(unittest.TestCase):
    """`sandbox: auto` in a runner that is not root: it falls back to
    processes on loopback ports, and says so in /v1/pools and its log."""

    def test_runner_without_root_falls_back_and_says_so(self):
        require_binaries()
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to start the runner as another user")
        nobody = pwd.getpwnam("nobody")
        keys_dir = tempfile.mkdtemp(prefix="sg-runner-keys-")
        key = TokenKey(keys_dir, "cp-1")
        os.chmod(keys_dir, 0o755)
        os.chmod(key.pub_path, 0o644)
        port_base = 29100 + (os.getpid() % 250) * 8  # below the ephemeral range
        runner = Runner([{"name": "user", "min": 1, "max": 1,
                          "process": {"port_base": port_base}}],
                        keys_file=key.pub_path, run_as=(nobody.pw_uid, nobody.pw_gid))
        os.makedirs(runner.state_dir)
        os.chown(runner.state_dir, nobody.pw_uid, nobody.pw_gid)
        os.chown(runner.tmp, nobody.pw_uid, nobody.pw_gid)
        runner.start()
        try:
            state = runner.wait_pool("user", lambda p: p["warm"] == 1, 30, "1 warm")
            self.assertIn("no namespaces", state["isolation"])
            self.assertIn("not root", state["isolation"])
            self.assertIn("no namespaces: machines are plain child processes", runner.log_text())
            machine = [m for m in runner.machines() if m["state"] == "warm"][0]
            self.assertEqual(machine["address"], "127.0.0.1")
            self.assertEqual(machine["agent_port"], port_base)
        finally:
            runner.clean_up()


class ConfigErrorTest(unittest.TestCase):
    def test_bad_pool_file_is_refused_with_file_line_and_field(self):
        require_binaries()
        from runner_harness import RUNNER_BINARY
        directory = tempfile.mkdtemp(prefix="sg-runner-config-")
        path = os.path.join(directory, "runner.yaml")
        with open(path, "w") as f:
            f.write("listen: 127.0.0.1:1\nstate_dir: %s\npools:\n"
                    "  - name: good\n    min: 1\n    max: 2\n"
                    "  - name: bad\n    min: 5\n    max: 2\n" % directory)
        result = subprocess.run([RUNNER_BINARY, "--config", path], capture_output=True,
                                text=True, timeout=10)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("%s:8: pools[1].min: must not exceed max" % path, result.stderr)


def command_line(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().replace(b"\0", b" ").decode("utf-8", "replace")


def processes_of_others(runner, machine_id):
    """Processes under the runner's state folder that belong to other
    machines (still warm in the pool)."""
    return [pid for pid in processes_mentioning(runner.state_dir)
            if machine_id not in command_line(pid)]


def run_in_kernel(host, port, code, timeout=60):
    """Starts a Jupyter kernel over the REST API (with the XSRF cookie, as a
    browser does), runs `code` over the kernel's WebSocket, and returns what
    it printed."""
    import websockets

    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/tree")
    response = connection.getresponse()
    response.read()
    xsrf = None
    for header, value in response.getheaders():
        if header.lower() == "set-cookie" and value.startswith("_xsrf="):
            xsrf = value.split(";", 1)[0].split("=", 1)[1]
    headers = {"Content-Type": "application/json"}
    if xsrf:
        headers["X-XSRFToken"] = xsrf
        headers["Cookie"] = "_xsrf=" + xsrf
    connection.request("POST", "/api/kernels", body="{}", headers=headers)
    response = connection.getresponse()
    body = response.read()
    if response.status not in (200, 201):
        raise AssertionError("POST /api/kernels: %d %s" % (response.status, body))
    kernel_id = json.loads(body)["id"]
    connection.close()

    async def execute():
        session = uuid.uuid4().hex
        url = "ws://%s:%d/api/kernels/%s/channels?session_id=%s" % (host, port, kernel_id,
                                                                     session)
        extra = [("Cookie", "_xsrf=" + xsrf)] if xsrf else []
        async with websockets.connect(url, extra_headers=extra, open_timeout=20,
                                      max_size=None) as socket:
            return await execute_in_kernel(socket, session, code, timeout)

    return asyncio.run(execute())


if __name__ == "__main__":
    unittest.main(verbosity=2)
