#!/usr/bin/python3
"""Tunnel benchmark: long-lived IDE sessions through spacegate, nginx and HAProxy.

An IDE session is a tunnel that lives for hours and is quiet most of the
time. This runs the same tunnels through spacegate, nginx and HAProxy (and,
where it means something, straight to the origin: "direct") in one run, with
load_harness.py's targets, ports and config templates, and measures what a
tunnel costs:

  idle-sessions  N WebSocket sessions client <-> proxy <-> echo origin, opened
                 in batches, one echo each, then held idle: the proxy's RSS
                 (VmRSS summed over all its processes) and descriptors before
                 and with N open, and the growth per session.
  echo-latency   M sessions each sending a 100 B message every 100 ms for D
                 seconds; the origin echoes; p50/p90/p99 round trip.
  bulk-tunnel    one tunnel (HTTP/1.1 Upgrade: x-bulk, 101) moving B bytes
                 from the client to an origin that counts them; MB/s, ratio
                 to direct, the proxy's CPU seconds.
  leak-check     after idle-sessions' sessions all close, the proxy's
                 descriptors and RSS against the baseline; a spacegate
                 descriptor leak fails the run (exit status 1).

Clients and origin are Python (python3-websockets' sans-I/O connections
driven by asyncio protocols, and plain asyncio sockets), spread over several
processes; every process raises RLIMIT_NOFILE's soft limit to the hard one.
perf/README.md says how to run it and how to read it.
"""

import argparse
import array
import asyncio
import collections
import datetime
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_harness as harness  # noqa: E402  (targets, ports, configs, /proc readers)

try:
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Request, Response
    from websockets.uri import parse_uri
    try:  # websockets >= 11
        from websockets.client import ClientProtocol as WsClient
        from websockets.server import ServerProtocol as WsServer
        from websockets.protocol import State as WsState
    except ImportError:  # websockets 10 (Debian 12)
        from websockets.client import ClientConnection as WsClient
        from websockets.server import ServerConnection as WsServer
        from websockets.connection import State as WsState
except ImportError:
    WsClient = None

LOOPBACK = harness.LOOPBACK
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
HEAD_END = b"\r\n\r\n"
BULK_LENGTH_HEADER = "X-Bulk-Length"
# Send time (CLOCK_MONOTONIC, the same in every process) and session number
# at the start of every echo payload; the rest is padding.
PAYLOAD_HEADER = struct.Struct("<dI")

IDLE_GOAL_BYTES = 2 * KiB        # spacegate's growth per idle session at most...
IDLE_GOAL_PEER_FRACTION = 0.5    # ...and at most half of the best peer's
BULK_GOAL_OF_DIRECT = 0.8        # a tunnel moves at least 80 % of direct's MB/s

SCENARIOS = {
    "idle-sessions": "N idle WebSocket sessions: RSS and descriptors per session",
    "echo-latency": "M WebSocket sessions, a small message every interval: round trip",
    "bulk-tunnel": "one upgraded tunnel moving B bytes: MB/s, CPU",
    "leak-check": "after the idle sessions close: descriptors and RSS back to baseline",
}
TARGET_ORDER = ("spacegate", "nginx", "haproxy", "direct")


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def describe(error):
    """A short, countable name for what went wrong with one session."""
    if isinstance(error, asyncio.TimeoutError):
        return "timeout"
    text = str(error)
    return type(error).__name__ + (": " + text[:80] if text else "")


# --------------------------------------------------------------------------
# The origin: a WebSocket echo and a byte sink on one port, in K processes
# (SO_REUSEPORT). Not spacegate code: Python, python3-websockets, asyncio.
# --------------------------------------------------------------------------

# recv_into target of every origin connection in a process (one loop, one
# thread: each buffer_updated runs before the next get_buffer).
_ORIGIN_BUFFER = memoryview(bytearray(MiB))


class OriginConnection(asyncio.BufferedProtocol):
    """One connection to the origin. The request head decides what it is:
    `Upgrade: x-bulk` with `X-Bulk-Length: B` gets a 101 and then a sink
    that counts the bytes and answers the count (one line of ASCII digits)
    as soon as B have arrived, or at EOF if fewer do; anything else is a
    WebSocket handshake for an echo of every data frame."""

    def __init__(self):
        self.transport = None
        self.head = b""
        self.ws = None
        self.bulk_count = None
        self.bulk_expected = None
        self.bulk_answered = False

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return _ORIGIN_BUFFER

    def buffer_updated(self, nbytes):
        if self.bulk_count is not None:
            self.bulk_received(nbytes)
            return
        data = bytes(_ORIGIN_BUFFER[:nbytes])
        if self.ws is not None:
            self.ws_received(data)
            return
        self.head += data
        end = self.head.find(HEAD_END)
        if end < 0:
            if len(self.head) > 64 * KiB:
                self.transport.abort()
            return
        head, rest = self.head[:end], self.head[end + 4:]
        self.head = b""
        if re.search(rb"(?im)^upgrade:[ \t]*x-bulk[ \t]*\r?$", head):
            match = re.search(rb"(?im)^x-bulk-length:[ \t]*(\d+)[ \t]*\r?$", head)
            self.bulk_expected = int(match.group(1)) if match else None
            self.bulk_count = 0
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n"
                                 b"Upgrade: x-bulk\r\nConnection: Upgrade\r\n\r\n")
            if rest:
                self.bulk_received(len(rest))
            return
        self.ws = WsServer(max_size=None)
        self.ws_received(head + HEAD_END + rest)

    def bulk_received(self, nbytes):
        self.bulk_count += nbytes
        if (not self.bulk_answered and self.bulk_expected is not None
                and self.bulk_count >= self.bulk_expected):
            self.bulk_answered = True
            self.transport.write(b"%d\n" % self.bulk_count)

    def ws_received(self, data):
        ws = self.ws
        try:
            ws.receive_data(data)
        except Exception:  # a protocol error the library did not turn into a close
            self.transport.abort()
            return
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.BINARY:
                    ws.send_binary(event.data)
                elif event.opcode is Opcode.TEXT:
                    ws.send_text(event.data)
            elif isinstance(event, Request):
                ws.send_response(ws.accept(event))
        self.flush()

    def flush(self):
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()  # websockets' "close the TCP connection"

    def eof_received(self):
        if self.bulk_count is not None:
            if not self.bulk_answered:
                self.bulk_answered = True
                self.transport.write(b"%d\n" % self.bulk_count)
        elif self.ws is not None:
            try:
                self.ws.receive_eof()
                self.flush()
            except Exception:
                pass
        return False  # close once everything queued is written


def origin_main(port, ready):
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(OriginConnection, LOOPBACK, port, reuse_port=True,
                                          backlog=4096)
        ready.send(True)
        await server.serve_forever()

    asyncio.run(serve())


class EchoOrigin:
    """The origin every target talks to, for the whole run."""

    def __init__(self, processes):
        self.port = harness.free_port()
        self.processes = []
        context = multiprocessing.get_context("fork")
        for _ in range(processes):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=origin_main, args=(self.port, child_end),
                                      name="tunnel-origin", daemon=True)
            process.start()
            self.processes.append(process)
            if not parent_end.poll(10):
                self.stop()
                raise harness.HarnessError("the origin process did not start")
            parent_end.recv()

    def pids(self):
        return [process.pid for process in self.processes if process.is_alive()]

    def stop(self):
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


# --------------------------------------------------------------------------
# WebSocket clients, in P processes, each driven by commands from the parent
# --------------------------------------------------------------------------

class Session(asyncio.Protocol):
    """One WebSocket session (python3-websockets' sans-I/O client connection)."""

    def __init__(self, client, index):
        self.client = client
        self.index = index
        self.ws = WsClient(client.uri, max_size=None)
        self.opened = client.loop.create_future()
        self.closed = client.loop.create_future()
        self.reply = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def data_received(self, data):
        ws = self.ws
        try:
            ws.receive_data(data)
        except Exception as error:
            self.fail(error)
            return
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.BINARY:
                    self.client.on_message(self, event.data)
            elif isinstance(event, Response) and not self.opened.done():
                if ws.state is WsState.OPEN:
                    self.opened.set_result(True)
                else:
                    self.opened.set_exception(ConnectionError(
                        "handshake refused: %d" % event.status_code))
        self.flush()

    def flush(self):
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def fail(self, error):
        if not self.opened.done():
            self.opened.set_exception(error)
        self.transport.abort()

    def eof_received(self):
        try:
            self.ws.receive_eof()
            self.flush()
        except Exception:
            pass
        return False

    def connection_lost(self, error):
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(
                "closed during the handshake" + (": %s" % error if error else "")))
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("closed while waiting for the echo"))
        if not self.closed.done():
            self.closed.set_result(error)
        self.client.on_lost(self, error)

    def send(self, payload):
        self.ws.send_binary(payload)
        self.flush()

    def close(self):
        if self.ws.state is WsState.OPEN:
            self.ws.send_close(1000)
            self.flush()

    async def echo_once(self, size, timeout):
        payload = PAYLOAD_HEADER.pack(time.monotonic(), self.index)
        payload += b"e" * (size - len(payload))
        self.reply = self.client.loop.create_future()
        self.send(payload)
        answer = await asyncio.wait_for(self.reply, timeout)
        self.reply = None
        if answer != payload:
            raise ValueError("echo differs from what was sent")


class SessionClient:
    """The sessions of one client process and the commands it runs."""

    def __init__(self, port, first_index, count):
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.indices = range(first_index, first_index + count)
        self.uri = parse_uri("ws://%s/" % harness.HOST_HEADER)  # Host: perf.test
        self.sessions = []
        self.closing = False
        self.dropped = collections.Counter()  # open sessions that died on their own
        self.measuring = False
        self.samples = array.array("I")
        self.received = 0
        self.bad_messages = 0
        self.message_size = 0

    # events from sessions
    def on_message(self, session, data):
        if session.reply is not None and not session.reply.done():
            session.reply.set_result(data)
        elif self.measuring:
            now = time.monotonic()
            if len(data) != self.message_size:
                self.bad_messages += 1
                return
            sent, index = PAYLOAD_HEADER.unpack_from(data)
            if index != session.index:
                self.bad_messages += 1
                return
            self.received += 1
            self.samples.append(int((now - sent) * 1e6))
        else:
            self.bad_messages += 1

    def on_lost(self, session, error):
        if not self.closing and session.opened.done() and not session.opened.exception():
            self.dropped[describe(error) if error else "closed by peer"] += 1

    # commands (each returns a picklable dict)
    async def open(self, batch, size, timeout):
        self.closing = False
        errors = collections.Counter()
        started = time.monotonic()
        indices = list(self.indices)
        for first in range(0, len(indices), batch):
            chunk = indices[first:first + batch]
            results = await asyncio.gather(*(self.open_one(index, size, timeout)
                                             for index in chunk), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    errors[describe(result)] += 1
                else:
                    self.sessions.append(result)
        return dict(opened=len(self.sessions), failed=sum(errors.values()), errors=dict(errors),
                    seconds=time.monotonic() - started)

    async def open_one(self, index, size, timeout):
        session = None
        try:
            _, session = await asyncio.wait_for(self.loop.create_connection(
                lambda: Session(self, index), LOOPBACK, self.port), timeout)
            await asyncio.wait_for(asyncio.shield(session.opened), timeout)
            await session.echo_once(size, timeout)
            return session
        except BaseException:
            if session is not None and session.transport is not None:
                session.transport.abort()
            raise

    async def echo_all(self, size, timeout):
        """One more echo on every session still open: did it survive idling?"""
        alive = [session for session in self.sessions if not session.closed.done()]
        results = await asyncio.gather(*(session.echo_once(size, timeout) for session in alive),
                                       return_exceptions=True)
        errors = collections.Counter(describe(result) for result in results
                                     if isinstance(result, BaseException))
        return dict(alive=len(alive) - sum(errors.values()), failed=sum(errors.values()),
                    errors=dict(errors), dropped=dict(self.dropped))

    async def active(self, start, duration, interval, size, tick, total):
        """Every session sends SIZE bytes every INTERVAL seconds from START
        for DURATION; sessions are spread evenly over the interval by their
        global index (TOTAL sessions over all processes), one tick at a time."""
        slots = max(1, int(round(interval / tick)))
        by_slot = [[] for _ in range(slots)]
        for session in self.sessions:
            if not session.closed.done():
                by_slot[(session.index * slots) // total % slots].append(session)
        padding = b"a" * (size - PAYLOAD_HEADER.size)
        self.samples = array.array("I")
        self.received = self.bad_messages = 0
        self.message_size = size
        self.measuring = True
        lateness = array.array("I")
        sent = 0
        end = start + duration
        tick_number = 0
        cpu_before = time.process_time()
        while True:
            due = start + tick_number * tick
            if due >= end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(int(max(0.0, time.monotonic() - due) * 1e6))
            for session in by_slot[tick_number % slots]:
                if session.closed.done():
                    continue
                session.send(PAYLOAD_HEADER.pack(time.monotonic(), session.index) + padding)
                sent += 1
            tick_number += 1
        deadline = time.monotonic() + 5.0  # replies later than this count as lost
        while self.received < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.measuring = False
        return dict(sent=sent, received=self.received, bad=self.bad_messages,
                    samples=self.samples.tobytes(), lateness=lateness.tobytes(),
                    cpu=time.process_time() - cpu_before, dropped=dict(self.dropped))

    async def close_all(self, timeout):
        self.closing = True
        for session in self.sessions:
            session.close()
        waiting = [session.closed for session in self.sessions if not session.closed.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        forced = 0
        for session in self.sessions:
            if not session.closed.done():
                forced += 1
                session.transport.abort()
        await asyncio.sleep(0)
        count = len(self.sessions)
        self.sessions = []
        return dict(closed=count - forced, forced=forced)


def client_main(connection, port, first_index, count):
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it

    async def serve():
        client = SessionClient(port, first_index, count)
        loop = asyncio.get_running_loop()
        while True:
            command, arguments = await loop.run_in_executor(None, connection.recv)
            if command == "exit":
                return
            try:
                result = await getattr(client, command)(**arguments)
            except Exception as error:  # reported to the parent, which fails the run
                result = dict(exception="%s: %s" % (type(error).__name__, error))
            connection.send(result)

    asyncio.run(serve())


class ClientGroup:
    """P client processes sharing N sessions; a command goes to all of them."""

    def __init__(self, port, sessions, processes):
        processes = max(1, min(processes, sessions))
        context = multiprocessing.get_context("fork")
        self.connections = []
        self.processes = []
        first = 0
        for number in range(processes):
            count = sessions // processes + (1 if number < sessions % processes else 0)
            parent_end, child_end = context.Pipe()
            process = context.Process(target=client_main, args=(child_end, port, first, count),
                                      name="tunnel-client", daemon=True)
            process.start()
            child_end.close()
            self.connections.append(parent_end)
            self.processes.append(process)
            first += count

    def command(self, name, wait, **arguments):
        """Runs NAME(**ARGUMENTS) in every client process; their replies,
        within WAIT seconds."""
        for connection in self.connections:
            connection.send((name, arguments))
        deadline = time.monotonic() + wait
        replies = []
        for connection in self.connections:
            if not connection.poll(max(0.0, deadline - time.monotonic())):
                raise harness.HarnessError("a client process did not finish %r in %.0f s"
                                           % (name, wait))
            reply = connection.recv()
            if "exception" in reply:
                raise harness.HarnessError("a client process failed in %r: %s"
                                           % (name, reply["exception"]))
            replies.append(reply)
        return replies

    def pids(self):
        return [process.pid for process in self.processes if process.is_alive()]

    def stop(self):
        for connection in self.connections:
            try:
                connection.send(("exit", {}))
            except OSError:
                pass
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        for connection in self.connections:
            connection.close()


def merge_counters(replies, key):
    total = collections.Counter()
    for reply in replies:
        total.update(reply.get(key, {}))
    return dict(total)


def probe_websocket(port, size, timeout=10.0):
    """One session through PORT: handshake, one echo, close. Retries until
    TIMEOUT, like load_harness.probe."""
    async def once():
        client = SessionClient(port, 0, 1)
        opened = await client.open(1, size, 5.0)
        if opened["opened"] != 1:
            raise ConnectionError(", ".join(opened["errors"]))
        await client.close_all(5.0)

    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(once())
            return
        except (OSError, asyncio.TimeoutError, ValueError) as error:
            if time.monotonic() > deadline:
                raise harness.HarnessError("port %d does not carry a WebSocket echo: %s"
                                           % (port, describe(error)))
            time.sleep(0.2)


# --------------------------------------------------------------------------
# The bulk client: plain asyncio sockets, in a process of its own
# --------------------------------------------------------------------------

async def bulk_transfer(port, total, chunk_size, timeout):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (LOOPBACK, port)), 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = ("GET /bulk HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: x-bulk\r\n"
                   "%s: %d\r\n\r\n" % (harness.HOST_HEADER, BULK_LENGTH_HEADER, total)).encode()
        await loop.sock_sendall(sock, request)
        head = b""
        while HEAD_END not in head:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            if not data:
                raise ConnectionError("closed before the 101 (%r)" % head[:200])
            head += data
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        if not re.match(r"HTTP/1\.1 101 ", status_line):
            raise ConnectionError("upgrade refused: %s" % status_line)
        reply = head.split(HEAD_END, 1)[1]
        pattern = bytes(range(256)) * (chunk_size // 256)
        chunk = memoryview(pattern)
        remaining = total
        started = time.monotonic()
        while remaining > 0:
            size = min(remaining, chunk_size)
            await asyncio.wait_for(loop.sock_sendall(sock, chunk[:size]), timeout)
            remaining -= size
        sent_at = time.monotonic()
        while b"\n" not in reply:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
            if not data:
                break
            reply += data
        finished = time.monotonic()
    finally:
        sock.close()
    counted = int(reply.split(b"\n", 1)[0]) if b"\n" in reply else None
    return dict(seconds=finished - started, send_seconds=sent_at - started, counted=counted)


def bulk_main(connection, port, total, chunk_size, timeout):
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = asyncio.run(bulk_transfer(port, total, chunk_size, timeout))
    except Exception as error:
        result = dict(error=describe(error))
    connection.send(result)


def run_bulk_client(port, total, timeout):
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=bulk_main, args=(child_end, port, total, MiB, timeout),
                              name="tunnel-bulk", daemon=True)
    process.start()
    try:
        if not parent_end.poll(timeout + 30):
            return dict(error="no answer in %.0f s" % (timeout + 30))
        return parent_end.recv()
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


# --------------------------------------------------------------------------
# Targets: load_harness's, with configs fit for upgraded connections
# --------------------------------------------------------------------------

class TunnelSpacegate(harness.SpacegateTarget):
    """The harness's config as it is: the route for perf.test passes
    upgrades on, and the tunnel idle timeout defaults to 1 h."""


class TunnelNginx(harness.NginxProxyTarget):
    template = "nginx-tunnel.conf.in"

    def values(self):
        values = super().values()
        values["NOFILE"] = self.options.nofile
        values["WORKER_CONNECTIONS"] = self.options.nofile - 1000
        return values


class TunnelHaproxy(harness.HaproxyTarget):
    template = "haproxy-tunnel.cfg.in"

    def values(self):
        values = super().values()
        values["MAXCONN"] = proxy_session_limit(self.options.nofile)
        return values


TARGETS = {"spacegate": TunnelSpacegate, "nginx": TunnelNginx, "haproxy": TunnelHaproxy,
           "direct": harness.DirectTarget}


def proxy_session_limit(nofile):
    """Tunnels one proxy process can hold: two descriptors each, and some
    to spare (9000 at the 20,000 limit here, HAProxy's largest maxconn)."""
    return (nofile - 2000) // 2


def process_usage(pids):
    """(VmRSS KiB, open descriptors), summed over PIDS."""
    rss = descriptors = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            descriptors += len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            pass
    return rss, descriptors


def check_alive(target):
    if target.process and target.process.process.poll() is not None:
        raise harness.HarnessError("%s exited during the run:\n%s"
                                   % (target.name, target.process.log_tail()))


def log_excerpt(target, limit=600):
    """The last lines of what the proxy logged (error.log for nginx), for the report."""
    if not target.process:
        return ""
    text = target.process.log_tail(limit * 4).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-4:])[-limit:]


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

def run_idle(target_class, options, origin, workdir, note):
    """idle-sessions, and leak-check after it: one fresh proxy."""
    target = target_class(options, origin.port, workdir)
    target.start()
    clients = None
    try:
        probe_websocket(target.port, options.message_size)
        time.sleep(options.settle)
        rss_before, fds_before = process_usage(target.pids())
        note("baseline RSS %.1f MiB, %d descriptors; opening %d sessions"
             % (rss_before / 1024, fds_before, options.sessions))
        clients = ClientGroup(target.port, options.sessions, options.client_processes)
        per_process_batch = max(1, options.batch // len(clients.processes))
        opened = clients.command("open", wait=options.sessions / 20 + 120,
                                 batch=per_process_batch, size=options.message_size,
                                 timeout=options.open_timeout)
        open_count = sum(reply["opened"] for reply in opened)
        open_seconds = max(reply["seconds"] for reply in opened)
        note("%d/%d open in %.1f s; holding them idle for %g s"
             % (open_count, options.sessions, open_seconds, options.hold))
        time.sleep(options.hold)
        check_alive(target)
        rss_open, fds_open = process_usage(target.pids())
        alive = clients.command("echo_all", wait=options.open_timeout + 60,
                                size=options.message_size, timeout=options.open_timeout)
        closed = clients.command("close_all", wait=options.close_timeout + 30,
                                 timeout=options.close_timeout)
        rss_after, fds_after = settle_after_close(target, fds_before, options)
        note("closed; %d descriptors (baseline %d), RSS %.1f MiB"
             % (fds_after, fds_before, rss_after / 1024))
        # More cycles of the same sessions: memory a leak holds keeps
        # growing, memory the allocator keeps for reuse does not.
        cycles = []
        if "leak-check" in options.scenarios:
            for cycle in range(2, options.leak_cycles + 1):
                again = clients.command("open", wait=options.sessions / 20 + 120,
                                        batch=per_process_batch, size=options.message_size,
                                        timeout=options.open_timeout)
                rss_cycle_open, fds_cycle_open = process_usage(target.pids())
                clients.command("close_all", wait=options.close_timeout + 30,
                                timeout=options.close_timeout)
                rss_cycle, fds_cycle = settle_after_close(target, fds_before, options)
                cycles.append(dict(cycle=cycle, opened=sum(reply["opened"] for reply in again),
                                   rss_open_kib=rss_cycle_open, fds_open=fds_cycle_open,
                                   rss_after_kib=rss_cycle, fds_after=fds_cycle))
                note("cycle %d: %d opened and closed; %d descriptors, RSS %.1f MiB"
                     % (cycle, cycles[-1]["opened"], fds_cycle, rss_cycle / 1024))
        check_alive(target)
        fds_last = cycles[-1]["fds_after"] if cycles else fds_after
        per_session = ((rss_open - rss_before) * 1024 / open_count) if open_count else None
        return dict(
            sessions=options.sessions, opened=open_count,
            open_failed=sum(reply["failed"] for reply in opened),
            open_errors=merge_counters(opened, "errors"), open_seconds=round(open_seconds, 2),
            alive_after_hold=sum(reply["alive"] for reply in alive),
            echo_errors_after_hold=merge_counters(alive, "errors"),
            dropped_during_hold=merge_counters(alive, "dropped"),
            closed=sum(reply["closed"] for reply in closed),
            close_forced=sum(reply["forced"] for reply in closed),
            rss_before_kib=rss_before, rss_open_kib=rss_open, rss_after_kib=rss_after,
            bytes_per_session=None if per_session is None else round(per_session),
            fds_before=fds_before, fds_open=fds_open, fds_after=fds_after, cycles=cycles,
            fd_leak=max(fds_after, fds_last) - fds_before > options.fd_margin,
            processes=len(target.pids()), log=log_excerpt(target))
    finally:
        if clients:
            clients.stop()
        target.stop()


def settle_after_close(target, fds_before, options):
    """(RSS KiB, descriptors) once the proxy's descriptors are back within
    the margin of FDS_BEFORE, or --leak-wait has passed; RSS after --settle."""
    deadline = time.monotonic() + options.leak_wait
    while True:
        _, fds = process_usage(target.pids())
        if fds <= fds_before + options.fd_margin or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(options.settle)
    return process_usage(target.pids())


def percentile(values, fraction):
    """Nearest rank of sorted VALUES."""
    if not values:
        return None
    rank = max(1, math.ceil(fraction * len(values)))
    return values[min(rank, len(values)) - 1]


def run_echo(target_class, options, origin, workdir, note):
    target = target_class(options, origin.port, workdir)
    target.start()
    clients = None
    try:
        probe_websocket(target.port, options.message_size)
        clients = ClientGroup(target.port, options.active, options.client_processes)
        per_process_batch = max(1, options.batch // len(clients.processes))
        opened = clients.command("open", wait=options.active / 20 + 120,
                                 batch=per_process_batch, size=options.message_size,
                                 timeout=options.open_timeout)
        open_count = sum(reply["opened"] for reply in opened)
        note("%d/%d sessions open; %d B every %g ms each for %d s"
             % (open_count, options.active, options.message_size, options.interval_ms,
                options.duration))
        start = time.monotonic() + 1.0
        time.sleep(max(0.0, start - time.monotonic() - 0.05))
        proxy_pids = target.pids() if target.is_proxy else []
        generator_pids = clients.pids() + origin.pids()
        proxy_ticks = harness.cpu_ticks(proxy_pids)
        generator_ticks = harness.cpu_ticks(generator_pids)
        replies = clients.command(
            "active", wait=options.duration + 60, start=start, duration=options.duration,
            interval=options.interval_ms / 1000, size=options.message_size,
            tick=options.tick_ms / 1000, total=options.active)
        proxy_cpu = (harness.cpu_ticks(proxy_pids) - proxy_ticks) / harness.CLOCK_TICKS
        generator_cpu = (harness.cpu_ticks(generator_pids) - generator_ticks) \
            / harness.CLOCK_TICKS
        check_alive(target)
        samples, lateness = array.array("I"), array.array("I")
        for reply in replies:
            samples.frombytes(reply["samples"])
            lateness.frombytes(reply["lateness"])
        samples = sorted(samples)
        lateness = sorted(lateness)
        clients.command("close_all", wait=options.close_timeout + 30,
                        timeout=options.close_timeout)
        sent = sum(reply["sent"] for reply in replies)
        received = sum(reply["received"] for reply in replies)

        def ms(value):
            return None if value is None else round(value / 1000, 3)

        return dict(
            sessions=options.active, opened=open_count,
            open_errors=merge_counters(opened, "errors"),
            expected=options.active * int(options.duration * 1000 / options.interval_ms),
            sent=sent, received=received, lost=sent - received,
            bad=sum(reply["bad"] for reply in replies),
            dropped=merge_counters(replies, "dropped"),
            p50_ms=ms(percentile(samples, 0.50)), p90_ms=ms(percentile(samples, 0.90)),
            p99_ms=ms(percentile(samples, 0.99)), p999_ms=ms(percentile(samples, 0.999)),
            max_ms=ms(samples[-1] if samples else None),
            send_late_p99_ms=ms(percentile(lateness, 0.99)),
            proxy_cpu_seconds=round(proxy_cpu, 2) if target.is_proxy else None,
            generator_cpu_seconds=round(generator_cpu, 2),
            client_cpu_seconds=round(sum(reply["cpu"] for reply in replies), 2),
            log=log_excerpt(target))
    finally:
        if clients:
            clients.stop()
        target.stop()


def run_bulk(target_class, options, origin, workdir, note):
    target = target_class(options, origin.port, workdir)
    target.start()
    try:
        probe_websocket(target.port, options.message_size)
        pids = target.pids() if target.is_proxy else []
        ticks = harness.cpu_ticks(pids)
        result = run_bulk_client(target.port, options.bytes, options.bulk_timeout)
        cpu = (harness.cpu_ticks(pids) - ticks) / harness.CLOCK_TICKS
        check_alive(target)
        rss, fds = process_usage(pids)
        out = dict(bytes=options.bytes, error=result.get("error"),
                   counted=result.get("counted"), seconds=result.get("seconds"),
                   send_seconds=result.get("send_seconds"),
                   proxy_cpu_seconds=round(cpu, 2) if target.is_proxy else None,
                   rss_kib=rss if target.is_proxy else None, log=log_excerpt(target))
        out["complete"] = out["error"] is None and out["counted"] == options.bytes
        out["mb_per_second"] = (round(options.bytes / out["seconds"] / 1e6, 1)
                                if out["complete"] and out["seconds"] else None)
        if out["complete"]:
            note("%.1f MB/s%s" % (out["mb_per_second"], ", proxy CPU %.2f s"
                                  % cpu if target.is_proxy else ""))
        return out
    finally:
        target.stop()


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt(value, pattern="%.1f"):
    return "—" if value is None else pattern % value


def errors_text(*counters):
    merged = collections.Counter()
    for counter in counters:
        merged.update(counter or {})
    if not merged:
        return "0"
    return "%d (%s)" % (sum(merged.values()), ", ".join(
        "%s %d" % (name, count) for name, count in merged.most_common(4)))


def idle_tables(results, options):
    rows = results.get("idle-sessions", {})
    lines = ["### idle-sessions: %d WebSocket sessions, opened %d at a time, one echo each, "
             "held idle %g s" % (options.sessions, options.batch, options.hold), "",
             "| target | open | alive after hold | open s | RSS before MiB | RSS with N MiB "
             "| growth per session | descriptors before | with N | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, row in rows.items():
        lines.append("| %s | %d | %d | %.1f | %.1f | %.1f | %s | %d | %d | %s |" % (
            TARGETS[name].label, row["opened"], row["alive_after_hold"], row["open_seconds"],
            row["rss_before_kib"] / 1024, row["rss_open_kib"] / 1024,
            fmt(row["bytes_per_session"], "%.0f B"), row["fds_before"], row["fds_open"],
            errors_text(row["open_errors"], row["echo_errors_after_hold"],
                        row["dropped_during_hold"])))
    verdict = idle_verdict(rows)
    if verdict:
        lines += ["", "Goal: spacegate ≤ %d B of RSS per idle session and ≤ %.0f %% of the best "
                  "peer's: %s." % (IDLE_GOAL_BYTES, IDLE_GOAL_PEER_FRACTION * 100, verdict)]
    return lines


def idle_verdict(rows):
    ours = rows.get("spacegate", {}).get("bytes_per_session")
    if ours is None:
        return ""
    peers = {name: row["bytes_per_session"] for name, row in rows.items()
             if name in ("nginx", "haproxy") and row["bytes_per_session"] is not None}
    parts = ["%d B per session" % ours]
    met = ours <= IDLE_GOAL_BYTES
    if peers:
        best = min(peers, key=peers.get)
        parts.append("best peer %s %d B (%.2f×)" % (TARGETS[best].label, peers[best],
                                                   ours / peers[best] if peers[best] else 0))
        met = met and ours <= IDLE_GOAL_PEER_FRACTION * max(peers[best], 0)
    return ("met" if met else "not met") + ": " + ", ".join(parts)


def leak_tables(results, options):
    rows = results.get("idle-sessions", {})
    lines = ["### leak-check: after the %d sessions closed (descriptor margin %d)"
             % (options.sessions, options.fd_margin), "",
             "| target | closed / forced | descriptors before | with N | after close | Δ "
             "| RSS before MiB | with N | after close | RSS kept | after %d cycles: descriptors, "
             "RSS MiB (Δ from cycle 1) | verdict |" % options.leak_cycles,
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, row in rows.items():
        growth = row["rss_open_kib"] - row["rss_before_kib"]
        kept = row["rss_after_kib"] - row["rss_before_kib"]
        last = row["cycles"][-1] if row["cycles"] else None
        lines.append("| %s | %d / %d | %d | %d | %d | %+d | %.1f | %.1f | %.1f | %s | %s | %s |" % (
            TARGETS[name].label, row["closed"], row["close_forced"], row["fds_before"],
            row["fds_open"], row["fds_after"], row["fds_after"] - row["fds_before"],
            row["rss_before_kib"] / 1024, row["rss_open_kib"] / 1024, row["rss_after_kib"] / 1024,
            "%.1f MiB (%.0f %% of growth)" % (kept / 1024, 100 * kept / growth)
            if growth > 0 else "%.1f MiB" % (kept / 1024),
            "%d, %.1f (%+.1f)" % (last["fds_after"], last["rss_after_kib"] / 1024,
                                  (last["rss_after_kib"] - row["rss_after_kib"]) / 1024)
            if last else "—",
            "descriptor LEAK" if row["fd_leak"] else "descriptors back"))
    return lines


def echo_tables(results, options):
    rows = results.get("echo-latency", {})
    lines = ["### echo-latency: %d sessions, %d B every %g ms each, %d s, %d round%s"
             % (options.active, options.message_size, options.interval_ms, options.duration,
                options.echo_rounds, "" if options.echo_rounds == 1 else "s"), "",
             "Round trip from just before the send to the echo's arrival, both in the client. "
             "With rounds: counts summed, percentiles and CPU the median of the rounds'. "
             "`send late`: how far the client's send schedule slipped (a busy machine or a "
             "saturated client shows here first).", "",
             "| target | sent / expected | lost | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
             "| proxy CPU s | clients + origin CPU s | send late p99 ms | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, row in rows.items():
        lines.append("| %s | %d / %d | %d | %s | %s | %s | %s | %s | %s | %.1f | %s | %s |" % (
            TARGETS[name].label, row["sent"], row["expected"], row["lost"],
            fmt(row["p50_ms"], "%.2f"), fmt(row["p90_ms"], "%.2f"), fmt(row["p99_ms"], "%.2f"),
            fmt(row["p999_ms"], "%.2f"), fmt(row["max_ms"], "%.1f"),
            fmt(row["proxy_cpu_seconds"], "%.2f"), row["generator_cpu_seconds"],
            fmt(row["send_late_p99_ms"], "%.2f"),
            errors_text(row["open_errors"], row["dropped"],
                        {"bad echo": row["bad"]} if row["bad"] else {})))
    slipped = [TARGETS[name].label for name, row in rows.items()
               if (row["send_late_p99_ms"] or 0) > options.interval_ms
               or (row["p50_ms"] or 0) > options.interval_ms]
    if slipped:
        lines += ["", "Overloaded: %s. The send schedule slipped by more than one interval, or "
                  "half the echoes took longer than one (a backlog grows: the clients send on "
                  "schedule, whatever the answers do). These percentiles measure the machine "
                  "(the Python clients and origin and the proxy share its cores with whatever "
                  "else runs), not the proxy alone: lower --active, or rerun on a quiet machine."
                  % ", ".join(slipped)]
    if "direct" in rows and rows["direct"]["p50_ms"]:
        direct = rows["direct"]
        ratios = ["%s p50 %+.2f ms, p99 %+.2f ms" % (
            TARGETS[name].label, row["p50_ms"] - direct["p50_ms"], row["p99_ms"] - direct["p99_ms"])
            for name, row in rows.items() if name != "direct" and row["p50_ms"] is not None]
        if ratios:
            lines += ["", "Added to direct's round trip: " + "; ".join(ratios) + "."]
    return lines


def bulk_tables(results, options):
    rows = results.get("bulk-tunnel", {})
    lines = ["### bulk-tunnel: %s through one upgraded connection (client → origin sink), "
             "%d round%s" % (size_text(options.bytes), options.bulk_rounds,
                             "" if options.bulk_rounds == 1 else "s"), "",
             "MB/s is 10^6 bytes a second from the first byte sent to the origin's count; "
             "with rounds, medians (÷ direct: the median of each round's ratio).", "",
             "| target | MB/s | MB/s min–max | ÷ direct | seconds | proxy CPU s "
             "| proxy CPU s per GiB | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, row in rows.items():
        ratio = bulk_ratio(row, rows.get("direct"))
        if not row["complete"]:
            verdict = "FAILED: %s" % (row["error"] or "origin counted %s of %d bytes"
                                      % (row["counted"], row["bytes"]))
        elif name == "direct":
            verdict = "the limit"
        elif ratio is None:
            verdict = "—"
        else:
            verdict = "%s (goal ≥ %.0f %% of direct)" % (
                "met" if ratio >= BULK_GOAL_OF_DIRECT else "not met", BULK_GOAL_OF_DIRECT * 100)
        cpu = row["proxy_cpu_seconds"]
        spread = row.get("mb_per_second_range")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            TARGETS[name].label, fmt(row["mb_per_second"]),
            "%.0f–%.0f" % tuple(spread) if spread else "—", fmt(ratio, "%.2f×"), fmt(row["seconds"], "%.2f"), fmt(cpu, "%.2f"),
            fmt(cpu / (row["bytes"] / GiB) if cpu is not None else None, "%.2f"), verdict))
    return lines


def bulk_ratio(row, direct):
    """MB/s ÷ direct's: the median of each round's ratio to the same round's
    direct run (neighbouring runs share the machine's mood of the moment)."""
    if not direct:
        return None
    ours = row.get("runs", [row])
    theirs = direct.get("runs", [direct])
    return median(a["mb_per_second"] / b["mb_per_second"] for a, b in zip(ours, theirs)
                  if a["mb_per_second"] and b["mb_per_second"])


def size_text(count):
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if count >= size and count % size == 0:
            return "%d %s" % (count // size, unit)
    return "%d B" % count


def parse_size(text):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError("not a size: %r (e.g. 1GiB, 100MiB, 5000000)" % text)
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "K": KiB, "KB": 1000, "KIB": KiB, "M": MiB, "MB": 10 ** 6, "MIB": MiB,
             "G": GiB, "GB": 10 ** 9, "GIB": GiB}[unit]
    return int(number * scale)


def report_header(options, started):
    versions = "spacegate %s; nginx %s; HAProxy %s; Python %s; websockets %s" % (
        harness.spacegate_version(options.spacegate),
        harness.command_version(["nginx", "-v"], r"nginx/(\S+)"),
        harness.command_version(["haproxy", "-v"], r"version (\S+)"),
        sys.version.split()[0], websockets_version())
    return [
        "Run %s UTC, %.1f min. Machine: %s. Load average (1 min) %.1f at the end." % (
            started.strftime("%Y-%m-%d %H:%M"),
            (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60,
            harness.machine_description(), harness.load_average()),
        "",
        "Versions: %s." % versions,
        "",
        "%d worker%s per proxy; every target a fresh process per scenario; clients in %d "
        "processes, origin (WebSocket echo + byte sink, Python) in %d; descriptor limit %d "
        "per process. RSS is VmRSS summed over all the proxy's processes (nginx master and "
        "workers); CPU is utime + stime of them all." % (
            options.workers, "" if options.workers == 1 else "s", options.client_processes,
            options.origin_processes, options.nofile),
        ""]


def websockets_version():
    try:
        import websockets
        return websockets.__version__
    except ImportError:
        return "not installed"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_options(argv):
    parser = argparse.ArgumentParser(
        description="Long-lived tunnels (IDE sessions) through spacegate, nginx and HAProxy.")
    parser.add_argument("--spacegate", default=os.path.join(harness.REPO_DIR, "build", "proxy",
                                                            "spacegate"),
                        help="spacegate binary (default: build/proxy/spacegate)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, from: " + ", ".join(SCENARIOS))
    parser.add_argument("--targets", default=",".join(TARGET_ORDER),
                        help="comma-separated, from: %s (direct: echo-latency and bulk-tunnel "
                             "only)" % ", ".join(TARGET_ORDER))
    parser.add_argument("--workers", type=int, default=2, help="workers per proxy (2)")
    parser.add_argument("--sessions", type=int, default=8000,
                        help="idle-sessions / leak-check: sessions (8000)")
    parser.add_argument("--batch", type=int, default=200,
                        help="sessions opened at a time, over all client processes (200)")
    parser.add_argument("--hold", type=float, default=5.0,
                        help="idle-sessions: seconds the sessions are held idle (5)")
    parser.add_argument("--active", type=int, default=2000,
                        help="echo-latency: active sessions (2000)")
    parser.add_argument("--interval-ms", type=float, default=100.0,
                        help="echo-latency: each session sends every this many ms (100)")
    parser.add_argument("--message-size", type=int, default=100,
                        help="bytes per echo message (100)")
    parser.add_argument("--duration", type=int, default=20,
                        help="echo-latency: seconds of sending (20)")
    parser.add_argument("--tick-ms", type=float, default=2.0,
                        help="echo-latency: send schedule granularity (2)")
    parser.add_argument("--bytes", type=parse_size, default=GiB,
                        help="bulk-tunnel: bytes to move, e.g. 1GiB, 100MiB (1GiB)")
    parser.add_argument("--bulk-rounds", type=int, default=3,
                        help="bulk-tunnel: rounds over all targets; medians reported (3)")
    parser.add_argument("--echo-rounds", type=int, default=1,
                        help="echo-latency: rounds over all targets; medians reported (1)")
    parser.add_argument("--leak-cycles", type=int, default=2,
                        help="leak-check: open-and-close cycles of --sessions; from the second "
                             "on, RSS that keeps growing is a leak, not the allocator keeping "
                             "freed memory (2)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="WebSocket client processes (2; more if the descriptor limit "
                             "needs it)")
    parser.add_argument("--origin-processes", type=int, default=2,
                        help="origin processes sharing its port with SO_REUSEPORT (2)")
    parser.add_argument("--fd-margin", type=int, default=16,
                        help="leak-check: descriptors above the baseline that still count as "
                             "back (16)")
    parser.add_argument("--leak-wait", type=float, default=15.0,
                        help="leak-check: seconds to wait for the proxy's descriptors (15)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds before each RSS reading (1)")
    parser.add_argument("--open-timeout", type=float, default=30.0,
                        help="seconds one session may take to open or echo (30)")
    parser.add_argument("--close-timeout", type=float, default=30.0,
                        help="seconds all sessions may take to close (30)")
    parser.add_argument("--bulk-timeout", type=float, default=300.0,
                        help="bulk-tunnel: seconds the transfer may take (300)")
    parser.add_argument("--json", help="write the results to this file")
    options = parser.parse_args(argv)
    options.spacegate = os.path.abspath(options.spacegate)
    options.scenarios = [name for name in options.scenarios.split(",") if name]
    options.targets = [name for name in options.targets.split(",") if name]
    for name in options.scenarios:
        if name not in SCENARIOS:
            parser.error("unknown scenario %r (known: %s)" % (name, ", ".join(SCENARIOS)))
    for name in options.targets:
        if name not in TARGETS:
            parser.error("unknown target %r (known: %s)" % (name, ", ".join(TARGETS)))
    if min(options.workers, options.sessions, options.batch, options.active, options.duration,
           options.bytes, options.client_processes, options.origin_processes,
           options.bulk_rounds, options.echo_rounds, options.leak_cycles) < 1:
        parser.error("workers, sessions, batch, active, duration, bytes, rounds, cycles and "
                     "process counts must be at least 1")
    if options.message_size < PAYLOAD_HEADER.size:
        parser.error("--message-size must be at least %d" % PAYLOAD_HEADER.size)
    if options.interval_ms <= 0 or options.tick_ms <= 0 or options.tick_ms > options.interval_ms:
        parser.error("--interval-ms and --tick-ms must be above 0, the tick at most the interval")
    options.nofile = raise_nofile()
    limit = proxy_session_limit(options.nofile)
    if max(options.sessions, options.active) > limit:
        parser.error("a proxy process holds at most %d tunnels at a descriptor limit of %d "
                     "(two descriptors each): lower --sessions/--active" % (limit, options.nofile))
    # A client process keeps its sessions' sockets; stay well under the limit.
    per_process = options.nofile - 500
    options.client_processes = max(options.client_processes,
                                   -(-max(options.sessions, options.active) // per_process))
    return options


def check_tools(options):
    if WsClient is None:
        raise harness.HarnessError("python3-websockets is missing: run scripts/setup.sh")
    proxies = [name for name in options.targets if name in ("nginx", "haproxy")]
    missing = [tool for tool in proxies if not shutil.which(tool)]
    if missing:
        raise harness.HarnessError("missing %s: run scripts/setup.sh" % ", ".join(missing))
    if "spacegate" in options.targets and not os.access(options.spacegate, os.X_OK):
        raise harness.HarnessError("no spacegate binary at %s (build it, or pass --spacegate)"
                                   % options.spacegate)


def targets_for(scenario, options):
    """direct has no proxy whose memory or descriptors could be measured."""
    if scenario in ("idle-sessions", "leak-check"):
        return [name for name in options.targets if name != "direct"]
    return list(options.targets)


def run(options, workdir):
    results = {}
    scenarios = list(options.scenarios)
    # leak-check is measured on idle-sessions' sessions: run those once for both.
    idle_run = "idle-sessions" in scenarios or "leak-check" in scenarios
    origin = EchoOrigin(options.origin_processes)
    try:
        plan = []
        if idle_run:
            plan.append(("idle-sessions", run_idle))
        if "echo-latency" in scenarios:
            plan.append(("echo-latency", run_echo))
        if "bulk-tunnel" in scenarios:
            plan.append(("bulk-tunnel", run_bulk))
        for scenario, runner in plan:
            rounds = {"echo-latency": options.echo_rounds,
                      "bulk-tunnel": options.bulk_rounds}.get(scenario, 1)
            names = targets_for(scenario, options)
            runs = {name: [] for name in names}
            # Round by round, every target in the same order (A B C D A B C D),
            # so that a shared machine's drift hits all alike.
            for round_number in range(1, rounds + 1):
                for name in names:
                    def note(text, scenario=scenario, name=name, round_number=round_number):
                        print("tunnels: %-13s %-9s %s%s" % (
                            scenario, name, "round %d/%d: " % (round_number, rounds)
                            if rounds > 1 else "", text), flush=True)
                    started = time.monotonic()
                    result = runner(TARGETS[name], options, origin, workdir, note)
                    result["wall_seconds"] = round(time.monotonic() - started, 1)
                    runs[name].append(result)
                    note("done in %.0f s" % (time.monotonic() - started))
            results[scenario] = {name: SUMMARIES[scenario](runs[name]) for name in names}
    finally:
        origin.stop()
    return results


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def summarise_echo(runs):
    """Rounds of one target: counts summed, percentiles the median of the rounds'."""
    if len(runs) == 1:
        return dict(runs[0], rounds=1)
    summary = dict(rounds=len(runs), runs=runs, log=runs[-1]["log"],
                   open_errors=merge_counters(runs, "open_errors"),
                   dropped=merge_counters(runs, "dropped"),
                   max_ms=max((run["max_ms"] for run in runs if run["max_ms"] is not None),
                              default=None))
    for key in ("sessions", "opened", "expected", "sent", "received", "lost", "bad"):
        summary[key] = sum(run[key] for run in runs)
    for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "send_late_p99_ms",
                "proxy_cpu_seconds", "generator_cpu_seconds", "client_cpu_seconds"):
        summary[key] = median(run[key] for run in runs)
    return summary


def summarise_bulk(runs):
    """Rounds of one target: the median MB/s and CPU; complete only if every round was."""
    if len(runs) == 1:
        return dict(runs[0], rounds=1)
    failed = [run for run in runs if not run["complete"]]
    return dict(rounds=len(runs), runs=runs, bytes=runs[0]["bytes"], complete=not failed,
                error=failed[0]["error"] if failed else None,
                counted=failed[0]["counted"] if failed else runs[0]["counted"],
                mb_per_second=median(run["mb_per_second"] for run in runs),
                mb_per_second_range=[min(run["mb_per_second"] or 0 for run in runs),
                                     max(run["mb_per_second"] or 0 for run in runs)],
                seconds=median(run["seconds"] for run in runs),
                proxy_cpu_seconds=median(run["proxy_cpu_seconds"] for run in runs),
                log=runs[-1]["log"])


SUMMARIES = {"idle-sessions": lambda runs: runs[0], "echo-latency": summarise_echo,
             "bulk-tunnel": summarise_bulk}


def spacegate_failures(results, options):
    """What makes the run fail: spacegate sessions or bytes lost, a descriptor leak."""
    failures = []
    idle = results.get("idle-sessions", {}).get("spacegate")
    if idle:
        if "idle-sessions" in options.scenarios and (
                idle["opened"] != idle["sessions"] or idle["alive_after_hold"] != idle["opened"]):
            failures.append("idle-sessions: %d of %d opened, %d alive after the hold" % (
                idle["opened"], idle["sessions"], idle["alive_after_hold"]))
        short = [cycle for cycle in idle["cycles"] if cycle["opened"] != idle["sessions"]]
        if "leak-check" in options.scenarios and short:
            failures.append("leak-check: cycle %d opened %d of %d sessions"
                            % (short[0]["cycle"], short[0]["opened"], idle["sessions"]))
        if "leak-check" in options.scenarios and idle["fd_leak"]:
            failures.append("leak-check: %d descriptors before, %d after the sessions closed "
                            "(margin %d)" % (idle["fds_before"], idle["fds_after"],
                                             options.fd_margin))
    echo = results.get("echo-latency", {}).get("spacegate")
    if echo and (echo["opened"] != echo["sessions"] or echo["lost"] or echo["bad"]):
        failures.append("echo-latency: %d of %d opened, %d messages lost, %d bad"
                        % (echo["opened"], echo["sessions"], echo["lost"], echo["bad"]))
    bulk = results.get("bulk-tunnel", {}).get("spacegate")
    if bulk and not bulk["complete"]:
        failures.append("bulk-tunnel: %s" % (bulk["error"] or "origin counted %s of %d bytes"
                                             % (bulk["counted"], bulk["bytes"])))
    return failures


def main(argv):
    options = parse_options(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="spacegate-tunnels-")
    os.chmod(workdir, 0o755)
    failed = False
    try:
        check_tools(options)
        results = run(options, workdir)
        lines = report_header(options, started)
        if not results.get("idle-sessions") and (
                "idle-sessions" in options.scenarios or "leak-check" in options.scenarios):
            lines += ["(idle-sessions and leak-check measure a proxy: none among --targets)", ""]
        elif "idle-sessions" in options.scenarios:
            lines += idle_tables(results, options) + [""]
        if results.get("idle-sessions") and "leak-check" in options.scenarios:
            lines += leak_tables(results, options) + [""]
        if "echo-latency" in options.scenarios:
            lines += echo_tables(results, options) + [""]
        if "bulk-tunnel" in options.scenarios:
            lines += bulk_tables(results, options) + [""]
        logs = ["- %s, %s: %s" % (scenario, name, row["log"].replace("\n", " ⏎ "))
                for scenario, rows in results.items() for name, row in rows.items()
                if row.get("log")]
        if logs:
            lines += ["What the proxies logged (last lines):", ""] + logs + [""]
        failures = spacegate_failures(results, options)
        print("\n" + "\n".join(lines))
        if options.json:
            with open(options.json, "w") as out:
                json.dump(dict(started=started.isoformat(), options={
                    key: value for key, value in vars(options).items()},
                    header=lines[:7], results=results, failures=failures), out, indent=1)
            print("tunnels: wrote %s" % options.json)
        for failure in failures:
            print("tunnels: FAIL: spacegate: %s" % failure, file=sys.stderr)
        failed = bool(failures)
    except harness.HarnessError as error:
        print("tunnels: harness error: %s" % error, file=sys.stderr)
        failed = True
    except KeyboardInterrupt:
        print("tunnels: interrupted", file=sys.stderr)
        failed = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
