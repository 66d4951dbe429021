#!/usr/bin/env bash
# Install (from Debian) and start Docker Engine and Podman with its Docker-compatible socket, as
# ../shared/MACHINE.md describes for these machines. Idempotent: skips what is already there.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io tini)
command -v podman >/dev/null || need+=(podman runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

hard=$(ulimit -Hn)
# Root may not raise a hard rlimit here: containers get the limits the VM hands down, and
# Podman's nofile must be symmetric (its Docker API swaps soft and hard otherwise).
mkdir -p /etc/containers
conf=$(printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' "$hard" "$hard")
if [[ ! -f /etc/containers/containers.conf ]] || [[ "$(cat /etc/containers/containers.conf)" != "$conf" ]]; then
  printf '%s\n' "$conf" >/etc/containers/containers.conf
fi

wait_until() { # seconds, what, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "$what did not become ready" >&2; return 1; }
    sleep 0.5
  done
}

if ! docker -H unix:///var/run/docker.sock info >/dev/null 2>&1; then
  echo "starting dockerd"
  setsid dockerd --host unix:///var/run/docker.sock \
    --default-ulimit "nofile=1024:$hard" --default-ulimit nproc=4096:4096 \
    >/tmp/dockerd.log 2>&1 </dev/null &
  wait_until 60 dockerd docker -H unix:///var/run/docker.sock info
fi

if ! curl -sf --unix-socket /run/podman/podman.sock http://d/_ping >/dev/null 2>&1; then
  echo "starting podman system service"
  mkdir -p /run/podman
  setsid podman system service --time=0 unix:///run/podman/podman.sock \
    >/tmp/podman.log 2>&1 </dev/null &
  wait_until 60 "podman system service" curl -sf --unix-socket /run/podman/podman.sock http://d/_ping
fi
echo "docker and podman are up"
