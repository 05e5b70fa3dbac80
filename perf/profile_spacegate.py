#!/usr/bin/python3
"""Profiles spacegate under one load_harness.py scenario and prints its top costs.

Starts the harness's origin and a spacegate with the same config (one worker
by default), loads it with wrk for a few seconds, and profiles it one of
three ways:
  --tool perf       `perf record -e cpu-clock` on the running process: where
                    the CPU time goes, kernel included (software clock, so it
                    works where hardware counters do not, as in most VMs);
  --tool callgrind  spacegate under `valgrind --tool=callgrind`: instruction
                    counts per function, user space only, exact but ~50x slower;
  --tool syscalls   system calls per request, by name, for spacegate, nginx
                    and HAProxy in turn (`perf stat` on syscall tracepoints):
                    on loopback most of a proxy's CPU time is in the kernel,
                    so this is the first number to compare.
Prints the top functions by self cost (or the syscall table), and keeps the
raw data in --out for `perf report -i` or `callgrind_annotate`. Needs
linux-perf or valgrind (scripts/setup.sh installs both).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_harness  # noqa: E402  (the harness's origin, configs and wrk runner)


class CallgrindSpacegate(load_harness.SpacegateTarget):
    """spacegate started under callgrind; it writes its profile when it exits."""

    out_file = None

    def argv(self):
        return ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + self.out_file,
                "--dump-instr=no", "--collect-jumps=no"] + super().argv()

    def start(self):
        self.process = load_harness.ManagedProcess(self.name, self.argv(), self.directory)
        if not load_harness.wait_for_port(self.port, self.process.process, timeout=60):
            tail = self.process.log_tail()
            self.stop()
            raise load_harness.HarnessError("spacegate under valgrind did not start:\n" + tail)


SYSCALLS = ("read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg",
            "sendfile64", "splice", "epoll_ctl", "epoll_wait", "epoll_pwait", "accept4",
            "connect", "socket", "close", "shutdown", "setsockopt", "getsockopt", "getpeername",
            "getsockname", "ioctl", "fcntl", "clock_gettime", "brk", "mmap", "munmap")


def count_syscalls(options, scenario, workdir, out):
    events = ",".join(["syscalls:sys_enter_" + name for name in SYSCALLS] +
                      ["raw_syscalls:sys_enter"])
    origin = load_harness.Origin(workdir)
    try:
        for name in ("spacegate", "nginx", "haproxy"):
            target = load_harness.TARGETS[name](options, origin.port, workdir)
            target.start()
            try:
                load_harness.probe(target, scenario)
                stat_file = os.path.join(out, "syscalls-%s.txt" % name)
                counter = subprocess.Popen(
                    ["perf", "stat", "-x,", "-e", events, "-o", stat_file,
                     "-p", ",".join(str(pid) for pid in target.pids())])
                time.sleep(0.3)
                report = load_harness.run_wrk(target.port, scenario, options, options.duration)
                counter.send_signal(2)
                counter.wait(timeout=60)
            finally:
                target.stop()
            requests = max(report["requests"], 1)
            counts = {}
            with open(stat_file) as text:
                for line in text:
                    fields = line.strip().split(",")
                    if len(fields) > 2 and fields[0].isdigit():
                        event = fields[2].split(":")[-1].replace("sys_enter_", "")
                        counts["all" if event == "sys_enter" else event] = int(fields[0])
            total = counts.pop("all", 0)
            detail = "  ".join("%s %.2f" % (event, count / requests) for event, count in
                               sorted(counts.items(), key=lambda item: -item[1])
                               if count / requests >= 0.01)
            print("%-9s %7.0f req/s  syscalls per request %6.2f: %s" % (
                name, requests / (report["duration_us"] / 1e6), total / requests, detail))
    finally:
        origin.stop()
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spacegate", default=os.path.join(load_harness.REPO_DIR, "build",
                                                            "proxy", "spacegate"))
    parser.add_argument("--tool", choices=("perf", "callgrind", "syscalls"), default="perf")
    parser.add_argument("--scenario", default="keepalive-small",
                        choices=list(load_harness.SCENARIOS))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=25, help="functions to print (25)")
    parser.add_argument("--out", help="folder for the raw profile (default: a temp folder)")
    options = parser.parse_args(argv)
    options.spacegate = os.path.abspath(options.spacegate)
    options.threads = 1
    out = os.path.abspath(options.out or tempfile.mkdtemp(prefix="spacegate-profile-"))
    os.makedirs(out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="spacegate-profile-run-")
    os.chmod(workdir, 0o755)
    scenario = load_harness.SCENARIOS[options.scenario]
    if options.tool == "syscalls":
        return count_syscalls(options, scenario, workdir, out)

    origin = load_harness.Origin(workdir)
    try:
        if options.tool == "callgrind":
            CallgrindSpacegate.out_file = os.path.join(out, "callgrind.out")
            target = CallgrindSpacegate(options, origin.port, workdir)
        else:
            target = load_harness.SpacegateTarget(options, origin.port, workdir)
        target.start()
        try:
            load_harness.probe(target, scenario)
            recorder = None
            if options.tool == "perf":
                recorder = subprocess.Popen(
                    ["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g",
                     "-p", str(target.process.process.pid),
                     "-o", os.path.join(out, "perf.data")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            report = load_harness.run_wrk(target.port, scenario, options, options.duration)
            if recorder:
                recorder.send_signal(2)  # SIGINT: perf writes its data and exits
                recorder.wait(timeout=60)
            print("load: %d requests in %.1f s (%.0f req/s), errors %d" % (
                report["requests"], report["duration_us"] / 1e6,
                report["requests"] / (report["duration_us"] / 1e6),
                sum(report[key] for key in ("connect_errors", "read_errors", "write_errors",
                                            "status_errors", "timeouts"))))
        finally:
            target.stop()
    finally:
        origin.stop()

    if options.tool == "perf":
        data = os.path.join(out, "perf.data")
        for sort in ("dso", "symbol"):
            print("\n== perf report --no-children --sort %s (top %d) ==" % (sort, options.top))
            text = subprocess.run(
                ["perf", "report", "-i", data, "--no-children", "--sort", sort, "--stdio",
                 "-g", "none", "--percent-limit", "0.3"],
                capture_output=True, text=True).stdout
            rows = [line for line in text.splitlines() if line.strip() and
                    not line.startswith("#")]
            print("\n".join(rows[:options.top]))
        print("\nraw: perf report -i %s" % data)
    else:
        data = os.path.join(out, "callgrind.out")
        text = subprocess.run(["callgrind_annotate", "--inclusive=no", data],
                              capture_output=True, text=True).stdout
        lines = text.splitlines()
        print("\n".join(lines[:options.top + 20]))
        print("\nraw: callgrind_annotate %s" % data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
