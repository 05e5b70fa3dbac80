#!/usr/bin/python3
"""A real browser over the gateway's TLS listener: headless Chromium
(Debian's `chromium`) loads https://gs-x.gitspaces.test:PORT/ (every name
mapped to loopback with --host-resolver-rules; only the wildcard
certificate's key is trusted, with --ignore-certificate-errors-spki-list, so
the page fails if the gateway serves another certificate). The page, from a
small origin of this file, reports how it was fetched
(`nextHopProtocol`, which must be h2) and opens a WebSocket back to
wss://same-host/echo (the harness's WebSocket echo peer, routed by path);
the echo lands in the DOM. Driven over the DevTools protocol as
browser_ide_test.py does.

Skips without chromium or the gateway binary.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_pki as pki  # noqa: E402
from browser_ide_test import CHROMIUM, DevTools  # noqa: E402

HOST = "gs-x.gitspaces.test"
MESSAGE = "hello from chromium over wss"

# The page writes one JSON object into #result once it knows everything, or
# what went wrong.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>spacegate tls</title></head>
<body><pre id="result">pending</pre>
<script>
const out = {secure: window.isSecureContext, href: location.href};
const nav = performance.getEntriesByType('navigation')[0];
out.protocol = nav ? nav.nextHopProtocol : 'no navigation entry';
function done(echo) {
  out.echo = echo;
  document.getElementById('result').textContent = JSON.stringify(out);
}
try {
  const socket = new WebSocket('wss://' + location.host + '/echo');
  socket.onopen = () => socket.send('%(message)s');
  socket.onmessage = (event) => { done(String(event.data)); socket.close(); };
  socket.onerror = () => done('websocket error');
  setTimeout(() => done('websocket timeout'), 20000);
} catch (e) {
  done('websocket exception: ' + e);
}
</script></body></html>
""" % {b"message": MESSAGE.encode()}


class PageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        if self.path.split("?")[0] == "/":
            status, body, kind = 200, PAGE, "text/html; charset=utf-8"
        else:
            status, body, kind = 404, b"not here\n", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class PageOrigin:
    """The page above on loopback (threaded http.server)."""

    def __init__(self):
        self.server = ThreadingHTTPServer((h.LOOPBACK, 0), PageHandler)
        self.server.daemon_threads = True
        self.server.paths = []
        self.address = "%s:%d" % (h.LOOPBACK, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class BrowserTlsTest(h.GatewayTestCase):
    WITH_WEBSOCKET = True

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(CHROMIUM):
            raise unittest.SkipTest("chromium is not installed (scripts/setup.sh installs it)")
        super().setUpClass()
        if not h.wait_until(lambda: not h.port_refuses(cls.tls_port), 10):
            stderr = cls.gateway.stderr()
            cls._teardown_resources()
            raise h.GatewayError("the TLS listener on %d never accepted\nstderr:\n%s"
                                 % (cls.tls_port, h.tail(stderr)))

    @classmethod
    def extra_setup(cls):
        cls.pki = pki.make_pki(os.path.join(cls.tmpdir, "pki"))
        cls.page = PageOrigin()
        cls.tls_port = h.free_port()

    @classmethod
    def extra_teardown(cls):
        cls.page.stop()

    @classmethod
    def make_config(cls):
        return h.base_config(cls.gateway_port, [
            h.route("page", HOST, cls.page.address),
            h.route("echo", HOST, cls.ws_peer.address, path_prefix="/echo"),
        ], listen=["%s:%d" % (h.LOOPBACK, cls.gateway_port),
                   {"address": "%s:%d" % (h.LOOPBACK, cls.tls_port), "tls": True}],
            tls={"certificates": [
                {"cert": cls.pki.wild.cert, "key": cls.pki.wild.key},
                {"cert": cls.pki.default.cert, "key": cls.pki.default.key, "default": True}]})

    def launch_chromium(self):
        """Headless Chromium with a DevTools port; returns the DevTools."""
        profile = tempfile.mkdtemp(prefix="sg-chromium-")
        port = h.free_port()
        # The networking flags keep Chromium from dialling out on an offline
        # machine (as in browser_ide_test.py).
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--user-data-dir=" + profile,
             "--host-resolver-rules=MAP * %s" % h.LOOPBACK,
             "--ignore-certificate-errors-spki-list=" + pki.spki_sha256_base64(self.pki.wild.cert),
             "--remote-debugging-port=%d" % port, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.addCleanup(shutil.rmtree, profile, True)
        self.addCleanup(browser.wait, 10)
        # Its own process group: the renderers and helpers go with it.
        self.addCleanup(os.killpg, browser.pid, signal.SIGKILL)
        devtools = DevTools(port)

        def answers():
            try:
                devtools.page_socket_url()
                return True
            except (OSError, IndexError, ValueError):
                return False
        self.assertTrue(h.wait_until(answers, 30), "chromium's DevTools endpoint never answered")
        return devtools

    def test_page_over_h2_and_its_websocket_echoes(self):
        devtools = self.launch_chromium()
        url = "https://%s:%d/" % (HOST, self.tls_port)

        async def drive():
            import websockets
            async with websockets.connect(devtools.page_socket_url(), max_size=None) as socket:
                await devtools.call(socket, "Page.enable")
                await devtools.call(socket, "Page.navigate", {"url": url})
                deadline = time.monotonic() + 45
                state = {}
                # Chromium's error page is retried twice: under a loaded CI
                # machine its first navigation has once ended there with no
                # request reaching the gateway. A gateway that does not
                # serve the page fails all three.
                retries = 2
                while time.monotonic() < deadline:
                    state = await devtools.evaluate(
                        socket, "({href: location.href, title: document.title, "
                        "result: document.getElementById('result') ? "
                        "document.getElementById('result').textContent : null, "
                        "text: document.body ? document.body.innerText.slice(0, 300) : ''})")
                    if state and state["result"] not in (None, "pending"):
                        break
                    if state and state["href"].startswith("chrome-error:"):
                        if retries == 0:
                            break  # Chromium's error page: no point waiting
                        retries -= 1
                        await asyncio.sleep(0.5)
                        await devtools.call(socket, "Page.navigate", {"url": url})
                    await asyncio.sleep(0.2)
                return state

        state = asyncio.run(drive())
        self.assertIsNotNone(state.get("result"), "the page never loaded through the gateway "
                             "(wrong certificate, no TLS, no route?): %r%s"
                             % (state, self.gateway_context()))
        self.assertNotEqual(state["result"], "pending", "the page's script never finished: %r"
                            % state)
        result = json.loads(state["result"])
        self.assertEqual(result["href"], url, result)
        self.assertTrue(result["secure"], "not a secure context: %r" % result)
        self.assertEqual(result["protocol"], "h2", "the page was not fetched over HTTP/2: %r"
                         % result)
        self.assertEqual(result["echo"], MESSAGE, "the WebSocket through the gateway: %r"
                         % result)
        self.assertIn("/", self.page.server.paths)
        self.assertIn("/echo", self.ws_peer.paths)


if __name__ == "__main__":
    h.main()
