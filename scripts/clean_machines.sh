#!/usr/bin/env bash
# Removes every Spacegate machine from this host, whoever made it: agents and
# their launchers, network namespaces sg-m-*, veth ends sgv*, pool bridges
# sg-*, and control groups spacegate/m-*. For developers' machines after
# interrupted test runs (runners normally clean up after themselves through
# their databases). Needs root.
set -u
pkill -KILL -f 'spacegate-agent --config' 2>/dev/null
sleep 0.2
for namespace in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sg-m-'); do
  ip netns del "$namespace"
done
for link in $(ls /sys/class/net); do
  case "$link" in
    sgv*) ip link del "$link" 2>/dev/null ;;
    sg-*) [[ -d /sys/class/net/$link/bridge ]] && ip link del "$link" 2>/dev/null ;;
  esac
done
for group in /sys/fs/cgroup/*/spacegate/m-* /sys/fs/cgroup/spacegate/m-*; do
  [[ -d "$group" ]] || continue
  for pid in $(cat "$group/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  rmdir "$group" 2>/dev/null
done
echo "clean_machines: namespaces left: $(ip netns list 2>/dev/null | grep -c '^sg-m-')"
