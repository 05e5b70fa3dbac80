#!/usr/bin/python3
"""A user's SSH public keys at the real control plane, and `spacegatectl
ssh-key set|list`: PUT /api/v1/users/me/ssh-keys replaces them and GET lists
them with the fingerprint `ssh-keygen -lf` prints (keys made here with
ssh-keygen); refusals are 400s naming the key (`keys[2]`) that change
nothing; the keys survive a restart; the start task a delegate gets carries
them as gitspace.ssh_authorized_keys. The CLI reads .pub files, names the
file and line of a key the control plane refuses, refuses private keys and
files without a key (exit 2), and prints the table or --json.

Environment: SPACEGATE_CONTROL_BINARY, SPACEGATECTL_BINARY (see
control_plane_test.py and harness.py)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CTL_BINARY, KEEP_TMP  # noqa: E402
from control_plane_test import Control, FakeDelegate, User  # noqa: E402

KEYS_PATH = "/users/me/ssh-keys"


def keygen(folder, name, kind, comment):
    """A key pair made by ssh-keygen: (public key line, fingerprint, .pub path)."""
    path = os.path.join(folder, name)
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", path]
    if kind == "ecdsa":
        args += ["-b", "384"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with open(path + ".pub") as f:
        line = f.read().strip()
    listing = subprocess.run(["ssh-keygen", "-lf", path + ".pub"], check=True,
                             capture_output=True, text=True).stdout.split()
    return line, listing[1], path + ".pub"


@unittest.skipIf(shutil.which("ssh-keygen") is None, "ssh-keygen is not installed")
class SshKeysTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ssh-keys-test-")
        cls.control = Control(cls.tmp).start()
        cls.admin = User(cls.control, cls.control.secret("admin.token"))
        cls.token_file = cls.control.file("admin.token")
        keys = os.path.join(cls.tmp, "keys")
        os.mkdir(keys)
        cls.ed = keygen(keys, "id_ed25519", "ed25519", "alice@laptop")
        cls.ecdsa = keygen(keys, "id_ecdsa", "ecdsa", "ci key")
        cls.rsa = keygen(keys, "id_rsa", "rsa", "old")
        cls.keys_dir = keys

    @classmethod
    def tearDownClass(cls):
        cls.control.stop()
        if not KEEP_TMP:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def ctl(self, *args):
        if not os.path.exists(CTL_BINARY):
            self.skipTest("spacegatectl not found: %s" % CTL_BINARY)
        env = dict(os.environ)
        env["SPACEGATE_CONTROL_URL"] = "http://127.0.0.1:%d" % self.control.port
        env["SPACEGATE_CONTROL_TOKEN_FILE"] = self.token_file
        return subprocess.run([CTL_BINARY] + list(args), capture_output=True, text=True,
                              env=env, timeout=30)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_put_and_get_with_fingerprints(self):
        lines = [self.ed[0], self.ecdsa[0], self.rsa[0]]
        reply = self.admin.ok("PUT", KEYS_PATH, {"keys": lines})
        self.assertEqual([k["key"] for k in reply["keys"]], lines)
        self.assertEqual([k["fingerprint"] for k in reply["keys"]],
                         [self.ed[1], self.ecdsa[1], self.rsa[1]])
        self.assertEqual([k["type"] for k in reply["keys"]],
                         ["ssh-ed25519", "ecdsa-sha2-nistp384", "ssh-rsa"])
        self.assertEqual(reply["keys"][1]["comment"], "ci key")
        self.assertEqual(self.admin.ok("GET", KEYS_PATH), reply)
        self.assertEqual(self.admin.call("DELETE", KEYS_PATH).status, 405)

    def test_refusals_name_the_key_and_change_nothing(self):
        before = self.admin.ok("PUT", KEYS_PATH, {"keys": [self.ed[0]]})
        blob = self.ed[0].split()[1]
        cases = [
            ({"keys": [self.ed[0], self.rsa[0], "ssh-dss AAAA x"]}, "keys[2]"),
            ({"keys": ['command="ls" ' + self.ed[0]]}, "keys[0]"),
            ({"keys": ["ssh-rsa " + blob]}, "keys[0]"),
            ({"keys": ["ssh-ed25519 " + blob[:-4]]}, "keys[0]"),
            ({"keys": [self.ed[0] + "\n" + self.rsa[0]]}, "keys[0]"),
            ({"keys": [self.ed[0] + " " + "x" * 9000]}, "keys[0]"),
            ({"keys": [self.rsa[0]] * 2}, "keys[1]"),
            ({"keys": [self.ed[0]] * 21}, "keys"),
            ({"keys": "ssh-ed25519 " + blob}, "keys"),
            ({}, "keys"),
        ]
        for body, field in cases:
            reply = self.admin.call("PUT", KEYS_PATH, body)
            self.assertEqual(reply.status, 400, (body, reply))
            self.assertEqual(reply.json()["field"], field, reply)
        self.assertEqual(self.admin.ok("GET", KEYS_PATH), before)

    def test_keys_survive_a_restart_and_ride_on_the_start_task(self):
        self.admin.ok("PUT", KEYS_PATH, {"keys": [self.ed[0], self.ecdsa[0]]})
        self.control.stop()
        self.control.start()
        self.assertEqual([k["key"] for k in self.admin.ok("GET", KEYS_PATH)["keys"]],
                         [self.ed[0], self.ecdsa[0]])
        self.admin.ok("POST", "/infra", {"name": "keys", "gateway_domain": "keys.test"},
                      status=201)
        gitspace = self.admin.create_gitspace("with-keys", ide="ssh", infra="keys")
        delegate = FakeDelegate(self.control, name="keys-delegate")
        task = delegate.poll()
        self.assertEqual(task["kind"], "start")
        self.assertEqual(task["gitspace"]["id"], gitspace["id"])
        self.assertEqual(task["gitspace"]["ssh_authorized_keys"], [self.ed[0], self.ecdsa[0]])

    def test_cli_set_and_list(self):
        both = self.write("both.pub", "# work keys\n\n%s\r\n%s\n" % (self.ed[0], self.rsa[0]))
        result = self.ctl("ssh-key", "set", both, self.ecdsa[2])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(self.ed[1], result.stdout)
        self.assertIn("alice@laptop", result.stdout)
        result = self.ctl("ssh-key", "list")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["TYPE", "FINGERPRINT", "COMMENT"])
        self.assertEqual([line.split()[1] for line in lines[1:]],
                         [self.ed[1], self.rsa[1], self.ecdsa[1]])
        result = self.ctl("ssh-key", "list", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(json.loads(result.stdout)["keys"]), 3)

    def test_cli_errors_name_the_file_and_line(self):
        self.admin.ok("PUT", KEYS_PATH, {"keys": [self.ed[0]]})
        bad = self.write("bad.pub", "%s\n\nssh-dss AAAAB3NzaC1kc3M= old\n" % self.rsa[0])
        result = self.ctl("ssh-key", "set", self.ed[2], bad)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("%s:3: must start with the key type" % bad, result.stderr)
        private = os.path.join(self.keys_dir, "id_ed25519")
        result = self.ctl("ssh-key", "set", private)
        self.assertEqual(result.returncode, 2)
        self.assertIn("%s:1: this is a private key" % private, result.stderr)
        empty = self.write("empty.pub", "# nothing\n")
        result = self.ctl("ssh-key", "set", empty)
        self.assertEqual(result.returncode, 2)
        self.assertIn("%s: no public key" % empty, result.stderr)
        missing = os.path.join(self.tmp, "missing.pub")
        result = self.ctl("ssh-key", "set", missing)
        self.assertEqual(result.returncode, 2)
        self.assertIn(missing, result.stderr)
        self.assertEqual(self.ctl("ssh-key", "set").returncode, 2)  # no file
        # Nothing of that changed the keys.
        self.assertEqual([k["key"] for k in self.admin.ok("GET", KEYS_PATH)["keys"]],
                         [self.ed[0]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
