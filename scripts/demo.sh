#!/usr/bin/env bash
# `make demo`: the gateway on 127.0.0.1:8080 with sample routes to a sample
# origin (Python's http.server, which shares no code with the gateway), both
# in the foreground. Ctrl-C stops everything this script started.
set -euo pipefail
build_dir=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
gateway="$root/$build_dir/proxy/spacegate"
listen_port=${DEMO_PORT:-8080}
origin_port=${DEMO_ORIGIN_PORT:-8081}
work=$(mktemp -d /tmp/spacegate-demo.XXXXXX)

cat >"$work/index.html" <<HTML
<!doctype html><title>Gitspace gs-demo</title>
<h1>Hello from the Gitspace gs-demo</h1>
<p>This page came from the sample origin through the Spacegate gateway.</p>
HTML
cat >"$work/spacegate.yaml" <<YAML
listen: 127.0.0.1:$listen_port
access_log: stdout
routes:
  # The IDE of Gitspace gs-demo at its own host name...
  - id: gs-demo-ide
    host: gs-demo.gitspaces.localhost
    upstream: 127.0.0.1:$origin_port
    access: public
  # ...and the path form, for places without wildcard DNS.
  - id: gs-demo-path
    host: 127.0.0.1
    path_prefix: /gs/gs-demo
    strip_prefix: true
    upstream: 127.0.0.1:$origin_port
    access: public
YAML

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup INT TERM EXIT

/usr/bin/python3 -m http.server "$origin_port" --bind 127.0.0.1 --directory "$work" \
  >"$work/origin.log" 2>&1 &
pids+=($!)
"$gateway" --config "$work/spacegate.yaml" &
pids+=($!)

for _ in $(seq 50); do
  if curl -s -o /dev/null "http://127.0.0.1:$listen_port/" 2>/dev/null; then break; fi
  sleep 0.1
done
cat <<TEXT

Spacegate is running on 127.0.0.1:$listen_port (config: $work/spacegate.yaml).
Try:
  curl -H 'Host: gs-demo.gitspaces.localhost' http://127.0.0.1:$listen_port/index.html
  curl http://127.0.0.1:$listen_port/gs/gs-demo/index.html
Ctrl-C stops the gateway and the sample origin.

TEXT
wait -n "${pids[@]}"
