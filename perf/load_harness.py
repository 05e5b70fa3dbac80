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

Standard library only; needs nginx, haproxy and wrk (scripts/setup.sh).
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


def fetch(port, path, extra_headers=(), timeout=5.0):
    """One raw HTTP/1.1 GET; returns (status, body length). Raw sockets so
    that the request is exactly what wrk sends."""
    lines = ["GET %s HTTP/1.1" % path, "Host: " + HOST_HEADER]
    lines += list(extra_headers)
    if not any(h.lower().startswith("connection:") for h in extra_headers):
        lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as connection:
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


def goal_verdict(scenario_results, peers):
    if not peers:
        return "—"
    best = max(peers, key=lambda peer: scenario_results[peer].requests_per_second or 0)
    ours, theirs = scenario_results["spacegate"], scenario_results[best]
    throughput = (paired_ratio(ours, theirs, requests_per_second) or 0) >= 1.25
    latency = (paired_ratio(ours, theirs, p99) or float("inf")) <= 1.0
    cpu = (paired_ratio(ours, theirs, cpu_per_request) or float("inf")) <= 0.8
    missing = [name for name, met in (("req/s", throughput), ("p99", latency), ("CPU", cpu))
               if not met]
    best_label = TARGETS[best].label.split(" ")[0]
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
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, from: " + ", ".join(SCENARIOS))
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated, from: " + ", ".join(TARGETS))
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per run (1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--workers", type=int, default=1, help="workers per proxy (1)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
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
    options.spacegate = os.path.abspath(options.spacegate)  # targets run in their own folders
    if options.micro:
        options.micro = os.path.abspath(options.micro)
    if options.smoke:
        options.duration, options.warmup, options.rounds, options.no_write = 1, 0, 1, True
    options.scenarios = [name for name in options.scenarios.split(",") if name]
    options.targets = [name for name in options.targets.split(",") if name]
    for name in options.scenarios:
        if name not in SCENARIOS:
            parser.error("unknown scenario %r (known: %s)" % (name, ", ".join(SCENARIOS)))
    for name in options.targets:
        if name not in TARGETS:
            parser.error("unknown target %r (known: %s)" % (name, ", ".join(TARGETS)))
    if min(options.duration, options.rounds, options.workers, options.connections,
           options.threads) < 1 or options.warmup < 0:
        parser.error("duration, rounds, workers, connections and threads must be at least 1")
    return options


def check_tools(options):
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
        if not options.micro_only:
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
