#!/usr/bin/python3
"""TLS termination on a `{"address": ..., "tls": true}` listener: curl over
HTTPS with HTTP/1.1 and HTTP/2 (bodies both ways, checked by hash); the
certificate SNI picks (exact, then a one-label wildcard, else the default;
no SNI and unknown names get the default; the chain is sent); ALPN (h2,
http/1.1, none = HTTP/1.1); TLS 1.0/1.1 refused, 1.2 and 1.3 served;
session resumption; nghttp and h2load over TLS; certificate reload by
SIGHUP and by the control API (`POST /tls/reload`, `GET /tls`) while a
download runs on the old certificate; reloads that fail (mismatched key,
missing file, not PEM) answer 400 naming the field and keep the old
certificates; a WebSocket over TLS; a TLS listener without certificates is
refused at start; plain HTTP on the TLS port and stalled handshakes are
closed. The PKI is made per run by test_pki.py."""

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_pki as pki  # noqa: E402

HOST = "gs-x.gitspaces.test"      # served by the wildcard route and certificate
NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")

# The order of tls.certificates in the config (the index a refused reload's
# field names). The default is not the first, so "default": true is what
# picks it.
CERT_ORDER = ("wild", "gateway", "exact", "default")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


class TlsTest(h.ControlGatewayTestCase):
    WITH_WEBSOCKET = True

    # -- set-up ------------------------------------------------------------

    @classmethod
    def extra_setup(cls):
        cls.pki = pki.make_pki(os.path.join(cls.tmpdir, "pki"))
        cls.ca = cls.pki.ca_cert
        # The gateway reads copies under live/: reload tests overwrite them.
        cls.live_dir = os.path.join(cls.tmpdir, "live")
        os.makedirs(cls.live_dir)
        cls.live = {}
        for name in CERT_ORDER:
            leaf = getattr(cls.pki, name)
            paths = (os.path.join(cls.live_dir, name + ".pem"),
                     os.path.join(cls.live_dir, name + ".key"))
            pki.install(leaf, *paths)
            cls.live[name] = paths
        cls.tls_port = h.free_port()

    @classmethod
    def config_routes(cls):
        return [
            h.route("wild", "*.gitspaces.test", cls.origin.address),
            h.route("wild-ws", "*.gitspaces.test", cls.ws_peer.address, path_prefix="/ws"),
            h.route("gateway", "gateway.test", cls.origin.address),
            h.route("default", "default.test", cls.origin.address),
        ]

    @classmethod
    def tls_section(cls):
        entries = []
        for name in CERT_ORDER:
            entry = {"cert": cls.live[name][0], "key": cls.live[name][1]}
            if name == "default":
                entry["default"] = True
            entries.append(entry)
        return {"certificates": entries}

    @classmethod
    def make_config(cls):
        config = super().make_config()
        config["listen"] = ["%s:%d" % (h.LOOPBACK, cls.gateway_port),
                            {"address": "%s:%d" % (h.LOOPBACK, cls.tls_port), "tls": True}]
        config["tls"] = cls.tls_section()
        config.setdefault("limits", {})["header_read_timeout"] = "1s"
        return config

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not h.wait_until(lambda: not h.port_refuses(cls.tls_port), 10):
            stderr = cls.gateway.stderr()
            cls._teardown_resources()
            raise h.GatewayError("the TLS listener on %d never accepted\nstderr:\n%s"
                                 % (cls.tls_port, h.tail(stderr)))

    # -- helpers -----------------------------------------------------------

    def peer(self, sni, **kw):
        return pki.peer_certificate(self.tls_port, sni, self.ca, **kw)

    def serial_for(self, sni):
        return self.peer(sni).serial

    def curl_tls(self, path, http2, extra=(), host=HOST, out=None):
        """curl https://host:tls_port/path through --resolve, trusting only
        the test CA. The body goes to `out` (a path) or is returned.
        Returns (http_version, status, body bytes or None)."""
        body_path = out or os.path.join(self.scratch(), "body")
        args = ["--resolve", "%s:%d:%s" % (host, self.tls_port, h.LOOPBACK),
                "--cacert", self.ca, "--http2" if http2 else "--http1.1",
                "--max-time", "60", "-w", "%{http_version} %{http_code}",
                "-o", body_path] + list(extra)
        result = h.curl(args + ["https://%s:%d%s" % (host, self.tls_port, path)])
        self.assertEqual(result.returncode, 0, "curl %s failed: %s%s" % (
            path, result.stderr.decode(errors="replace"), self.gateway_context()))
        version, status = result.stdout.decode().split()
        body = None
        if out is None:
            with open(body_path, "rb") as f:
                body = f.read()
        return version, int(status), body

    def scratch(self):
        if not hasattr(self, "_scratch"):
            self._scratch = tempfile.mkdtemp(prefix="tls-test-", dir=self.tmpdir)
        return self._scratch

    def reload_api(self):
        return self.api.post("/tls/reload")

    def reload_sighup(self):
        self.gateway.signal(signal.SIGHUP)

    def install(self, name, cert, key):
        """Put cert/key files in place of the live files of entry `name`."""
        pki.install((cert, key), *self.live[name])

    def restore_all(self):
        """Every live file back to its first generation, reloaded."""
        for name in CERT_ORDER:
            pki.install(getattr(self.pki, name), *self.live[name])
        resp = self.reload_api()
        self.assertEqual(resp.status, 200, "restoring the certificates: %r" % resp)

    def tls_listing(self):
        resp = self.api.get("/tls")
        self.assertEqual(resp.status, 200, "GET /tls: %r" % resp)
        return resp.json()

    def check_listing(self, listing, generation_of_wild):
        """The listing names every configured certificate with its names,
        not_after and default flag."""
        self.assertIsInstance(listing, dict, listing)
        entries = listing.get("certificates")
        self.assertIsInstance(entries, list, listing)
        by_cert = {e.get("cert"): e for e in entries}
        self.assertEqual(len(entries), len(CERT_ORDER), listing)
        for name in CERT_ORDER:
            leaf = generation_of_wild if name == "wild" else getattr(self.pki, name)
            entry = by_cert.get(self.live[name][0])
            self.assertIsNotNone(entry, "no entry for %s in %r" % (self.live[name][0], listing))
            self.assertEqual(sorted(entry.get("names") or []), sorted(leaf.names), entry)
            self.assertIs(entry.get("default"), name == "default", entry)
            self.assertIsInstance(entry.get("not_after"), str, entry)
            self.assertIn(str(leaf.not_after.year), entry["not_after"], entry)
        return by_cert

    # -- curl over HTTPS -----------------------------------------------------

    def test_curl_http1_over_tls(self):
        version, status, body = self.curl_tls("/headers?curl-h1", http2=False)
        self.assertEqual((version, status), ("1.1", 200), body[:300])
        report = json.loads(body)
        self.assertEqual(report["path"], "/headers?curl-h1")
        self.assertEqual(dict((k.lower(), v) for k, v in report["headers"])["host"].split(":")[0],
                         HOST, report)

    def test_curl_http2_over_tls(self):
        version, status, body = self.curl_tls("/headers?curl-h2", http2=True)
        self.assertEqual((version, status), ("2", 200), body[:300])
        report = json.loads(body)
        self.assertEqual(report["path"], "/headers?curl-h2")
        self.assertEqual(report["version"], "HTTP/1.1", "the upstream leg is HTTP/1.1")
        self.assertEqual(report["method"], "GET")

    def test_curl_upload_1mib_both_versions(self):
        upload = os.path.join(self.scratch(), "upload.bin")
        with open(upload, "wb") as f:
            f.write(h.pattern_bytes(h.MiB))
        for http2, expected_version in ((False, "1.1"), (True, "2")):
            version, status, body = self.curl_tls(
                "/sha256", http2, ["--data-binary", "@" + upload,
                                   "-H", "Content-Type: application/octet-stream"])
            self.assertEqual((version, status), (expected_version, 200), body[:300])
            report = json.loads(body)
            self.assertEqual(report["length"], h.MiB, "HTTP/%s upload length" % version)
            self.assertEqual(report["sha256"], h.pattern_sha256(h.MiB),
                             "HTTP/%s upload corrupted" % version)

    def test_curl_download_8mib_both_versions(self):
        size = 8 * h.MiB
        for http2, expected_version in ((False, "1.1"), (True, "2")):
            out = os.path.join(self.scratch(), "download-%s" % expected_version)
            version, status, _ = self.curl_tls("/bytes/%d" % size, http2, out=out)
            self.assertEqual((version, status), (expected_version, 200))
            self.assertEqual(os.path.getsize(out), size, "HTTP/%s download length" % version)
            self.assertEqual(sha256_file(out), h.pattern_sha256(size),
                             "HTTP/%s download corrupted" % version)

    # -- SNI -----------------------------------------------------------------

    def assert_served(self, sni, leaf, what):
        peer = self.peer(sni)
        self.assertEqual(peer.serial, leaf.serial,
                         "%s: SNI %r got %s (serial %x), expected %s"
                         % (what, sni, peer.names, peer.serial, leaf.names))
        self.assertEqual(sorted(peer.names), sorted(leaf.names), what)
        self.assertEqual(peer.key_type, leaf.key_type, what)
        return peer

    def test_sni_exact_names(self):
        self.assert_served("gateway.test", self.pki.gateway, "exact name, RSA certificate")
        self.assert_served("default.test", self.pki.default, "the default's own name")

    def test_sni_exact_name_beats_the_wildcard(self):
        self.assert_served("exact.gitspaces.test", self.pki.exact,
                           "an exact name that the wildcard also covers")

    def test_sni_wildcard_matches_one_label(self):
        peer = self.assert_served("a.gitspaces.test", self.pki.wild, "one label under *.")
        # The chain is sent: the leaf is signed by the intermediate, and the
        # client trusts only the root.
        self.assertEqual(peer.issuer, "Spacegate Test Intermediate CA", peer)
        self.assert_served(HOST, self.pki.wild, "the wildcard route's host")
        self.assert_served("gitspaces.test", self.pki.wild, "the apex, a SAN of its own")

    def test_sni_wildcard_does_not_match_two_labels(self):
        self.assert_served("a.b.gitspaces.test", self.pki.default,
                           "two labels under *. is not the wildcard's")

    def test_no_sni_and_unknown_names_get_the_default(self):
        self.assert_served(None, self.pki.default, "no SNI")
        self.assert_served("unknown.example", self.pki.default, "an unknown name")
        self.assert_served("test", self.pki.default, "a bare TLD")

    # -- ALPN and versions ---------------------------------------------------

    def test_alpn(self):
        for offered, expected in ((["h2", "http/1.1"], "h2"), (["h2"], "h2"),
                                  (["http/1.1"], "http/1.1"), (None, None)):
            _, selected = pki.negotiated(self.tls_port, HOST, self.ca, alpn=offered)
            self.assertEqual(selected, expected, "offered %r" % (offered,))
        # Either side's preference may win here.
        _, selected = pki.negotiated(self.tls_port, HOST, self.ca, alpn=["http/1.1", "h2"])
        self.assertIn(selected, ("h2", "http/1.1"))

    def test_no_alpn_speaks_http1(self):
        ctx = pki.client_context(self.ca, alpn=None)
        with pki.tls_connect(self.tls_port, HOST, ctx) as sock:
            self.assertIsNone(sock.selected_alpn_protocol())
            data = pki.http1_over(sock, HOST, "/headers?no-alpn")
        responses, error = h.parse_responses(data)
        self.assertTrue(responses, "no HTTP/1.1 response without ALPN: %r (%s)" % (data[:300], error))
        self.assertEqual(responses[0].status, 200, responses[0])
        self.assertEqual(responses[0].version, "HTTP/1.1")
        self.assertEqual(responses[0].json()["path"], "/headers?no-alpn")

    def test_http1_alpn_speaks_http1(self):
        ctx = pki.client_context(self.ca, alpn=["http/1.1"])
        with pki.tls_connect(self.tls_port, HOST, ctx) as sock:
            self.assertEqual(sock.selected_alpn_protocol(), "http/1.1")
            data = pki.http1_over(sock, HOST, "/status/204")
        responses, _ = h.parse_responses(data)
        self.assertTrue(responses and responses[0].status == 204, data[:300])

    def test_tls10_and_tls11_refused(self):
        # The same client does speak them to a server that allows them: a
        # refusal below is the gateway's, not this client's.
        self.assertEqual(legacy_server_control(self.pki.gateway, self.ca), ["TLSv1", "TLSv1.1"])
        for version in ("1.0", "1.1"):
            with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError),
                                   msg="TLS %s was accepted" % version) as caught:
                self.peer("gateway.test", version=version)
            reason = getattr(caught.exception, "reason", None) or str(caught.exception)
            self.assertNotIn("NO_PROTOCOLS_AVAILABLE", reason)
            self.assertNotIn("NO_CIPHERS_AVAILABLE", reason)
        self.assertTrue(self.gateway.alive())

    def test_tls12_and_tls13_served(self):
        for version, name in (("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")):
            for sni, leaf in ((HOST, self.pki.wild), ("gateway.test", self.pki.gateway)):
                peer = self.peer(sni, version=version, alpn=["h2", "http/1.1"])
                self.assertEqual(peer.version, name)
                self.assertEqual(peer.serial, leaf.serial, "%s over %s" % (sni, name))
                self.assertEqual(peer.alpn, "h2")
            ctx = pki.client_context(self.ca, ["http/1.1"], version)
            with pki.tls_connect(self.tls_port, HOST, ctx) as sock:
                data = pki.http1_over(sock, HOST, "/bytes/100000")
            responses, error = h.parse_responses(data)
            self.assertTrue(responses, "TLS %s: %s" % (version, error))
            self.assertEqual(responses[0].status, 200)
            self.assertEqual(responses[0].body, h.pattern_bytes(100000))

    def test_session_resumption(self):
        for version in ("1.2", "1.3"):
            first, second, r1, r2 = pki.resumption(self.tls_port, HOST, self.ca, version,
                                                   "/headers?resume")
            self.assertFalse(first, "TLS %s: a fresh context cannot resume" % version)
            self.assertTrue(second, "TLS %s: the second handshake did not resume the "
                            "session of the first" % version)
            for data in (r1, r2):
                responses, _ = h.parse_responses(data)
                self.assertTrue(responses and responses[0].status == 200, data[:300])

    # -- HTTP/2 tools over TLS -------------------------------------------------

    def test_nghttp_verbose_over_tls(self):
        if not NGHTTP:
            self.fail("nghttp is not installed (Debian package nghttp2-client)")
        proc = subprocess.run(
            [NGHTTP, "-v", "-H", ":authority: " + HOST,
             "https://%s:%d/headers?nghttp" % (h.LOOPBACK, self.tls_port)],
            capture_output=True, text=True, timeout=30)
        out = proc.stdout + proc.stderr
        self.assertEqual(proc.returncode, 0, out)
        self.assertIn("The negotiated protocol: h2", out)
        self.assertRegex(out, r"recv SETTINGS frame <length=\d+, flags=0x00")
        self.assertRegex(out, r"recv \(stream_id=\d+\) :status: 200")
        self.assertIn('"path": "/headers?nghttp"', out)

    def test_h2load_over_tls(self):
        if not H2LOAD:
            self.fail("h2load is not installed (Debian package nghttp2-client)")
        for extra, requests, protocol in (([], 1000, "h2"), (["--h1"], 200, "http/1.1")):
            proc = subprocess.run(
                [H2LOAD, "-n", str(requests), "-c", "4", "-m", "10",
                 "--connect-to=%s:%d" % (h.LOOPBACK, self.tls_port)] + extra +
                ["https://%s:%d/headers?h2load" % (HOST, self.tls_port)],
                capture_output=True, text=True, timeout=60)
            out = proc.stdout + proc.stderr
            self.assertEqual(proc.returncode, 0, out)
            self.assertIn("Application protocol: %s" % protocol, out)
            self.assertIn("requests: %d total, %d started, %d done, %d succeeded"
                          % ((requests,) * 4), out)
            self.assertIn("status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx" % requests, out)

    # -- reload ----------------------------------------------------------------

    def start_slow_download(self, http2, size=16 * h.MiB, rate="5M"):
        """curl downloading `size` bytes at `rate` through the TLS listener,
        started on the current certificate. Returns (process, output path)."""
        out = os.path.join(self.scratch(), "slow-%d" % time.monotonic_ns())
        proc = subprocess.Popen(
            ["curl", "-sS", "--resolve", "%s:%d:%s" % (HOST, self.tls_port, h.LOOPBACK),
             "--cacert", self.ca, "--http2" if http2 else "--http1.1",
             "--limit-rate", rate, "--max-time", "60", "-o", out,
             "-w", "%{http_version} %{http_code} %{size_download}",
             "https://%s:%d/bytes/%d" % (HOST, self.tls_port, size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        started = h.wait_until(lambda: os.path.exists(out) and os.path.getsize(out) >= 256 * 1024,
                               10)
        self.assertTrue(started, "the slow download never started: %r" % (
            proc.poll() is not None and proc.communicate(),))
        return proc, out

    def finish_download(self, proc, out, http2, size=16 * h.MiB):
        stdout, stderr = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, "the download running across the reload failed: "
                         "%s%s" % (stderr.decode(errors="replace"), self.gateway_context()))
        version, status, downloaded = stdout.decode().split()
        self.assertEqual((version, status), ("2" if http2 else "1.1", "200"))
        self.assertEqual(int(downloaded), size)
        self.assertEqual(sha256_file(out), h.pattern_sha256(size),
                         "the download running across the reload is corrupted")

    def reload_keeps_download(self, reload, http2):
        self.addCleanup(self.restore_all)
        self.assertEqual(self.serial_for(HOST), self.pki.wild.serial)
        proc, out = self.start_slow_download(http2)
        self.install("wild", self.pki.wild2.cert, self.pki.wild2.key)
        reply = reload()
        self.assertIsNone(proc.poll(), "the download ended before the reload; nothing was "
                          "tested (make it slower)")
        changed = h.wait_until(lambda: self.serial_for(HOST) == self.pki.wild2.serial, 10)
        self.assertTrue(changed, "new handshakes still get the old wildcard certificate "
                        "after the reload%s" % self.gateway_context())
        self.assert_served("b.gitspaces.test", self.pki.wild2, "after the reload")
        self.assert_served("gateway.test", self.pki.gateway, "an unchanged certificate")
        self.assertIsNone(proc.poll(), "the download ended before the new certificate was "
                          "checked; make it slower")
        self.finish_download(proc, out, http2)
        return reply

    def test_sighup_reload_keeps_running_download(self):
        self.reload_keeps_download(self.reload_sighup, http2=True)
        self.check_listing(self.tls_listing(), self.pki.wild2)

    def test_api_reload_keeps_running_download(self):
        before = self.check_listing(self.tls_listing(), self.pki.wild)
        reply = self.reload_keeps_download(self.reload_api, http2=False)
        self.assertEqual(reply.status, 200, reply)
        after = self.check_listing(reply.json(), self.pki.wild2)
        wild_path = self.live["wild"][0]
        self.assertNotEqual(before[wild_path]["not_after"], after[wild_path]["not_after"],
                            "the listing still shows the first generation's not_after")
        # GET /tls agrees with the reload's answer.
        self.check_listing(self.tls_listing(), self.pki.wild2)

    def test_api_reload_answers_at_once(self):
        """The 200 of POST /tls/reload means new handshakes already get the
        new certificate (no poll)."""
        self.addCleanup(self.restore_all)
        self.install("wild", self.pki.wild2.cert, self.pki.wild2.key)
        reply = self.reload_api()
        self.assertEqual(reply.status, 200, reply)
        self.assertEqual(self.serial_for(HOST), self.pki.wild2.serial)

    def refused_reload(self, name, expected_fields):
        """POST /tls/reload with entry `name` broken: 400 naming the field,
        the old certificates still served and listed."""
        index = CERT_ORDER.index(name)
        listing_before = self.tls_listing()
        reply = self.reload_api()
        self.assertEqual(reply.status, 400, "a broken %s reloaded: %r" % (name, reply))
        body = reply.json()
        self.assertIsInstance(body.get("error"), str, body)
        self.assertTrue(body["error"], body)
        self.assertIn(body.get("field"), [f % index for f in expected_fields], body)
        for other in CERT_ORDER:
            self.assert_served(getattr(self.pki, other).names[0].replace("*", "z"),
                               getattr(self.pki, other), "after a refused reload")
        self.assertEqual(self.tls_listing(), listing_before,
                         "a refused reload changed GET /tls")
        self.assertTrue(self.gateway.alive())

    def test_reload_with_mismatched_key_refused(self):
        self.addCleanup(self.restore_all)
        self.install("exact", self.pki.mismatch_cert, self.pki.mismatch_key)
        self.refused_reload("exact", ["tls.certificates[%d].key", "tls.certificates[%d].cert"])

    def test_reload_with_missing_file_refused(self):
        self.addCleanup(self.restore_all)
        os.unlink(self.live["gateway"][0])
        self.refused_reload("gateway", ["tls.certificates[%d].cert"])

    def test_reload_with_missing_key_refused(self):
        self.addCleanup(self.restore_all)
        os.unlink(self.live["default"][1])
        self.refused_reload("default", ["tls.certificates[%d].key"])

    def test_reload_with_non_pem_file_refused(self):
        self.addCleanup(self.restore_all)
        # The new wildcard key is in place too: a half-good reload must not
        # swap in the good half.
        self.install("wild", self.pki.not_pem, self.pki.wild2.key)
        self.refused_reload("wild", ["tls.certificates[%d].cert"])

    def test_failed_sighup_reload_is_logged_and_keeps_old(self):
        self.addCleanup(self.restore_all)
        logged_before = len(self.gateway.stderr())
        self.install("wild", self.pki.wild2.cert, self.pki.mismatch_key)
        self.reload_sighup()
        wild_cert, wild_key = self.live["wild"]

        def logged():
            new = self.gateway.stderr()[logged_before:]
            return any(s in new for s in ("tls.certificates[0]", wild_cert, wild_key))
        self.assertTrue(h.wait_until(logged, 10), "a failed SIGHUP reload was not logged "
                        "(naming the field or the file)%s" % self.gateway_context())
        self.assertTrue(self.gateway.alive(), "the gateway died on a bad SIGHUP reload")
        self.assert_served(HOST, self.pki.wild, "after a failed SIGHUP reload")
        self.assert_served("gateway.test", self.pki.gateway, "after a failed SIGHUP reload")

    def test_get_tls_lists_the_certificates(self):
        self.check_listing(self.tls_listing(), self.pki.wild)

    # -- WebSocket ---------------------------------------------------------------

    def test_websocket_over_tls(self):
        import websockets
        ctx = pki.client_context(self.ca, ["http/1.1"])

        async def go():
            async with websockets.connect(
                    "wss://%s/ws/tls" % HOST, host=h.LOOPBACK, port=self.tls_port, ssl=ctx,
                    server_hostname=HOST, max_size=None, ping_interval=None,
                    open_timeout=10, close_timeout=10, compression=None) as ws:
                transport_ssl = ws.transport.get_extra_info("ssl_object")
                self.assertEqual(transport_ssl.selected_alpn_protocol(), "http/1.1")
                for message in ["hello over tls", b"\x00\x01\xff", h.pattern_bytes(h.MiB)]:
                    await ws.send(message)
                    self.assertEqual(await asyncio.wait_for(ws.recv(), 20), message)
                await ws.close()
                return ws.close_code
        code = asyncio.run(asyncio.wait_for(go(), 60))
        self.assertEqual(code, 1000)
        self.assertIn("/ws/tls", self.ws_peer.paths)

    # -- start-up refusals ---------------------------------------------------------

    def refused_start(self, tls_section):
        """Run the gateway on a config with a TLS listener and `tls_section`
        (None: no `tls` key). It must exit non-zero; returns its stderr with
        the config's path taken out (so the path cannot name the field)."""
        directory = tempfile.mkdtemp(prefix="start-refused-", dir=self.tmpdir)
        config = h.base_config(h.free_port(), [h.route("r", "app.test", self.origin.address)])
        config["listen"].append({"address": "%s:%d" % (h.LOOPBACK, h.free_port()), "tls": True})
        if tls_section is not None:
            config["tls"] = tls_section
        path = os.path.join(directory, "config.yaml")
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
        proc = h.run_gateway_once(path, timeout=5)
        self.assertIsInstance(proc.returncode, int, "the gateway started: %s"
                              % h.describe_run(proc))
        self.assertNotEqual(proc.returncode, 0, h.describe_run(proc))
        self.assertTrue(proc.stderr.strip(), "refused without a message")
        return proc.stderr.replace(path, "CONFIG")

    def test_tls_listener_without_certificates_refused_at_start(self):
        stderr = self.refused_start({"certificates": []})
        self.assertIn("tls.certificates", stderr)
        stderr = self.refused_start(None)
        self.assertRegex(stderr, r"\btls\b|listen\[1\]", "the message names neither "
                         "the tls section nor the listener")

    def test_missing_certificate_file_refused_at_start(self):
        missing = os.path.join(self.tmpdir, "no-such.pem")
        stderr = self.refused_start({"certificates": [
            {"cert": self.pki.gateway.cert, "key": self.pki.gateway.key},
            {"cert": missing, "key": self.pki.default.key}]})
        self.assertIn("tls.certificates[1].cert", stderr)

    # -- what is not TLS -----------------------------------------------------------

    def assert_still_serving(self):
        self.assertTrue(self.gateway.alive(), "the gateway died")
        self.assert_served(HOST, self.pki.wild, "a handshake afterwards")

    def test_plain_http_to_tls_port_is_closed(self):
        before = self.origin.requests
        for data in (b"GET /headers HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n",
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                     b"\x16\x03\x01\x00\x05hello" + b"\x00" * 100):
            received, closed, elapsed = h.raw_exchange(self.tls_port, data, timeout=5)
            self.assertTrue(closed, "%r: still open after %.1f s" % (data[:20], elapsed))
            self.assertNotIn(b"TestOrigin", received)
        self.assertEqual(self.origin.requests, before, "plain HTTP on the TLS port reached "
                         "the origin")
        self.assert_still_serving()

    def assert_closed_by_timeout(self, sock, what):
        """The peer closes within header_read_timeout (1 s) plus slack, and
        not much earlier."""
        start = time.monotonic()
        sock.settimeout(6)
        try:
            while sock.recv(65536):
                pass
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLError):
            pass
        except socket.timeout:
            self.fail("%s: still open after 6 s (header_read_timeout is 1s)" % what)
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 3.5, "%s: closed only after %.1f s" % (what, elapsed))
        self.assertGreater(elapsed, 0.5, "%s: closed after %.2f s, before the timeout"
                           % (what, elapsed))

    def test_handshake_timeout(self):
        hello = pki.client_hello(HOST)
        with h.connect(self.tls_port) as sock:
            self.assert_closed_by_timeout(sock, "a connection that sends nothing")
        with h.connect(self.tls_port) as sock:
            sock.sendall(hello[:len(hello) // 2])
            self.assert_closed_by_timeout(sock, "half a ClientHello")
        ctx = pki.client_context(self.ca, ["http/1.1"])
        with pki.tls_connect(self.tls_port, HOST, ctx) as sock:
            self.assert_closed_by_timeout(sock, "a handshake and no request")
        self.assert_still_serving()


def legacy_server_control(leaf, ca_file):
    """Handshake this file's TLS 1.0 and 1.1 clients with an in-process
    server that allows them; returns the versions negotiated. Proves that a
    refusal elsewhere is the server's, not this client's."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(leaf.cert, leaf.key)
    listener = socket.socket()
    listener.bind((h.LOOPBACK, 0))
    listener.listen(4)
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve():
        for _ in range(2):
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    versions = []
    try:
        for version in ("1.0", "1.1"):
            versions.append(pki.peer_certificate(port, leaf.names[0], ca_file,
                                                 version=version).version)
    finally:
        thread.join(5)
        listener.close()
    return versions


if __name__ == "__main__":
    h.main()
