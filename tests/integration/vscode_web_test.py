#!/usr/bin/python3
"""The `vscode-web` IDE for real: spacegate-agent (no namespaces, 127.0.0.1)
starts code-server from scripts/install_code_server.sh for a Gitspace cloned
from a local bare repository.

Checked: PUT with ide "vscode-web" reaches `running`; GET / redirects to the
clone (`?folder=<workspace>`) and that page is the workbench's HTML (200,
text/html, the workbench configuration and workbench.js under
/stable-<commit>/static/, which answers 200 too); the workbench's WebSocket
(the URL the page's script builds: /stable-<commit>?reconnectionToken=...)
upgrades with 101 for a same-origin request and then completes VS Code's
own handshake (auth, sign, connectionType for a management connection, ok),
while a foreign Origin gets no 101; the IDE's processes run with the
Gitspace's HOME and working folder; stop closes the port and leaves no
process; start brings the IDE back. The same as the devcontainer's
remoteUser (nobody): every IDE process runs as that user.

Skips when code-server is not installed (`make install-code-server`) or the
agent binary is missing. Environment: SPACEGATE_AGENT_BINARY and
SPACEGATECTL_BINARY as for agent_test.py; SPACEGATE_CODE_SERVER (default
/opt/spacegate/code-server/bin/code-server)."""

import html
import http.client
import json
import os
import re
import struct
import sys
import tempfile
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from agent_test import GS, Agent, AgentTestCase, descendants, make_repository  # noqa: E402

CODE_SERVER = os.environ.get("SPACEGATE_CODE_SERVER", "/opt/spacegate/code-server/bin/code-server")

# VS Code's protocol framing (ipc.net.ts): type, id, ack, length, then data;
# type 2 carries the JSON control messages of the connection handshake.
CONTROL = 2
MANAGEMENT_CONNECTION = 1


def http_get(port, path, headers=None, timeout=30):
    connection = http.client.HTTPConnection(h.LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def vscode_frame(kind, payload):
    return struct.pack(">BIII", kind, 0, 0, len(payload)) + payload


class VscodeWebGitspaceTest(AgentTestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(CODE_SERVER, os.X_OK):
            raise unittest.SkipTest("code-server is not installed at %s (make install-code-server)"
                                    % CODE_SERVER)
        super().setUpClass()

    def new_vscode_agent(self):
        """AgentTestCase.new_agent with the config's code_server set."""
        folder = tempfile.mkdtemp(prefix="agent-", dir=self.tmpdir)
        os.chmod(folder, 0o755)
        agent = Agent(folder, self.key, GS)
        agent.config["code_server"] = CODE_SERVER
        self.agents.append(agent)
        self.addCleanup(agent.stop)
        return agent.start()

    def check_workbench(self, port, workspace, disk):
        """The page the browser gets, and its WebSocket; returns the page."""
        status, response, body = http_get(port, "/")
        self.assertEqual(status, 302, body)
        location = response.getheader("Location")
        self.assertEqual(location, "./?folder=" + workspace)
        status, response, body = http_get(port, location[1:], {"Accept": "text/html"})
        self.assertEqual(status, 200, body[:500])
        self.assertTrue(response.getheader("Content-Type").startswith("text/html"))
        page = body.decode("utf-8")
        settings = re.search(r'<meta id="vscode-workbench-web-configuration" data-settings="([^"]*)"',
                             page)
        self.assertTrue(settings, page[:2000])
        settings = json.loads(html.unescape(settings.group(1)))
        # The browser's state lives in the Gitspace user's HOME, on the disk.
        self.assertTrue(settings["userDataPath"].startswith(disk + "/home/"), settings)
        static = re.search(r'src="(stable-[0-9a-f]+)/static/out/vs/code/browser/workbench/'
                           r'workbench\.js"', page)
        self.assertTrue(static, page[:2000])
        server_root = static.group(1)
        status, response, script = http_get(
            port, "/%s/static/out/vs/code/browser/workbench/workbench.js" % server_root)
        self.assertEqual(status, 200)
        self.assertIn("javascript", response.getheader("Content-Type"))
        self.assertGreater(len(script), 1 << 20)

        # The workbench's connection to its server, as the page's script
        # builds it (location.pathname + serverRootPath, a reconnection token).
        host = "%s:%d" % (h.LOOPBACK, port)
        path = "/%s?reconnectionToken=%s&reconnection=false&skipWebSocketFrames=false" % (
            server_root, uuid.uuid4())
        with self.assertRaisesRegex(AssertionError, "upgrade .* answered"):
            h.WebSocketClient(port, host, path, headers=[("Origin", "http://evil.example")])
        ws = h.WebSocketClient(port, host, path, headers=[("Origin", "http://" + host)])
        try:
            self.assertEqual(ws.response.status, 101)

            def control():
                while True:
                    data = ws.recv(timeout=30)
                    self.assertIsInstance(data, bytes)
                    kind, _, _, length = struct.unpack(">BIII", data[:13])
                    if kind == CONTROL:
                        return json.loads(data[13:13 + length])

            ws.send(vscode_frame(CONTROL, json.dumps(
                {"type": "auth", "auth": "00000000000000000000"}).encode()))
            sign = control()
            self.assertEqual(sign["type"], "sign", sign)
            commit = server_root.split("-", 1)[1]
            ws.send(vscode_frame(CONTROL, json.dumps(
                {"type": "connectionType", "commit": commit, "signedData": sign["data"],
                 "desiredConnectionType": MANAGEMENT_CONNECTION}).encode()))
            self.assertEqual(control(), {"type": "ok"})
        finally:
            ws.close()
        return page

    def test_vscode_web_serves_the_workbench_and_its_websocket(self):
        repository = make_repository(self.repos, "webapp", {
            "README.md": "# webapp\n", "src/app.py": "print('hello from vscode-web')\n"})
        agent = self.new_vscode_agent()
        status, body, _ = agent.call("PUT", "/v1/gitspace",
                                     {"repository": repository, "ide": "vscode-web"},
                                     token=self.token)
        self.assertEqual(status, 202, body)
        state = agent.wait_for_state(self.token, ("running", "error"), timeout=120)
        self.assertEqual(state["state"], "running", "%s\n%s" % (state, agent.log(self.token)))
        self.assertEqual(state["ide"], {"kind": "vscode-web", "port": agent.ide_port,
                                        "protocol": "http", "host": h.LOOPBACK})
        workspace = state["workspace"]
        self.assertTrue(os.path.isfile(os.path.join(workspace, "src", "app.py")))
        self.check_workbench(agent.ide_port, workspace, agent.disk)

        # code-server runs for the Gitspace: its HOME, its clone.
        processes = descendants(agent.proc.pid)
        self.assertTrue(processes)
        with open("/proc/%d/environ" % processes[0], "rb") as f:
            environment = dict(entry.split(b"=", 1) for entry in f.read().split(b"\0") if entry)
        self.assertEqual(environment[b"GITSPACE_ID"].decode(), GS)
        home = environment[b"HOME"].decode()
        self.assertTrue(home.startswith(agent.disk + "/"), home)
        self.assertTrue(os.path.isdir(os.path.join(home, ".local", "share", "code-server")))
        self.assertEqual(os.readlink("/proc/%d/cwd" % processes[0]), workspace)

        # Stop: the port closes and none of code-server's processes is left.
        status, body, _ = agent.call("POST", "/v1/gitspace/stop", token=self.token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["state"], "stopped")
        self.assertTrue(h.port_refuses(agent.ide_port))
        self.assertEqual(descendants(agent.proc.pid), [])

        # Start: the IDE comes back and answers again.
        status, body, _ = agent.call("POST", "/v1/gitspace/start", token=self.token)
        self.assertEqual(status, 202, body)
        agent.wait_for_state(self.token, "running", timeout=120)
        self.check_workbench(agent.ide_port, workspace, agent.disk)
        self.assertEqual(agent.stop(), 0, h.tail(agent.stderr()))
        self.assertTrue(h.port_refuses(agent.ide_port))

    def test_vscode_web_as_the_devcontainer_remote_user(self):
        repository = make_repository(self.repos, "as-nobody", {
            ".devcontainer/devcontainer.json": '{"remoteUser": "nobody"}\n', "a.txt": "a\n"})
        agent = self.new_vscode_agent()
        status, body, _ = agent.call("PUT", "/v1/gitspace",
                                     {"repository": repository, "ide": "vscode-web"},
                                     token=self.token)
        self.assertEqual(status, 202, body)
        state = agent.wait_for_state(self.token, ("running", "error"), timeout=120)
        self.assertEqual(state["state"], "running", "%s\n%s" % (state, agent.log(self.token)))
        self.assertEqual(state["user"], "nobody")
        self.check_workbench(agent.ide_port, state["workspace"], agent.disk)
        for pid in descendants(agent.proc.pid):
            with open("/proc/%d/status" % pid) as f:
                uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
            self.assertEqual(int(uid), 65534, pid)
        self.assertEqual(agent.stop(), 0, h.tail(agent.stderr()))
        self.assertTrue(h.port_refuses(agent.ide_port))


if __name__ == "__main__":
    h.main()
