"""A small HTTP/2 origin with prior knowledge (h2c), on python3-h2: the
upstream of `protocol: h2c` routes in the tests. It shares no code with the
gateway. One thread per connection; every stream is answered by `handle`.

Paths:
  /echo        200, JSON of {method, path, authority, headers, body_sha256,
               body_length, stream_id, connection}
  /bytes/N     200 with N bytes (a repeating pattern), content-length
  /nolength/N  200 with N bytes and no content-length
  /trailers    200 "ok" with trailers x-checksum: abc
  /status/N    status N, empty body
  /slow/MS     200 after MS milliseconds
Counters: connections, streams; `requests` lists (method, path) seen.
"""

import hashlib
import json
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events

LOOPBACK = "127.0.0.1"


def pattern(n):
    block = bytes(range(256)) * 64
    out = bytearray()
    while len(out) < n:
        out += block[: n - len(out)]
    return bytes(out)


class H2Origin:
    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.streams = 0
        self.requests = []
        self.max_concurrent = 100
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self):
        return "%s:%d" % (LOOPBACK, self.port)

    def stop(self):
        self._stopping = True
        try:
            self.listener.close()
        except OSError:
            pass

    def _accept_loop(self):
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock, number):
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                              self.max_concurrent})
        lock = threading.Lock()
        sock.sendall(conn.data_to_send())
        streams = {}  # id -> {"headers", "body"}
        pending = {}  # id -> remaining bytes to send (flow control)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                with lock:
                    events = conn.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = {"headers": event.headers,
                                                    "body": bytearray()}
                        with self._lock:
                            self.streams += 1
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += event.data
                        with lock:
                            conn.acknowledge_received_data(event.flow_controlled_length,
                                                           event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        request = streams.pop(event.stream_id)
                        threading.Thread(target=self._answer, daemon=True, args=(
                            conn, lock, sock, event.stream_id, request, number,
                            pending)).start()
                    elif isinstance(event, h2.events.WindowUpdated):
                        pass
                    elif isinstance(event, h2.events.StreamReset):
                        streams.pop(event.stream_id, None)
                        pending.pop(event.stream_id, None)
                with lock:
                    self._pump(conn, sock, pending)
                    out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()

    def _pump(self, conn, sock, pending):
        """Sends what the windows allow of the pending bodies."""
        for stream_id in list(pending):
            body, trailers = pending[stream_id]
            while body:
                try:
                    window = conn.local_flow_control_window(stream_id)
                except Exception:
                    pending.pop(stream_id, None)
                    break
                size = min(window, conn.max_outbound_frame_size, len(body))
                if size <= 0:
                    break
                conn.send_data(stream_id, body[:size])
                body = body[size:]
            if stream_id not in pending:
                continue
            if not body:
                pending.pop(stream_id)
                if trailers:
                    conn.send_headers(stream_id, trailers, end_stream=True)
                else:
                    conn.end_stream(stream_id)
            else:
                pending[stream_id] = (body, trailers)

    def _answer(self, conn, lock, sock, stream_id, request, number, pending):
        headers = dict()
        listed = []
        for name, value in request["headers"]:
            listed.append([name, value])
            headers.setdefault(name, value)
        method, path = headers.get(":method"), headers.get(":path")
        with self._lock:
            self.requests.append((method, path))
        status, body, extra, trailers, length = 200, b"", [], None, True
        if path.startswith("/bytes/"):
            body = pattern(int(path.split("/")[2]))
        elif path.startswith("/nolength/"):
            body = pattern(int(path.split("/")[2]))
            length = False
        elif path == "/trailers":
            body, trailers = b"ok", [("x-checksum", "abc")]
            length = False
        elif path.startswith("/status/"):
            status = int(path.split("/")[2])
        elif path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
            body = b"slow\n"
        else:
            body = json.dumps({
                "method": method, "path": path, "authority": headers.get(":authority"),
                "headers": listed, "body_length": len(request["body"]),
                "body_sha256": hashlib.sha256(request["body"]).hexdigest(),
                "stream_id": stream_id, "connection": number}).encode()
            extra = [("content-type", "application/json")]
        response = [(":status", str(status))] + extra
        if length and status not in (204, 304):
            response.append(("content-length", str(len(body))))
        if method == "HEAD":
            body, trailers = b"", None  # the head only, with the body's length
        with lock:
            try:
                no_body = not body and not trailers
                conn.send_headers(stream_id, response, end_stream=no_body)
                if not no_body:
                    pending[stream_id] = (body, trailers)
                    self._pump(conn, sock, pending)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            except (OSError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                pass
