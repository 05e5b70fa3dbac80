#!/usr/bin/env bash
# Installs every Debian package that building, testing, benchmarking and
# fuzzing Spacegate needs. Idempotent: when everything is present it prints
# nothing and exits 0. Works as root on a fresh Debian 12 (uses sudo otherwise).
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config make
  libuv1-dev node-llhttp libnghttp2-dev android-libboringssl-dev libc-ares-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libsqlite3-dev
  libyaml-cpp-dev libcli11-dev
  # fuzzing and sanitizers
  clang libclang-rt-14-dev
  # peers, load tools and test clients
  nginx haproxy h2o wrk nghttp2-client curl python3 python3-websockets python3-h2 python3-cryptography
  procps iproute2 clang-format
  # runner and agent: machines (namespaces, bridge), Git, the IDEs
  util-linux git python3-notebook openssh-server openssh-client
  # headless browser for the IDE-in-a-browser test
  chromium
  # profiling (perf/profile_spacegate.py)
  linux-perf valgrind
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo_prefix=()
[[ $(id -u) -eq 0 ]] || sudo_prefix=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_prefix[@]}" apt-get update -qq
"${sudo_prefix[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx, haproxy and h2o as services when installed (where an init
# system runs); the tests start their own instances, so stop the system ones.
# (The host's own sshd is left alone: Gitspace machines run theirs in their
# own network namespaces.)
for service in nginx haproxy h2o; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    "${sudo_prefix[@]}" systemctl stop "$service" || true
    "${sudo_prefix[@]}" systemctl disable "$service" >/dev/null 2>&1 || true
  fi
done
echo "setup: done" >&2
