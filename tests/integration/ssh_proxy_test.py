#!/usr/bin/python3
"""`spacegatectl ssh-proxy` (an ssh ProxyCommand) against the real gateway,
through CONNECT and through the WebSocket tunnel endpoint (docs/tunnels.md).

The Gitspace port behind the gateway is a Python TCP peer on loopback (no
sshd: ssh_test.py runs real OpenSSH): `echo` sends a banner first, as sshd
does, then every byte back, and half-closes after the client's EOF;
`goodbye` sends one line and closes, so the Gitspace side ends first. The
gateway's route for the Gitspace host has both ports in its tunnel_ports.

SshProxyTokenFileTest drives ssh-proxy with --token-file (tokens signed by
`spacegatectl token sign`): 1 MiB both ways intact with the half-close
passed on (the peer sees EOF only after the proxy's stdin ended), the peer
closing first ends the proxy with exit 0 while its stdin is still open,
refusals as one line naming the gateway's status and reason (403 without
scope ssh or for a port not in tunnel_ports, 404 for an unknown host, 407 /
401 for a bad token) with nothing reaching the peer, exit 3 when the
gateway is not there, exit 2 for bad usage.

SshProxyControlPlaneTest runs the real control plane too (a Gitspace made
running by a scripted delegate with the peer's port as its machine's ssh
port; the gateway gets the control plane's routes and public key): the
proxy takes its token and the gateway from the control plane, and the
ProxyCommand that `spacegatectl gitspace ssh` prints works as printed."""

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GS = "gs-0000abcd"
OWNER = "alice"
HOST = GS + ".gitspaces.test"
BANNER = b"SSH-2.0-spacegate-test-peer\r\n"
GOODBYE = b"goodbye from the Gitspace port\n"
BIG = 1 * h.MiB


class TcpPeer:
    """A raw TCP port on loopback, one thread per connection (see the file
    comment for the modes). `connections` counts accepted connections and
    `eof_after` records, per connection, how many bytes came before EOF."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((h.LOOPBACK, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.eof_after = []
        self.errors = []  # how connections that did not end with an EOF ended
        self.stopped = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.mode == "goodbye":
                conn.sendall(GOODBYE)
                return
            conn.sendall(BANNER)
            total = 0
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                total += len(data)
                conn.sendall(data)
            with self.lock:
                self.eof_after.append(total)
            conn.shutdown(socket.SHUT_WR)
        except OSError as error:
            with self.lock:
                self.errors.append(repr(error))
        finally:
            conn.close()

    def stop(self):
        # shutdown() wakes the thread blocked in accept(); a bare close()
        # would not, and the next socket that gets the same descriptor
        # number would then have its connections accepted by this peer.
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.acceptor.join(5)
        self.sock.close()


def run_proxy(args, stdin_data=b"", timeout=60):
    return subprocess.run([h.CTL_BINARY] + list(args), input=stdin_data, capture_output=True,
                          timeout=timeout)


def describe(proc):
    return "command: %s\nexit code: %s\nstdout: %d bytes %r\nstderr:\n%s" % (
        " ".join(proc.args), proc.returncode, len(proc.stdout or b""), (proc.stdout or b"")[:200],
        (proc.stderr or b"").decode("utf-8", "replace"))


class ProxyChecks:
    """Checks shared by both test classes."""

    def assert_echoes(self, args, size=BIG):
        data = os.urandom(size)
        before = len(self.echo.eof_after)
        proc = run_proxy(args, data)
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertEqual(proc.stderr, b"", describe(proc))
        self.assertEqual(len(proc.stdout), len(BANNER) + size, describe(proc))
        self.assertEqual(proc.stdout[:len(BANNER)], BANNER)
        self.assertEqual(hashlib.sha256(proc.stdout[len(BANNER):]).hexdigest(),
                         hashlib.sha256(data).hexdigest())
        # The peer saw every byte and then EOF: the proxy's stdin EOF was
        # passed on as a half-close (else the peer would never have ended).
        self.assertTrue(h.wait_until(lambda: len(self.echo.eof_after) > before, 5),
                        "the peer saw no EOF: %r" % self.echo.errors)
        self.assertEqual(self.echo.eof_after[-1], size)
        return proc


@unittest.skipUnless(os.path.exists(h.BINARY), "gateway binary not found: %s" % h.BINARY)
@unittest.skipUnless(os.path.exists(h.CTL_BINARY), "spacegatectl not found: %s" % h.CTL_BINARY)
class SshProxyTokenFileTest(ProxyChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegate-ssh-proxy-")
        cls.echo = TcpPeer("echo")
        cls.goodbye = TcpPeer("goodbye")
        cls.key = h.TokenKey(cls.tmpdir, "k1")
        cls.port = h.free_port()
        gitspace_route = h.route(GS, HOST, "127.0.0.1:%d" % cls.echo.port,
                                 tunnel_ports=[cls.echo.port, cls.goodbye.port],
                                 gitspace=GS, owner=OWNER, access="owner")
        config = h.base_config(cls.port, [gitspace_route], auth=h.auth_section(keys=[cls.key]))
        cls.gateway = h.Gateway(config, tmpdir=os.path.join(cls.tmpdir, "gateway"),
                                port=cls.port)
        os.makedirs(cls.gateway.tmpdir)
        cls.gateway.start()
        cls.ssh_token = cls.token_file("ssh", cls.key.sign(OWNER, GS, scopes=["ssh"]))
        cls.ide_token = cls.token_file("ide", cls.key.sign(OWNER, GS, scopes=["ide"]))
        cls.garbage_token = cls.token_file("garbage", "v1.not.a-token")

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()
        cls.echo.stop()
        cls.goodbye.stop()
        if not h.KEEP_TMP:
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    @classmethod
    def token_file(cls, name, token):
        path = os.path.join(cls.tmpdir, name + ".token")
        with open(path, "w") as f:
            f.write(token + "\n")
        return path

    def proxy_args(self, via=None, port=None, host=HOST, token_file=None, gateway=None):
        args = ["ssh-proxy", GS, "--gateway", gateway or "127.0.0.1:%d" % self.port,
                "--host", host, "--port", str(port or self.echo.port),
                "--token-file", token_file or self.ssh_token]
        if via:
            args += ["--via", via]
        return args

    def test_connect_carries_bytes_both_ways_and_passes_the_half_close(self):
        self.assert_echoes(self.proxy_args())

    def test_websocket_carries_bytes_both_ways_and_passes_the_half_close(self):
        self.assert_echoes(self.proxy_args(via="websocket"))

    def test_empty_stdin(self):
        for via in ("connect", "websocket"):
            with self.subTest(via=via):
                self.assert_echoes(self.proxy_args(via=via), size=0)

    def test_gitspace_port_closing_first_ends_the_proxy(self):
        for via in ("connect", "websocket"):
            with self.subTest(via=via):
                proc = subprocess.Popen(
                    [h.CTL_BINARY] + self.proxy_args(via=via, port=self.goodbye.port),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                try:
                    # stdin stays open: the tunnel's EOF alone ends the proxy.
                    deadline = time.monotonic() + 15
                    while proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.05)
                    self.assertIsNotNone(proc.returncode, "ssh-proxy did not end at the "
                                         "tunnel's EOF")
                    out = proc.stdout.read()
                    err = proc.stderr.read()
                    self.assertEqual(proc.returncode, 0, err)
                    self.assertEqual(out, GOODBYE)
                    self.assertEqual(err, b"")
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    proc.stdin.close()
                    proc.stdout.close()
                    proc.stderr.close()

    def test_refusals_name_the_status_and_reason(self):
        cases = [
            ("connect", dict(token_file=self.ide_token), "403"),
            ("websocket", dict(token_file=self.ide_token), "403"),
            ("connect", dict(port=h.free_port()), "403"),  # not in tunnel_ports
            ("websocket", dict(port=h.free_port()), "403"),
            ("connect", dict(host="gs-nothing.gitspaces.test"), "404"),
            ("connect", dict(token_file=self.garbage_token), "407"),
            ("websocket", dict(token_file=self.garbage_token), "401"),
        ]
        for via, options, status in cases:
            with self.subTest(via=via, options=options):
                before = self.echo.connections
                proc = run_proxy(self.proxy_args(via=via, **options), b"never sent")
                self.assertEqual(proc.returncode, 1, describe(proc))
                self.assertEqual(proc.stdout, b"")
                lines = proc.stderr.decode().splitlines()
                self.assertEqual(len(lines), 1, describe(proc))
                self.assertTrue(lines[0].startswith(
                    "spacegatectl: gateway refused the tunnel: %s " % status), lines[0])
                # The gateway's reason phrase and its one-line detail.
                self.assertRegex(lines[0], r"refused the tunnel: \d{3} [A-Z][A-Za-z ]+")
                self.assertEqual(self.echo.connections, before)

    def test_unreachable_gateway_exits_3(self):
        closed = h.free_port()
        proc = run_proxy(self.proxy_args(gateway="127.0.0.1:%d" % closed))
        self.assertEqual(proc.returncode, 3, describe(proc))
        self.assertIn(b"cannot reach the gateway at 127.0.0.1:%d" % closed, proc.stderr)

    def test_usage_errors_exit_2(self):
        token = ["--token-file", self.ssh_token]
        for args in (["ssh-proxy", GS, "--host", HOST] + token,                  # no --gateway
                     ["ssh-proxy", GS, "--gateway", "127.0.0.1:1"] + token,      # no --host
                     ["ssh-proxy", GS, "--host", HOST, "--gateway", "nowhere"] + token,
                     ["ssh-proxy", GS, "--via", "carrier-pigeon"] + token,
                     ["ssh-proxy", GS, "--port", "0"] + token,
                     ["ssh-proxy", GS, "--host", HOST, "--gateway", "127.0.0.1:1",
                      "--token-file", os.path.join(self.tmpdir, "missing")],
                     ["ssh-proxy"]):
            with self.subTest(args=args):
                proc = run_proxy(args)
                self.assertEqual(proc.returncode, 2, describe(proc))
                self.assertTrue(proc.stderr.strip())


def _control_plane_module():
    """control_plane_test.py's Control, User and FakeDelegate (a real
    spacegate-control and a scripted delegate)."""
    import control_plane_test
    return control_plane_test


@unittest.skipUnless(os.path.exists(h.BINARY), "gateway binary not found: %s" % h.BINARY)
@unittest.skipUnless(os.path.exists(h.CTL_BINARY), "spacegatectl not found: %s" % h.CTL_BINARY)
class SshProxyControlPlaneTest(ProxyChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cp = _control_plane_module()
        if not os.path.exists(cp.CONTROL_BINARY):
            raise unittest.SkipTest("spacegate-control not found: %s" % cp.CONTROL_BINARY)
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegate-ssh-proxy-cp-")
        cls.echo = TcpPeer("echo")
        cls.control = cp.Control(os.path.join(cls.tmpdir, "control"))
        os.makedirs(cls.control.tmpdir)
        cls.control.start()
        cls.admin_token_file = cls.control.file("admin.token")
        admin = cp.User(cls.control, cls.control.secret("admin.token"))
        cls.port = h.free_port()
        # "localhost" resolves (the gateway URL the proxy connects to by
        # default); Gitspace hosts under it only need to match routes.
        admin.ok("POST", "/infra", {"name": "default", "gateway_domain": "localhost",
                                    "url_scheme": "http", "gateway_port": cls.port}, status=201)
        delegate = cp.FakeDelegate(cls.control)
        cls.gs = admin.create_gitspace("box", ide="ssh")["id"]
        reply = delegate.result(delegate.poll(), data=dict(
            cp.MACHINE, address="127.0.0.1", ssh_port=cls.echo.port))
        assert reply.status == 200, reply
        cls.starting = admin.create_gitspace("later", ide="ssh")["id"]  # never runs
        table = delegate.routes()
        public_key = cls.control.request("GET", "/api/v1/public-key").json()
        config = h.base_config(cls.port, table["routes"],
                               auth={"public_keys": [{"kid": public_key["kid"],
                                                      "public_key": public_key["public_key"]}]})
        cls.gateway = h.Gateway(config, tmpdir=os.path.join(cls.tmpdir, "gateway"),
                                port=cls.port)
        os.makedirs(cls.gateway.tmpdir)
        cls.gateway.start()

    @classmethod
    def tearDownClass(cls):
        gateway = getattr(cls, "gateway", None)
        if gateway:
            gateway.stop()
        cls.control.stop()
        cls.echo.stop()
        if not h.KEEP_TMP:
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def control_args(self):
        return ["--control-url", "http://%s:%d" % (h.LOOPBACK, self.control.port),
                "--control-token-file", self.admin_token_file]

    def test_token_and_gateway_come_from_the_control_plane(self):
        for via in ("connect", "websocket"):
            with self.subTest(via=via):
                self.assert_echoes(["ssh-proxy", self.gs, "--via", via] + self.control_args())

    def test_gitspace_ssh_prints_a_working_proxy_command(self):
        proc = subprocess.run([h.CTL_BINARY, "gitspace", "ssh", self.gs] + self.control_args(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertEqual(proc.stderr, "")
        words = shlex.split(proc.stdout)
        self.assertEqual(words[0], "ssh")
        self.assertEqual(words[-1], "root@" + self.gs)
        self.assertEqual(words[words.index("-p") + 1], str(self.echo.port))
        options = [words[i + 1] for i, word in enumerate(words) if word == "-o"]
        self.assertIn("HostKeyAlias=" + self.gs, options)
        proxy_command = [o for o in options if o.startswith("ProxyCommand=")][0]
        command = shlex.split(proxy_command[len("ProxyCommand="):])
        self.assertEqual(command[0], os.path.realpath(h.CTL_BINARY))
        self.assertEqual(command[1:3], ["ssh-proxy", self.gs])
        # Run it as ssh would, from another folder.
        data = os.urandom(64 * 1024)
        ran = subprocess.run(command, input=data, capture_output=True, timeout=60, cwd="/")
        self.assertEqual(ran.returncode, 0, describe(ran))
        self.assertEqual(ran.stdout, BANNER + data)

    def test_control_plane_refusal_is_printed(self):
        proc = run_proxy(["ssh-proxy", self.starting] + self.control_args())
        self.assertEqual(proc.returncode, 1, describe(proc))
        self.assertIn(b"refused by the control plane (409)", proc.stderr)
        self.assertIn(b"not running", proc.stderr)
        proc = run_proxy(["ssh-proxy", "gs-ffffffff"] + self.control_args())
        self.assertEqual(proc.returncode, 1, describe(proc))
        self.assertIn(b"(404)", proc.stderr)


if __name__ == "__main__":
    unittest.main()
