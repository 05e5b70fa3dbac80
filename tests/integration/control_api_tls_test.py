#!/usr/bin/python3
"""The control API over TCP with TLS (`control: {address, token_file, tls:
true}`): it serves the gateway's certificates (SNI as on the listeners),
needs the bearer token, and a certificate reload reaches it too; plaintext
to the TLS port gets nothing; `control.tls` without a certificate is
refused at start, naming the field."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_pki  # noqa: E402

TOKEN = "control-token-0123456789abcdef"


class ControlApiTlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.mkdtemp(prefix="spacegate-control-tls-")
        cls.pki = test_pki.make_pki(os.path.join(cls.tmpdir, "pki"))
        cls.cert = os.path.join(cls.tmpdir, "gateway.pem")
        cls.key = os.path.join(cls.tmpdir, "gateway.key")
        test_pki.install(cls.pki.gateway, cls.cert, cls.key)
        token_file = os.path.join(cls.tmpdir, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        cls.port = h.free_port()
        cls.control_port = h.free_port()
        cls.config = {
            "listen": ["127.0.0.1:%d" % cls.port],
            "workers": 1,
            "access_log": "off",
            "control": {"address": "127.0.0.1:%d" % cls.control_port, "token_file": token_file,
                        "tls": True},
            "tls": {"certificates": [{"cert": cls.cert, "key": cls.key}]},
            "routes": [],
        }
        cls.gateway = h.Gateway(cls.config, tmpdir=cls.tmpdir).start()
        h.wait_until(lambda: cls.curl("/healthz").returncode == 0, 5)

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()
        shutil.rmtree(cls.tmpdir, ignore_errors=True)

    @classmethod
    def curl(cls, path, token=TOKEN, extra=()):
        args = ["curl", "-sS", "--max-time", "10", "--cacert", cls.pki.ca_cert,
                "--resolve", "gateway.test:%d:127.0.0.1" % cls.control_port,
                "-w", "\n%{http_code}", "https://gateway.test:%d%s" % (cls.control_port, path)]
        if token:
            args[1:1] = ["-H", "Authorization: Bearer " + token]
        return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=20)

    def test_healthz_over_tls_with_token(self):
        result = self.curl("/healthz")
        self.assertEqual(result.returncode, 0, result.stderr)
        body, status = result.stdout.rsplit("\n", 1)
        self.assertEqual(status, "200", result.stdout)
        self.assertEqual(json.loads(body)["status"], "ok")

    def test_token_still_required(self):
        result = self.curl("/routes", token=None)
        self.assertEqual(result.stdout.rsplit("\n", 1)[1], "401", result.stdout)

    def test_tls_listing_and_reload_over_tls(self):
        result = self.curl("/tls")
        body, status = result.stdout.rsplit("\n", 1)
        self.assertEqual(status, "200", result.stdout)
        self.assertEqual(json.loads(body)["certificates"][0]["names"], ["gateway.test"])
        result = self.curl("/tls/reload", extra=["-X", "POST"])
        self.assertEqual(result.stdout.rsplit("\n", 1)[1], "200", result.stdout)

    def test_plaintext_to_the_tls_port_gets_no_answer(self):
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "-H", "Authorization: Bearer " + TOKEN,
             "http://127.0.0.1:%d/healthz" % self.control_port],
            capture_output=True, text=True, timeout=20)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertNotIn('"status"', result.stdout)

    def test_check_opens_the_certificates(self):
        good = os.path.join(self.tmpdir, "check-good.json")
        with open(good, "w") as f:
            json.dump(self.config, f)
        result = subprocess.run([h.BINARY, "--config", good, "--check"], capture_output=True,
                                text=True, timeout=20)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("1 certificates", result.stdout)
        config = dict(self.config)
        config["tls"] = {"certificates": [{"cert": self.pki.mismatch_cert,
                                           "key": self.pki.mismatch_key}]}
        bad = os.path.join(self.tmpdir, "check-bad.json")
        with open(bad, "w") as f:
            json.dump(config, f)
        result = subprocess.run([h.BINARY, "--config", bad, "--check"], capture_output=True,
                                text=True, timeout=20)
        self.assertEqual(result.returncode, 2, result.stdout)
        self.assertIn("tls.certificates[0].key", result.stderr)
        self.assertIn("does not match", result.stderr)

    def test_control_tls_without_certificate_is_refused(self):
        config = dict(self.config)
        config["listen"] = ["127.0.0.1:%d" % h.free_port()]
        config["control"] = dict(self.config["control"], address="127.0.0.1:%d" % h.free_port())
        del config["tls"]
        path = os.path.join(self.tmpdir, "bad.json")
        with open(path, "w") as f:
            json.dump(config, f)
        result = subprocess.run([h.BINARY, "--config", path], capture_output=True, text=True,
                                timeout=20)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("tls.certificates", result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
