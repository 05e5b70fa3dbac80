#!/usr/bin/env python3
"""Route-reload scenario: wrk on a stable route through spacegate while the
control API applies route updates to other routes at a fixed rate (1,000 a
second by default), against the same run without updates, in alternating
rounds. Reports failed requests during updates (must be 0), req/s with and
without updates, and the update rate reached. Uses load_harness.py's origin,
processes and wrk runner; writes its table into docs/perf.md between its own
markers.

    python3 perf/route_reload.py [--duration 30] [--rounds 3] [--rate 1000]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_harness as harness  # noqa: E402

BEGIN = "<!-- BEGIN route reload results: written by perf/route_reload.py -->"
END = "<!-- END route reload results -->"
OTHER_ROUTES = 1000


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


def control(connection, method, path, body=None):
    payload = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=payload,
                       headers={"Content-Type": "application/json"} if payload else {})
    response = connection.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data else {}


def other_route(index, generation, origin_port):
    # Every update moves one of the other routes to another upstream, or back.
    return {"id": "other-%d" % index, "host": "other-%d.perf.test" % index,
            "upstream": "127.0.0.%d:%d" % (1 + generation % 2, origin_port), "access": "public"}


class Updater(threading.Thread):
    """PATCHes one route per update at `rate` a second until stopped."""

    def __init__(self, socket_path, rate, origin_port, version):
        super().__init__(daemon=True)
        self.connection = UnixHTTPConnection(socket_path)
        self.rate = rate
        self.origin_port = origin_port
        self.version = version
        self.applied = 0
        self.refused = 0
        self.latencies = []
        self.stopping = threading.Event()

    def run(self):
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.version += 1
            index = self.version % OTHER_ROUTES
            body = {"version": self.version,
                    "upsert": [other_route(index, self.version // OTHER_ROUTES, self.origin_port)]}
            started = time.monotonic()
            status, _ = control(self.connection, "PATCH", "/routes", body)
            self.latencies.append(time.monotonic() - started)
            if status == 200:
                self.applied += 1
            else:
                self.refused += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:
                next_at = time.monotonic()  # far behind: do not burst to catch up


class ReloadTarget(harness.SpacegateTarget):
    def argv(self):
        argv = super().argv()
        self.control_socket = os.path.join(self.directory, "control.sock")
        return argv + ["--control-socket", self.control_socket]


def run_round(options, origin, workdir, with_updates):
    scenario = harness.SCENARIOS["keepalive-small"]
    target = ReloadTarget(options, origin.port, workdir)
    target.start()
    try:
        connection = UnixHTTPConnection(target.control_socket)
        status, current = control(connection, "GET", "/routes")
        routes = current["routes"] + [other_route(i, 0, origin.port) for i in range(OTHER_ROUTES)]
        status, reply = control(connection, "PUT", "/routes",
                                {"version": current["version"] + 1, "routes": routes})
        if status != 200:
            raise harness.HarnessError("PUT /routes failed: %r" % reply)
        harness.probe(target, scenario)
        updater = None
        if with_updates:
            updater = Updater(target.control_socket, options.rate, origin.port, reply["version"])
            updater.start()
        report = harness.run_wrk(target.port, scenario, options, options.duration)
        if updater:
            updater.stopping.set()
            updater.join()
        if target.process.process.poll() is not None:
            raise harness.HarnessError("spacegate exited:\n" + target.process.log_tail())
        errors = sum(report[key] for key in ("connect_errors", "read_errors", "write_errors",
                                             "status_errors", "timeouts"))
        result = {"rps": report["requests"] / (report["duration_us"] / 1e6),
                  "p99_ms": report["p99_us"] / 1000.0, "errors": errors,
                  "requests": report["requests"]}
        if updater:
            result["updates"] = updater.applied
            result["refused"] = updater.refused
            result["update_rate"] = updater.applied / options.duration
            result["update_p50_ms"] = statistics.median(updater.latencies) * 1000
        return result
    finally:
        target.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacegate", default=os.path.join(harness.REPO_DIR, "build/proxy/spacegate"))
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="route updates a second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--output", default=os.path.join(harness.REPO_DIR, "docs/perf.md"))
    options = parser.parse_args()
    options.warmup = 0
    workdir = tempfile.mkdtemp(prefix="spacegate-reload-")
    os.chmod(workdir, 0o755)  # the origin's nginx workers run unprivileged
    origin = harness.Origin(workdir)
    quiet, busy = [], []
    try:
        for round_index in range(options.rounds):
            for with_updates in (False, True):
                result = run_round(options, origin, workdir, with_updates)
                (busy if with_updates else quiet).append(result)
                print("round %d %s: %s" % (round_index + 1,
                                            "with updates" if with_updates else "no updates",
                                            json.dumps(result)), flush=True)
    finally:
        origin.stop()
    failed = sum(run["errors"] for run in busy)
    ratio = statistics.median(b["rps"] / q["rps"] for b, q in zip(busy, quiet))
    table = "\n".join([
        "Run %s, %d rounds of %d s each way (alternating), wrk -t%d -c%d on a stable route, "
        "1 worker; updates: PATCH /routes moving one of %d other routes to another upstream, "
        "target %d a second." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                 options.rounds, options.duration, options.threads,
                                 options.connections, OTHER_ROUTES, options.rate),
        "",
        "| | req/s (median) | p99 ms (median) | failed requests | route updates applied | updates/s reached | update round trip p50 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| no updates | %.0f | %.2f | %d | — | — | — |" % (
            statistics.median(r["rps"] for r in quiet), statistics.median(r["p99_ms"] for r in quiet),
            sum(r["errors"] for r in quiet)),
        "| with updates | %.0f | %.2f | %d | %d | %.0f | %.2f |" % (
            statistics.median(r["rps"] for r in busy), statistics.median(r["p99_ms"] for r in busy),
            failed, sum(r["updates"] for r in busy),
            statistics.median(r["update_rate"] for r in busy),
            statistics.median(r["update_p50_ms"] for r in busy)),
        "",
        "req/s with updates ÷ without (median of per-round ratios): %.2f×." % ratio,
    ])
    print(table)
    if not options.no_write:
        harness_write(options.output, table)
    if failed:
        print("route_reload: %d requests failed while routes were updated" % failed, file=sys.stderr)
        return 1
    return 0


def harness_write(path, table):
    text = open(path).read() if os.path.exists(path) else "# Performance\n"
    block = BEGIN + "\n" + table + "\n" + END
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Route reload under load\n\n" + block + "\n"
    with open(path, "w") as out:
        out.write(text)


if __name__ == "__main__":
    sys.exit(main())
