#!/usr/bin/python3
"""Writes the hand-made seed inputs of every fuzz target into
fuzz/corpus/<target>/, one file per seed, named after what it is. Run it
again after editing a seed; files it does not know (inputs that `make fuzz`
merged in, named by their SHA-1) are left alone.

The HTTP targets read two control bytes before the stream (see the comments
at the top of fuzz/http1_request_fuzzer.cc and http1_response_fuzzer.cc):
byte 0 seeds the read sizes, byte 1 the limits (requests) or the request
being answered (responses). Seeds come from the RFCs' own examples, requests
that real browser IDEs send (Chromium, VS Code / code-server, Jupyter), and
every smuggling case of tests/integration/smuggling_test.py and
tests/proxy/http1/*_test.cc. The HTTP/2 client streams (http2_frames) are
frames and HPACK built by hand below."""

import json
import os
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

# Split seeds: one read, byte by byte, and a few cut patterns.
WHOLE, BYTEWISE, SMALL, MEDIUM, LARGE = 0x00, 0x04, 0x05, 0x0A, 0x0B


def crlf(text):
    """Readable seeds: lines joined with CRLF; bytes pass through."""
    return text.replace("\n", "\r\n").encode("latin-1")


HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"

# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

CHROMIUM_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/120.0.0.0 Safari/537.36")

REQUESTS = {
    # RFC 9110 / RFC 9112 examples.
    "rfc9110-get-hello": crlf(
        "GET /hello.txt HTTP/1.1\nUser-Agent: curl/7.64.1\nHost: www.example.com\n"
        "Accept-Language: en, mi\n\n"),
    "rfc9112-absolute-form": crlf(
        "GET http://www.example.org/pub/WWW/TheProject.html HTTP/1.1\nHost: www.example.org\n\n"),
    "rfc9112-authority-form-connect": crlf(
        "CONNECT www.example.com:80 HTTP/1.1\nHost: www.example.com\n\n"),
    "rfc9112-asterisk-form-options": crlf("OPTIONS * HTTP/1.1\nHost: www.example.org:8001\n\n"),
    "rfc9112-chunked-with-extension-and-trailer": crlf(
        "POST /upload HTTP/1.1\nHost: app.test\nTransfer-Encoding: chunked\nTE: trailers\n\n"
        "5;name=value\nhello\n6\n world\n0\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\n\n"),
    "rfc9112-leading-empty-line": crlf("\nGET / HTTP/1.1\nHost: app.test\n\n"),
    "rfc9110-expect-100-continue": crlf(
        "PUT /somewhere/fun HTTP/1.1\nHost: origin.example.com\nContent-Type: video/h264\n"
        "Content-Length: 12\nExpect: 100-continue\n\n") + b"0123456789ab",
    "rfc9110-conditional-get": crlf(
        "GET /index.html HTTP/1.1\nHost: app.test\nIf-None-Match: \"xyzzy\", W/\"r2d2xxxx\"\n"
        "If-Modified-Since: Sat, 29 Oct 1994 19:43:31 GMT\n\n"),
    "http10-keep-alive": crlf("GET /a HTTP/1.0\nHost: app.test\nConnection: keep-alive\n\n"
                              "GET /b HTTP/1.0\n\n"),
    "http10-no-host": crlf("GET / HTTP/1.0\n\n"),
    "pipelined-four": crlf(
        "GET /1 HTTP/1.1\nHost: app.test\n\nHEAD /2 HTTP/1.1\nHost: gw.test\n\n"
        "POST /api/items HTTP/1.1\nHost: app.test\nContent-Length: 5\n\nhello"
        "DELETE /gs/gs-y/x HTTP/1.1\nHost: gw.test\nConnection: close\n\n"),
    "routes-path-form-and-strip": crlf(
        "GET /gs/gs-x/ HTTP/1.1\nHost: gw.test\n\nGET /gs/gs-x/a/b?c=d HTTP/1.1\nHost: GW.test.\n\n"
        "GET /gs/gs-y?q HTTP/1.1\nHost: gw.test:8443\n\nGET /gs/gs-yy HTTP/1.1\nHost: gw.test\n\n"
        "GET /api HTTP/1.1\nHost: app.test\n\nGET /api/ HTTP/1.1\nHost: app.test\n\n"),
    "routes-wildcard-and-port": crlf(
        "GET / HTTP/1.1\nHost: gs-abc.gitspaces.test\n\n"
        "GET /x HTTP/1.1\nHost: 3000--gs-x.gitspaces.test\n\n"
        "GET /x HTTP/1.1\nHost: a.b.gitspaces.test\n\n"
        "GET / HTTP/1.1\nHost: private.test\n\n"
        "GET / HTTP/1.1\nHost: [::1]:8080\n\n"),
    "hop-by-hop-fields": crlf(
        "GET /h HTTP/1.1\nHost: app.test\nConnection: keep-alive, X-Secret, Content-Length, Host\n"
        "X-Secret: 1\nKeep-Alive: timeout=5\nProxy-Connection: keep-alive\n"
        "Proxy-Authorization: Basic dXNlcjpwYXNz\nTE: trailers, deflate\n"
        "X-Forwarded-For: 203.0.113.9\nX-Forwarded-For: 198.51.100.1, 10.0.0.1\n"
        "X-Forwarded-Proto: http\nX-Forwarded-Host: evil.test\nX-Request-Id: client-id_1.2:3+4/5=\n"
        "Upgrade: h2c\n\n"),
    "empty-and-spaced-values": crlf(
        "GET /v HTTP/1.1\nHost: app.test\nX-Empty:\nX-Spaces:    padded   \nX-Tab:\tv\t\n"
        "X-Obs-Text: caf\xe9\nX-Request-Id: \n\n"),
    # Real browser IDE requests.
    "chromium-get-sec-ch-ua-cookies": crlf(
        "GET /gs/gs-x/static/out/vs/workbench/workbench.web.main.js?v=1.84 HTTP/1.1\n"
        "Host: gw.test\nConnection: keep-alive\n"
        "sec-ch-ua: \"Not_A Brand\";v=\"8\", \"Chromium\";v=\"120\", \"Google Chrome\";v=\"120\"\n"
        "sec-ch-ua-mobile: ?0\nUser-Agent: " + CHROMIUM_UA + "\nsec-ch-ua-platform: \"Linux\"\n"
        "Accept: */*\nSec-Fetch-Site: same-origin\nSec-Fetch-Mode: no-cors\n"
        "Sec-Fetch-Dest: script\nReferer: https://gw.test/gs/gs-x/\n"
        "Accept-Encoding: gzip, deflate, br\nAccept-Language: en-US,en;q=0.9\n"
        "Cookie: spacegate_session=eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEiLCJncyI6ImdzLXgifQ."
        "c2lnbmF0dXJl; vscode-tkn=4f1c0e3a-7b2d; _xsrf=2|8f9a1b2c|d41d8cd98f00b204e9800998ecf8427e"
        "|1700000000\n\n"),
    "chromium-navigate-with-token-query": crlf(
        "GET /?spacegate_token=eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln HTTP/1.1\n"
        "Host: gs-abc.gitspaces.test\nConnection: keep-alive\nUpgrade-Insecure-Requests: 1\n"
        "User-Agent: " + CHROMIUM_UA + "\nAccept: text/html,application/xhtml+xml,"
        "application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\nSec-Fetch-Site: none\n"
        "Sec-Fetch-Mode: navigate\nSec-Fetch-User: ?1\nSec-Fetch-Dest: document\n"
        "Accept-Encoding: gzip, deflate, br\nAccept-Language: en-US,en;q=0.9\n\n"),
    "vscode-websocket-upgrade": crlf(
        "GET /stable-0ee08df0cf4527e40edc9aa28f4b5bd38bbff2b2?reconnectionToken=5c2b6a4e-1d9f"
        "&reconnection=false&skipWebSocketFrames=false HTTP/1.1\n"
        "Host: gs-abc.gitspaces.test\nConnection: Upgrade\nPragma: no-cache\n"
        "Cache-Control: no-cache\nUser-Agent: " + CHROMIUM_UA + "\nUpgrade: websocket\n"
        "Origin: https://gs-abc.gitspaces.test\nSec-WebSocket-Version: 13\n"
        "Accept-Encoding: gzip, deflate, br\nAccept-Language: en-US,en;q=0.9\n"
        "Cookie: vscode-tkn=4f1c0e3a-7b2d\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\n\n")
        + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
    "jupyter-kernel-channels-websocket": crlf(
        "GET /gs/gs-x/api/kernels/6c5f3b1e-0a4d-4c2b-9f7e-1d2c3b4a5f60/channels?"
        "session_id=0b4c2f1e-9d8a-4b7c-a6e5-f4d3c2b1a098 HTTP/1.1\nHost: gw.test\n"
        "Connection: keep-alive, Upgrade\nUpgrade: websocket\nSec-WebSocket-Version: 13\n"
        "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\nOrigin: https://gw.test\n"
        "Cookie: _xsrf=2|d1e2f3a4|5b6c7d8e9f|1700000000; username-gw-test=\"2|1:0|10:1700000000|"
        "17:username-gw-test|44:ZGVhZGJlZWY=|abc\"\n\n"),
    "jupyter-post-contents-json": crlf(
        "POST /gs/gs-x/api/contents/work HTTP/1.1\nHost: gw.test\n"
        "Content-Type: text/plain;charset=UTF-8\nX-XSRFToken: 2|d1e2f3a4|5b6c7d8e9f|1700000000\n"
        "Authorization: token 8a7b6c5d4e3f\nContent-Length: 36\n\n")
        + b'{"type":"notebook","ext":".ipynb"}\r\n',
    "fetch-streaming-chunked-post": crlf(
        "POST /api/upload HTTP/1.1\nHost: app.test\nTransfer-Encoding: chunked\n"
        "Content-Type: application/octet-stream\n\n"
        "a\n0123456789\n1A\nabcdefghijklmnopqrstuvwxyz\n0\n\n"
        "GET /after HTTP/1.1\nHost: app.test\n\n"),
    "curl-put-absolute-form-https": crlf(
        "PUT https://app.test/files/a.txt HTTP/1.1\nHost: ignored.test\nUser-Agent: curl/7.88.1\n"
        "Accept: */*\nContent-Length: 3\n\nabc"),
    # From tests/proxy/http1/message_parser_test.cc and header_block_prescan_test.cc.
    "unit-absolute-form-host-wins": crlf(
        "GET http://Gs-X.example/p?q HTTP/1.1\nHost: other\n\n"),
    "unit-upgrade-without-connection": crlf(
        "GET /ws HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"),
    "unit-many-fields": crlf("GET / HTTP/1.1\nHost: a\n" +
                             "".join("X%d: v\n" % i for i in range(6)) + "\n"),
    "unit-five-leading-empty-lines": crlf("\n\n\n\n\nGET / HTTP/1.1\n\n"),
    "unit-bad-name-space": crlf("GET / HTTP/1.1\nBad Name: x\n\n"),
    "unit-empty-name": crlf("GET / HTTP/1.1\n: x\n\n"),
    "unit-control-byte-in-value": crlf("GET / HTTP/1.1\nX: a\x01b\n\n"),
    "unit-del-in-value": crlf("GET / HTTP/1.1\nX: a\x7f\n\n"),
    "unit-field-without-colon": crlf("GET / HTTP/1.1\nHost a\n\n"),
    "unit-two-hosts": crlf("GET / HTTP/1.1\nHost: a\nHost: b\n\n"),
    "unit-host-with-space": crlf("GET / HTTP/1.1\nHost: a b\n\n"),
    "unit-missing-host": crlf("GET / HTTP/1.1\n\n"),
    "unit-negative-content-length": crlf("GET / HTTP/1.1\nHost: a\nContent-Length: -1\n\n"),
    "unit-content-length-two-numbers": crlf("GET / HTTP/1.1\nHost: a\nContent-Length: 1 2\n\n"),
    "unit-te-gzip-chunked": crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n"),
    "unit-te-in-http10": crlf("POST / HTTP/1.0\nHost: a\nTransfer-Encoding: chunked\n\n"),
    "unit-http09-version-garbage": crlf("GET / HTTP/x\n\n"),
    "unit-expect-other": crlf("GET / HTTP/1.1\nHost: a\nExpect: something\n\n"),
    # Found by the fuzzer: the extra space stayed in the target.
    "request-line-extra-spaces": crlf("GET /  HTTP/1.1\nHost: 3000--gs-x.gitspaces.test\n\n"
                                      "GET /x HTTP/1.1\nHost: app.test\n\n"),
    "request-target-form-feed": crlf("GET /i\x0cdex.html HTTP/1.1\nHost: app.test\n\n"),
    # Byte 1 = 0x38: the access policy consumed all three credentials.
    "credentials-consumed": crlf(
        "GET /gs/gs-x/tree?sg_token=eyJ0.eyJz.c2ln&x=1&sg_token=again HTTP/1.1\nHost: gw.test\n"
        "Authorization: Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln\n"
        "Cookie: a=1; sg_token=eyJ0.eyJz.c2ln; b=\"2\"\nCookie: sg_token=\nCookie: sg_token=x\n\n"
        "GET /?sg_token=t HTTP/1.1\nHost: gs-abc.gitspaces.test\nCookie:  sg_token = \"q\" ;c=3\n\n"),
    "unit-body-over-limit": crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 17\n\n")
        + b"x" * 17,
}

# Every case of tests/integration/smuggling_test.py.
try:
    import smuggling_test  # noqa: E402
    for name, data in smuggling_test.REJECT_CASES:
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        while "--" in slug:
            slug = slug.replace("--", "-")
        REQUESTS["smuggling-" + slug] = data
except ImportError as error:  # the harness needs python3-websockets
    sys.exit("write_seed_corpus: cannot import smuggling_test: %s" % error)
REQUESTS["smuggling-http09-request"] = b"GET /\n"
REQUESTS["smuggling-http09-request-crlf"] = b"GET /headers\r\n\r\n"
for name, chunk in [("non-hex-chunk-size", b"zz\r\nhello\r\n0\r\n\r\n"),
                    ("chunk-size-overflow", b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
                    ("negative-chunk-size", b"-5\r\nhello\r\n0\r\n\r\n"),
                    ("chunk-data-longer-than-its-size", b"3\r\nhello\r\n0\r\n\r\n"),
                    ("bare-lf-chunk-lines", b"5\nhello\n0\n\n"),
                    # llhttp 8.1 skips any two bytes after chunk data, and
                    # takes a bare LF as the end of the body: both refused.
                    ("chunk-spill", b"5\r\nhelloXX0\r\n\r\n"),
                    ("bare-lf-ending-chunked-body", b"5\r\nhello\r\n0\r\n\n"),
                    ("chunk-size-with-space", b"5 \r\nhello\r\n0\r\n\r\n")]:
    REQUESTS["smuggling-" + name] = (
        b"POST /sha256 HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk + HIDDEN)
REQUESTS["smuggling-control-valid-pipeline"] = (
    b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
    + HIDDEN.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
# Found by the fuzzer: llhttp takes a trailer name with a space.
REQUESTS["trailer-name-with-space"] = (
    b"POST /t HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\nX Y: 1\r\n\r\n" + HIDDEN)
REQUESTS["smuggling-trailer-with-bare-lf"] = (
    b"POST /t HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n" + HIDDEN)


SPLITS = [WHOLE, BYTEWISE, SMALL, MEDIUM, LARGE]


def split_for(name):
    """A read-size seed that depends on the seed's name only, so adding a
    seed leaves the other files unchanged."""
    return SPLITS[zlib.crc32(name.encode()) % len(SPLITS)]


def request_seeds():
    seeds = {}
    for name, data in sorted(REQUESTS.items()):
        limits = 0
        if name == "unit-many-fields":
            limits = 2
        elif name == "unit-body-over-limit":
            limits = 4
        elif name == "credentials-consumed":
            limits = 0x38
        seeds[name] = bytes([split_for(name), limits]) + data
    # One long head against the 1 KiB limit, whole and cut.
    long_head = crlf("GET / HTTP/1.1\nHost: app.test\nX-Long: " + "a" * 1100 + "\n\n")
    seeds["limit-long-head-1k"] = bytes([MEDIUM, 1]) + long_head
    return seeds


# ---------------------------------------------------------------------------
# Responses: control byte 1 = method (0 GET, 1 HEAD, 2 CONNECT, 3 POST)
# | 4 client HTTP/1.0 | 8 upgrade asked | 16 client closes | 32 body unread.
# ---------------------------------------------------------------------------
GET, HEAD, CONNECT, POST = 0, 1, 2, 3
CLIENT_10, UPGRADE, CLIENT_CLOSES, BODY_UNREAD = 4, 8, 16, 32

RESPONSES = {
    "rfc9110-200-content-length": (GET, crlf(
        "HTTP/1.1 200 OK\nDate: Mon, 27 Jul 2009 12:28:53 GMT\nServer: Apache\n"
        "Last-Modified: Wed, 22 Jul 2009 19:15:56 GMT\nETag: \"34aa387-d-1568eb00\"\n"
        "Accept-Ranges: bytes\nContent-Length: 51\nVary: Accept-Encoding\n"
        "Content-Type: text/plain\n\n") + b"Hello World! My content includes a trailing CRLF.\r\n"),
    "rfc9112-chunked-trailers": (GET, crlf(
        "HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n"
        "Trailer: Expires\n\n7;ext=1\nMozilla\n11\nDeveloper Network\n0\n"
        "Expires: Wed, 21 Oct 2015 07:28:00 GMT\n\n")),
    "rfc9110-100-continue-then-201": (POST, crlf(
        "HTTP/1.1 100 Continue\n\nHTTP/1.1 201 Created\nLocation: /items/1\n"
        "Content-Length: 2\n\nok")),
    "rfc8297-103-early-hints": (GET, crlf(
        "HTTP/1.1 103 Early Hints\nLink: </style.css>; rel=preload; as=style\n"
        "Link: </script.js>; rel=preload; as=script\n\nHTTP/1.1 200 OK\n"
        "Content-Type: text/html\nContent-Length: 5\n\nhello")),
    "rfc6455-101-websocket": (GET | UPGRADE, crlf(
        "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n") + b"\x81\x05hello"),
    "unasked-101": (GET, crlf("HTTP/1.1 101 Switching Protocols\nUpgrade: h2c\n"
                              "Connection: Upgrade\n\n")),
    "http10-until-close": (GET, crlf("HTTP/1.0 200 OK\nContent-Type: text/plain\n\n")
                           + b"read until the upstream closes"),
    "http11-until-close-to-http10-client": (GET | CLIENT_10, crlf(
        "HTTP/1.1 200 OK\nConnection: close\n\n") + b"close-delimited body"),
    "chunked-to-http10-client": (GET | CLIENT_10, crlf(
        "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n4\nWiki\n5\npedia\n0\n\n")),
    "head-with-content-length": (HEAD, crlf(
        "HTTP/1.1 200 OK\nContent-Length: 1234\nContent-Type: text/html\n\n"
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n")),
    "head-with-chunked": (HEAD, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")),
    "204-with-content-length": (GET, crlf(
        "HTTP/1.1 204 No Content\nContent-Length: 5\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok")),
    "304-with-content-length": (GET, crlf(
        "HTTP/1.1 304 Not Modified\nETag: \"xyzzy\"\nContent-Length: 1234\n"
        "Cache-Control: max-age=60\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok")),
    "304-with-chunked": (GET, crlf(
        "HTTP/1.1 304 Not Modified\nTransfer-Encoding: chunked\n\n"
        "HTTP/1.1 200 OK\nContent-Length: 2\n\nok")),
    "100-with-content-length": (POST, crlf(
        "HTTP/1.1 100 Continue\nContent-Length: 5\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok")),
    "connect-200-established": (CONNECT, crlf(
        "HTTP/1.1 200 Connection Established\nContent-Length: 10\n\n") + b"SSH-2.0-Op"),
    "keep-alive-three-responses": (GET, crlf(
        "HTTP/1.1 200 OK\nContent-Length: 3\n\none"
        "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\ntwo\n0\n\n"
        "HTTP/1.1 404 Not Found\nContent-Length: 5\nConnection: close\n\nthree")),
    "client-closes-after": (GET | CLIENT_CLOSES, crlf(
        "HTTP/1.1 200 OK\nContent-Length: 2\nKeep-Alive: timeout=5\nConnection: keep-alive\n\nok")),
    "body-unread-early-413": (POST | BODY_UNREAD, crlf(
        "HTTP/1.1 413 Content Too Large\nContent-Length: 4\nConnection: close\n\nbig!")),
    "hop-by-hop-response-fields": (GET, crlf(
        "HTTP/1.1 200 OK\nConnection: X-Internal, keep-alive\nX-Internal: secret\n"
        "Keep-Alive: timeout=5\nProxy-Connection: keep-alive\nTE: trailers\nUpgrade: h2c\n"
        "Content-Length: 2\n\nok")),
    "te-gzip-refused": (GET, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n\nxxxx")),
    "te-gzip-chunked": (GET, crlf(
        "HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n2\n\x1f\x8b\n0\n\n")),
    "cl-and-te": (GET, crlf(
        "HTTP/1.1 200 OK\nContent-Length: 100\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n")),
    "two-content-lengths": (GET, crlf(
        "HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 3\n\nokk")),
    "chunk-spill": (GET, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")
                    + b"2\r\nokXX0\r\n\r\n"),
    "bare-lf-ending-chunked-body": (GET, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")
                                    + b"2\r\nok\r\n0\r\n\n"),
    "bad-chunk-size": (GET, crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nzz\nok\n0\n\n")),
    "truncated-content-length": (GET, crlf("HTTP/1.1 200 OK\nContent-Length: 100\n\nshort")),
    "code-server-static-asset": (GET, crlf(
        "HTTP/1.1 200 OK\nAccept-Ranges: bytes\nCache-Control: public, max-age=31536000\n"
        "Last-Modified: Tue, 14 Nov 2023 10:00:00 GMT\nETag: W/\"1b2c-18bcd\"\n"
        "Content-Type: application/javascript; charset=UTF-8\nContent-Length: 24\n"
        "Vary: Accept-Encoding\nDate: Tue, 28 Nov 2023 16:00:00 GMT\n"
        "Connection: keep-alive\nKeep-Alive: timeout=5\n\n") + b"console.log('workbench')"),
    "jupyter-api-json-set-cookie": (GET, crlf(
        "HTTP/1.1 200 OK\nServer: TornadoServer/6.3.3\nContent-Type: application/json\n"
        "Date: Tue, 28 Nov 2023 16:00:00 GMT\nX-Content-Type-Options: nosniff\n"
        "Content-Security-Policy: frame-ancestors 'self'; report-uri /api/security/csp-report\n"
        "Set-Cookie: _xsrf=2|d1e2f3a4|5b6c7d8e9f|1700000000; expires=Thu, 28 Dec 2023 16:00:00 GMT;"
        " Path=/\nSet-Cookie: username-gw-test=\"2|1:0|10:1700000000\"; HttpOnly; Path=/\n"
        "Etag: \"0a1b2c3d\"\nContent-Length: 15\n\n") + b'{"version": 6}\n'),
    "sse-chunked-stream": (GET, crlf(
        "HTTP/1.1 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n"
        "Transfer-Encoding: chunked\n\n8\npiece-0\n\n8\npiece-1\n\n0\n\n")),
    "status-line-no-reason": (GET, crlf("HTTP/1.1 200 \nContent-Length: 0\n\n")),
    "status-line-bare-lf": (GET, b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
    "status-line-obs-fold": (GET, crlf("HTTP/1.1 200 OK\nX: a\n b\nContent-Length: 0\n\n")),
    "icy-status-line": (GET, crlf("ICY 200 OK\n\n")),
    # Found by the fuzzer: llhttp read this as status 2.
    "status-code-not-three-digits": (GET, crlf("HTTP/1.1 2 0 OK\nContent-Length: 100\n\nshort")),
}


def response_seeds():
    return {name: bytes([split_for(name), exchange]) + data
            for name, (exchange, data) in sorted(RESPONSES.items())}


# ---------------------------------------------------------------------------
# Config files and route objects
# ---------------------------------------------------------------------------

DOCS_EXAMPLE = """listen: [0.0.0.0:8080]
workers: 2
access_log: /var/log/spacegate/access.log
limits:
  header_read_timeout: 5s
  request_body_size: 104857600
routes:
  - id: gs-abc-ide
    host: gs-abc.gitspaces.example
    upstream: 10.0.0.5:8089
    access: public
  - id: gs-abc-path
    host: gateway.example
    path_prefix: /gs/gs-abc
    strip_prefix: true
    upstream: unix:/run/gitspaces/gs-abc.sock
    access: public
"""

EVERY_KEY = """# every key of docs/configuration.md
listen:
  - 127.0.0.1:8080
  - "[::1]:8443"
workers: 4
access_log: "off"
log_level: debug
limits:
  header_block_size: 65536
  header_field_count: 100
  header_read_timeout: 10s
  keepalive_idle_timeout: 75s
  client_body_timeout: 1m
  upstream_connect_timeout: 500ms
  upstream_response_timeout: 60s
  tunnel_idle_timeout: 1h
  request_body_size: 0
  shutdown_grace: 30s
  write_high_water: 262144
  write_low_water: 65536
upstream_pool:
  idle_connections: 32
  idle_timeout: 60s
routes:
  - id: gs-abc-ide
    host: gs-abc.gitspaces.example
    path_prefix: /
    strip_prefix: false
    upstream: ide.internal:8089
    protocol: http1
    upstream_tls: false
    tunnel_ports: [22, 2222]
    gitspace: gs-abc
    owner: user-1
    access: owner
  - id: "3000--gs-abc"
    host: "*.gitspaces.example"
    upstream: "[fd00::5]:3000"
    protocol: h2c
    access: authenticated
  - {id: agent, host: agent.gitspaces.example, upstream: 10.0.0.5:9000, gitspace: gs-abc,
     access: agent}
"""

CONFIGS = {
    "docs-example.yaml": DOCS_EXAMPLE,
    "every-key.yaml": EVERY_KEY,
    "empty.yaml": "",
    "json-config.json": json.dumps({
        "listen": "127.0.0.1:8080", "workers": 1,
        "routes": [{"id": "r1", "host": "app.test", "upstream": "127.0.0.1:9000",
                    "access": "public"}]}, indent=1),
    "anchors-and-aliases.yaml": (
        "defaults: &d {upstream: 10.0.0.5:8089, access: public}\n"
        "routes:\n  - {<<: *d, id: a, host: a.test}\n  - {<<: *d, id: b, host: b.test}\n"),
    "bad-unknown-key.yaml": "listen: 127.0.0.1:8080\nlimts: {}\n",
    "bad-duplicate-key.yaml": "workers: 1\nworkers: 2\n",
    "bad-duration.yaml": "limits:\n  header_read_timeout: 10\n",
    "bad-zero-timeout.yaml": "limits:\n  tunnel_idle_timeout: 0s\n",
    "bad-water-marks.yaml": "limits:\n  write_high_water: 4096\n  write_low_water: 8192\n",
    "bad-route-upstream.yaml": "routes:\n  - id: r\n    host: a.test\n    upstream: a.test\n",
    "bad-duplicate-route.yaml": (
        "routes:\n  - {id: r, host: a.test, upstream: 10.0.0.1:1, access: public}\n"
        "  - {id: s, host: a.test, upstream: 10.0.0.1:2, access: public}\n"),
    # Found by the fuzzer.
    "bad-float-out-of-range.yaml": "workers: 7e800\n",
    "bad-alias-inside-its-anchor.yaml": "defaults: &d {upstream: 10.0.0.5:8089, again: *d}\n",
    "bad-billion-laughs.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        "%s: &%s [%s]\n" % (c, c, ", ".join(["*" + p] * 10)) for p, c in zip("abcdefgh", "bcdefghi")),
    "quoted-numbers-and-nulls.yaml": "workers: '2'\naccess_log: ~\nlog_level: null\n",
    "bad-yaml-syntax.yaml": "routes: [\n  - {id: \n",
}

ROUTE_OBJECT = {"id": "gs-abc-ide", "host": "gs-abc.gitspaces.example", "path_prefix": "/",
                "strip_prefix": False, "upstream": "10.0.0.5:8089", "protocol": "http1",
                "upstream_tls": False, "tunnel_ports": [22], "gitspace": "gs-abc",
                "owner": "user-1", "access": "owner"}

ROUTE_BODIES = {
    "design-route-object.json": ROUTE_OBJECT,
    "put-routes-body.json": {"version": 7, "routes": [
        ROUTE_OBJECT,
        {"id": "gs-abc-3000", "host": "3000--gs-abc.gitspaces.example",
         "upstream": "10.0.0.5:3000", "access": "public"},
        {"id": "gs-abc-path", "host": "gateway.example", "path_prefix": "/gs/gs-abc/",
         "strip_prefix": True, "upstream": "unix:/run/gitspaces/gs-abc.sock",
         "gitspace": "gs-abc", "access": "authenticated"},
        {"id": "wild", "host": "*.gitspaces.example", "upstream": "[::1]:8089",
         "protocol": "h2c", "upstream_tls": True, "access": "public"},
        {"id": "agent-abc", "host": "agent.gitspaces.example", "upstream": "agent.internal:9000",
         "gitspace": "gs-abc", "access": "agent"}]},
    "route-list.json": [{"id": "a", "host": "a.test", "upstream": "127.0.0.1:1"},
                        {"id": "b", "host": "a.test", "path_prefix": "/b", "strip_prefix": True,
                         "upstream": "127.0.0.1:2"}],
    "patch-routes-body.json": {"version": 8, "upsert": [ROUTE_OBJECT], "delete": ["old-id"]},
    "bad-uppercase-host.json": dict(ROUTE_OBJECT, host="GS-ABC.example"),
    "bad-port-zero.json": dict(ROUTE_OBJECT, upstream="10.0.0.5:0"),
    "bad-tunnel-port.json": dict(ROUTE_OBJECT, tunnel_ports=[0, 70000]),
    "bad-owner-without-owner.json": {"id": "x", "host": "a.test", "upstream": "1.2.3.4:5",
                                     "gitspace": "gs", "access": "owner"},
    "bad-path-prefix-query.json": dict(ROUTE_OBJECT, path_prefix="/a?b"),
    "bad-unknown-field.json": dict(ROUTE_OBJECT, upstreams="x"),
    "bad-duplicate-ids.json": [{"id": "a", "host": "a.test", "upstream": "127.0.0.1:1"},
                               {"id": "a", "host": "b.test", "upstream": "127.0.0.1:1"}],
    "bad-unix-relative.json": dict(ROUTE_OBJECT, upstream="unix:run/x.sock"),
    "bad-ipv6-unbracketed.json": dict(ROUTE_OBJECT, upstream="::1:80"),
}


# ---------------------------------------------------------------------------
# HTTP/2 client streams (fuzz/http2_frames_fuzzer.cc): control byte 1 = 3 for
# no preface in front (else the fuzzer prepends it) | 4 tight limits | 8 TLS
# | 16 slow client | 32 loop between reads | 64 route retirement and drain
# | 128 failing socket. Frames and HPACK are built by hand (no Huffman), so
# the seeds need nothing beyond the standard library.
# ---------------------------------------------------------------------------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_PREFACE, TIGHT, TLS, SLOW, LOOP, EVENTS, FAILING = 3, 4, 8, 16, 32, 64, 128
H2_DATA, H2_HEADERS, H2_PRIORITY, H2_RST_STREAM, H2_SETTINGS, H2_PUSH_PROMISE, H2_PING, \
    H2_GOAWAY, H2_WINDOW_UPDATE, H2_CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20


def h2_frame(kind, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
            + stream.to_bytes(4, "big") + payload)


def h2_settings(*pairs, ack=False):
    payload = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big")
                       for key, value in pairs)
    return h2_frame(H2_SETTINGS, ACK if ack else 0, 0, payload)


def hpack_integer(value, prefix_bits, first_byte_flags=0):
    """RFC 7541 5.1."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_string(text):
    data = text if isinstance(text, bytes) else text.encode("latin-1")
    return hpack_integer(len(data), 7) + data  # H = 0: no Huffman


def hpack_indexed(index):
    return hpack_integer(index, 7, 0x80)


def hpack_literal(name, value, indexing=False):
    """A literal field: `name` is a static/dynamic table index or a string.
    Without indexing (0000xxxx) unless `indexing` (01xxxxxx)."""
    prefix, flags = (6, 0x40) if indexing else (4, 0x00)
    if isinstance(name, int):
        return hpack_integer(name, prefix, flags) + hpack_string(value)
    return bytes([flags]) + hpack_string(name) + hpack_string(value)


# Static table indexes (RFC 7541 appendix A).
AUTHORITY, METHOD_GET, METHOD_POST, PATH_ROOT, PATH_INDEX, SCHEME_HTTP, SCHEME_HTTPS = range(1, 8)
ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, USER_AGENT = \
    19, 23, 28, 31, 32, 38, 58


def request_block(method, path, authority, *fields, scheme=SCHEME_HTTPS):
    """A request header block: pseudo-headers as literals where the static
    table has no entry, then `fields` (already encoded)."""
    out = b""
    if method == "GET":
        out += hpack_indexed(METHOD_GET)
    elif method == "POST":
        out += hpack_indexed(METHOD_POST)
    else:
        out += hpack_literal(METHOD_GET, method)
    out += hpack_indexed(scheme)
    out += hpack_indexed(PATH_ROOT) if path == "/" else hpack_literal(PATH_ROOT, path)
    if authority is not None:
        out += hpack_literal(AUTHORITY, authority)
    return out + b"".join(fields)


def h2_headers(stream, block, end_stream=True, end_headers=True):
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return h2_frame(H2_HEADERS, flags, stream, block)


def h2_data(stream, data, end_stream=False):
    return h2_frame(H2_DATA, END_STREAM if end_stream else 0, stream, data)


def h2_rst(stream, code=8):  # CANCEL
    return h2_frame(H2_RST_STREAM, 0, stream, code.to_bytes(4, "big"))


def h2_window_update(stream, increment):
    return h2_frame(H2_WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))


def h2_ping(payload=b"01234567", ack=False):
    return h2_frame(H2_PING, ACK if ack else 0, 0, payload)


# A browser's opening SETTINGS (Chromium's values) and a short one.
BROWSER_SETTINGS = h2_settings((1, 65536), (2, 0), (4, 6291456), (6, 262144))
CLIENT_SETTINGS = h2_settings((2, 0), (3, 100), (4, 65535), (5, 16384))
GET_APP = request_block("GET", "/index.html?x=1", "app.test",
                        hpack_literal(USER_AGENT, "curl/8.5.0"), hpack_literal(ACCEPT, "*/*"))
NAVIGATE = request_block(
    "GET", "/gs/gs-x/tree?sg_token=eyJ0.eyJz.c2ln", "gw.test",
    hpack_literal(ACCEPT, "text/html,application/xhtml+xml"),
    hpack_literal("sec-fetch-mode", "navigate"), hpack_literal(COOKIE, "a=1"),
    hpack_literal(COOKIE, "sg_token=eyJhbGciOiJFZERTQSJ9.e30.c2ln"),
    hpack_literal(USER_AGENT, CHROMIUM_UA))


def post_block(stream_length=None, path="/api/items"):
    fields = [hpack_literal(CONTENT_TYPE, "application/json")]
    if stream_length is not None:
        fields.append(hpack_literal(CONTENT_LENGTH, str(stream_length)))
    return request_block("POST", path, "x.gitspaces.test", *fields)


def many_streams(count, block_for):
    return b"".join(block_for(2 * i + 1) for i in range(count))


H2_STREAMS = {
    "settings-and-ack": (0, BROWSER_SETTINGS + h2_settings(ack=True)),
    "get-literal-fields": (0, CLIENT_SETTINGS + h2_headers(1, GET_APP)),
    "get-every-route": (0, CLIENT_SETTINGS + b"".join(
        h2_headers(2 * i + 1, request_block("GET", path, host))
        for i, (host, path) in enumerate([
            ("app.test", "/"), ("gs-abc.gitspaces.test", "/static/x.js"),
            ("agent.test", "/v1/exec"), ("gw.test", "/gs/gs-x/lab"), ("gw.test", "/gs/gs-y"),
            ("nowhere.test", "/"), ("APP.test.", "/upper")]))),
    "browser-navigation-login-redirect": (0, BROWSER_SETTINGS + h2_headers(1, NAVIGATE)),
    "bearer-and-request-id": (0, CLIENT_SETTINGS + h2_headers(1, request_block(
        "GET", "/v1/status", "agent.test",
        hpack_literal(AUTHORIZATION, "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln"),
        hpack_literal("x-request-id", "client-id_1.2:3+4/5=")))),
    "host-field-without-authority": (0, CLIENT_SETTINGS + h2_headers(1, request_block(
        "GET", "/", None, hpack_literal(HOST, "app.test"), scheme=SCHEME_HTTP))),
    "post-with-content-length-data": (0, CLIENT_SETTINGS + h2_headers(
        1, post_block(11), end_stream=False) + h2_data(1, b'{"a":"hel', False)
        + h2_data(1, b'o"}', True)),
    "post-without-length-data": (0, CLIENT_SETTINGS + h2_headers(
        1, post_block(), end_stream=False) + h2_data(1, b"chunk-one")
        + h2_data(1, b"chunk-two") + h2_data(1, b"", True)),
    "post-trailers": (0, CLIENT_SETTINGS + h2_headers(1, post_block(), end_stream=False)
                      + h2_data(1, b"body") + h2_headers(
                          1, hpack_literal("x-checksum", "abc123"), end_stream=True)),
    "post-padded-data": (0, CLIENT_SETTINGS + h2_headers(1, post_block(4), end_stream=False)
                         + h2_frame(H2_DATA, PADDED | END_STREAM, 1,
                                    b"\x05" + b"data" + b"\x00" * 5)),
    "headers-padded-priority": (0, CLIENT_SETTINGS + h2_frame(
        H2_HEADERS, END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG, 1,
        b"\x03" + b"\x80\x00\x00\x00\x10" + GET_APP + b"\x00\x00\x00")),
    "priority-and-unknown-frames": (0, CLIENT_SETTINGS
                                    + h2_frame(H2_PRIORITY, 0, 3, b"\x00\x00\x00\x01\x20")
                                    + h2_frame(0x0a, 0, 0, b"\x00\x05h2.test")  # ALTSVC
                                    + h2_frame(0xfa, 0xff, 5, b"unknown")
                                    + h2_headers(1, GET_APP)),
    "rst-stream-after-headers": (0, CLIENT_SETTINGS + h2_headers(
        1, post_block(100), end_stream=False) + h2_rst(1) + h2_data(1, b"late", True)),
    "ping-and-ping-ack": (0, CLIENT_SETTINGS + h2_ping() + h2_ping(b"\xff" * 8)
                          + h2_ping(b"ackedack", ack=True)),
    "window-updates": (0, CLIENT_SETTINGS + h2_window_update(0, 1 << 20)
                       + h2_headers(1, GET_APP) + h2_window_update(1, 4096)
                       + h2_window_update(3, 1)),
    "zero-window-then-update": (0, h2_settings((4, 0)) + h2_headers(1, GET_APP)
                                + h2_headers(3, GET_APP) + h2_window_update(1, 10)
                                + h2_window_update(1, 1000)),
    "window-overflow": (0, CLIENT_SETTINGS + h2_window_update(0, 0x7fffffff)),
    "continuation": (0, CLIENT_SETTINGS + h2_headers(1, GET_APP[:5], end_headers=False)
                     + h2_frame(H2_CONTINUATION, 0, 1, GET_APP[5:12])
                     + h2_frame(H2_CONTINUATION, END_HEADERS, 1, GET_APP[12:])),
    "continuation-flood": (0, CLIENT_SETTINGS + h2_headers(1, GET_APP, end_headers=False)
                           + b"".join(h2_frame(H2_CONTINUATION, 0, 1,
                                               hpack_literal("x-flood", "a")) for _ in range(12))
                           + h2_frame(H2_CONTINUATION, END_HEADERS, 1, b"")),
    "continuation-interleaved": (0, CLIENT_SETTINGS + h2_headers(1, GET_APP, end_headers=False)
                                 + h2_ping() + h2_frame(H2_CONTINUATION, END_HEADERS, 1, b"")),
    "head-request": (0, CLIENT_SETTINGS + h2_headers(1, request_block("HEAD", "/x", "app.test"))),
    "extended-connect-websocket": (0, CLIENT_SETTINGS + h2_headers(1, request_block(
        "CONNECT", "/ws?reconnection=false", "gs-abc.gitspaces.test",
        hpack_literal(":protocol", "websocket"), hpack_literal("sec-websocket-version", "13"),
        hpack_literal("origin", "https://gs-abc.gitspaces.test")), end_stream=False)
        + h2_data(1, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")),
    "plain-connect": (0, CLIENT_SETTINGS + h2_headers(
        1, hpack_literal(METHOD_GET, "CONNECT") + hpack_literal(AUTHORITY, "10.0.0.5:22"),
        end_stream=False)),
    "protocol-without-connect": (0, CLIENT_SETTINGS + h2_headers(1, request_block(
        "GET", "/", "app.test", hpack_literal(":protocol", "websocket")))),
    "bad-pseudo-headers": (0, CLIENT_SETTINGS + b"".join([
        h2_headers(1, hpack_indexed(METHOD_GET) + hpack_literal(AUTHORITY, "app.test")),
        h2_headers(3, request_block("GET", "relative", "app.test")),
        h2_headers(5, request_block("GET", "/", "app.test") + hpack_indexed(METHOD_GET)),
        h2_headers(7, request_block("FROB", "/", "app.test")),
        h2_headers(9, request_block("GET", "/", "app.test")
                   + hpack_literal(":path", "/late-pseudo")),
    ])),
    "bad-fields": (0, CLIENT_SETTINGS + b"".join([
        h2_headers(1, request_block("GET", "/", "app.test", hpack_literal("Upper", "x"))),
        h2_headers(3, request_block("GET", "/", "app.test",
                                    hpack_literal("connection", "keep-alive"))),
        h2_headers(5, request_block("GET", "/", "app.test",
                                    hpack_literal("x-crlf", "a\r\nHost: evil.test"))),
        h2_headers(7, request_block("GET", "/", "app.test", hpack_literal("te", "gzip"))),
        h2_headers(9, request_block("GET", "/", "app.test",
                                    hpack_literal(CONTENT_LENGTH, "1, 2"))),
        h2_headers(11, request_block("GET", "/", "app.test",
                                     hpack_literal("transfer-encoding", "chunked"))),
    ])),
    "content-length-mismatch": (0, CLIENT_SETTINGS + h2_headers(
        1, post_block(3), end_stream=False) + h2_data(1, b"too long", True)),
    "dynamic-table-references": (0, CLIENT_SETTINGS + h2_headers(1, request_block(
        "GET", "/", "app.test", hpack_literal("x-big", "v" * 200, indexing=True)))
        + h2_headers(3, request_block("GET", "/", "app.test", *[hpack_indexed(62)] * 40))
        + h2_headers(5, b"\x3f\xe1\x1f" + request_block("GET", "/", "app.test"))),  # size update
    "client-goaway": (0, CLIENT_SETTINGS + h2_headers(1, GET_APP)
                      + h2_frame(H2_GOAWAY, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00bye")),
    "settings-bad-values": (0, h2_settings((2, 2), (4, 0x80000000), (5, 100))),
    "push-promise-from-client": (0, CLIENT_SETTINGS + h2_frame(
        H2_PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02" + GET_APP)),
    "stream-id-going-down": (0, CLIENT_SETTINGS + h2_headers(5, GET_APP) + h2_headers(3, GET_APP)),
    "even-stream-id": (0, CLIENT_SETTINGS + h2_headers(2, GET_APP)),
    "data-on-idle-stream": (0, CLIENT_SETTINGS + h2_data(7, b"nobody", True)),
    "oversized-frame": (0, CLIENT_SETTINGS + h2_frame(H2_PING, 0, 0, b"x" * 16385)),
    # Tight limits (1 KiB blocks, 8 fields, 16-byte bodies, 4 streams, ...).
    "tight-field-count": (TIGHT, CLIENT_SETTINGS + h2_headers(1, request_block(
        "GET", "/", "app.test", *[hpack_literal("x-f%d" % i, "v") for i in range(10)]))),
    "tight-header-block-hpack-bomb": (TIGHT, CLIENT_SETTINGS + h2_headers(1, request_block(
        "GET", "/", "app.test", hpack_literal("x-bomb", "b" * 600, indexing=True)))
        + h2_headers(3, request_block("GET", "/", "app.test", hpack_indexed(62),
                                      hpack_indexed(62)))),
    "tight-body-too-large": (TIGHT, CLIENT_SETTINGS + h2_headers(
        1, post_block(), end_stream=False) + h2_data(1, b"x" * 20) + h2_data(1, b"y", True)),
    "tight-window-exceeded": (TIGHT, CLIENT_SETTINGS + h2_headers(
        1, post_block(), end_stream=False) + h2_data(1, b"z" * 100, True)),
    "tight-too-many-streams": (TIGHT, CLIENT_SETTINGS + h2_settings(ack=True) + many_streams(
        8, lambda s: h2_headers(s, post_block(), end_stream=False))),
    "tight-rapid-reset": (TIGHT, CLIENT_SETTINGS + many_streams(
        12, lambda s: h2_headers(s, GET_APP, end_stream=False) + h2_rst(s))),
    # Found by the fuzzer: past nghttp2's Rapid Reset limit it queues
    # GOAWAY(9) yet begins streams 11 to 15 of the same read, and the GOAWAY
    # for the RST_STREAM on an idle stream then announces 15 (one read: cut
    # into small reads, the gateway's own reset budget ends it first).
    "tight-rapid-reset-then-protocol-error": (TIGHT, CLIENT_SETTINGS + many_streams(
        7, lambda s: h2_headers(s, GET_APP, end_stream=False) + h2_rst(s))
        + h2_headers(15, GET_APP, end_stream=False) + h2_rst(0xfe00000f)
        + b"".join(h2_headers(s, GET_APP, end_stream=False) + h2_rst(s)
                   for s in range(17, 25, 2))),
    "tight-settings-flood": (TIGHT, b"".join(h2_settings((3, 10)) for _ in range(12))),
    "tight-slow-client-ping-flood": (TIGHT | SLOW, CLIENT_SETTINGS + b"".join(
        h2_ping(b"%08d" % i) for i in range(120))),
    "tight-continuation-limit": (TIGHT, CLIENT_SETTINGS + h2_headers(
        1, GET_APP[:3], end_headers=False) + b"".join(
        h2_frame(H2_CONTINUATION, 0, 1, GET_APP[3 + i:4 + i]) for i in range(4))
        + h2_frame(H2_CONTINUATION, END_HEADERS, 1, GET_APP[7:])),
    # The other switches.
    "tls-navigation": (TLS, BROWSER_SETTINGS + h2_headers(1, NAVIGATE)),
    "loop-between-reads-many-streams": (LOOP, CLIENT_SETTINGS + many_streams(
        6, lambda s: h2_headers(s, GET_APP))),
    "route-retired-then-drain": (EVENTS, CLIENT_SETTINGS + h2_headers(
        1, post_block(), end_stream=False) + h2_headers(3, GET_APP) + h2_data(1, b"more")
        + h2_headers(5, GET_APP)),
    # Answered, but held at a zero window when its route is retired.
    "route-retired-while-response-waits": (EVENTS, h2_settings((4, 0)) + h2_headers(1, GET_APP)
                                           + h2_headers(3, NAVIGATE)),
    "failing-socket": (FAILING, CLIENT_SETTINGS + many_streams(4, lambda s: h2_headers(s, GET_APP))),
    "no-preface-http1-request": (NO_PREFACE, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"),
    "no-preface-own-preface": (NO_PREFACE, H2_PREFACE + CLIENT_SETTINGS + h2_headers(1, GET_APP)),
    "no-preface-truncated": (NO_PREFACE, H2_PREFACE[:10]),
}


# Seeds whose finding needs the stream in one read.
H2_WHOLE_READ = {"tight-rapid-reset-then-protocol-error", "route-retired-while-response-waits"}


def http2_seeds():
    return {name: bytes([WHOLE if name in H2_WHOLE_READ else split_for(name), options]) + data
            for name, (options, data) in sorted(H2_STREAMS.items())}


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    for name, data in request_seeds().items():
        write("http1_request", name, data)
    for name, data in response_seeds().items():
        write("http1_response", name, data)
    for name, text in CONFIGS.items():
        write("gateway_config", name, text)
    for name, body in ROUTE_BODIES.items():
        write("route_json", name, json.dumps(body, indent=1))
    write("route_json", "bad-truncated.json", json.dumps(ROUTE_OBJECT)[:-10])
    write("route_json", "bad-deep-nesting.json", "[" * 500 + "]" * 500)
    for name, data in http2_seeds().items():
        write("http2_frames", name, data)


if __name__ == "__main__":
    main()
