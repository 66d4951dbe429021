#!/usr/bin/env bash
# Build the Python + PyTorch (CPU) image the container tests and benchmarks run, with no
# registry: a Debian minbase rootfs + python3 + Debian's CPU torch (python3-torch 1.13), imported
# into every running engine (Docker, Podman). A no-op for an engine that already has the tag.
# PyPI's torch 2.13.0 is its CUDA build (several GB of CUDA libraries): Debian's is small.
#   scripts/build-test-image.sh [TAG]
set -euo pipefail

tag=${1:-localhost/prefect-kubeflow-test:debian12-torch1.13}
cache=${PK_IMAGE_CACHE:-/var/cache/prefect-kubeflow}
tarball="$cache/$(echo "$tag" | tr '/:' '__').tar"

# The engines as scripts/start-container-engines.sh starts them, whatever DOCKER_HOST says.
docker() { command docker -H unix:///var/run/docker.sock "$@"; }
engines=()
docker info >/dev/null 2>&1 && engines+=(docker)
podman info >/dev/null 2>&1 && engines+=(podman)
((${#engines[@]})) || { echo "no container engine is running (scripts/start-container-engines.sh)" >&2; exit 1; }

missing=()
for engine in "${engines[@]}"; do
  "$engine" image inspect "$tag" >/dev/null 2>&1 || missing+=("$engine")
done
((${#missing[@]})) || { echo "$tag: present in ${engines[*]}"; exit 0; }

if [[ ! -s "$tarball" ]]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /var/tmp/pk-rootfs.XXXXXX)
  cleanup() {
    # Unmount whatever is still mounted inside (deepest first), then never cross into a mount.
    findmnt -rno TARGET | grep "^$rootfs/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$rootfs"
  }
  trap cleanup EXIT
  echo "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  mount -t proc proc "$rootfs/proc"
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  # A clean environment: this machine's PIP_*/SSL_* variables name host paths.
  in_root() { chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
  echo "installing python3 and python3-torch into the image"
  in_root DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3 python3-pip python3-venv python3-torch python3-numpy >/dev/null
  # torch 1.13 on Python 3.11: `torch.distributed.run` reads its --redirects/--tee default "0"
  # as None (iterating a Flag no longer yields 0) and crashes; parse the number directly.
  std_api="$rootfs/usr/lib/python3/dist-packages/torch/distributed/elastic/multiprocessing/api.py"
  sed -i 's/^            v = int(v)$/            return Std(int(v))/' "$std_api"
  grep -q '^            return Std(int(v))$' "$std_api" || { echo "torch.distributed.run patch did not apply" >&2; exit 1; }
  umount "$rootfs/proc"
  rm -f "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs/var/lib/apt/lists"/* "$rootfs/var/cache/apt"/*
  mkdir -p "$cache"
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

for engine in "${missing[@]}"; do
  echo "importing $tag into $engine"
  if [[ $engine == docker ]]; then
    docker import -c 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
  else
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
  fi
  "$engine" run --rm "$tag" python3 -c \
    'import torch, torch.distributed as d; assert d.is_gloo_available(); print("torch", torch.__version__)'
  "$engine" run --rm "$tag" python3 -m torch.distributed.run --nproc_per_node 1 --no_python true
done
