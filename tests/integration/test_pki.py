"""A throwaway PKI for the TLS tests, made with the `openssl` command (Debian's
OpenSSL 3), and the client side checks the tests make on a TLS listener.

make_pki(directory) writes, in a fresh folder:

  ca.pem / ca.key            root CA (the only thing a client trusts)
  intermediate.pem / .key    an intermediate CA under the root
  wild.pem / wild.key        *.gitspaces.test + gitspaces.test, ECDSA P-256,
                             signed by the intermediate; wild.pem is the
                             chain (leaf, then the intermediate), so a client
                             that trusts only the root verifies it only if the
                             server sends the whole chain
  wild2.pem / wild2.key      the same names, a new key, serial and validity:
                             the second generation, for reload tests
  gateway.pem / .key         gateway.test, RSA 2048, signed by the root
  exact.pem / .key           exact.gitspaces.test, ECDSA P-256 (an exact name
                             the wildcard also covers: exact must win)
  default.pem / .key         default.test, ECDSA P-256 (the default cert)
  mismatch.pem / .key        a certificate and a key that do not belong together
  not_pem.txt                a file that is not PEM at all

and returns a Pki whose fields are Leaf tuples (cert, key, serial, names,
key_type, not_after) and paths. The client helpers (peer_certificate,
handshake, resumption, ...) use Python's ssl module with the CA loaded and
verification on; they never check the host name themselves (a test compares
the names it expects), so a certificate for another name is reported, not
refused.
"""

import base64
import collections
import datetime
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import warnings

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
LOOPBACK = "127.0.0.1"

WILDCARD_NAMES = ["*.gitspaces.test", "gitspaces.test"]

Leaf = collections.namedtuple(
    "Leaf", "cert key serial names key_type not_after")

Pki = collections.namedtuple(
    "Pki", "directory ca_cert ca_key intermediate_cert wild wild2 gateway exact "
           "default mismatch_cert mismatch_key not_pem")

PeerCertificate = collections.namedtuple(
    "PeerCertificate", "common_name names serial issuer key_type version alpn")


# --------------------------------------------------------------------------
# Making the PKI
# --------------------------------------------------------------------------

def _openssl(*args, stdin=None):
    proc = subprocess.run([OPENSSL] + list(args), input=stdin, capture_output=True,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("openssl %s failed (%d):\n%s" % (
            " ".join(args), proc.returncode, proc.stderr.decode("utf-8", "replace")))
    return proc.stdout


def make_key(path, key_type="ec"):
    """A PKCS#8 PEM private key: "ec" (P-256) or "rsa" (2048 bits)."""
    if key_type == "ec":
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", path)
    elif key_type == "rsa":
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", path)
    else:
        raise ValueError(key_type)
    os.chmod(path, 0o600)
    return path


def random_serial():
    """A positive 63-bit serial, different for every certificate made."""
    return int.from_bytes(os.urandom(8), "big") >> 1 | 1 << 56


def _sign(directory, name, subject_cn, key_path, issuer_cert, issuer_key, extensions,
          days, serial):
    csr = os.path.join(directory, name + ".csr")
    ext = os.path.join(directory, name + ".ext")
    out = os.path.join(directory, name + ".crt")
    with open(ext, "w") as f:
        f.write("[v3]\n" + "".join("%s\n" % e for e in extensions))
    _openssl("req", "-new", "-key", key_path, "-subj", "/CN=" + subject_cn,
             "-out", csr)
    args = ["x509", "-req", "-in", csr, "-days", str(days), "-sha256",
            "-set_serial", str(serial), "-extfile", ext, "-extensions", "v3",
            "-out", out]
    if issuer_cert is None:
        args += ["-signkey", key_path]
    else:
        args += ["-CA", issuer_cert, "-CAkey", issuer_key]
    _openssl(*args)
    os.unlink(csr)
    os.unlink(ext)
    return out


def make_ca(directory, name="ca", common_name="Spacegate Test Root CA", issuer=None,
            days=365):
    """A CA certificate and key; issuer=(cert, key) makes an intermediate.
    Returns (cert path, key path)."""
    key = make_key(os.path.join(directory, name + ".key"), "ec")
    if issuer is None:
        extensions = ["basicConstraints = critical, CA:TRUE",
                      "keyUsage = critical, keyCertSign, cRLSign",
                      "subjectKeyIdentifier = hash"]
    else:
        extensions = ["basicConstraints = critical, CA:TRUE, pathlen:0",
                      "keyUsage = critical, keyCertSign, cRLSign",
                      "subjectKeyIdentifier = hash",
                      "authorityKeyIdentifier = keyid"]
    crt = _sign(directory, name, common_name, key,
                issuer[0] if issuer else None, issuer[1] if issuer else None,
                extensions, days, random_serial())
    cert = os.path.join(directory, name + ".pem")
    os.rename(crt, cert)
    return cert, key


def make_leaf(directory, name, names, issuer, key_type="ec", days=30, chain=()):
    """A server certificate for `names` (subjectAltName DNS entries; the
    first is also the subject CN), signed by issuer=(cert, key). The .pem is
    the leaf followed by the `chain` certificates (paths). Returns a Leaf."""
    key = make_key(os.path.join(directory, name + ".key"), key_type)
    usage = "digitalSignature, keyEncipherment" if key_type == "rsa" else "digitalSignature"
    serial = random_serial()
    crt = _sign(directory, name, names[0], key, issuer[0], issuer[1], [
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, " + usage,
        "extendedKeyUsage = serverAuth",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
        "subjectAltName = " + ", ".join("DNS:" + n for n in names),
    ], days, serial)
    cert = os.path.join(directory, name + ".pem")
    with open(cert, "wb") as out:
        for part in [crt] + list(chain):
            with open(part, "rb") as f:
                out.write(f.read())
    os.unlink(crt)
    return Leaf(cert, key, serial, list(names), key_type, not_after(cert))


def not_after(cert_path):
    """The first certificate's notAfter as an aware UTC datetime."""
    text = _openssl("x509", "-in", cert_path, "-noout", "-enddate").decode().strip()
    stamp = text.split("=", 1)[1]                 # "Mar 10 12:00:00 2026 GMT"
    return datetime.datetime.strptime(stamp, "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=datetime.timezone.utc)


def make_pki(directory):
    """Every file the TLS tests need, in `directory` (created). Returns a Pki."""
    os.makedirs(directory, exist_ok=True)
    ca_cert, ca_key = make_ca(directory)
    inter_cert, inter_key = make_ca(directory, "intermediate",
                                    "Spacegate Test Intermediate CA",
                                    issuer=(ca_cert, ca_key))
    inter = (inter_cert, inter_key)
    root = (ca_cert, ca_key)
    wild = make_leaf(directory, "wild", WILDCARD_NAMES, inter, "ec", 30, [inter_cert])
    wild2 = make_leaf(directory, "wild2", WILDCARD_NAMES, inter, "ec", 60, [inter_cert])
    gateway = make_leaf(directory, "gateway", ["gateway.test"], root, "rsa")
    exact = make_leaf(directory, "exact", ["exact.gitspaces.test"], root, "ec")
    default = make_leaf(directory, "default", ["default.test"], root, "ec")
    # A certificate and a key of another pair: they do not belong together.
    mismatch_cert = os.path.join(directory, "mismatch.pem")
    shutil.copyfile(exact.cert, mismatch_cert)
    mismatch_key = make_key(os.path.join(directory, "mismatch.key"), "ec")
    not_pem = os.path.join(directory, "not_pem.txt")
    with open(not_pem, "wb") as f:
        f.write(b"this is not a PEM file\n" + bytes(range(256)))
    return Pki(directory, ca_cert, ca_key, inter_cert, wild, wild2, gateway, exact,
               default, mismatch_cert, mismatch_key, not_pem)


def install(leaf_or_paths, cert_path, key_path):
    """Copy a certificate and key over cert_path / key_path (the files a
    server is configured with), each by a rename so a reader never sees half
    a file. leaf_or_paths: a Leaf or (cert, key)."""
    source_cert, source_key = leaf_or_paths[0], leaf_or_paths[1]
    for source, target in ((source_cert, cert_path), (source_key, key_path)):
        temp = target + ".tmp"
        shutil.copyfile(source, temp)
        os.chmod(temp, 0o600)
        os.replace(temp, target)


def spki_sha256_base64(cert_path):
    """base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in the
    file: what Chromium's --ignore-certificate-errors-spki-list takes."""
    public_pem = _openssl("x509", "-in", cert_path, "-noout", "-pubkey")
    der = _openssl("pkey", "-pubin", "-outform", "DER", stdin=public_pem)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def certificate_key_type(der):
    """"ec" or "rsa" (or the algorithm name) of a DER certificate."""
    text = _openssl("x509", "-inform", "DER", "-noout", "-text", stdin=der).decode()
    for line in text.splitlines():
        if "Public Key Algorithm:" in line:
            algorithm = line.split(":", 1)[1].strip()
            return {"id-ecPublicKey": "ec", "rsaEncryption": "rsa"}.get(algorithm, algorithm)
    return None


# --------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------

_VERSIONS = {"1.0": "TLSv1", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}


def client_context(ca_file, alpn=None, version=None):
    """A verifying client context trusting only ca_file. alpn: list of
    protocol names to offer (None: no ALPN extension). version: "1.0".."1.3"
    pins the TLS version; 1.0 and 1.1 also lower OpenSSL's security level so
    this client really offers them (else OpenSSL 3 refuses on its own and a
    "refused" test would pass without asking the server)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False          # tests compare names themselves
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca_file)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if version:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pinned = getattr(ssl.TLSVersion, _VERSIONS[version])
            if version in ("1.0", "1.1"):
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = pinned
            ctx.maximum_version = pinned
    return ctx


def tls_connect(port, sni, ctx, host=LOOPBACK, timeout=10.0, session=None):
    """A handshaken ssl socket to host:port with SNI `sni` (None: no SNI)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise


def describe_peer(sock):
    """PeerCertificate of a handshaken ssl socket."""
    cert = sock.getpeercert()
    der = sock.getpeercert(binary_form=True)
    subject = dict(pair for rdn in cert.get("subject", ()) for pair in rdn)
    issuer = dict(pair for rdn in cert.get("issuer", ()) for pair in rdn)
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    return PeerCertificate(subject.get("commonName"), names,
                           int(cert["serialNumber"], 16), issuer.get("commonName"),
                           certificate_key_type(der), sock.version(),
                           sock.selected_alpn_protocol())


def peer_certificate(port, sni, ca_file, host=LOOPBACK, alpn=None, version=None,
                     timeout=10.0):
    """Handshake with SNI `sni` (None: none sent), verifying the chain
    against ca_file, and return the PeerCertificate: subject CN, SAN DNS
    names, serial (int), issuer CN, key type, TLS version, ALPN."""
    ctx = client_context(ca_file, alpn, version)
    with tls_connect(port, sni, ctx, host, timeout) as sock:
        return describe_peer(sock)


def negotiated(port, sni, ca_file, alpn=None, version=None, host=LOOPBACK,
               timeout=10.0):
    """(TLS version, selected ALPN protocol or None) of one handshake, e.g.
    ("TLSv1.3", "h2")."""
    peer = peer_certificate(port, sni, ca_file, host, alpn, version, timeout)
    return peer.version, peer.alpn


def http1_over(sock, host, path="/", timeout=10.0):
    """Send `GET path` (Connection: close) on a handshaken socket and read to
    the end. Returns the raw response bytes. Reading the answer also takes in
    the TLS 1.3 session tickets, which arrive after the handshake."""
    sock.settimeout(timeout)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                  "User-Agent: spacegate-tls-test\r\n\r\n" % (path, host)).encode())
    data = bytearray()
    while True:
        try:
            piece = sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            break                      # closed without close_notify
        if not piece:
            break
        data += piece
    return bytes(data)


def resumption(port, sni, ca_file, version=None, path="/", host=LOOPBACK,
               timeout=10.0):
    """Two connections with one context: the first makes a request (so TLS 1.3
    tickets arrive) and keeps its session, the second offers it. Returns
    (first.session_reused, second.session_reused, first response,
    second response)."""
    ctx = client_context(ca_file, ["http/1.1"], version)
    with tls_connect(port, sni, ctx, host, timeout) as first:
        first_reused = first.session_reused
        first_response = http1_over(first, sni, path, timeout)
        session = first.session
    if session is None:
        raise AssertionError("no TLS session after the first connection")
    with tls_connect(port, sni, ctx, host, timeout, session=session) as second:
        second_reused = second.session_reused
        second_response = http1_over(second, sni, path, timeout)
    return first_reused, second_reused, first_response, second_response


def client_hello(sni, alpn=("h2", "http/1.1")):
    """The bytes of a ClientHello this client would send (made in memory),
    for tests that send only part of a handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
