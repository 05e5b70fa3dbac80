#!/usr/bin/python3
"""spacegate-agent, the real binary, without namespaces (127.0.0.1, ports of
its own), against local bare git repositories.

Jupyter: a devcontainer.json with comments, trailing commas, containerEnv,
remoteUser (nobody), forwardPorts, a postCreateCommand (string form) and a
postStartCommand (object form, one entry an array); PUT is idempotent and a
different spec is refused; the log, followed, ends when the Gitspace runs;
the files the lifecycle commands wrote and the environment they saw; GET / on
the Jupyter port; a kernel over its WebSocket runs print(6*7); stop closes
the port and leaves no process; start runs postStartCommand again (not
postCreateCommand) and keeps the clone; an IDE killed from outside turns the
state to error; delete removes the clone.

Also: the token matrix over HTTP (no token, malformed, unknown key, forged,
expired, wrong scope, another Gitspace, "*"), the unassigned machine, the
runner's assignment, 404/405/413; sshd answering with its banner and
letting the spec's key in (skipped without /usr/sbin/sshd); a devcontainer
syntax error named with its file and line; a failing postCreateCommand;
SIGTERM stopping the IDE and exiting 0, and a restart finding the Gitspace
stopped and starting it again.

Environment: SPACEGATE_AGENT_BINARY (default
/work/main/build-agent/runner/spacegate-agent) and SPACEGATECTL_BINARY (for
tokens)."""

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

AGENT_BINARY = os.environ.get("SPACEGATE_AGENT_BINARY",
                              "/work/main/build-agent/runner/spacegate-agent")
GS = "gs-agent-test"

DEVCONTAINER = """\
// The test Gitspace: JSON with comments and trailing commas.
{
  "name": "agent-test",
  /* recorded, not pulled */
  "image": "mcr.microsoft.com/devcontainers/python:3.11",
  "containerEnv": {
    "FROM_CONTAINER_ENV": "container value",
    "SHARED": "from containerEnv",
  },
  "remoteUser": "nobody",
  "forwardPorts": [3000, "localhost:8080",],
  "features": {},
  "postCreateCommand": "echo created >> created.txt && env | sort > create-env.txt",
  "postStartCommand": {
    "shell": "echo started >> starts.txt",
    "argv": ["/bin/sh", "-c", "id -un > start-user.txt; echo $GITSPACE_ID > start-id.txt"],
  },
}
"""


def run_git(args, cwd=None):
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    proc = subprocess.run(["git"] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise AssertionError("git %s failed:\n%s" % (" ".join(args), h.describe_run(proc)))


def make_repository(folder, name, files):
    """A bare repository <folder>/<name>.git whose main branch holds
    `files` ({path: text})."""
    bare = os.path.join(folder, name + ".git")
    work = os.path.join(folder, name + "-work")
    run_git(["init", "-q", "--bare", "-b", "main", bare])
    run_git(["init", "-q", "-b", "main", work])
    for path, text in files.items():
        full = os.path.join(work, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    run_git(["add", "-A"], cwd=work)
    run_git(["commit", "-q", "-m", "initial"], cwd=work)
    run_git(["push", "-q", bare, "main"], cwd=work)
    return bare


def processes_mentioning(text):
    """PIDs whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % entry) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and text in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def descendants(root):
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [], [root]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class Agent:
    """The real agent with a config file of its own, on free ports."""

    def __init__(self, tmpdir, key, gitspace_id=""):
        self.tmpdir = tmpdir
        self.port = h.free_port()
        self.ide_port = h.free_port()
        self.ssh_port = h.free_port()
        self.disk = os.path.join(tmpdir, "disk")
        self.secret = "runner-" + uuid.uuid4().hex
        self.config = {
            "machine_id": "machine-" + uuid.uuid4().hex[:8],
            "listen": "%s:%d" % (h.LOOPBACK, self.port),
            "runner_secret": self.secret,
            "gitspace_id": gitspace_id,
            "keys": [key.entry()],
            "disk": self.disk,
            "ide_host": h.LOOPBACK,
            "ide_port": self.ide_port,
            "ssh_port": self.ssh_port,
            "code_server": "",
            "sandboxed": False,
        }
        self.config_path = os.path.join(tmpdir, "agent.json")
        self.stderr_path = os.path.join(tmpdir, "agent.stderr")
        self.proc = None

    def start(self, timeout=10.0):
        if not os.path.exists(AGENT_BINARY):
            raise unittest.SkipTest("agent binary not found: %s" % AGENT_BINARY)
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        os.chmod(self.config_path, 0o600)
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([AGENT_BINARY, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=self._err, preexec_fn=h._die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("agent exited with %s during start-up:\n%s"
                                     % (self.proc.returncode, h.tail(self.stderr())))
            try:
                socket.create_connection((h.LOOPBACK, self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("agent did not listen:\n" + h.tail(self.stderr()))
                time.sleep(0.05)

    def stop(self, timeout=20):
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.kill()  # closes the log file
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            if not self._err.closed:
                self._err.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and not self._err.closed:
            self._err.close()

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def request(self, method, path, body=None, token=None, headers=None, timeout=60):
        connection = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=timeout)
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response, data
        finally:
            connection.close()

    def call(self, method, path, body=None, token=None, headers=None, timeout=60):
        status, response, data = self.request(method, path, body, token, headers, timeout)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        return status, parsed, response

    def assign(self, gitspace_id=GS):
        status, body, _ = self.call("PUT", "/v1/machine/assignment",
                                    {"gitspace_id": gitspace_id}, token=self.secret)
        assert status == 200, (status, body)

    def status(self, token):
        status, body, _ = self.call("GET", "/v1/gitspace", token=token)
        assert status == 200, (status, body)
        return body

    def wait_for_state(self, token, states, timeout=90):
        states = (states,) if isinstance(states, str) else states
        last = h.wait_until(lambda: (lambda s: s if s["state"] in states else None)(
            self.status(token)), timeout, interval=0.1)
        if not last:
            raise AssertionError("state never became %s: %s\nlog:\n%s\nstderr:\n%s" % (
                states, self.status(token), h.tail(self.log(token)), h.tail(self.stderr())))
        return last

    def log(self, token, query=""):
        status, _, data = self.request("GET", "/v1/gitspace/logs" + query, token=token)
        assert status == 200, status
        return data.decode("utf-8", "replace")

    def follow_log(self, token, timeout=90):
        """The followed log stream, read to its end."""
        connection = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=timeout)
        connection.request("GET", "/v1/gitspace/logs?follow=true",
                           headers={"Authorization": "Bearer " + token})
        response = connection.getresponse()
        assert response.status == 200, response.status
        assert response.getheader("Transfer-Encoding") == "chunked"
        data = response.read()
        connection.close()
        return data.decode("utf-8", "replace")


class AgentTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(AGENT_BINARY):
            raise unittest.SkipTest("agent binary not found: %s" % AGENT_BINARY)
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegate-agent-it-")
        # The Gitspace runs as nobody, who must be able to walk to its disk.
        os.chmod(cls.tmpdir, 0o755)
        cls.key = h.TokenKey(cls.tmpdir, "k1")
        cls.token = cls.key.sign("alice", GS, scopes=["agent"], ttl="1h")
        cls.repos = os.path.join(cls.tmpdir, "repos")
        os.makedirs(cls.repos)
        cls.agents = []

    @classmethod
    def tearDownClass(cls):
        for agent in getattr(cls, "agents", []):
            agent.kill()
        if not h.KEEP_TMP:
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def new_agent(self, gitspace_id=""):
        folder = tempfile.mkdtemp(prefix="agent-", dir=self.tmpdir)
        os.chmod(folder, 0o755)
        agent = Agent(folder, self.key, gitspace_id)
        self.agents.append(agent)
        # SIGTERM first: a killed agent would leave its IDE running.
        self.addCleanup(agent.stop)
        return agent.start()


class AgentConfigErrorTest(AgentTestCase):

    def run_agent(self, config_text):
        path = os.path.join(self.tmpdir, "bad-agent.json")
        if config_text is not None:
            with open(path, "w") as f:
                f.write(config_text)
        elif os.path.exists(path):
            os.unlink(path)
        return path, subprocess.run([AGENT_BINARY, "--config", path], capture_output=True,
                                    text=True, timeout=30, stdin=subprocess.DEVNULL)

    def test_config_errors_exit_2_naming_file_and_field(self):
        path, proc = self.run_agent(None)
        self.assertEqual(proc.returncode, 2, h.describe_run(proc))
        self.assertIn(path + ": No such file or directory", proc.stderr)
        good = {"machine_id": "m", "listen": "127.0.0.1:%d" % h.free_port(),
                "runner_secret": "s", "disk": os.path.join(self.tmpdir, "bad-disk")}
        for change, expected in [
            ({"listen": None}, "listen: required"),
            ({"ide_port": 0}, "ide_port: must be a port from 1 to 65535"),
            ({"keys": [{"kid": "k"}]}, "keys[0]: expected"),
            ({"listen": "nowhere"}, "listen: "),
        ]:
            config = dict(good)
            for key, value in change.items():
                if value is None:
                    config.pop(key)
                else:
                    config[key] = value
            path, proc = self.run_agent(json.dumps(config))
            self.assertEqual(proc.returncode, 2, h.describe_run(proc))
            self.assertIn(path + ": " + expected, proc.stderr)
        path, proc = self.run_agent("{not json")
        self.assertEqual(proc.returncode, 2)
        self.assertIn(path + ": not a JSON object", proc.stderr)


class AgentApiOverHttpTest(AgentTestCase):

    def test_auth_matrix_and_assignment(self):
        agent = self.new_agent()
        status, body, _ = agent.call("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body["gitspace_id"], "")
        self.assertEqual(body["gitspace_state"], "uninitialized")
        # Unassigned: a good token gets 409.
        status, body, _ = agent.call("GET", "/v1/gitspace", token=self.token)
        self.assertEqual(status, 409, body)
        self.assertIn("not assigned", body["error"])
        # The assignment needs the runner's secret.
        status, _, response = agent.call("PUT", "/v1/machine/assignment", {"gitspace_id": GS})
        self.assertEqual(status, 401)
        self.assertTrue(response.getheader("WWW-Authenticate", "").startswith("Bearer"))
        status, _, _ = agent.call("PUT", "/v1/machine/assignment", {"gitspace_id": GS},
                                  token=self.token)
        self.assertEqual(status, 401)
        status, body, _ = agent.call("PUT", "/v1/machine/assignment", {"gitspace_id": "a/b"},
                                     token=agent.secret)
        self.assertEqual((status, body["field"]), (400, "gitspace_id"))
        agent.assign()
        agent.assign()  # idempotent
        status, _, _ = agent.call("PUT", "/v1/machine/assignment", {"gitspace_id": "other"},
                                  token=agent.secret)
        self.assertEqual(status, 409)

        now = int(time.time())
        other_key = h.TokenKey(self.tmpdir, "k9")
        evil = h.TokenKey(self.tmpdir, "k1", name="evil-k1")
        cases = [
            ("no token", None, 401),
            ("malformed", "v1.garbage", 401),
            ("unknown key", other_key.sign("alice", GS, scopes=["agent"], ttl="1h"), 401),
            ("forged", evil.sign("alice", GS, scopes=["agent"], ttl="1h"), 401),
            ("tampered", h.tamper_token(self.token, gs="other"), 401),
            ("expired", self.key.sign("alice", GS, scopes=["agent"], iat=now - 7200,
                                      exp=now - 3600), 401),
            ("wrong scope", self.key.sign("alice", GS, scopes=["ide", "ssh"], ttl="1h"), 403),
            ("other Gitspace", self.key.sign("alice", "gs-other", scopes=["agent"], ttl="1h"),
             403),
            ("wildcard Gitspace", self.key.sign("alice", "*", scopes=["agent"], ttl="1h"), 403),
            ("valid", self.token, 200),
        ]
        for name, token, expected in cases:
            with self.subTest(name):
                status, body, response = agent.call("GET", "/v1/gitspace", token=token)
                self.assertEqual(status, expected, body)
                if expected == 401:
                    self.assertTrue(response.getheader("WWW-Authenticate", "")
                                    .startswith("Bearer"))
                    self.assertIn("error", body)
                if expected == 403:
                    self.assertIn(body["error"], ("token scope does not include agent",
                                                  "token is for another Gitspace"))
                if expected != 200:
                    status, _, _ = agent.call("PUT", "/v1/gitspace",
                                              {"repository": "/x/app.git", "ide": "jupyter"},
                                              token=token)
                    self.assertEqual(status, expected)
        self.assertEqual(agent.status(self.token)["state"], "uninitialized")

        # Routing, and the body bound.
        status, _, _ = agent.call("GET", "/v1/elsewhere", token=self.token)
        self.assertEqual(status, 404)
        status, _, response = agent.call("PATCH", "/v1/gitspace", token=self.token)
        self.assertEqual(status, 405)
        self.assertEqual(response.getheader("Allow"), "GET, PUT, DELETE")
        with socket.create_connection((h.LOOPBACK, agent.port), timeout=10) as s:
            s.sendall(b"PUT /v1/gitspace HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer "
                      + self.token.encode() + b"\r\nContent-Length: 2000000\r\n\r\n")
            reply = s.recv(4096)
        self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply)
        status, body, _ = agent.call("PUT", "/v1/gitspace",
                                     {"repository": "/x/app.git", "ide": "emacs"},
                                     token=self.token)
        self.assertEqual((status, body["field"]), (400, "ide"))
        status, body, _ = agent.call("PUT", "/v1/gitspace",
                                     {"repository": "/x/app.git", "ide": "ssh", "tpyo": 1},
                                     token=self.token)
        self.assertEqual((status, body["field"]), (400, "tpyo"))
        status, body, _ = agent.call("POST", "/v1/gitspace/stop", token=self.token)
        self.assertEqual(status, 409, body)
        self.assertEqual(agent.stop(), 0)


class JupyterGitspaceTest(AgentTestCase):

    def run_kernel(self, port):
        """Starts a kernel through the REST API and runs print(6*7) over its
        WebSocket; returns the text of the stream message."""
        xsrf = "0123456789abcdef0123456789abcdef"
        connection = http.client.HTTPConnection(h.LOOPBACK, port, timeout=30)
        connection.request("POST", "/api/kernels", body="{}",
                           headers={"Content-Type": "application/json",
                                    "Cookie": "_xsrf=" + xsrf, "X-XSRFToken": xsrf})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        self.assertEqual(response.status, 201, data)
        kernel_id = json.loads(data)["id"]
        import websockets

        async def execute():
            uri = "ws://%s:%d/api/kernels/%s/channels" % (h.LOOPBACK, port, kernel_id)
            async with websockets.connect(uri, max_size=None, open_timeout=20) as ws:
                msg_id = uuid.uuid4().hex
                await ws.send(json.dumps({
                    "header": {"msg_id": msg_id, "username": "test",
                               "session": uuid.uuid4().hex, "msg_type": "execute_request",
                               "version": "5.3", "date": ""},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": "print(6*7)", "silent": False,
                                "store_history": False, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True},
                }))
                while True:
                    message = json.loads(await ws.recv())
                    if (message.get("parent_header", {}).get("msg_id") == msg_id
                            and message.get("msg_type") == "stream"):
                        return message["content"]["text"]

        return asyncio.run(asyncio.wait_for(execute(), 60))

    def test_jupyter_lifecycle(self):
        repository = make_repository(self.repos, "notebooks", {
            ".devcontainer/devcontainer.json": DEVCONTAINER,
            "README.md": "hello\n",
        })
        agent = self.new_agent()
        agent.assign()
        spec = {"repository": repository, "branch": "main", "ide": "jupyter",
                "env": {"FROM_SPEC": "spec value", "SHARED": "from the spec"}}
        status, body, _ = agent.call("PUT", "/v1/gitspace", spec, token=self.token)
        self.assertEqual(status, 202, body)
        self.assertEqual(body["state"], "setting_up")
        status, _, _ = agent.call("PUT", "/v1/gitspace", dict(spec), token=self.token)
        self.assertEqual(status, 200)
        status, body, _ = agent.call("PUT", "/v1/gitspace", dict(spec, branch="other"),
                                     token=self.token)
        self.assertEqual(status, 409, body)

        log = agent.follow_log(self.token)
        self.assertIn("Cloning into", log)
        self.assertIn("image mcr.microsoft.com/devcontainers/python:3.11 is recorded, not pulled",
                      log)
        self.assertIn('"features" is not supported here and is ignored', log)
        self.assertIn("the Gitspace is running", log)
        state = agent.status(self.token)
        self.assertEqual(state["state"], "running", log)
        self.assertEqual(state["ide"], {"kind": "jupyter", "port": agent.ide_port,
                                        "protocol": "http", "host": h.LOOPBACK})
        self.assertEqual(state["forwarded_ports"], [3000, 8080])
        self.assertEqual(state["image"], "mcr.microsoft.com/devcontainers/python:3.11")
        self.assertEqual(state["user"], "nobody")
        self.assertEqual(state["repository"], repository)
        workspace = state["workspace"]
        self.assertEqual(workspace, os.path.join(agent.disk, "workspace", "notebooks"))
        for line in log.splitlines():
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
        self.assertEqual(agent.log(self.token, "?offset=10"), agent.log(self.token)[10:])

        # What the lifecycle commands did, and saw.
        def read(name):
            with open(os.path.join(workspace, name)) as f:
                return f.read()
        self.assertEqual(read("created.txt"), "created\n")
        self.assertEqual(read("starts.txt"), "started\n")
        self.assertEqual(read("start-user.txt"), "nobody\n")
        self.assertEqual(read("start-id.txt"), GS + "\n")
        env = dict(line.split("=", 1) for line in read("create-env.txt").splitlines()
                   if "=" in line)
        self.assertEqual(env["FROM_CONTAINER_ENV"], "container value")
        self.assertEqual(env["FROM_SPEC"], "spec value")
        self.assertEqual(env["SHARED"], "from the spec")  # the spec wins
        self.assertEqual(env["GITSPACE_ID"], GS)
        self.assertEqual(env["GITSPACE_WORKSPACE"], workspace)
        self.assertEqual(env["USER"], "nobody")
        self.assertEqual(env["HOME"], os.path.join(agent.disk, "home", "nobody"))
        self.assertEqual(env["LANG"], "C.UTF-8")
        self.assertEqual(env["PATH"], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self.assertNotIn("SPACEGATE_AGENT_BINARY", env)  # a clean environment
        self.assertEqual(os.stat(os.path.join(workspace, "README.md")).st_uid, 65534)

        # The IDE answers, and runs code.
        connection = http.client.HTTPConnection(h.LOOPBACK, agent.ide_port, timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        connection.close()
        self.assertIn(response.status, (200, 302))
        self.assertEqual(self.run_kernel(agent.ide_port).strip(), "42")

        # Stop: the port closes and nothing of the Gitspace is left.
        with open(os.path.join(workspace, "kept.txt"), "w") as f:
            f.write("still here\n")
        status, body, _ = agent.call("POST", "/v1/gitspace/stop", token=self.token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["state"], "stopped")
        self.assertTrue(h.port_refuses(agent.ide_port))
        self.assertEqual(descendants(agent.proc.pid), [])
        self.assertEqual(processes_mentioning(workspace), [])

        # Start: postStartCommand again, postCreateCommand not, the clone kept.
        status, body, _ = agent.call("POST", "/v1/gitspace/start", token=self.token)
        self.assertEqual(status, 202, body)
        agent.wait_for_state(self.token, "running")
        self.assertEqual(read("kept.txt"), "still here\n")
        self.assertEqual(read("starts.txt"), "started\nstarted\n")
        self.assertEqual(read("created.txt"), "created\n")
        status, body, _ = agent.call("POST", "/v1/gitspace/start", token=self.token)
        self.assertEqual(status, 200, body)  # already running

        # The IDE dies on its own: error, and what else ran is stopped.
        notebooks = [pid for pid in descendants(agent.proc.pid)
                     if pid in processes_mentioning("-m notebook")]
        self.assertEqual(len(notebooks), 1, processes_mentioning("notebook"))
        os.kill(notebooks[0], signal.SIGKILL)
        state = agent.wait_for_state(self.token, "error", timeout=20)
        self.assertIn("IDE exited: killed by signal 9", state["error"])
        self.assertTrue(h.wait_until(lambda: descendants(agent.proc.pid) == [], 15))

        # Delete: the clone goes, the state is uninitialized.
        status, body, _ = agent.call("DELETE", "/v1/gitspace", token=self.token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["state"], "uninitialized")
        self.assertFalse(os.path.exists(workspace))
        self.assertEqual(agent.log(self.token), "")
        status, _, _ = agent.call("POST", "/v1/gitspace/stop", token=self.token)
        self.assertEqual(status, 409)
        self.assertEqual(agent.stop(), 0)

    def test_sigterm_stops_the_ide_and_a_restart_finds_it_stopped(self):
        repository = make_repository(self.repos, "plain", {"main.py": "print('hi')\n"})
        agent = self.new_agent(gitspace_id=GS)  # assigned by the runner's config
        status, body, _ = agent.call("PUT", "/v1/gitspace",
                                     {"repository": repository, "ide": "jupyter"},
                                     token=self.token)
        self.assertEqual(status, 202, body)
        state = agent.wait_for_state(self.token, ("running", "error"))
        self.assertEqual(state["state"], "running", agent.log(self.token))
        self.assertEqual(state["user"], "root")
        workspace = state["workspace"]
        self.assertTrue(processes_mentioning(workspace))
        self.assertEqual(agent.stop(), 0, h.tail(agent.stderr()))
        self.assertTrue(h.port_refuses(agent.ide_port))
        self.assertEqual(processes_mentioning(workspace), [])
        agent.start()
        self.assertEqual(agent.status(self.token)["state"], "stopped")
        status, _, _ = agent.call("POST", "/v1/gitspace/start", token=self.token)
        self.assertEqual(status, 202)
        agent.wait_for_state(self.token, "running")
        self.assertIn("postCreateCommand already ran", agent.log(self.token))
        # Killed outright, the agent leaves its IDE running (no namespaces);
        # the next agent stops that IDE before anything else.
        leftover = processes_mentioning(workspace)
        self.assertTrue(leftover)
        agent.kill()
        self.assertEqual(processes_mentioning(workspace), leftover)
        agent.start()
        self.assertEqual(processes_mentioning(workspace), [])
        self.assertIn("stopped an IDE left by an earlier run", agent.stderr())
        self.assertEqual(agent.status(self.token)["state"], "stopped")
        status, _, _ = agent.call("POST", "/v1/gitspace/start", token=self.token)
        self.assertEqual(status, 202)
        agent.wait_for_state(self.token, "running")
        self.assertEqual(agent.stop(), 0)


class SetupFailureTest(AgentTestCase):

    def test_devcontainer_syntax_error_names_file_and_line(self):
        repository = make_repository(self.repos, "broken", {
            ".devcontainer/devcontainer.json": '{\n  "name": "x",\n  // fine\n  "image" "y"\n}\n',
        })
        agent = self.new_agent(gitspace_id=GS)
        status, _, _ = agent.call("PUT", "/v1/gitspace",
                                  {"repository": repository, "ide": "jupyter"}, token=self.token)
        self.assertEqual(status, 202)
        state = agent.wait_for_state(self.token, ("error", "running"))
        self.assertEqual(state["state"], "error")
        self.assertIn(".devcontainer/devcontainer.json", state["error"])
        self.assertIn("line 4", state["error"])
        self.assertIn("setup failed", agent.log(self.token))
        self.assertFalse(processes_mentioning(state["workspace"]))

    def test_failing_post_create_command(self):
        repository = make_repository(self.repos, "failing", {
            ".devcontainer.json": '{"postCreateCommand": "echo about to fail; exit 3"}\n',
        })
        agent = self.new_agent(gitspace_id=GS)
        status, _, _ = agent.call("PUT", "/v1/gitspace",
                                  {"repository": repository, "ide": "jupyter"}, token=self.token)
        self.assertEqual(status, 202)
        state = agent.wait_for_state(self.token, ("error", "running"))
        self.assertEqual(state["state"], "error")
        self.assertEqual(state["error"], "postCreateCommand failed: exit 3")
        self.assertIn("[postCreateCommand] about to fail", agent.log(self.token))
        self.assertTrue(h.port_refuses(agent.ide_port))

    def test_stop_and_delete_cancel_a_setup_in_flight(self):
        repository = make_repository(self.repos, "slow", {
            ".devcontainer.json": '{"postCreateCommand": "sleep 300 # slow-setup-marker"}\n',
        })
        agent = self.new_agent(gitspace_id=GS)
        status, _, _ = agent.call("PUT", "/v1/gitspace",
                                  {"repository": repository, "ide": "jupyter"}, token=self.token)
        self.assertEqual(status, 202)
        self.assertTrue(h.wait_until(lambda: processes_mentioning("slow-setup-marker"), 20))
        started = time.monotonic()
        status, body, _ = agent.call("POST", "/v1/gitspace/stop", token=self.token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["state"], "stopped")
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(processes_mentioning("slow-setup-marker"), [])
        # Start again: postCreateCommand never finished, so it runs again.
        status, _, _ = agent.call("POST", "/v1/gitspace/start", token=self.token)
        self.assertEqual(status, 202)
        self.assertTrue(h.wait_until(lambda: processes_mentioning("slow-setup-marker"), 20))
        status, body, _ = agent.call("DELETE", "/v1/gitspace", token=self.token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["state"], "uninitialized")
        self.assertEqual(processes_mentioning("slow-setup-marker"), [])
        self.assertFalse(os.path.exists(os.path.join(agent.disk, "workspace", "slow")))

    def test_ide_that_exits_before_answering(self):
        repository = make_repository(self.repos, "taken", {"a.txt": "a\n"})
        agent = self.new_agent(gitspace_id=GS)
        # Something else holds the IDE's port (and never answers HTTP).
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((h.LOOPBACK, agent.ide_port))
        squatter.listen(16)
        self.addCleanup(squatter.close)
        status, _, _ = agent.call("PUT", "/v1/gitspace",
                                  {"repository": repository, "ide": "jupyter"}, token=self.token)
        self.assertEqual(status, 202)
        state = agent.wait_for_state(self.token, ("error", "running"), timeout=60)
        self.assertEqual(state["state"], "error")
        self.assertIn("the IDE exited before it answered: exit", state["error"])
        self.assertIn("already in use", state["error"])

    def test_missing_code_server_and_missing_user(self):
        repository = make_repository(self.repos, "vscode", {
            ".devcontainer/devcontainer.json": '{"remoteUser": "no-such-user-here"}\n',
        })
        agent = self.new_agent(gitspace_id=GS)
        status, _, _ = agent.call("PUT", "/v1/gitspace",
                                  {"repository": repository, "ide": "vscode-web"},
                                  token=self.token)
        self.assertEqual(status, 202)
        state = agent.wait_for_state(self.token, ("error", "running"))
        self.assertEqual(state["error"], "code-server is not installed on this host")
        self.assertEqual(state["user"], "root")
        self.assertIn('"no-such-user-here"', state["user_warning"])
        self.assertIn("running as root", state["user_warning"])


class SshGitspaceTest(AgentTestCase):

    def test_sshd_answers_and_takes_the_spec_key(self):
        if not os.access("/usr/sbin/sshd", os.X_OK):
            self.skipTest("/usr/sbin/sshd is not installed (apt-get install openssh-server)")
        key_path = os.path.join(self.tmpdir, "user_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key_path],
                       check=True, timeout=30)
        with open(key_path + ".pub") as f:
            public_key = f.read().strip()
        repository = make_repository(self.repos, "remote", {"notes.txt": "ssh\n"})
        agent = self.new_agent(gitspace_id=GS)
        status, body, _ = agent.call("PUT", "/v1/gitspace", {
            "repository": repository, "ide": "ssh", "env": {"SPEC_VAR": "over ssh"},
            "user": {"ssh_authorized_keys": [public_key]}}, token=self.token)
        self.assertEqual(status, 202, body)
        state = agent.wait_for_state(self.token, ("running", "error"))
        self.assertEqual(state["state"], "running", agent.log(self.token))
        self.assertEqual(state["ide"]["protocol"], "ssh")
        self.assertEqual(state["ide"]["port"], agent.ssh_port)
        with socket.create_connection((h.LOOPBACK, agent.ssh_port), timeout=10) as s:
            self.assertTrue(s.recv(64).startswith(b"SSH-2.0-"))
        if shutil.which("ssh"):
            proc = subprocess.run(
                ["ssh", "-i", key_path, "-p", str(agent.ssh_port), "-o", "BatchMode=yes",
                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "LogLevel=ERROR", "root@" + h.LOOPBACK,
                 "echo $GITSPACE_ID $SPEC_VAR"],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            self.assertEqual(proc.returncode, 0, h.describe_run(proc))
            self.assertEqual(proc.stdout.strip(), GS + " over ssh")
        status, _, _ = agent.call("POST", "/v1/gitspace/stop", token=self.token)
        self.assertEqual(status, 200)
        self.assertTrue(h.port_refuses(agent.ssh_port))
        self.assertEqual(descendants(agent.proc.pid), [])
        self.assertEqual(agent.stop(), 0)


if __name__ == "__main__":
    h.main()
