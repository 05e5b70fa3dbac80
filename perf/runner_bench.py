#!/usr/bin/env python3
"""Runner benchmarks (real machines, real agents; needs root for namespaces):

  warm     POST /v1/machines → machine ready, taking a warm machine (median of N)
  cold     the same with an empty pool (the machine is made and booted)
  ide      PUT /v1/gitspace → Jupyter answering (clone, devcontainer, IDE start)
  memory   memory per warm machine (cgroup usage and RSS of its processes)
  fifty    a pool of 50: time to fill it, memory in all, runner CPU while idle

Medians and spreads, never single runs: the machine is shared and noisy.
Writes its table into docs/perf.md between its own markers.

    sudo python3 perf/runner_bench.py [--runs 10] [--skip ide,fifty]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import TokenKey, wait_until  # noqa: E402
import runner_harness  # noqa: E402
from runner_harness import Runner, http_json, make_repository  # noqa: E402

BEGIN = "<!-- BEGIN runner results: written by perf/runner_bench.py -->"
END = "<!-- END runner results -->"


def pool(name, subnet, minimum, maximum, port_base=20000):
    return {"name": name, "min": minimum, "max": maximum,
            "process": {"subnet": subnet, "sandbox": "namespaces", "memory": 2048,
                        "max_processes": 1024, "port_base": port_base}}


def ready_time(runner, pool_name, gitspace_id):
    started = time.monotonic()
    status, machine = runner.api("POST", "/v1/machines",
                                 {"pool": pool_name, "gitspace_id": gitspace_id})
    assert status == 201, machine
    # Polled every 5 ms: the figure is the runner's, not the poll's.
    deadline = started + 60
    while time.monotonic() < deadline:
        current = runner.machine(machine["id"])
        if current and current["ready"]:
            return time.monotonic() - started, current
        time.sleep(0.005)
    raise AssertionError("machine %s not ready in 60 s" % machine["id"])


def summary(values, unit="ms", scale=1000.0):
    values = sorted(v * scale for v in values)
    return "%.1f %s (min %.1f, max %.1f, n=%d)" % (statistics.median(values), unit, values[0],
                                                    values[-1], len(values))


def machine_memory(state_dir, pool_name, machine_id):
    """(cgroup memory usage, summed RSS) in MiB."""
    usage = None
    for path in ("/sys/fs/cgroup/memory/spacegate/%s/memory.usage_in_bytes" % machine_id,
                 "/sys/fs/cgroup/spacegate/%s/memory.current" % machine_id):
        if os.path.exists(path):
            with open(path) as f:
                usage = int(f.read()) / 1048576.0
    folder = os.path.join(state_dir, "pools", pool_name, "machines", machine_id)
    rss = 0
    for pid in runner_harness.processes_mentioning(folder):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return usage, rss / 1024.0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip", default="")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    reason = runner_harness.namespaces_reason()
    if reason:
        print("runner_bench: %s" % reason, file=sys.stderr)
        return 2
    keys = TokenKey(tempfile.mkdtemp(prefix="sg-bench-keys-"), "bench")
    rows = []

    runner = Runner([pool("warm", "10.214.1.0/24", 1, 4), pool("cold", "10.214.2.0/24", 0, 4, 43000)],
                    keys_file=keys.pub_path).start()
    try:
        warm, cold = [], []
        for index in range(args.runs):
            runner.wait_pool("warm", lambda p: p["warm"] == 1 and p["provisioning"] == 0, 60)
            seconds, machine = ready_time(runner, "warm", "gs-warm-%d" % index)
            warm.append(seconds)
            runner.api("DELETE", "/v1/machines/" + machine["id"])
            seconds, machine = ready_time(runner, "cold", "gs-cold-%d" % index)
            cold.append(seconds)
            runner.api("DELETE", "/v1/machines/" + machine["id"])
            wait_until(lambda: len(runner.machines()) <= 1, 60)
        rows.append(("machine ready, warm (POST → ready)", summary(warm)))
        rows.append(("machine ready, cold (POST → ready)", summary(cold)))
        print(rows[-2], rows[-1], file=sys.stderr)

        if "ide" not in skip:
            repository = make_repository(tempfile.mkdtemp(prefix="sg-bench-repo-"), {
                ".devcontainer/devcontainer.json": '{"postCreateCommand": "true"}',
                "notebook.py": "print(1)\n"})
            ide = []
            for index in range(args.runs):
                runner.wait_pool("warm", lambda p: p["warm"] == 1, 60)
                _, machine = ready_time(runner, "warm", "gs-ide-%d" % index)
                token = keys.sign("bench", "gs-ide-%d" % index, scopes=("agent",), ttl="10m")
                address, port = machine["address"], machine["agent_port"]
                started = time.monotonic()
                status, body = http_json(address, port, "PUT", "/v1/gitspace",
                                         {"repository": repository, "ide": "jupyter"}, token)
                assert status in (200, 202), body

                def running():
                    _, state = http_json(address, port, "GET", "/v1/gitspace", token=token)
                    assert state["state"] != "error", state
                    return state["state"] == "running"
                assert wait_until(running, 120, interval=0.02)
                ide.append(time.monotonic() - started)
                runner.api("DELETE", "/v1/machines/" + machine["id"])
            rows.append(("Gitspace set up, Jupyter answering (PUT → running)",
                         summary(ide, "s", 1.0)))
            print(rows[-1], file=sys.stderr)

        if "memory" not in skip:
            runner.wait_pool("warm", lambda p: p["warm"] == 1, 60)
            warm_machine = [m for m in runner.machines() if m["state"] == "warm"][0]
            time.sleep(1)
            usage, rss = machine_memory(runner.state_dir, "warm", warm_machine["id"])
            rows.append(("memory per warm machine (cgroup usage / RSS)",
                         "%s MiB / %.1f MiB" % ("%.1f" % usage if usage is not None else "n/a",
                                                rss)))
            print(rows[-1], file=sys.stderr)
    finally:
        runner.clean_up()

    if "fifty" not in skip:
        runner = Runner([pool("fifty", "10.214.3.0/24", 50, 50)], keys_file=keys.pub_path,
                        extra={"health_interval": "1s"})
        started = time.monotonic()
        runner.start()
        try:
            runner.wait_pool("fifty", lambda p: p["warm"] == 50, 300, "50 warm")
            fill = time.monotonic() - started
            time.sleep(2)
            total_usage, total_rss = 0.0, 0.0
            for machine in runner.machines():
                usage, rss = machine_memory(runner.state_dir, "fifty", machine["id"])
                total_usage += usage or 0
                total_rss += rss
            before = cpu_seconds(runner.process.pid)
            time.sleep(10)
            idle_cpu = (cpu_seconds(runner.process.pid) - before) / 10 * 100
            rows.append(("50 machines: time to fill the pool", "%.1f s" % fill))
            rows.append(("50 machines: memory in all (cgroup usage / RSS)",
                         "%.0f MiB / %.0f MiB" % (total_usage, total_rss)))
            rows.append(("50 machines: runner CPU while idle (1 s health checks)",
                         "%.1f %% of a core" % idle_cpu))
            print(rows[-3:], file=sys.stderr)
        finally:
            # min is 50: deleting would only refill. clean_up restarts the
            # runner with min 0 first.
            runner.clean_up()

    table = ["| measure | result |", "| --- | --- |"]
    table += ["| %s | %s |" % row for row in rows]
    text = "\n".join(table)
    print(text)
    if not args.no_write:
        path = os.path.join(HERE, "..", "docs", "perf.md")
        with open(path) as f:
            document = f.read()
        block = "%s\n%s\n\nRun: %s, %d runs each.\n%s" % (BEGIN, text, time.strftime("%Y-%m-%d"),
                                                       args.runs, END)
        if BEGIN in document:
            document = document.split(BEGIN)[0] + block + document.split(END, 1)[1]
        else:
            document += "\n## Runner\n\n`make perf-runner` (perf/runner_bench.py).\n\n" + block + "\n"
        with open(path, "w") as f:
            f.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
