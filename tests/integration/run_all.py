#!/usr/bin/python3
"""Run every *_test.py in this folder, each in its own process (they all
start their own gateway, origin and ports), and print a summary.

  /usr/bin/python3 tests/integration/run_all.py [NAME_test.py ...]

Exit status is non-zero if any file fails or times out. Environment:
SPACEGATE_BINARY (gateway binary), SPACEGATE_KEEP_TMP (keep temp dirs),
SPACEGATE_TEST_TIMEOUT (seconds per file, default 180)."""

import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    files = argv or sorted(os.path.basename(p) for p in glob.glob(os.path.join(HERE, "*_test.py")))
    limit = float(os.environ.get("SPACEGATE_TEST_TIMEOUT", "180"))
    results = []
    for name in files:
        path = name if os.path.isabs(name) else os.path.join(HERE, name)
        start = time.monotonic()
        try:
            proc = subprocess.run(["/usr/bin/python3", path], capture_output=True,
                                  text=True, timeout=limit)
            status = "PASS" if proc.returncode == 0 else "FAIL"
            output = proc.stdout + proc.stderr
            tail_line = (output.strip().splitlines() or [""])[-1]
            if status == "PASS" and "skipped" in tail_line:
                status = "SKIP"
        except subprocess.TimeoutExpired as e:
            status = "TIMEOUT"
            output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            output += (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        took = time.monotonic() - start
        last = [l for l in output.strip().splitlines() if l.strip()][-1:] or [""]
        results.append((name, status, took, last[0]))
        print("%-28s %-7s %6.1fs  %s" % (name, status, took, last[0]), flush=True)
        if status not in ("PASS", "SKIP"):
            sys.stdout.write(output[-20000:] + "\n")
    failed = [r for r in results if r[1] not in ("PASS", "SKIP")]
    skipped = [r for r in results if r[1] == "SKIP"]
    print("\n%d files: %d passed, %d with skips, %d failed"
          % (len(results), len(results) - len(failed) - len(skipped), len(skipped), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
