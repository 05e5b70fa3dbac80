#!/usr/bin/python3
"""An ssh ProxyCommand for the tests: opens an HTTP CONNECT tunnel through
the gateway and pipes stdin/stdout through it.

  ProxyCommand=/usr/bin/python3 connect_proxy_command.py \\
      --gateway 127.0.0.1:8080 --token-file TOKEN %h %p

Sends `CONNECT host:port` with `Proxy-Authorization: Bearer <token>`
(--header Authorization to use that header instead), expects `200`, then
copies stdin -> tunnel and tunnel -> stdout until the tunnel ends. stdin's EOF
is passed on as a half-close (shutdown SHUT_WR). A refusal prints the status
line to stderr and exits 1. The token also comes from SPACEGATE_TUNNEL_TOKEN.
Standard library only; shares no code with the gateway."""

import argparse
import os
import socket
import sys
import threading


def die(message, code=1):
    sys.stderr.write("connect_proxy_command: %s\n" % message)
    sys.stderr.flush()
    os._exit(code)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="HOST:PORT of the gateway")
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--header", default="Proxy-Authorization",
                        help="header carrying the token (default Proxy-Authorization)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds for the connect and the CONNECT answer")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()

    token = os.environ.get("SPACEGATE_TUNNEL_TOKEN")
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    gateway_host, _, gateway_port = args.gateway.rpartition(":")
    try:
        sock = socket.create_connection((gateway_host, int(gateway_port)),
                                        timeout=args.timeout)
    except OSError as e:
        die("cannot reach the gateway %s: %s" % (args.gateway, e), 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    authority = "%s:%d" % (args.host, args.port)
    lines = ["CONNECT %s HTTP/1.1" % authority, "Host: %s" % authority]
    if token:
        lines.append("%s: Bearer %s" % (args.header, token))
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            data = sock.recv(4096)
        except OSError as e:
            die("reading the CONNECT answer: %s" % e)
        if not data:
            die("the gateway closed the connection without answering CONNECT (got %r)"
                % buf[:200])
        buf += data
        if len(buf) > 65536:
            die("CONNECT answer head too long")
    end = buf.index(b"\r\n\r\n") + 4
    head, rest = buf[:end], buf[end:]
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        die("CONNECT %s refused: %s" % (authority, status_line))
    sock.settimeout(None)
    if rest:
        write_all(1, rest)

    def upstream():
        # stdin -> tunnel; EOF -> half-close.
        try:
            while True:
                data = os.read(0, 262144)
                if not data:
                    break
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            os._exit(0)

    threading.Thread(target=upstream, daemon=True).start()
    # tunnel -> stdout; the tunnel's end ends the command.
    try:
        while True:
            data = sock.recv(262144)
            if not data:
                break
            write_all(1, data)
    except OSError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
