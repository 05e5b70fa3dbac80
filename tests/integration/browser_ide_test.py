#!/usr/bin/env python3
"""A real browser opens a Gitspace through the gateway: headless Chromium
(Debian's `chromium`) loads the URL the control plane hands out (with
`?sg_token=`, exchanged by the gateway for its cookie), the Jupyter page
loads, and a WebSocket the page opens to the IDE's kernel connects through
the gateway (same Origin, the gateway's cookie). Driven over the DevTools
protocol with python3-websockets.

Needs root (the machines' namespaces) and chromium; skips with the reason
otherwise.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import gitspace_end_to_end_test as e2e  # noqa: E402
from runner_harness import namespaces_reason, require_binaries  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# A pool of its own (bridge, subnet, ports): ctest may run this file beside
# the end-to-end one.
e2e.POOL = {"name": "default", "driver": "process", "min": 1, "max": 2,
            "process": {"subnet": "10.221.%d.0/24" % e2e.RUN_NETWORK,
                        "bridge": "sg-brw-%d" % e2e.RUN_NETWORK,
                        "sandbox": "namespaces", "port_base": 45000, "memory": 1024,
                        "max_processes": 512}}

# The page opens a kernel and its WebSocket the way the notebook UI does:
# the XSRF cookie Jupyter set on the page, then ws:// to the same origin.
KERNEL_SOCKET_SCRIPT = """
(async () => {
  const match = document.cookie.match(/_xsrf=([^;]+)/);
  const headers = match ? {'X-XSRFToken': decodeURIComponent(match[1])} : {};
  const created = await fetch('%(base)sapi/kernels', {method: 'POST', headers, body: '{}'});
  if (!created.ok) return 'kernel: HTTP ' + created.status;
  const kernel = await created.json();
  const url = location.origin.replace(/^http/, 'ws') + '%(base)sapi/kernels/' + kernel.id +
      '/channels?session_id=browser-test';
  return await new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.onopen = () => { socket.close(); resolve('open'); };
    socket.onerror = () => resolve('error');
    setTimeout(() => resolve('timeout'), 20000);
  });
})()
"""


class DevTools:
    """One page of a headless Chromium, over the DevTools protocol."""

    def __init__(self, port):
        self.port = port
        self.next_id = 0

    def page_socket_url(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/json" % self.port, timeout=5) as f:
            pages = [p for p in json.load(f) if p.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"]

    async def call(self, socket, method, params=None, timeout=60):
        self.next_id += 1
        message_id = self.next_id
        await socket.send(json.dumps({"id": message_id, "method": method,
                                      "params": params or {}}))
        while True:
            reply = json.loads(await asyncio.wait_for(socket.recv(), timeout))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError("%s: %s" % (method, reply["error"]))
                return reply["result"]

    async def evaluate(self, socket, expression, timeout=60):
        result = await self.call(socket, "Runtime.evaluate",
                                 {"expression": expression, "awaitPromise": True,
                                  "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise AssertionError("page script failed: %s" % result["exceptionDetails"])
        return result["result"].get("value")


class BrowserIdeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binaries()
        if not os.path.exists(CHROMIUM):
            raise unittest.SkipTest("chromium is not installed (scripts/setup.sh installs it)")
        reason = namespaces_reason()
        if reason:
            raise unittest.SkipTest(reason)
        for path in (h.BINARY, e2e.CONTROL_BINARY, e2e.DELEGATE_BINARY):
            if not os.path.exists(path):
                raise unittest.SkipTest("binary not found: %s" % path)
        cls.stack = e2e.Stack()
        try:
            cls.stack.start()
        except BaseException:
            cls.stack.clean_up()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.clean_up()

    def test_chromium_opens_the_ide_and_its_websocket_connects(self):
        stack = self.stack
        gs = stack.create("browser")["id"]
        stack.wait_state(gs, "running", 120)
        opened = stack.token(gs)
        url = opened["url"]
        self.assertIn("sg_token=", url)
        base = "/gs/%s/" % gs
        profile = tempfile.mkdtemp(prefix="sg-chromium-")
        port = h.free_port()
        # Without the networking flags Chromium keeps dialling out on an
        # offline machine; *.localhost resolves to loopback by itself.
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--user-data-dir=" + profile,
             "--remote-debugging-port=%d" % port, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(shutil.rmtree, profile, True)
        self.addCleanup(browser.wait, 10)
        self.addCleanup(browser.kill)
        devtools = DevTools(port)
        self.assertTrue(h.wait_until(lambda: self._answers(devtools), 30),
                        "chromium's DevTools endpoint never answered")

        async def drive():
            import websockets
            async with websockets.connect(devtools.page_socket_url(), max_size=None) as socket:
                await devtools.call(socket, "Page.enable")
                await devtools.call(socket, "Page.navigate", {"url": url})
                deadline = time.monotonic() + 60
                state = {}
                while time.monotonic() < deadline:
                    state = await devtools.evaluate(
                        socket, "({ready: document.readyState, title: document.title, "
                        "href: location.href, text: document.body ? "
                        "document.body.innerText.slice(0, 200) : ''})")
                    if state and state["ready"] == "complete" and state["title"]:
                        break
                    await asyncio.sleep(0.2)
                socket_result = await devtools.evaluate(
                    socket, KERNEL_SOCKET_SCRIPT % {"base": base}, timeout=60)
                return state, socket_result

        state, socket_result = asyncio.run(drive())
        # The token was exchanged for the cookie and left the address bar.
        self.assertNotIn("sg_token", state["href"], state)
        self.assertIn(base, state["href"], state)
        # Jupyter's file browser (the notebook server's tree page).
        self.assertIn("Select or create a notebook", state["title"], state)
        self.assertEqual(socket_result, "open",
                         "the page's kernel WebSocket through the gateway: %s" % socket_result)
        # The gateway logs the browser's WebSocket on the IDE's route once the
        # tunnel has closed.
        def logged():
            with open(stack.access_log) as f:
                return any("/channels" in line and '"status":101' in line for line in f)
        self.assertTrue(h.wait_until(logged, 15), "no WebSocket (101) in the access log")

    @staticmethod
    def _answers(devtools):
        try:
            devtools.page_socket_url()
            return True
        except (OSError, IndexError, ValueError):
            return False


if __name__ == "__main__":
    unittest.main(verbosity=2)
