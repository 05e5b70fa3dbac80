#!/usr/bin/env bash
# `make demo`: the whole of Spacegate on one machine, in the foreground.
# The control plane (127.0.0.1:7600), the gateway (127.0.0.1:8080), the
# runner (127.0.0.1:7700, pool `default`: 1 warm machine, at most 4) and the
# delegate, then one Gitspace from a sample repository made here, started
# through `spacegatectl gitspace create --wait`, and the URL to open.
#
# State lives in /var/lib/spacegate-demo (DEMO_STATE_DIR), so a second
# `make demo` finds the same Gitspace and starts it again. Logs go to
# logs/ there. Ctrl-C stops the Gitspace (its disk is kept), then every
# component. `scripts/demo.sh BUILD_DIR --clean` removes the machines and
# the state folder.
#
# Run as root: machines get namespaces (docs/runner.md). Without root, set
# DEMO_STATE_DIR to a folder of your own; machines are then plain processes.
set -euo pipefail

build_dir=${1:-build}
mode=${2:-run}
case $mode in
  run | --clean) ;;
  *)
    echo "usage: scripts/demo.sh [BUILD_DIR [--clean]]" >&2
    exit 2
    ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
case $build_dir in
  /*) bin=$build_dir ;;
  *) bin=$root/$build_dir ;;
esac
control_bin=$bin/control/server/spacegate-control
delegate_bin=$bin/delegate/spacegate-delegate
gateway_bin=$bin/proxy/spacegate
runner_bin=$bin/runner/spacegate-runner
ctl=$bin/control/cli/spacegatectl
code_server=/opt/spacegate/code-server/bin/code-server

control_port=${DEMO_CONTROL_PORT:-7600}
gateway_port=${DEMO_PORT:-8080}
runner_port=${DEMO_RUNNER_PORT:-7700}
domain=${DEMO_DOMAIN:-gitspaces.localhost}
control_url=http://127.0.0.1:$control_port
runner_url=http://127.0.0.1:$runner_port

say() { printf '%s\n' "$*"; }
fail() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

if [[ $(id -u) -ne 0 && -z ${DEMO_STATE_DIR:-} ]]; then
  fail "run as root (sudo make demo): machines get namespaces and the state lives in" \
    "/var/lib/spacegate-demo. Or set DEMO_STATE_DIR to a folder of yours (machines are then" \
    "plain processes)."
fi
state=${DEMO_STATE_DIR:-/var/lib/spacegate-demo}
logs=$state/logs
control_state=$state/control
admin_token=$control_state/admin.token
gateway_socket=$state/gateway/control.sock
repository=$state/repos/sample.git

for binary in "$control_bin" "$delegate_bin" "$gateway_bin" "$runner_bin" "$ctl"; do
  [[ -x $binary ]] || fail "$binary is missing: build first (make build, or make demo)"
done
for tool in curl git /usr/bin/python3; do
  command -v "$tool" >/dev/null || fail "$tool is needed (scripts/setup.sh installs it)"
done

# -- processes -------------------------------------------------------------

# Each component runs in a session of its own, so the terminal's Ctrl-C
# reaches only this script, which then stops the Gitspace and the
# components in order (they must still be up for the stop).
pids=()
names=()
gitspace_id=
stop_gitspace=false
cleanup() {
  trap - INT TERM EXIT
  set +e
  if $stop_gitspace && [[ -n $gitspace_id ]] &&
    [[ $("$ctl" gitspace get "$gitspace_id" 2>/dev/null | json_get 'd["state"]') == running ]]; then
    say "Stopping the Gitspace $gitspace_id (its disk is kept for the next make demo)..."
    if ! "$ctl" gitspace stop "$gitspace_id" --wait --timeout 90s >>"$logs/demo.log" 2>&1; then
      say "  it did not stop cleanly (see $logs/demo.log); the next make demo picks it up"
    fi
  fi
  # In reverse order, each gone before the next: the delegate finishes its
  # calls while the control plane and the gateway still answer.
  local i deadline
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${pids[i]}" 2>/dev/null || kill -TERM "${pids[i]}" 2>/dev/null
    deadline=$((SECONDS + 25))
    while kill -0 "${pids[i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "${pids[i]}" 2>/dev/null; then
      say "  ${names[i]} did not stop within 25 s: killed"
      kill -KILL -- "-${pids[i]}" 2>/dev/null || kill -KILL "${pids[i]}" 2>/dev/null
    fi
  done
  wait 2>/dev/null
  if [[ ${#pids[@]} -gt 0 && $mode != --clean ]]; then
    say "Stopped. State and logs are in $state."
    if [[ " ${names[*]} " == *" runner "* ]]; then
      say "The pool's warm machine (an idle agent) waits for the next make demo;"
      say "scripts/demo.sh $build_dir --clean removes it, and everything else."
    fi
  fi
}
trap cleanup EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# start NAME LOG COMMAND...: runs COMMAND in its own session, output to LOG.
start() {
  local name=$1 log=$2
  shift 2
  printf '\n--- %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  pids+=($!)
  names+=("$name")
}

# ready NAME LOG SECONDS CHECK...: waits until CHECK succeeds; fails naming
# the component and its log when it exits or takes longer.
ready() {
  local name=$1 log=$2 limit=$3
  shift 3
  local pid=${pids[-1]}
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      printf 'demo: the %s exited while starting; the end of %s:\n' "$name" "$log" >&2
      tail -n 15 "$log" | sed 's/^/  /' >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      printf 'demo: the %s is not ready after %d s; the end of %s:\n' "$name" "$limit" "$log" >&2
      tail -n 15 "$log" | sed 's/^/  /' >&2
      exit 1
    fi
    sleep 0.2
  done
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A JSON field from stdin: json_get EXPRESSION (Python, over `d`).
json_get() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print('"$1"')'; }

api() {  # api METHOD PATH [BODY]: the control plane's API with the admin token
  curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $(cat "$admin_token")" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "$control_url$2"
}

# -- --clean: machines, then the state folder --------------------------------

if [[ $mode == --clean ]]; then
  [[ -f $state/runner.yaml ]] || {
    rm -rf "$state"
    say "Removed $state."
    exit 0
  }
  port_taken "$runner_port" && fail "port $runner_port is taken: stop the running demo first"
  # The runner alone, with no warm machines wanted, destroys every machine.
  sed -e 's/^    min: .*/    min: 0/' "$state/runner.yaml" >"$state/runner-clean.yaml"
  start runner "$logs/runner.log" "$runner_bin" --config "$state/runner-clean.yaml"
  ready runner "$logs/runner.log" 60 curl -sf "$runner_url/healthz"
  for machine in $(curl -sf "$runner_url/v1/machines" |
    json_get '" ".join(m["id"] for m in (d["machines"] if isinstance(d, dict) else d))'); do
    curl -sf -X DELETE "$runner_url/v1/machines/$machine" >/dev/null || true
  done
  deadline=$((SECONDS + 120))
  until [[ $(curl -sf "$runner_url/v1/machines" |
    json_get 'len(d["machines"] if isinstance(d, dict) else d)') == 0 ]]; do
    ((SECONDS < deadline)) || fail "machines are still there after 120 s; see $logs/runner.log"
    sleep 0.5
  done
  cleanup
  rm -rf "$state"
  # The runner keeps its pool's bridge; with no machine left it can go.
  [[ $(id -u) -ne 0 ]] || ip link del sg-demo 2>/dev/null || true
  say "Removed the demo's machines and $state."
  exit 0
fi

for port in "$control_port" "$gateway_port" "$runner_port"; do
  if port_taken "$port"; then
    fail "127.0.0.1:$port is taken (is another make demo running? ss -ltnp 'sport = :$port')"
  fi
done

# Folders: machines' disks live under runner/, and a Gitspace's user (not
# root) must be able to reach them, so the top folder is 0711, not 0700.
mkdir -p "$state"
chmod 0711 "$state"
mkdir -p "$logs" "$state/gateway" "$state/runner" "$state/delegate" "$state/repos"
chmod 0700 "$logs" "$state/gateway" "$state/delegate"
chmod 0755 "$state/repos"

say "Spacegate demo: state in $state, logs in $logs"

# -- the control plane ----------------------------------------------------------

start "control plane" "$logs/control.log" "$control_bin" --listen "127.0.0.1:$control_port" \
  --state-dir "$control_state"
ready "control plane" "$logs/control.log" 20 test -s "$admin_token"
ready "control plane" "$logs/control.log" 20 curl -sf "$control_url/healthz"
say "  control plane  $control_url"

# -- the gateway, trusting the control plane's signing key -------------------------

auth_section=$("$control_bin" --state-dir "$control_state" export-gateway-config) ||
  fail "spacegate-control export-gateway-config failed"
cat >"$state/gateway/spacegate.yaml" <<YAML
# Written by scripts/demo.sh. Routes come from the control plane, through
# the delegate, over the control socket.
listen: 127.0.0.1:$gateway_port
access_log: $logs/gateway-access.log
state_dir: $state/gateway
control:
  socket: $gateway_socket
$auth_section
YAML
start gateway "$logs/gateway.log" "$gateway_bin" --config "$state/gateway/spacegate.yaml"
ready gateway "$logs/gateway.log" 20 curl -sf --unix-socket "$gateway_socket" http://gw/healthz
say "  gateway        http://127.0.0.1:$gateway_port (control socket $gateway_socket)"

# -- the runner ----------------------------------------------------------------------

code_server_line=
ide=jupyter
if [[ -x $code_server ]]; then
  code_server_line="code_server: $code_server"
  ide=vscode-web
fi
cat >"$state/runner.yaml" <<YAML
# Written by scripts/demo.sh.
listen: 127.0.0.1:$runner_port
state_dir: $state/runner
control_plane_keys: $control_state/signing.pub
$code_server_line
pools:
  - name: default
    driver: process
    min: 1
    max: 4
    process:
      bridge: sg-demo              # not the runner's default: a real runner may use it
      subnet: 10.213.250.0/24
      port_base: 21000
YAML
start runner "$logs/runner.log" "$runner_bin" --config "$state/runner.yaml"
ready runner "$logs/runner.log" 30 curl -sf "$runner_url/healthz"
isolation=$(curl -sf "$runner_url/v1/pools" |
  json_get '[p for p in (d["pools"] if isinstance(d, dict) else d) if p.get("name") == "default"][0].get("isolation", "?")' ||
  echo "?")
say "  runner         $runner_url (pool default: 1 warm machine, at most 4; $isolation)"

# -- the delegate ----------------------------------------------------------------------

cat >"$state/delegate/delegate.yaml" <<YAML
# Written by scripts/demo.sh.
name: demo
control_url: $control_url
token_file: $control_state/delegate.token
selectors: [default]
state_file: $state/delegate/state.json
runner: {url: $runner_url}
gateways:
  - name: local
    control_socket: $gateway_socket
    data_url: http://127.0.0.1:$gateway_port
YAML
start delegate "$logs/delegate.log" "$delegate_bin" --config "$state/delegate/delegate.yaml"
# Ready once the control plane has a healthy gateway from it: only then are
# start tasks handed out.
gateway_reported() {
  api GET /api/v1/gateways |
    json_get 'any(g.get("healthy") for g in (d.get("gateways", []) if isinstance(d, dict) else d))' |
    grep -qx True
}
ready delegate "$logs/delegate.log" 45 gateway_reported
say "  delegate       connected (gateway local reported healthy)"

# -- an infra config, a sample repository ------------------------------------------------

if [[ $(api GET /api/v1/infra | json_get 'len(d["infra"])') == 0 ]]; then
  api POST /api/v1/infra "{\"name\":\"local\",\"gateway_domain\":\"$domain\",\"url_scheme\":\"http\",\"gateway_port\":$gateway_port,\"runner_pool\":\"default\",\"delegate_selector\":\"default\"}" \
    >>"$logs/demo.log" || fail "could not create the infra config (see $logs/control.log)"
fi
say "  infra          $(api GET /api/v1/infra |
  json_get '"%s: *.%s:%s" % (d["infra"][0]["name"], d["infra"][0]["gateway_domain"], d["infra"][0]["gateway_port"])')"

if [[ ! -d $repository ]]; then
  work=$(mktemp -d)
  mkdir -p "$work/.devcontainer"
  cat >"$work/README.md" <<'TEXT'
# Spacegate sample

A Gitspace made by `make demo`. `hello.py` and `hello.ipynb` are here to run;
`.devcontainer/devcontainer.json` says what to do after the clone.
TEXT
  cat >"$work/hello.py" <<'TEXT'
"""Run me: python3 hello.py"""
import platform

print("Hello from a Spacegate Gitspace on", platform.node())
TEXT
  cat >"$work/hello.ipynb" <<'TEXT'
{
 "cells": [
  {"cell_type": "markdown", "metadata": {}, "source": ["# Hello from a Gitspace"]},
  {"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [],
   "source": ["import platform\n", "print('Hello from', platform.node())"]}
 ],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
 "nbformat": 4,
 "nbformat_minor": 5
}
TEXT
  cat >"$work/.devcontainer/devcontainer.json" <<'TEXT'
// The agent reads this after the clone (JSON with comments).
{
  "name": "Spacegate sample",
  "containerEnv": {"GREETING": "hello"},
  "postCreateCommand": "python3 hello.py > .hello-output.txt && echo set up: $(cat .hello-output.txt)"
}
TEXT
  (
    cd "$work"
    export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@spacegate.invalid
    export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@spacegate.invalid
    git init -q -b main . && git add -A && git commit -q -m "Sample Gitspace"
    git clone -q --bare . "$repository"
  ) || fail "could not make the sample repository $repository"
  rm -rf "$work"
  chmod -R a+rX "$repository"
fi
say "  repository     $repository"

# -- the Gitspace ---------------------------------------------------------------------------

export SPACEGATE_CONTROL_URL=$control_url
export SPACEGATE_CONTROL_TOKEN_FILE=$admin_token
# The first Gitspace that is not deleted: "id state".
existing=$("$ctl" gitspace list --json |
  json_get '" ".join(next(([g["id"], g["state"]] for g in d["gitspaces"] if g["state"] != "deleted"), []))') ||
  fail "spacegatectl gitspace list failed (see $logs/control.log)"
say ""
stop_gitspace=true
if [[ -z $existing ]]; then
  say "Creating a Gitspace ($ide) from the sample repository:"
  output=$("$ctl" gitspace create --repo "$repository" --name sample --ide "$ide" --wait \
    --timeout 10m) || fail "the Gitspace did not start (spacegatectl gitspace logs; $logs/)"
  gitspace_id=$(sed -n 's/^\(gs-[0-9a-f]*\) is running$/\1/p' <<<"$output")
else
  read -r gitspace_id gitspace_state <<<"$existing"
  case $gitspace_state in
    running) say "The Gitspace $gitspace_id is running." ;;
    stopped | error)
      say "Starting the Gitspace $gitspace_id (it was $gitspace_state):"
      "$ctl" gitspace start "$gitspace_id" --wait --timeout 10m >/dev/null ||
        fail "the Gitspace did not start (spacegatectl gitspace logs $gitspace_id; $logs/)"
      ;;
    stopping)
      say "Waiting for the Gitspace $gitspace_id to stop, then starting it:"
      "$ctl" gitspace wait "$gitspace_id" --for stopped --timeout 5m >/dev/null ||
        fail "the Gitspace did not stop (spacegatectl gitspace logs $gitspace_id; $logs/)"
      "$ctl" gitspace start "$gitspace_id" --wait --timeout 10m >/dev/null ||
        fail "the Gitspace did not start (spacegatectl gitspace logs $gitspace_id; $logs/)"
      ;;
    *)
      say "Waiting for the Gitspace $gitspace_id ($gitspace_state):"
      "$ctl" gitspace wait "$gitspace_id" --timeout 10m >/dev/null ||
        fail "the Gitspace did not start (spacegatectl gitspace logs $gitspace_id; $logs/)"
      ;;
  esac
fi
[[ -n $gitspace_id ]] || fail "no Gitspace id in spacegatectl's output"
host_url=$("$ctl" gitspace open "$gitspace_id") || fail "spacegatectl gitspace open failed"
path_url=$("$ctl" gitspace open "$gitspace_id" --path) || fail "spacegatectl gitspace open failed"

cat <<TEXT

Open the Gitspace $gitspace_id in a browser (the link carries an access token,
exchanged for a cookie on the first visit):
  $path_url
  $host_url
*.localhost names resolve to 127.0.0.1 in Chromium, Firefox and curl; for other
browsers add "127.0.0.1 $domain $gitspace_id.$domain" to /etc/hosts.

The admin's API token is $admin_token. Try:
  export SPACEGATE_CONTROL_TOKEN_FILE=$admin_token
  alias spacegatectl=$ctl
  spacegatectl gitspace list
  spacegatectl gitspace logs $gitspace_id
  spacegatectl gitspace stop $gitspace_id --wait
  spacegatectl gitspace start $gitspace_id --wait
  spacegatectl --socket $gateway_socket routes list

Ctrl-C stops the Gitspace (its disk is kept) and everything else;
scripts/demo.sh $build_dir --clean removes the machines and $state.

TEXT

# Until Ctrl-C, or until a component exits on its own.
set +e
wait -n "${pids[@]}"
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[i]}" 2>/dev/null; then
    printf 'demo: the %s exited; the end of its log:\n' "${names[i]}" >&2
    case ${names[i]} in
      "control plane") log=$logs/control.log ;;
      *) log=$logs/${names[i]}.log ;;
    esac
    tail -n 15 "$log" | sed 's/^/  /' >&2
  fi
done
exit 1
