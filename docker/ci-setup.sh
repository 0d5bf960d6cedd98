#!/usr/bin/env bash
# Make this machine able to build and run docker/Dockerfile without a Docker daemon or a registry
# (tests/images.py calls it; idempotent, so a second call costs ~1 s):
#   podman + runc (rootful), netavark + aardvark-dns (compose services find each other by name: the CNI
#   backend of Debian 12's podman has no DNS), iptables (netavark's firewall: without it no container on
#   a network starts, "netavark: No such file or directory"), a containers.conf for this machine's limits,
#   cgroup layout and network backend, and a local base image `localhost/trainlab-base:bookworm` (Debian 12
#   minbase + Python 3.11) made by debootstrap.
set -euo pipefail

BASE=localhost/trainlab-base:bookworm

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null \
    || ! [ -x /usr/lib/podman/netavark ] || ! [ -x /usr/lib/podman/aardvark-dns ] || ! [ -x /usr/sbin/iptables ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        podman runc debootstrap uidmap fuse-overlayfs netavark aardvark-dns iptables >/dev/null
fi

# podman's defaults ask for more open files than this machine allows; crun fails on its hybrid cgroups.
conf=/etc/containers/containers.conf
if ! grep -qs 'network_backend = "netavark"' "$conf"; then
    mkdir -p /etc/containers
    cat > "$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
fi

if ! podman image exists "$BASE"; then
    # The mirror apt already uses here (deb822 or one-line sources).
    mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | grep -E '/debian/?$' | head -n1 || true)
    rootfs=$(mktemp -d /tmp/trainlab-rootfs.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null 2>&1 \
        || { tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi
echo "$BASE"
