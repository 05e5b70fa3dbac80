#!/usr/bin/python3
"""TLS from the gateway to a route's upstream (`upstream_tls: true`): the
upstream is the harness origin behind Python's ssl (a server that shares no
code with the gateway), with certificates from test_pki. Checked: the
request goes through with the upstream's certificate verified against the
route's CA file; the SNI is the configured name (or the upstream's host);
a certificate from another CA, or for another name, gets 502 and a log line
saying why; `upstream_tls_verify: false` accepts a self-signed one;
connections are reused over TLS; HTTP/2 clients reach TLS upstreams too;
bad route fields are refused naming the field."""

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2_client as hc  # noqa: E402
import test_pki  # noqa: E402


class TlsOrigin:
    """The harness origin with its listening socket wrapped in TLS. Records
    the SNI of every handshake."""

    def __init__(self, cert, key, name="tls-origin"):
        self.origin = h.Origin(name)
        self.server_names = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda sock, server_name, ctx: self.server_names.append(
            server_name)
        server = self.origin.server
        server.socket = context.wrap_socket(server.socket, server_side=True)

    @property
    def address(self):
        return self.origin.address

    def stop(self):
        self.origin.stop()


class UpstreamTlsTest(h.GatewayTestCase):
    HOST = "app.test"

    @classmethod
    def extra_setup(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="spacegate-upstream-tls-")
        cls.pki = test_pki.make_pki(cls.pki_dir)
        # Upstream certificates: gitspaces.test names under the test CA.
        cls.tls_origin = TlsOrigin(cls.pki.wild.cert, cls.pki.wild.key)
        # A self-signed one, trusted by nobody.
        cls.self_signed_cert = os.path.join(cls.pki_dir, "self.pem")
        cls.self_signed_key = os.path.join(cls.pki_dir, "self.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=self.test", "-addext", "subjectAltName=DNS:self.test",
                        "-keyout", cls.self_signed_key, "-out", cls.self_signed_cert],
                       check=True, capture_output=True)
        cls.self_origin = TlsOrigin(cls.self_signed_cert, cls.self_signed_key, "self-origin")

    @classmethod
    def extra_teardown(cls):
        cls.tls_origin.stop()
        cls.self_origin.stop()
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    @classmethod
    def make_config(cls):
        ca = cls.pki.ca_cert
        return h.base_config(cls.gateway_port, [
            h.route("verified", "app.test", cls.tls_origin.address, upstream_tls=True,
                    upstream_tls_server_name="ide.gitspaces.test", upstream_tls_ca_file=ca),
            h.route("wrong-name", "wrong-name.test", cls.tls_origin.address,
                    upstream_tls=True, upstream_tls_server_name="other.test",
                    upstream_tls_ca_file=ca),
            h.route("untrusted", "untrusted.test", cls.self_origin.address,
                    upstream_tls=True, upstream_tls_server_name="self.test",
                    upstream_tls_ca_file=ca),
            h.route("unverified", "unverified.test", cls.self_origin.address,
                    upstream_tls=True, upstream_tls_verify=False),
            h.route("plain-to-tls", "plain.test", cls.tls_origin.address),
        ], control={"socket": os.path.join(cls.tmpdir, "control.sock")})

    def test_verified_upstream_serves_and_gets_the_sni(self):
        status, headers, body = self.get("/hello")
        self.assertEqual(status, 200, body)
        # (The connection may be a pooled one from an earlier test: any
        # handshake of this route's counts.)
        self.assertIn("ide.gitspaces.test", self.tls_origin.server_names)
        # The origin saw the request forwarded as usual.
        self.assertEqual(dict((k.lower(), v) for k, v in headers).get("x-origin-path"), "/hello")

    def test_connections_are_reused_over_tls(self):
        self.get("/warm")
        before = self.tls_origin.origin.connections
        for i in range(5):
            status, _, body = self.get("/again/%d" % i)
            self.assertEqual(status, 200, body)
        self.assertEqual(self.tls_origin.origin.connections, before,
                         "every request opened a new TLS connection to the upstream")

    def test_certificate_for_another_name_is_refused(self):
        status, _, body = self.get("/x", host="wrong-name.test")
        self.assertEqual(status, 502, body)
        self.assertTrue(h.wait_until(
            lambda: "upstream TLS handshake failed" in self.gateway.stderr(), 5),
            self.gateway_context())

    def test_certificate_from_another_ca_is_refused(self):
        status, _, body = self.get("/x", host="untrusted.test")
        self.assertEqual(status, 502, body)
        self.assertTrue(h.wait_until(
            lambda: "self signed certificate" in self.gateway.stderr() or
            "unable to get local issuer" in self.gateway.stderr(), 5), self.gateway_context())

    def test_verify_false_accepts_self_signed(self):
        before = len(self.self_origin.server_names)
        status, _, body = self.get("/x", host="unverified.test")
        self.assertEqual(status, 200, body)
        # No name configured and an IP upstream: no SNI is sent.
        self.assertEqual(self.self_origin.server_names[before:], [None])

    def test_plain_http_to_a_tls_upstream_fails_cleanly(self):
        status, _, _ = self.get("/x", host="plain.test")
        self.assertIn(status, (502, 504))

    def test_http2_client_to_tls_upstream(self):
        c = hc.H2Client(self.port, timeout=10.0)
        self.addCleanup(c.close)
        sid = c.request("GET", "/via-h2", "app.test")
        r = c.response(sid, 10)
        self.assertEqual(r.status, 200, r)

    def test_bad_tls_fields_are_refused(self):
        api = h.ControlClient(socket_path=os.path.join(self.tmpdir, "control.sock"))
        cases = [
            ({"upstream_tls_ca_file": "relative.pem", "upstream_tls": True},
             "upstream_tls_ca_file"),
            ({"upstream_tls_server_name": "x.test"}, "upstream_tls"),
            ({"upstream_tls": True, "upstream_tls_server_name": "Not A Name"},
             "upstream_tls_server_name"),
        ]
        for extra, field in cases:
            route = h.route("bad", "bad.test", self.tls_origin.address, **extra)
            reply = api.request("PUT", "/routes/bad?version=1000", body=route)
            self.assertEqual(reply.status, 400, (extra, reply.body))
            self.assertIn(field, reply.json().get("field", ""), (extra, reply.body))


if __name__ == "__main__":
    unittest.main(verbosity=2)
