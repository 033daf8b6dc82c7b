#!/usr/bin/env bash
# Build the sandbox's base image without any image registry: debootstrap a minimal
# Debian with PostgreSQL, Redis and Python, then `docker import` it. Cached by tag.
set -euo pipefail
IMAGE=${1:-runbook-sandbox-base:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE present"; exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
# The mirror this machine's apt already uses (no other host is reachable).
MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | grep -oE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' | head -n1 | awk '{print $2}' || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/runbook-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR (about a minute)"
debootstrap --variant=minbase \
  --include=python3,python3-redis,python3-psycopg2,postgresql,redis-server,procps \
  bookworm "$ROOTFS" "$MIRROR" >/tmp/runbook-debootstrap.log 2>&1 \
  || { tail -n 20 /tmp/runbook-debootstrap.log; exit 1; }
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
