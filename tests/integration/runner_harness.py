"""Helpers for the runner's integration tests: start the real
`spacegate-runner` (and through it real machines running the real
`spacegate-agent`), call its API, and count what machines leave on the host
(network namespaces, veth interfaces, processes, folders, control groups).

Environment (set by tests/CMakeLists.txt):
  SPACEGATE_RUNNER_BINARY  path of spacegate-runner
  SPACEGATE_AGENT_BINARY   path of spacegate-agent
"""

import glob
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

from harness import free_port, tail, wait_until, LOOPBACK

RUNNER_BINARY = os.path.abspath(os.environ.get("SPACEGATE_RUNNER_BINARY",
                                               "/work/main/build/runner/spacegate-runner"))
AGENT_BINARY = os.path.abspath(os.environ.get("SPACEGATE_AGENT_BINARY",
                                              "/work/main/build/runner/spacegate-agent"))


def require_binaries():
    for path in (RUNNER_BINARY, AGENT_BINARY):
        if not os.path.exists(path):
            raise unittest.SkipTest("binary not found: %s" % path)


def namespaces_reason():
    """None when this process may make namespaces, else why not."""
    if os.geteuid() != 0:
        return "not root: the runner cannot create network namespaces"
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return "unshare is not allowed here: " + probe.stderr.strip()
    return None


def http_json(host, port, method, path, body=None, token=None, timeout=10):
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {}
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return response.status, parsed


class Runner:
    """A real spacegate-runner on a loopback port with its own state folder."""

    def __init__(self, pools, state_dir=None, extra=None, keys_file=None, run_as=None):
        require_binaries()
        self.tmp = tempfile.mkdtemp(prefix="sg-runner-")
        # Like /var/lib: others may pass (a Gitspace's non-root user reaches
        # its disk below), not list.
        os.chmod(self.tmp, 0o711)
        self.state_dir = state_dir or os.path.join(self.tmp, "state")
        self.port = free_port()
        self.config = {
            "listen": "%s:%d" % (LOOPBACK, self.port),
            "state_dir": self.state_dir,
            "agent_binary": AGENT_BINARY,
            "health_interval": "200ms",
            "provision_timeout": "30s",
            "pools": pools,
        }
        if keys_file:
            self.config["control_plane_keys"] = keys_file
        if extra:
            self.config.update(extra)
        self.config_path = os.path.join(self.tmp, "runner.yaml")
        self.log_path = os.path.join(self.tmp, "runner.log")
        self.process = None
        # [uid, gid]: start the runner as that user (setpriv), as a runner
        # without root runs.
        self.run_as = run_as

    def write_config(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)

    def start(self, timeout=20):
        self.write_config()
        self.log = open(self.log_path, "ab")
        command = [RUNNER_BINARY, "--config", self.config_path]
        if self.run_as:
            command = ["setpriv", "--reuid", str(self.run_as[0]), "--regid", str(self.run_as[1]),
                       "--clear-groups", "--"] + command
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        def up():
            if self.process.poll() is not None:
                raise AssertionError("runner exited %s:\n%s" %
                                     (self.process.returncode, self.log_text()))
            try:
                status, _ = self.api("GET", "/healthz", timeout=1)
                return status == 200
            except OSError:
                return False
        if not wait_until(up, timeout):
            raise AssertionError("runner did not answer:\n" + self.log_text())
        return self

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return tail(f.read().decode("utf-8", "replace"))
        except OSError:
            return ""

    def api(self, method, path, body=None, timeout=10, token=None):
        return http_json(LOOPBACK, self.port, method, path, body, token, timeout)

    def pool(self, name):
        status, body = self.api("GET", "/v1/pools")
        assert status == 200, body
        for entry in body["pools"]:
            if entry["name"] == name:
                return entry
        raise AssertionError("no pool %s in %s" % (name, body))

    def machine(self, machine_id):
        status, body = self.api("GET", "/v1/machines/" + machine_id)
        return body if status == 200 else None

    def machines(self):
        status, body = self.api("GET", "/v1/machines")
        assert status == 200, body
        return body["machines"]

    def wait_machine(self, machine_id, predicate, timeout=30, what="condition"):
        last = {}
        def check():
            last["m"] = self.machine(machine_id)
            return last["m"] is not None and predicate(last["m"])
        if not wait_until(check, timeout, interval=0.1):
            raise AssertionError("machine %s: %s not reached in %ss; last: %s\nrunner log:\n%s"
                                 % (machine_id, what, timeout, json.dumps(last.get("m"))[:3000],
                                    self.log_text()))
        return last["m"]

    def wait_pool(self, name, predicate, timeout=30, what="condition"):
        last = {}
        def check():
            last["p"] = self.pool(name)
            return predicate(last["p"])
        if not wait_until(check, timeout, interval=0.1):
            try:
                machines = json.dumps(self.machines())[:3000]
            except Exception as e:  # the runner may be the problem
                machines = repr(e)
            raise AssertionError("pool %s: %s not reached in %ss; last: %s\nmachines: %s\n"
                                 "runner log:\n%s"
                                 % (name, what, timeout, last.get("p"), machines, self.log_text()))
        return last["p"]

    def signal(self, number):
        self.process.send_signal(number)

    def kill9(self):
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout=15):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process:
            self.log.close()
        return self.process.returncode if self.process else None

    def destroy_all(self, timeout=60):
        """Deletes every machine through the API and waits until none is
        left; False when some remain (a pool with `min` refills)."""
        if not self.process or self.process.poll() is not None:
            return False
        for machine in self.machines():
            self.api("DELETE", "/v1/machines/" + machine["id"])
        return wait_until(lambda: not self.machines(), timeout, interval=0.1)

    def clean_up(self):
        """A test's cleanup, through the runner only: restarted with every
        pool's `min` at 0 (so nothing refills), every machine deleted."""
        self.stop()
        for pool in self.config["pools"]:
            pool["min"] = 0
        try:
            self.start()
            self.destroy_all(120)
        finally:
            self.stop()


# What machines leave on the host.

def netns_names():
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith("sg-m-"))
    except FileNotFoundError:
        return []


def veth_names():
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith("sgv"))


def processes_mentioning(text):
    """Pids whose command line contains `text` (a state folder)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                command = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % entry) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append(int(entry))
    return found


def machine_folders(state_dir):
    return sorted(glob.glob(os.path.join(state_dir, "pools", "*", "machines", "*")))


def machine_cgroups():
    return sorted(glob.glob("/sys/fs/cgroup/*/spacegate/m-*") +
                  glob.glob("/sys/fs/cgroup/spacegate/m-*"))


def host_footprint(state_dir, machine_ids=None):
    """Everything machines hold on the host; filtered to `machine_ids` when
    given (other tests' machines do not count)."""
    def keep(name):
        return machine_ids is None or any(m in name for m in machine_ids)
    return {
        "netns": [n for n in netns_names() if keep(n)],
        "veth": [v for v in veth_names()
                 if machine_ids is None or any(v == "sgv" + m[2:] for m in machine_ids)],
        "processes": processes_mentioning(state_dir),
        "folders": [f for f in machine_folders(state_dir) if keep(f)],
        "cgroups": [c for c in machine_cgroups() if keep(c)],
    }


# A Git repository for a Gitspace.

def make_repository(directory, files):
    """A bare repository at DIRECTORY/repo.git whose main branch holds
    `files` ({path: text}); returns its path."""
    work = os.path.join(directory, "repo-work")
    bare = os.path.join(directory, "repo.git")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    def git(*args, cwd=None):
        result = subprocess.run(["git"] + list(args), cwd=cwd, env=env, capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise AssertionError("git %s: %s" % (" ".join(args), result.stderr))
    git("init", "-q", "--bare", "-b", "main", bare)
    git("init", "-q", "-b", "main", work)
    for path, text in files.items():
        full = os.path.join(work, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "initial", cwd=work)
    git("push", "-q", bare, "main", cwd=work)
    return bare


async def execute_in_kernel(socket, session, code, timeout=60):
    """Runs `code` on a Jupyter kernel over its open channels WebSocket (the
    messaging protocol's execute_request) and returns what it printed."""
    import asyncio
    import uuid
    message_id = uuid.uuid4().hex
    await socket.send(json.dumps({
        "header": {"msg_id": message_id, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    printed = ""
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        if message.get("parent_header", {}).get("msg_id") != message_id:
            continue
        kind = message["msg_type"]
        if kind == "stream":
            printed += message["content"]["text"]
        elif kind == "error":
            raise AssertionError("kernel error: %s" % message["content"])
        elif kind == "status" and message["content"]["execution_state"] == "idle":
            return printed
