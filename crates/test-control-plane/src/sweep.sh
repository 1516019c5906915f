#!/usr/bin/env bash
# Removes what a real-node test cluster (crates/test-control-plane/src/cluster.rs) set up on this machine, from the records
# in DIR/sweep.env: its node processes, containers and shims, mounts, cgroups, loopback addresses, routes, bridges
# and DIR itself. `sweep.sh DIR kill` only ends processes. Idempotent: the cluster's teardown runs it, and so does
# `make e2e` (hack/e2e.sh) after a test process that died before its teardown.
set -u
dir=${1:?usage: sweep.sh DIR [kill]}
phase=${2:-all}
[ -f "$dir/sweep.env" ] || exit 0
CGROUP_ROOTS="" ADDRESSES="" ROUTES="" BRIDGES=""
# shellcheck disable=SC1091
. "$dir/sweep.env"

# The node's own processes (their command lines name DIR) and the runc shims of its containerd.
for proc in /proc/[0-9]*; do
  pid=${proc#/proc/}
  comm=$(cat "$proc/comm" 2>/dev/null) || continue
  case "$comm" in
    kubelet | containerd | containerd-shim* | kube-controller | kube-scheduler) ;;
    *) continue ;;
  esac
  cmdline=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
  case "$cmdline" in *"$dir/"* | *"$dir "*) kill -KILL "$pid" 2>/dev/null ;; esac
done
# Containers and sandboxes: everything in the nodes' cgroup trees (each kubelet has its own cgroup root).
kill_cgroups() {
  for root in $CGROUP_ROOTS; do
    for hierarchy in /sys/fs/cgroup/*; do
      [ -d "$hierarchy/$root" ] || continue
      find "$hierarchy/$root" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
  done | sort -u | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
}
kill_cgroups
[ "$phase" = kill ] && exit 0

# Mounts under DIR (kubelet bind-mounts its root onto itself; volumes are tmpfs), deepest first.
for _ in 1 2 3; do
  mounts=$(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
  [ -z "$mounts" ] && break
  for m in $mounts; do umount -l "$m" 2>/dev/null; done
done
# Cgroups, deepest first; a just-killed process may take a moment to leave its cgroup.
for _ in $(seq 50); do
  left=0
  for root in $CGROUP_ROOTS; do
    for hierarchy in /sys/fs/cgroup/*; do
      [ -d "$hierarchy/$root" ] || continue
      find "$hierarchy/$root" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$hierarchy/$root" ] && left=1
    done
  done
  [ $left = 0 ] && break
  kill_cgroups # a process forked meanwhile
  sleep 0.2
done
for address in $ADDRESSES; do ip addr del "$address" dev lo 2>/dev/null; done
for route in $ROUTES; do ip route del unreachable "$route" 2>/dev/null; done
for bridge in $BRIDGES; do ip link del "$bridge" 2>/dev/null; done
rm -rf --one-file-system "$dir"
exit 0
