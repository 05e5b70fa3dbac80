#!/usr/bin/python3
"""Load harness: spacegate, nginx and HAProxy side by side on one origin.

Starts one origin (nginx, one worker, a small and a 1 MiB static body) and,
for every scenario and round, each target in turn in the same order
(A B C D A B C D ...) so that machine drift hits all alike: spacegate, nginx
as a reverse proxy, HAProxy, and wrk straight to the origin ("direct", the
physical limit). Every target runs as a fresh process with the same number of
workers, is probed for a correct answer, warmed up, and then loaded with wrk.
Per target and scenario it reports the median req/s and MiB/s over rounds,
p50/p99 latency, the CPU seconds the proxy's processes spent per 100k
requests (/proc/PID/stat), their peak RSS (VmHWM) and all errors, then the
ratios spacegate/peer. It prints a Markdown table and writes it into
docs/perf.md between markers, so hand-written notes there survive a rerun.
With --micro it also runs the Google Benchmark binary and adds its table.

`--smoke` is the CI variant (about 20 s): one short round, nothing written,
exit status 1 if any spacegate request failed or anything in the harness
broke, never because of speed.

`--h2` runs the TLS scenarios instead, with the same origin, order, CPU
readings and ratios: `h2-tls` (h2load, many HTTP/2 streams over few TLS
connections) through spacegate, nginx, h2o and HAProxy, and
`tls-handshakes` (openssl s_time -new: a full handshake per request)
through spacegate, nginx and HAProxy, on a throwaway ECDSA P-256
certificate; the proxies' TLS configs are perf/peers/*-h2.*. A spacegate
that cannot serve them yet gets a "not available (reason)" row instead of
failing the run. Results go between their own markers in docs/perf.md.

Standard library only; needs nginx, haproxy and wrk (scripts/setup.sh);
--h2 also h2o, h2load (nghttp2-client) and the openssl command.
A new scenario is one entry in SCENARIOS; a new target one entry in TARGETS.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(PERF_DIR)
PEERS_DIR = os.path.join(PERF_DIR, "peers")
LOOPBACK = "127.0.0.1"
HOST_HEADER = "perf.test"  # the Host every request carries; spacegate routes on it
SMALL_BODY_SIZE = 128
LARGE_BODY_SIZE = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024

BEGIN_LOAD = ("<!-- BEGIN load results: written by perf/load_harness.py; "
              "edit outside these markers -->")
END_LOAD = "<!-- END load results -->"
BEGIN_MICRO = "<!-- BEGIN micro results: written by perf/load_harness.py --micro -->"
END_MICRO = "<!-- END micro results -->"


class HarnessError(Exception):
    """Something in the harness itself broke (a peer did not start, wrk died)."""


# --------------------------------------------------------------------------
# Scenarios: what load is offered. Adding one is adding an entry here.
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    title: str
    path: str                    # on the origin: /small or /1mib
    body_size: int               # what the probe expects back
    headers: tuple = ()          # extra request header lines, "Name: value"
    connections: int = 0         # 0: --connections
    client: str = "wrk"          # wrk; h2load (HTTP/2 over TLS); s_time (a handshake per request)
    targets: tuple = ()          # the targets that take part; empty: all of --targets


SCENARIOS = {
    "keepalive-small": Scenario("HTTP/1.1 keep-alive, 128 B body", "/small", SMALL_BODY_SIZE),
    "keepalive-1mib": Scenario("HTTP/1.1 keep-alive, 1 MiB body", "/1mib", LARGE_BODY_SIZE),
    "close-small": Scenario("new connection per request (Connection: close), 128 B body",
                            "/small", SMALL_BODY_SIZE, headers=("Connection: close",)),
}


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def free_port():
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def render_template(name, destination, values):
    """Copies perf/peers/NAME to DESTINATION with every @KEY@ replaced."""
    with open(os.path.join(PEERS_DIR, name)) as source:
        text = source.read()
    for key, value in values.items():
        text = text.replace("@%s@" % key, str(value))
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        raise HarnessError("%s: no value for %s" % (name, leftover.group(0)))
    with open(destination, "w") as out:
        out.write(text)


def child_pids(parent):
    """Direct children of PARENT (nginx workers of a master)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def cpu_ticks(pids):
    """utime + stime of PIDS (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def peak_rss_kib(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total


def wait_for_port(port, process, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def fetch(port, path, extra_headers=(), timeout=5.0, tls_context=None, whole=False):
    """One raw HTTP/1.1 GET; returns (status, body length), and with WHOLE
    also the size of the whole response, head included. Raw sockets so that
    the request is exactly what wrk sends. With TLS_CONTEXT the connection is
    wrapped in TLS first (no SNI, as openssl s_time sends none)."""
    lines = ["GET %s HTTP/1.1" % path, "Host: " + HOST_HEADER]
    lines += list(extra_headers)
    if not any(h.lower().startswith("connection:") for h in extra_headers):
        lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as plain:
        connection = tls_context.wrap_socket(plain) if tls_context else plain
        with connection:
            connection.sendall(request)
            response = b""
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    match = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
    if not match:
        raise HarnessError("not an HTTP response: %r" % status_line)
    if re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        raise HarnessError("unexpected chunked response")
    if whole:
        return int(match.group(1)), len(body), len(response)
    return int(match.group(1)), len(body)


class ManagedProcess:
    """A process this harness started; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name, argv, directory):
        self.name = name
        self.directory = directory
        self.log_path = os.path.join(directory, "output.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=directory)

    def pids(self):
        """The process and its children (nginx master and workers)."""
        return [self.process.pid] + child_pids(self.process.pid)

    def log_tail(self, limit=2000):
        self.log.flush()
        try:
            with open(self.log_path, "rb") as log:
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        error_log = os.path.join(self.directory, "error.log")
        if os.path.exists(error_log):
            with open(error_log, "rb") as log:
                text += log.read().decode("utf-8", "replace")
        return text[-limit:]

    def stop(self):
        if self.process.poll() is None:
            children = child_pids(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for pid in children:  # workers left behind by a killed master
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log.close()


# --------------------------------------------------------------------------
# Targets: what the load goes through. Adding one is adding an entry here.
# --------------------------------------------------------------------------

class Target:
    """Starts one instance in its own folder; `port` is where wrk aims.

    A proxy's config is its `template` in perf/peers/, rendered with values()
    into the instance's folder as `config_name`; a subclass that sets another
    template (perf/tunnel_bench.py's WebSocket-ready peers) reuses the rest."""

    name = ""
    label = ""
    is_proxy = True
    template = ""
    config_name = ""

    def __init__(self, options, origin_port, workdir):
        self.options = options
        self.origin_port = origin_port
        self.directory = tempfile.mkdtemp(prefix=self.name + "-", dir=workdir)
        os.chmod(self.directory, 0o755)  # nginx workers drop to an unprivileged user
        self.port = free_port()
        self.process = None

    def values(self):
        return {"DIR": self.directory, "PORT": self.port, "WORKERS": self.options.workers,
                "ORIGIN_PORT": self.origin_port}

    def render_config(self):
        """Writes the config from `template`; returns its path."""
        config = os.path.join(self.directory, self.config_name)
        render_template(self.template, config, self.values())
        return config

    def argv(self):
        raise NotImplementedError

    def start(self):
        self.process = ManagedProcess(self.name, self.argv(), self.directory)
        if not wait_for_port(self.port, self.process.process):
            tail = self.process.log_tail()
            self.stop()
            raise HarnessError("%s did not start listening on port %d:\n%s"
                               % (self.name, self.port, tail))

    def pids(self):
        return self.process.pids() if self.process else []

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None


class SpacegateTarget(Target):
    name = "spacegate"
    label = "spacegate"
    template = "spacegate.yaml.in"
    config_name = "spacegate.yaml"

    def argv(self):
        return [self.options.spacegate, "--config", self.render_config()]


class NginxProxyTarget(Target):
    name = "nginx"
    label = "nginx (proxy)"
    template = "nginx-proxy.conf.in"
    config_name = "nginx.conf"

    def argv(self):
        return ["nginx", "-p", self.directory, "-c", self.render_config(),
                "-e", os.path.join(self.directory, "error.log")]


class HaproxyTarget(Target):
    name = "haproxy"
    label = "HAProxy"
    template = "haproxy.cfg.in"
    config_name = "haproxy.cfg"

    def argv(self):
        return ["haproxy", "-db", "-f", self.render_config()]


class DirectTarget(Target):
    """wrk straight at the origin: no proxy, the physical limit."""
    name = "direct"
    label = "direct to origin"
    is_proxy = False

    def __init__(self, options, origin_port, workdir):
        super().__init__(options, origin_port, workdir)
        self.port = origin_port

    def start(self):
        pass


TARGETS = {target.name: target for target in
           (SpacegateTarget, NginxProxyTarget, HaproxyTarget, DirectTarget)}


class Origin:
    """The one nginx origin all targets share, for the whole run."""

    def __init__(self, workdir):
        self.directory = os.path.join(workdir, "origin")
        www = os.path.join(self.directory, "www")
        os.makedirs(www)
        os.chmod(self.directory, 0o755)
        os.chmod(www, 0o755)
        with open(os.path.join(www, "small"), "wb") as small:
            small.write((b"spacegate perf origin, small body. " * 8)[:SMALL_BODY_SIZE])
        with open(os.path.join(www, "1mib"), "wb") as large:
            large.write(bytes(range(256)) * (LARGE_BODY_SIZE // 256))
        for name in ("small", "1mib"):
            os.chmod(os.path.join(www, name), 0o644)
        self.port = free_port()
        config = os.path.join(self.directory, "nginx.conf")
        render_template("origin-nginx.conf.in", config,
                        {"DIR": self.directory, "PORT": self.port})
        self.process = ManagedProcess("origin", [
            "nginx", "-p", self.directory, "-c", config,
            "-e", os.path.join(self.directory, "error.log")], self.directory)
        if not wait_for_port(self.port, self.process.process):
            tail = self.process.log_tail()
            self.process.stop()
            raise HarnessError("the origin (nginx) did not start:\n" + tail)

    def stop(self):
        self.process.stop()


# --------------------------------------------------------------------------
# One run: one target, one scenario, one round
# --------------------------------------------------------------------------

@dataclass
class RunResult:
    requests: int
    seconds: float
    bytes: int
    p50_us: int
    p99_us: int
    errors: int
    error_detail: dict
    cpu_seconds: float = None    # proxy processes only
    peak_rss_kib: int = None
    resumed: int = None          # tls-handshakes: connections whose TLS session was resumed
    note: str = None             # what the client said when it gave up (s_time)

    @property
    def requests_per_second(self):
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mib_per_second(self):
        return self.bytes / MiB / self.seconds if self.seconds else 0.0


def probe(target, scenario):
    """The target answers the scenario's request with 200 and the whole body."""
    deadline = time.monotonic() + 10
    while True:
        try:
            status, length = fetch(target.port, scenario.path, scenario.headers)
            if status == 200 and length == scenario.body_size:
                return
            problem = "status %d, %d body bytes (expected 200, %d)" % (
                status, length, scenario.body_size)
        except (OSError, HarnessError) as error:
            problem = str(error)
        if time.monotonic() > deadline:
            raise HarnessError("%s does not serve %s correctly: %s"
                               % (target.name, scenario.path, problem))
        time.sleep(0.1)


def run_wrk(port, scenario, options, seconds):
    connections = scenario.connections or options.connections
    argv = ["wrk", "-t", str(options.threads), "-c", str(connections), "-d", "%ds" % seconds,
            "-s", os.path.join(PERF_DIR, "wrk_report.lua"), "-H", "Host: " + HOST_HEADER]
    for header in scenario.headers:
        argv += ["-H", header]
    argv.append("http://%s:%d%s" % (LOOPBACK, port, scenario.path))
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^PERF_RESULT (\{.*\})$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or not match:
        raise HarnessError("wrk failed (exit %d):\n%s\n%s" % (
            completed.returncode, completed.stdout[-2000:], completed.stderr[-2000:]))
    return json.loads(match.group(1))


def run_once(target_class, scenario, options, origin, workdir):
    target = target_class(options, origin.port, workdir)
    target.start()
    try:
        probe(target, scenario)
        if options.warmup > 0:
            run_wrk(target.port, scenario, options, options.warmup)
        pids = target.pids() if target.is_proxy else []
        ticks_before = cpu_ticks(pids)
        report = run_wrk(target.port, scenario, options, options.duration)
        ticks_after = cpu_ticks(pids)
        errors = {key: report[key] for key in
                  ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")}
        result = RunResult(requests=report["requests"], seconds=report["duration_us"] / 1e6,
                           bytes=report["bytes"], p50_us=report["p50_us"],
                           p99_us=report["p99_us"], errors=sum(errors.values()),
                           error_detail=errors)
        if target.is_proxy:
            result.cpu_seconds = (ticks_after - ticks_before) / CLOCK_TICKS
            result.peak_rss_kib = peak_rss_kib(target.pids())
        if target.process and target.process.process.poll() is not None:
            raise HarnessError("%s exited during the run:\n%s"
                               % (target.name, target.process.log_tail()))
        return result
    finally:
        target.stop()


# --------------------------------------------------------------------------
# Summaries and the Markdown report
# --------------------------------------------------------------------------

@dataclass
class Summary:
    runs: list = field(default_factory=list)

    def median(self, attribute):
        values = [getattr(run, attribute) for run in self.runs]
        values = [value for value in values if value is not None]
        return statistics.median(values) if values else None

    @property
    def requests_per_second(self):
        return self.median("requests_per_second")

    @property
    def cpu_per_100k(self):
        values = [run.cpu_seconds / run.requests * 1e5 for run in self.runs
                  if run.cpu_seconds is not None and run.requests]
        return statistics.median(values) if values else None

    @property
    def peak_rss_mib(self):
        values = [run.peak_rss_kib for run in self.runs if run.peak_rss_kib is not None]
        return max(values) / 1024 if values else None

    @property
    def errors(self):
        return sum(run.errors for run in self.runs)

    def error_text(self):
        if not self.errors:
            return "0"
        kinds = {}
        for run in self.runs:
            for key, value in run.error_detail.items():
                kinds[key] = kinds.get(key, 0) + value
        detail = ", ".join("%s %d" % (key.replace("_errors", "").replace("_", " "), value)
                           for key, value in kinds.items() if value)
        return "%d (%s)" % (self.errors, detail)


def fmt(value, pattern="%.1f", missing="—"):
    return missing if value is None else pattern % value


def fmt_rate(value):
    if value is None:
        return "—"
    return "%.1fk" % (value / 1000) if value >= 10000 else "%.0f" % value


def paired_ratio(ours, theirs, value):
    """Median over rounds of ours ÷ theirs, each round against the same
    round's run: neighbouring runs share the machine's mood of the moment,
    so this cancels drift that a ratio of two medians would keep."""
    ratios = []
    for our_run, their_run in zip(ours.runs, theirs.runs):
        numerator, denominator = value(our_run), value(their_run)
        if numerator is not None and denominator:
            ratios.append(numerator / denominator)
    return statistics.median(ratios) if ratios else None


def requests_per_second(run):
    return run.requests_per_second


def p99(run):
    return run.p99_us


def cpu_per_request(run):
    return run.cpu_seconds / run.requests if run.cpu_seconds is not None and run.requests else None


def fmt_ratio(value):
    return "—" if value is None else "%.2f×" % value


def load_tables(results, scenario_names, target_names):
    lines = ["| scenario | target | req/s (median) | req/s min–max | MiB/s | p50 ms | p99 ms "
             "| CPU s / 100k req | peak RSS MiB | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for scenario_name in scenario_names:
        for target_name in target_names:
            summary = results[scenario_name][target_name]
            rates = [run.requests_per_second for run in summary.runs]
            lines.append("| %s | %s | %s | %s–%s | %s | %s | %s | %s | %s | %s |" % (
                scenario_name, TARGETS[target_name].label, fmt_rate(summary.requests_per_second),
                fmt_rate(min(rates)), fmt_rate(max(rates)), fmt(summary.median("mib_per_second")),
                fmt(_ms(summary.median("p50_us")), "%.2f"),
                fmt(_ms(summary.median("p99_us")), "%.2f"), fmt(summary.cpu_per_100k, "%.2f"),
                fmt(summary.peak_rss_mib), summary.error_text()))
    peers = [name for name in ("nginx", "haproxy") if name in target_names]
    if "spacegate" not in target_names or not (peers or "direct" in target_names):
        return lines
    header = "| scenario |"
    rule = "| --- |"
    for peer in peers:
        label = TARGETS[peer].label.split(" ")[0]
        header += " ÷ %s req/s | ÷ %s p99 | ÷ %s CPU |" % (label, label, label)
        rule += " ---: | ---: | ---: |"
    if "direct" in target_names:
        header += " ÷ direct req/s |"
        rule += " ---: |"
    header += " goal: ≥ 1.25× best peer's req/s, p99 ≤, CPU ≤ 0.8× |"
    rule += " --- |"
    lines += ["", "Ratios, spacegate ÷ target: the median over rounds of each round's ratio "
              "(req/s: above 1 is better for spacegate; p99 and CPU per request: below 1 is "
              "better). The goal compares with the peer of the higher median req/s.", "",
              header, rule]
    for scenario_name in scenario_names:
        ours = results[scenario_name]["spacegate"]
        row = "| %s |" % scenario_name
        for peer in peers:
            theirs = results[scenario_name][peer]
            row += " %s | %s | %s |" % (
                fmt_ratio(paired_ratio(ours, theirs, requests_per_second)),
                fmt_ratio(paired_ratio(ours, theirs, p99)),
                fmt_ratio(paired_ratio(ours, theirs, cpu_per_request)))
        if "direct" in target_names:
            row += " %s |" % fmt_ratio(paired_ratio(ours, results[scenario_name]["direct"],
                                                    requests_per_second))
        row += " %s |" % goal_verdict(results[scenario_name], peers)
        lines.append(row)
    return lines


def goal_verdict(scenario_results, peers, targets=None, with_latency=True, rate_name="req/s"):
    """The goal against the peer of the highest median req/s. TARGETS
    names the labels (default: the load targets); WITH_LATENCY False for a
    client that reports no latency (the handshake scenario), whose rate is
    called RATE_NAME."""
    if not peers:
        return "—"
    best = max(peers, key=lambda peer: scenario_results[peer].requests_per_second or 0)
    ours, theirs = scenario_results["spacegate"], scenario_results[best]
    throughput = (paired_ratio(ours, theirs, requests_per_second) or 0) >= 1.25
    latency = (not with_latency
               or (paired_ratio(ours, theirs, p99) or float("inf")) <= 1.0)
    cpu = (paired_ratio(ours, theirs, cpu_per_request) or float("inf")) <= 0.8
    missing = [name for name, met in ((rate_name, throughput), ("p99", latency), ("CPU", cpu))
               if not met]
    best_label = (targets or TARGETS)[best].label.split(" ")[0]
    if not missing:
        return "met (best peer: %s)" % best_label
    return "not met: %s (best peer: %s)" % (", ".join(missing), best_label)


def _ms(microseconds):
    return None if microseconds is None else microseconds / 1000


def command_version(argv, pattern):
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    match = re.search(pattern, completed.stdout + completed.stderr)
    return match.group(1) if match else "unknown"


def spacegate_version(binary):
    def git(*argv):
        completed = subprocess.run(["git", "-C", REPO_DIR] + list(argv),
                                   capture_output=True, text=True)
        return completed.stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    if git("status", "--porcelain", "--untracked-files=no", "--", "proxy"):
        commit += " + uncommitted changes in proxy/"
    build_type = "unknown build type"
    cache = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(binary))),
                         "CMakeCache.txt")
    if os.path.exists(cache):
        with open(cache) as text:
            match = re.search(r"^CMAKE_BUILD_TYPE:\w+=(\w*)$", text.read(), re.MULTILINE)
        if match:
            build_type = match.group(1) or "no build type"
    return "%s, %s build" % (commit, build_type)


def machine_description():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = ", %.1f GiB RAM" % (int(line.split()[1]) / 1024 / 1024)
    return "%d cores (%s)%s, Linux %s" % (os.cpu_count(), model, memory, platform.release())


def load_average():
    with open("/proc/loadavg") as text:
        return float(text.read().split()[0])


def report_header(options, scenario_names, target_names, started, load_at_start):
    versions = "spacegate %s; nginx %s; HAProxy %s; wrk %s" % (
        spacegate_version(options.spacegate),
        command_version(["nginx", "-v"], r"nginx/(\S+)"),
        command_version(["haproxy", "-v"], r"version (\S+)"),
        command_version(["wrk", "-v"], r"wrk (?:debian/)?(\S+)"))
    scenario_text = "; ".join("`%s`: %s" % (name, SCENARIOS[name].title)
                              for name in scenario_names)
    return [
        "Run %s UTC, %.0f min. Machine: %s. Load average (1 min) %.1f at the start, %.1f at "
        "the end, this harness included: the machine is shared, hence the round-by-round "
        "ratios." % (
            started.strftime("%Y-%m-%d %H:%M"),
            (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60,
            machine_description(), load_at_start, load_average()),
        "",
        "Versions: %s." % versions,
        "",
        "Load: wrk -t%d -c%d, %d s per run after a %d s warm-up, %d round%s; every target "
        "a fresh process per run, in the order %s each round; %d worker%s per proxy; origin "
        "nginx with one worker. Scenarios: %s." % (
            options.threads, options.connections, options.duration, options.warmup,
            options.rounds, "" if options.rounds == 1 else "s", ", ".join(target_names),
            options.workers, "" if options.workers == 1 else "s", scenario_text),
        "",
        "req/s, MiB/s (what wrk read, heads included), p50, p99 and CPU are medians over "
        "rounds; peak RSS is the largest VmHWM of the proxy's processes; errors are summed "
        "over rounds (socket errors, timeouts and statuses ≥ 400 as wrk counts them; each run "
        "first checks for a 200 with the whole body). CPU is utime + stime of all the "
        "proxy's processes (nginx master and workers) during the measured run.",
        "",
    ]


def replace_block(path, begin, end, body, title_if_new):
    text = ""
    if os.path.exists(path):
        with open(path) as existing:
            text = existing.read()
    block = "\n".join([begin] + body + [end])
    if begin in text and end in text:
        before = text.split(begin, 1)[0]
        after = text.split(end, 1)[1]
        text = before + block + after
    elif text:
        text = text.rstrip("\n") + "\n\n" + title_if_new + "\n\n" + block + "\n"
    else:
        text = ("# Performance\n\nWhat `make perf` measured on its latest run (perf/README.md "
                "says how). The numbers between the markers come from that run only.\n\n"
                + title_if_new + "\n\n" + block + "\n")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as out:
        out.write(text)
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------
# TLS and HTTP/2 (--h2): its own scenarios, targets and report
# --------------------------------------------------------------------------
#
# `--h2` runs these scenarios instead of the load ones, through TLS-speaking
# configs of the same proxies (perf/peers/*-h2.*) plus h2o, against the same
# origin, with the same round-robin order, CPU and RSS readings and paired
# ratios. Two clients besides wrk: h2load (many HTTP/2 streams on a few TLS
# connections) and `openssl s_time -new` (one full handshake per request:
# wrk and h2load both resume TLS sessions when they reconnect, checked with
# nginx's $ssl_session_reused, so neither measures full handshakes). Until
# spacegate terminates TLS, its rows say "not available" with the reason,
# and the run goes on with the peers.

BEGIN_H2 = ("<!-- BEGIN h2 results: written by perf/load_harness.py --h2; "
            "edit outside these markers -->")
END_H2 = "<!-- END h2 results -->"

H2_SCENARIOS = {
    "h2-tls": Scenario("HTTP/2 over TLS, many streams on few connections (h2load), 128 B body",
                       "/small", SMALL_BODY_SIZE, client="h2load",
                       targets=("spacegate", "nginx", "h2o", "haproxy")),
    "tls-handshakes": Scenario("a new TLS connection with a full handshake per request "
                               "(openssl s_time -new, HTTP/1.1, Connection: close), 128 B body",
                               "/small", SMALL_BODY_SIZE, headers=("Connection: close",),
                               client="s_time", targets=("spacegate", "nginx", "haproxy")),
}


class TargetUnavailable(HarnessError):
    """spacegate did not start with the TLS config, or does not answer over
    TLS / HTTP/2 yet: its row says so and the run goes on."""


@dataclass(frozen=True)
class TlsFiles:
    ca: str            # the throwaway CA's certificate (nobody verifies against it)
    cert: str          # the server's leaf certificate, PEM (the only one sent)
    key: str           # its key, PEM (PKCS#8)
    cert_and_key: str  # both in one PEM, for HAProxy's `crt`


TLS_DESCRIPTION = ("ECDSA P-256 (prime256v1) leaf, subjectAltName perf.test and 127.0.0.1, "
                   "signed with ecdsa-with-SHA256 by a throwaway ECDSA P-256 CA; only the leaf "
                   "is sent; made by /usr/bin/openssl for this run")


def make_tls_files(workdir):
    """A throwaway CA and server certificate in WORKDIR/tls, both ECDSA
    P-256, valid two days (TLS_DESCRIPTION)."""
    directory = os.path.join(workdir, "tls")
    os.makedirs(directory)
    os.chmod(directory, 0o755)

    def path(name):
        return os.path.join(directory, name)

    with open(path("server.ext"), "w") as ext:
        ext.write("subjectAltName = DNS:%s, IP:%s\nbasicConstraints = CA:FALSE\n"
                  "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
                  % (HOST_HEADER, LOOPBACK))
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
            ["openssl", "req", "-x509"] + new_key + ["-keyout", path("ca.key"),
             "-out", path("ca.pem"), "-subj", "/CN=spacegate perf throwaway CA",
             "-days", "2", "-sha256"],
            ["openssl", "req"] + new_key + ["-keyout", path("server.key"),
             "-out", path("server.csr"), "-subj", "/CN=" + HOST_HEADER],
            ["openssl", "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"),
             "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "2", "-sha256",
             "-extfile", path("server.ext"), "-out", path("server.pem")]):
        completed = subprocess.run(argv, capture_output=True, text=True)
        if completed.returncode != 0:
            raise HarnessError("%s failed:\n%s" % (" ".join(argv[:3]), completed.stderr[-1000:]))
    with open(path("server-and-key.pem"), "w") as both:
        for name in ("server.pem", "server.key"):
            with open(path(name)) as part:
                both.write(part.read())
    for name in os.listdir(directory):
        os.chmod(path(name), 0o644)  # throwaway; peers read them before dropping root
    return TlsFiles(ca=path("ca.pem"), cert=path("server.pem"), key=path("server.key"),
                    cert_and_key=path("server-and-key.pem"))


def tls_values(target):
    files = target.options.tls_files
    return {"CERT": files.cert, "KEY": files.key, "CERT_AND_KEY": files.cert_and_key}


class TlsSpacegateTarget(SpacegateTarget):
    template = "spacegate-h2.yaml.in"

    def values(self):
        return dict(super().values(), **tls_values(self))

    def start(self):
        """Unlike the peers, a spacegate that cannot serve this config
        yet is a row that says so, not a broken harness."""
        if not os.access(self.options.spacegate, os.X_OK):
            raise TargetUnavailable("no binary at %s" % self.options.spacegate)
        try:
            super().start()
        except HarnessError as error:
            raise TargetUnavailable("did not start with a TLS listener: %s"
                                    % last_log_line(str(error)))


class TlsNginxTarget(NginxProxyTarget):
    template = "nginx-h2.conf.in"

    def values(self):
        return dict(super().values(), **tls_values(self))


class TlsHaproxyTarget(HaproxyTarget):
    template = "haproxy-h2.cfg.in"

    def values(self):
        return dict(super().values(), **tls_values(self))


class H2oTarget(Target):
    """h2o 2.2: it drops root for `nobody` once its config and certificate
    are loaded; no pid file (DEPENDENCIES.md), the harness has the pid."""
    name = "h2o"
    label = "h2o"
    template = "h2o-h2.conf.in"
    config_name = "h2o.conf"

    def values(self):
        return dict(super().values(), **tls_values(self))

    def argv(self):
        return ["h2o", "-c", self.render_config()]


H2_TARGETS = {target.name: target for target in
              (TlsSpacegateTarget, TlsNginxTarget, H2oTarget, TlsHaproxyTarget)}


def last_log_line(text, limit=200):
    """The last non-empty line of an error with a log tail: what spacegate
    said when it refused the config."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= limit else line[:limit - 1] + "…"


H2LOAD_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                             r"(\d+) failed, (\d+) errored, (\d+) timeout")
H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
H2LOAD_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?\((\d+)\) data")
H2LOAD_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s),")


def h2load_argv(port, scenario, options, requests=None, seconds=None, log_path=None,
                connections=None, streams=None):
    """:authority and SNI are perf.test (the URI's host), the connection
    goes to the target's port (--connect-to)."""
    argv = ["h2load", "-t", "1", "-c", str(connections or options.h2_connections),
            "-m", str(streams or options.h2_streams),
            "--connect-to", "%s:%d" % (LOOPBACK, port)]
    argv += ["-n", str(requests)] if requests else ["-D", str(seconds)]
    if log_path:
        argv += ["--log-file", log_path]
    for header in scenario.headers:
        argv += ["-H", header]
    return argv + ["https://%s%s" % (HOST_HEADER, scenario.path)]


def run_h2load(argv, timeout):
    """Runs h2load; returns its counters and the TLS it negotiated."""
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out = completed.stdout
    requests, status, traffic = (H2LOAD_REQUESTS.search(out), H2LOAD_STATUS.search(out),
                                 H2LOAD_TRAFFIC.search(out))
    finished = H2LOAD_FINISHED.search(out)
    if completed.returncode != 0 or not (requests and status and traffic and finished):
        raise HarnessError("h2load failed (exit %d): %s\n%s\n%s" % (
            completed.returncode, " ".join(argv), out[-1500:], completed.stderr[-1500:]))
    total, started, done, succeeded, failed, errored, timeouts = map(int, requests.groups())
    report = dict(done=done, succeeded=succeeded, failed=failed, errored=errored,
                  timeouts=timeouts, status_4xx=int(status.group(3)),
                  status_5xx=int(status.group(4)), bytes=int(traffic.group(1)),
                  data_bytes=int(traffic.group(3)),
                  seconds=float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1))
    tls = {}
    for key in ("TLS Protocol", "Cipher", "Server Temp Key", "Application protocol"):
        match = re.search(r"^%s: (.*)$" % key, out, re.MULTILINE)
        tls[key] = match.group(1).strip() if match else None
    report["tls"] = tls
    return report


def probe_h2(target, scenario, options):
    """A few requests over h2 on one connection: ALPN picked h2, all 2xx,
    all bodies whole. Returns the negotiated TLS, one line."""
    deadline = time.monotonic() + 10
    count = 4
    while True:
        try:
            report = run_h2load(h2load_argv(target.port, scenario, options, requests=count,
                                            connections=1, streams=2), timeout=20)
            tls = report["tls"]
            if (tls["Application protocol"] == "h2" and report["succeeded"] == count
                    and report["data_bytes"] == count * scenario.body_size):
                return "%s, %s, %s" % (tls["TLS Protocol"], tls["Cipher"],
                                       (tls["Server Temp Key"] or "?").split(" ")[0])
            problem = ("ALPN %s, %d of %d succeeded, %d body bytes (expected h2, all, %d)"
                       % (tls["Application protocol"], report["succeeded"], count,
                          report["data_bytes"], count * scenario.body_size))
        except (HarnessError, subprocess.TimeoutExpired) as error:
            problem = last_log_line(str(error))
        if time.monotonic() > deadline:
            raise HarnessError("%s does not serve %s over h2: %s"
                               % (target.name, scenario.path, problem))
        time.sleep(0.2)


def probe_https(target, scenario):
    """HTTP/1.1 over TLS without SNI or ALPN, as s_time asks: 200, whole
    body. Returns the negotiated TLS (one line, from openssl s_client) and
    the whole response's size, which every s_time connection should read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 10
    while True:
        try:
            status, length, size = fetch(target.port, scenario.path, scenario.headers,
                                         tls_context=context, whole=True)
            if status == 200 and length == scenario.body_size:
                break
            problem = "status %d, %d body bytes (expected 200, %d)" % (
                status, length, scenario.body_size)
        except (OSError, HarnessError) as error:
            problem = str(error)
        if time.monotonic() > deadline:
            raise HarnessError("%s does not serve %s over TLS: %s"
                               % (target.name, scenario.path, problem))
        time.sleep(0.1)
    completed = subprocess.run(
        ["openssl", "s_client", "-connect", "%s:%d" % (LOOPBACK, target.port), "-brief",
         "-noservername"], input="", capture_output=True, text=True, timeout=10)
    fields = dict(re.findall(r"^([A-Za-z ]+): (.*)$", completed.stdout + completed.stderr,
                             re.MULTILINE))
    tls = "%s, %s, %s" % (fields.get("Protocol version", "?"), fields.get("Ciphersuite", "?"),
                          fields.get("Server Temp Key", "?").split(",")[0])
    return tls, size


def s_time_page(scenario):
    """s_time sends "GET <page> HTTP/1.0" and nothing else; the page given
    to it carries the rest of an HTTP/1.1 request head, whose last field
    swallows the " HTTP/1.0" s_time appends."""
    lines = [scenario.path + " HTTP/1.1", "Host: " + HOST_HEADER] + list(scenario.headers)
    return "\r\n".join(lines + ["User-Agent: openssl-s_time"])


def run_s_time(port, scenario, options, seconds):
    """--handshake-clients `openssl s_time -new` processes at once, each
    making one connection after another for SECONDS (s_time counts whole
    seconds, so a run lasts SECONDS to SECONDS + 1: the wall time is
    measured here). Each connection: full handshake, one request, the
    answer read to EOF. s_time prints a character per connection ('r' if
    the session was resumed) and stops at the first failed one."""
    argv = ["openssl", "s_time", "-connect", "%s:%d" % (LOOPBACK, port), "-new",
            "-time", str(seconds), "-www", s_time_page(scenario)]
    started = time.monotonic()
    processes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True)
                 for _ in range(options.handshake_clients)]
    report = dict(connections=0, resumed=0, bytes=0, failed_clients=0, messages=[])
    for process in processes:
        try:
            out, err = process.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        progress = out.split("\n\n", 1)[0].split("\n", 1)[-1]
        report["connections"] += sum(progress.count(mark) for mark in "*t3r")
        report["resumed"] += progress.count("r")
        summary = re.search(r"^(\d+) connections in [\d.]+s; .* bytes read (\d+)$", out,
                            re.MULTILINE)
        if process.returncode != 0 or not summary:
            report["failed_clients"] += 1
            report["messages"].append(last_log_line(err or out))
        else:
            report["bytes"] += int(summary.group(2))
    report["seconds"] = time.monotonic() - started
    return report


def run_once_h2(target_class, scenario, options, origin, workdir):
    """One target, one TLS scenario: a fresh process, probe, warm-up, then
    the measured run with the proxy's CPU read around it. Returns the
    RunResult and the negotiated TLS (one line)."""
    target = target_class(options, origin.port, workdir)
    target.start()
    try:
        try:
            if scenario.client == "h2load":
                tls, response_size = probe_h2(target, scenario, options), None
            else:
                tls, response_size = probe_https(target, scenario)
        except HarnessError as error:
            if isinstance(target, TlsSpacegateTarget):
                raise TargetUnavailable(str(error))
            raise
        if scenario.client == "h2load":
            if options.warmup > 0:
                run_h2load(h2load_argv(target.port, scenario, options, seconds=options.warmup),
                           timeout=options.warmup + 60)
            log_path = os.path.join(target.directory, "h2load.log")
            pids = target.pids()
            ticks_before = cpu_ticks(pids)
            report = run_h2load(h2load_argv(target.port, scenario, options,
                                            seconds=options.duration, log_path=log_path),
                                timeout=options.duration + 60)
            ticks_after = cpu_ticks(pids)
            p50_us, p99_us = h2load_percentiles(log_path)
            os.unlink(log_path)
            detail = {"errored": report["errored"], "status 4xx": report["status_4xx"],
                      "status 5xx": report["status_5xx"], "timeouts": report["timeouts"]}
            result = RunResult(requests=report["succeeded"], seconds=report["seconds"],
                               bytes=report["bytes"], p50_us=p50_us, p99_us=p99_us,
                               errors=report["failed"] + report["timeouts"], error_detail=detail)
        else:
            if options.warmup > 0:
                run_s_time(target.port, scenario, options, options.warmup)
            pids = target.pids()
            ticks_before = cpu_ticks(pids)
            report = run_s_time(target.port, scenario, options, options.duration)
            ticks_after = cpu_ticks(pids)
            detail = {"failed connections": report["failed_clients"], "short responses": 0}
            answered = report["connections"] - report["failed_clients"]
            expected = answered * response_size
            if answered and abs(report["bytes"] - expected) > 16 * answered:
                # not every connection read what the probe read: count how many
                # responses the difference amounts to (at least one)
                detail["short responses"] = max(1, round(abs(expected - report["bytes"])
                                                         / response_size))
            result = RunResult(requests=report["connections"], seconds=report["seconds"],
                               bytes=report["bytes"], p50_us=None, p99_us=None,
                               errors=sum(detail.values()), error_detail=detail)
            result.resumed = report["resumed"]
            if report["messages"]:
                result.note = "; ".join(sorted(set(report["messages"])))
        result.cpu_seconds = (ticks_after - ticks_before) / CLOCK_TICKS
        result.peak_rss_kib = peak_rss_kib(target.pids())
        if target.process and target.process.process.poll() is not None:
            raise HarnessError("%s exited during the run:\n%s"
                               % (target.name, target.process.log_tail()))
        return result, tls
    finally:
        target.stop()


def h2load_percentiles(log_path):
    """p50 and p99 of the request latencies h2load logged (third column,
    microseconds; one line per request that completed)."""
    latencies = []
    with open(log_path) as log:
        for line in log:
            columns = line.split("\t")
            if len(columns) >= 3:
                latencies.append(int(columns[2]))
    if not latencies:
        return None, None
    latencies.sort()

    def percentile(fraction):
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))]
    return percentile(0.50), percentile(0.99)


def run_h2(options, workdir):
    """The --h2 run: both TLS scenarios, round by round, targets in turn."""
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = load_average()
    options.tls_files = make_tls_files(workdir)
    plan = {name: [target for target in options.targets
                   if not H2_SCENARIOS[name].targets or target in H2_SCENARIOS[name].targets]
            for name in options.scenarios}
    results = {name: {target: Summary() for target in targets} for name, targets in plan.items()}
    unavailable = {}   # scenario -> why spacegate has no row
    negotiated = {}    # (scenario, target) -> the TLS it negotiated
    raw = []
    origin = Origin(workdir)
    try:
        for round_number in range(1, options.rounds + 1):
            for scenario_name, targets in plan.items():
                scenario = H2_SCENARIOS[scenario_name]
                for target_name in targets:
                    if target_name == "spacegate" and scenario_name in unavailable:
                        continue
                    try:
                        result, tls = run_once_h2(H2_TARGETS[target_name], scenario, options,
                                                  origin, workdir)
                    except TargetUnavailable as error:
                        unavailable[scenario_name] = last_log_line(str(error), 300)
                        print("perf: spacegate: not available for %s (%s)"
                              % (scenario_name, unavailable[scenario_name]), flush=True)
                        continue
                    negotiated.setdefault((scenario_name, target_name), tls)
                    results[scenario_name][target_name].runs.append(result)
                    raw.append(dict(round=round_number, scenario=scenario_name,
                                    target=target_name, tls=tls, **result.__dict__))
                    unit = "req/s" if scenario.client == "h2load" else "handshakes/s"
                    print("perf: round %d/%d %-15s %-10s %9.0f %-12s p99 %7s ms  CPU %.2f s  "
                          "errors %d" % (round_number, options.rounds, scenario_name,
                                         target_name, result.requests_per_second, unit,
                                         fmt(_ms(result.p99_us), "%.2f"), result.cpu_seconds,
                                         result.errors), flush=True)
    finally:
        origin.stop()
    lines = h2_report_header(options, plan, negotiated, started, load_at_start)
    lines += h2_tables(results, plan, unavailable)
    if options.json:
        with open(options.json, "w") as out:
            json.dump(dict(runs=raw, unavailable=unavailable), out, indent=1)
    return results, lines, unavailable


def best_peer(by_target):
    peers = [name for name in by_target if name != "spacegate" and by_target[name].runs]
    if not peers:
        return None
    return max(peers, key=lambda peer: by_target[peer].requests_per_second or 0)


def h2_tables(results, plan, unavailable):
    lines = []
    for scenario_name, targets in plan.items():
        scenario = H2_SCENARIOS[scenario_name]
        by_target = results[scenario_name]
        best = best_peer(by_target)
        handshakes = scenario.client == "s_time"
        lines.append("`%s`%s:" % (scenario_name, " (best peer: %s)" % H2_TARGETS[best].label
                                  if best else ""))
        lines.append("")
        if handshakes:
            lines += ["| target | handshakes/s (median) | min–max | CPU ms / handshake "
                      "| ÷ best peer handshakes/s | ÷ best peer CPU | resumed | peak RSS MiB "
                      "| errors |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        else:
            lines += ["| target | req/s (median) | req/s min–max | p50 ms | p99 ms "
                      "| CPU s / 1k req | ÷ best peer req/s | ÷ best peer CPU | peak RSS MiB "
                      "| errors |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for target_name in targets:
            label = H2_TARGETS[target_name].label
            summary = by_target[target_name]
            if not summary.runs:
                reason = unavailable.get(scenario_name, "no run") if target_name == "spacegate" \
                    else "no run"
                lines.append("| %s | not available (%s) |%s" % (
                    label, reason.replace("|", "\\|"), " |" * (7 if handshakes else 8)))
                continue
            rates = [run.requests_per_second for run in summary.runs]
            versus_best = "—"
            cpu_versus_best = "—"
            if best:
                versus_best = fmt_ratio(paired_ratio(summary, by_target[best],
                                                     requests_per_second))
                cpu_versus_best = fmt_ratio(paired_ratio(summary, by_target[best],
                                                         cpu_per_request))
            cpu_per_1k = summary.cpu_per_100k / 100 if summary.cpu_per_100k is not None \
                else None
            if handshakes:
                lines.append("| %s | %s | %s–%s | %s | %s | %s | %d | %s | %s |" % (
                    label, fmt_rate(summary.requests_per_second), fmt_rate(min(rates)),
                    fmt_rate(max(rates)), fmt(cpu_per_1k, "%.3f"), versus_best,
                    cpu_versus_best, sum(run.resumed or 0 for run in summary.runs),
                    fmt(summary.peak_rss_mib), h2_error_text(summary)))
            else:
                lines.append("| %s | %s | %s–%s | %s | %s | %s | %s | %s | %s | %s |" % (
                    label, fmt_rate(summary.requests_per_second), fmt_rate(min(rates)),
                    fmt_rate(max(rates)), fmt(_ms(summary.median("p50_us")), "%.2f"),
                    fmt(_ms(summary.median("p99_us")), "%.2f"), fmt(cpu_per_1k, "%.3f"),
                    versus_best, cpu_versus_best, fmt(summary.peak_rss_mib),
                    h2_error_text(summary)))
        lines.append("")
    lines += h2_ratio_table(results, plan, unavailable)
    return lines


def h2_error_text(summary):
    """Like Summary.error_text, plus what s_time said when it stopped."""
    text = summary.error_text()
    said = sorted({run.note for run in summary.runs} - {None})
    return text + (" (s_time: %s)" % "; ".join(said).replace("|", "\\|") if said else "")


def h2_ratio_table(results, plan, unavailable):
    """spacegate ÷ each peer, and the goal, per scenario (as the load
    report's second table)."""
    peers = [name for name in H2_TARGETS if name != "spacegate"
             and any(name in targets for targets in plan.values())]
    if not any("spacegate" in targets for targets in plan.values()):
        return []
    header, rule = "| scenario |", "| --- |"
    for peer in peers:
        label = H2_TARGETS[peer].label.split(" ")[0]
        header += " ÷ %s rate | ÷ %s p99 | ÷ %s CPU |" % (label, label, label)
        rule += " ---: | ---: | ---: |"
    header += " goal: ≥ 1.25× best peer's rate, p99 ≤, CPU ≤ 0.8× |"
    rule += " --- |"
    lines = ["Ratios, spacegate ÷ target: the median over rounds of each round's ratio (rate: "
             "req/s or handshakes/s, above 1 is better for spacegate; p99 and CPU per request "
             "or handshake: below 1 is better).", "", header, rule]
    for scenario_name, targets in plan.items():
        by_target = results[scenario_name]
        if "spacegate" not in targets:
            continue
        ours = by_target["spacegate"]
        if not ours.runs:
            lines.append("| %s | spacegate not available (above) |%s" % (
                scenario_name, " |" * (3 * len(peers))))
            continue
        row = "| %s |" % scenario_name
        for peer in peers:
            if peer not in by_target or not by_target[peer].runs:
                row += " — | — | — |"
                continue
            theirs = by_target[peer]
            row += " %s | %s | %s |" % (
                fmt_ratio(paired_ratio(ours, theirs, requests_per_second)),
                fmt_ratio(paired_ratio(ours, theirs, p99)),
                fmt_ratio(paired_ratio(ours, theirs, cpu_per_request)))
        present = [peer for peer in peers if peer in by_target and by_target[peer].runs]
        handshakes = H2_SCENARIOS[scenario_name].client == "s_time"
        row += " %s |" % goal_verdict(by_target, present, H2_TARGETS, with_latency=not handshakes,
                                      rate_name="handshakes/s" if handshakes else "req/s")
        lines.append(row)
    return lines


def h2_report_header(options, plan, negotiated, started, load_at_start):
    versions = "spacegate %s; nginx %s; h2o %s; HAProxy %s; h2load %s; %s" % (
        spacegate_version(options.spacegate),
        command_version(["nginx", "-v"], r"nginx/(\S+)"),
        command_version(["h2o", "--version"], r"h2o version (\S+)"),
        command_version(["haproxy", "-v"], r"version (\S+)"),
        command_version(["h2load", "--version"], r"nghttp2/(\S+)"),
        command_version(["openssl", "version"], r"^(OpenSSL \S+)"))
    all_targets = [name for name in H2_TARGETS if any(name in t for t in plan.values())]
    lines = [
        "Run %s UTC, %.0f min. Machine: %s. Load average (1 min) %.1f at the start, %.1f at "
        "the end, this harness included." % (
            started.strftime("%Y-%m-%d %H:%M"),
            (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60,
            machine_description(), load_at_start, load_average()),
        "",
        "Versions: %s (the OpenSSL of the peers, h2load and s_time; spacegate links "
        "BoringSSL)." % versions,
        "",
        "Certificate: %s. Every proxy: TLS 1.2 and 1.3, ALPN h2 and http/1.1, its own "
        "default ciphers and session settings; %d worker%s; keep-alive HTTP/1.1 to the "
        "origin (nginx, one worker, as in the load runs). Each run a fresh process, in the "
        "order %s, %d round%s; %d s measured after a %d s warm-up." % (
            TLS_DESCRIPTION, options.workers, "" if options.workers == 1 else "s",
            ", ".join(all_targets), options.rounds, "" if options.rounds == 1 else "s",
            options.duration, options.warmup),
        "",
    ]
    if "h2-tls" in plan:
        lines += [
            "`h2-tls`: h2load -t1 -c%d -m%d for %d s (%d streams in flight), `GET /small` "
            "with :authority and SNI perf.test; req/s counts 2xx answers; p50/p99 from "
            "h2load's per-request log (every request of the measured run); CPU is utime + "
            "stime of all the proxy's processes over the measured run, per 1,000 requests." % (
                options.h2_connections, options.h2_streams, options.duration,
                options.h2_connections * options.h2_streams),
            ""]
    if "tls-handshakes" in plan:
        lines += [
            "`tls-handshakes`: %d `openssl s_time -new` processes at once, each opening one "
            "connection after another: full handshake (never resumed: the `resumed` column "
            "counts any that were), one HTTP/1.1 `GET /small` with `Connection: close`, the "
            "answer read to the close; no SNI, no ALPN. handshakes/s over the wall time of the "
            "run; CPU per handshake as above. s_time gives no latencies. An error is a "
            "connection that failed (s_time stops there) or responses whose size differs "
            "from the probe's." % options.handshake_clients,
            ""]
    if negotiated:
        by_tls = {}
        for (scenario, target), tls in negotiated.items():
            by_tls.setdefault(tls, []).append("%s %s" % (H2_TARGETS[target].label, scenario))
        lines += ["Negotiated (protocol, cipher, key exchange): " + "; ".join(
            "%s: %s" % (tls, ", ".join(sorted(where))) for tls, where in sorted(by_tls.items()))
            + ".", ""]
    return lines


# --------------------------------------------------------------------------
# Micro benchmarks
# --------------------------------------------------------------------------

def run_micro(binary, min_time, workdir):
    out = os.path.join(workdir, "micro.json")
    argv = [binary, "--benchmark_out=" + out, "--benchmark_out_format=json",
            "--benchmark_min_time=%g" % min_time]
    print("perf: micro benchmarks: %s" % " ".join(argv), flush=True)
    completed = subprocess.run(argv, capture_output=True, text=True)
    if completed.returncode != 0 or not os.path.exists(out):
        raise HarnessError("micro benchmarks failed:\n" + completed.stderr[-2000:])
    with open(out) as data:
        results = json.load(data)
    lines = ["| benchmark | time per op | ops/s | bytes/s | note |",
             "| --- | ---: | ---: | ---: | --- |"]
    for bench in results["benchmarks"]:
        if bench.get("error_occurred"):
            lines.append("| %s | error: %s | | | |" % (bench["name"], bench.get("error_message")))
            continue
        unit = bench.get("time_unit", "ns")
        nanoseconds = bench["cpu_time"] * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
        time_text = ("%.1f ns" % nanoseconds if nanoseconds < 1e4
                     else "%.1f µs" % (nanoseconds / 1e3))
        ops = bench.get("items_per_second")
        bytes_rate = bench.get("bytes_per_second")
        lines.append("| %s | %s | %s | %s | %s |" % (
            bench["name"], time_text,
            "%.2fM" % (ops / 1e6) if ops and ops >= 1e6 else ("%.1fk" % (ops / 1e3) if ops else ""),
            "%.0f MiB/s" % (bytes_rate / MiB) if bytes_rate else "", bench.get("label", "")))
    context = results.get("context", {})
    header = ["Run %s with `%s --benchmark_min_time=%g` (Google Benchmark 1.7, perf/micro/): "
              "CPU time per operation; ops/s counts requests, lookups or slabs." % (
                  datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  os.path.basename(binary), min_time)]
    if context.get("library_build_type") == "debug":
        header.append("(Debian's libbenchmark reports itself as a debug build; that affects "
                      "the timing loop only, not the measured code.)")
    return header + [""] + lines


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_options(argv):
    parser = argparse.ArgumentParser(
        description="Runs spacegate, nginx and HAProxy side by side against one origin.")
    default_binary = os.path.join(REPO_DIR, "build", "proxy", "spacegate")
    parser.add_argument("--spacegate", default=default_binary,
                        help="spacegate binary (default: build/proxy/spacegate)")
    parser.add_argument("--h2", action="store_true",
                        help="the TLS and HTTP/2 scenarios (%s) through spacegate, nginx, h2o "
                             "and HAProxy instead of the load scenarios; own defaults: "
                             "--duration 5, results between their own markers"
                             % ", ".join(H2_SCENARIOS))
    parser.add_argument("--scenarios",
                        help="comma-separated, from: %s (default all; with --h2: %s)"
                             % (", ".join(SCENARIOS), ", ".join(H2_SCENARIOS)))
    parser.add_argument("--targets",
                        help="comma-separated, from: %s (default all; with --h2: %s)"
                             % (", ".join(TARGETS), ", ".join(H2_TARGETS)))
    parser.add_argument("--duration", type=int, help="seconds per run (10; with --h2: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per run (1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--workers", type=int, default=1, help="workers per proxy (1)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--h2-connections", type=int, default=10,
                        help="--h2: h2load connections (10)")
    parser.add_argument("--h2-streams", type=int, default=100,
                        help="--h2: h2load concurrent streams per connection (100)")
    parser.add_argument("--handshake-clients", type=int, default=4,
                        help="--h2: openssl s_time processes at once in tls-handshakes (4)")
    parser.add_argument("--output", default=os.path.join(REPO_DIR, "docs", "perf.md"),
                        help="Markdown file to update (default docs/perf.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", help="also write every run's raw numbers to this file")
    parser.add_argument("--micro", help="Google Benchmark binary to run as well")
    parser.add_argument("--micro-only", action="store_true", help="skip the load runs")
    parser.add_argument("--micro-min-time", type=float, default=0.5,
                        help="--benchmark_min_time for --micro (0.5)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: 1 round of 1 s, no warm-up, nothing written; fails only on "
                             "spacegate errors or a broken harness")
    options = parser.parse_args(argv)
    scenarios, targets = (H2_SCENARIOS, H2_TARGETS) if options.h2 else (SCENARIOS, TARGETS)
    if options.duration is None:
        options.duration = 5 if options.h2 else 10
    options.scenarios = options.scenarios or ",".join(scenarios)
    options.targets = options.targets or ",".join(targets)
    options.spacegate = os.path.abspath(options.spacegate)  # targets run in their own folders
    if options.micro:
        options.micro = os.path.abspath(options.micro)
    if options.smoke:
        options.duration, options.warmup, options.rounds, options.no_write = 1, 0, 1, True
    options.scenarios = [name for name in options.scenarios.split(",") if name]
    options.targets = [name for name in options.targets.split(",") if name]
    for name in options.scenarios:
        if name not in scenarios:
            parser.error("unknown scenario %r (known%s: %s)" % (
                name, " with --h2" if options.h2 else "", ", ".join(scenarios)))
    for name in options.targets:
        if name not in targets:
            parser.error("unknown target %r (known%s: %s)" % (
                name, " with --h2" if options.h2 else "", ", ".join(targets)))
    if min(options.duration, options.rounds, options.workers, options.connections,
           options.threads, options.h2_connections, options.h2_streams,
           options.handshake_clients) < 1 or options.warmup < 0:
        parser.error("duration, rounds, workers, connections, threads and the --h2 counts "
                     "must be at least 1")
    return options


def check_tools(options):
    if options.h2:
        # spacegate is not checked here: without a binary its rows say so
        needed = ["nginx", "h2load", "openssl"] + [
            tool for tool in ("h2o", "haproxy") if tool in options.targets]
        missing = [tool for tool in needed if not shutil.which(tool)]
        if missing:
            raise HarnessError("missing %s: run scripts/setup.sh" % ", ".join(missing))
        return
    missing = [tool for tool in ("nginx", "haproxy", "wrk") if not shutil.which(tool)]
    if "nginx" in missing or "wrk" in missing or (
            "haproxy" in missing and "haproxy" in options.targets):
        raise HarnessError("missing %s: run scripts/setup.sh" % ", ".join(missing))
    if "spacegate" in options.targets and not os.access(options.spacegate, os.X_OK):
        raise HarnessError("no spacegate binary at %s (build it, or pass --spacegate)"
                           % options.spacegate)


def run_load(options, workdir):
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = load_average()
    results = {scenario: {target: Summary() for target in options.targets}
               for scenario in options.scenarios}
    raw = []
    origin = Origin(workdir)
    try:
        for round_number in range(1, options.rounds + 1):
            for scenario_name in options.scenarios:
                scenario = SCENARIOS[scenario_name]
                for target_name in options.targets:
                    result = run_once(TARGETS[target_name], scenario, options, origin, workdir)
                    results[scenario_name][target_name].runs.append(result)
                    raw.append(dict(round=round_number, scenario=scenario_name,
                                    target=target_name, **result.__dict__))
                    print("perf: round %d/%d %-16s %-10s %9.0f req/s %8.1f MiB/s p99 %7.2f ms "
                          "errors %d" % (round_number, options.rounds, scenario_name,
                                         target_name, result.requests_per_second,
                                         result.mib_per_second, result.p99_us / 1000,
                                         result.errors), flush=True)
    finally:
        origin.stop()
    lines = report_header(options, options.scenarios, options.targets, started, load_at_start)
    lines += load_tables(results, options.scenarios, options.targets)
    if options.json:
        with open(options.json, "w") as out:
            json.dump(raw, out, indent=1)
    return results, lines


def main(argv):
    options = parse_options(argv)
    workdir = tempfile.mkdtemp(prefix="spacegate-perf-")
    os.chmod(workdir, 0o755)
    failed = False
    try:
        check_tools(options)
        if options.h2 and not options.micro_only:
            results, lines, unavailable = run_h2(options, workdir)
            print("\n" + "\n".join(lines) + "\n")
            for scenario_name in unavailable:
                print("perf: spacegate: not available for %s (%s)"
                      % (scenario_name, unavailable[scenario_name]))
            if not options.no_write:
                replace_block(options.output, BEGIN_H2, END_H2, lines,
                              "## TLS and HTTP/2: spacegate, nginx, h2o and HAProxy")
            for scenario_name, by_target in results.items():
                summary = by_target.get("spacegate")
                if summary and summary.runs and (
                        summary.errors or not any(run.requests for run in summary.runs)):
                    failed = True
                    print("perf: FAIL: spacegate had %s errors and %d requests in %s"
                          % (summary.error_text(), sum(r.requests for r in summary.runs),
                             scenario_name), file=sys.stderr)
        elif not options.micro_only:
            results, lines = run_load(options, workdir)
            print("\n" + "\n".join(lines) + "\n")
            if not options.no_write:
                replace_block(options.output, BEGIN_LOAD, END_LOAD, lines,
                              "## Load: spacegate, nginx, HAProxy and direct, side by side")
            if "spacegate" in options.targets:
                for scenario_name, by_target in results.items():
                    summary = by_target["spacegate"]
                    if summary.errors or not any(run.requests for run in summary.runs):
                        failed = True
                        print("perf: FAIL: spacegate had %s errors and %d requests in %s"
                              % (summary.error_text(), sum(r.requests for r in summary.runs),
                                 scenario_name), file=sys.stderr)
        if options.micro:
            lines = run_micro(options.micro, options.micro_min_time, workdir)
            print("\n" + "\n".join(lines) + "\n")
            if not options.no_write:
                replace_block(options.output, BEGIN_MICRO, END_MICRO, lines,
                              "## Micro benchmarks")
        if not options.no_write:
            print("perf: wrote %s" % options.output)
    except HarnessError as error:
        print("perf: harness error: %s" % error, file=sys.stderr)
        failed = True
    except KeyboardInterrupt:
        print("perf: interrupted", file=sys.stderr)
        failed = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
