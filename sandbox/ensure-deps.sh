#!/usr/bin/env bash
# What the tests and the demo need on the host, from Debian's packages: the PostgreSQL client tools
# (pg_dump/psql, for postgres.restore), debootstrap (to build the sandbox's base image), the real
# Prometheus Alertmanager with amtool (end-to-end alert delivery tests), Icinga 2's binary (its own
# performance-data parser checks `runbook run --nagios`; no Icinga daemon is run), systemd-analyze (to
# verify the shipped unit), and a Docker
# engine answering on /var/run/docker.sock (docker.io, dockerd started in the background: CI starts
# with nothing running).
set -euo pipefail

apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -q >/dev/null; APT_UPDATED=1; }
  echo "installing $* (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

docker_ok() {
  python3 - <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
try:
    s.connect("/var/run/docker.sock")
    s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    sys.exit(0 if b"OK" in s.recv(1024) else 1)
except OSError:
    sys.exit(1)
PY
}

missing=()
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null || missing+=(systemd)  # `systemd-analyze verify` of deploy/runbook.service
# A static busybox: the one image of the tests' second Docker engine (tests/integration/remote_engine.py).
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v ip >/dev/null || missing+=(iproute2)  # that engine's own bridge
# An sshd on 127.0.0.1 in front of that engine, for ssh:// engines (tests/integration/ssh_server.py), and
# setpriv, with which the agent's ssh forwards die with it.
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null || missing+=(openssh-server openssh-client)
command -v setpriv >/dev/null || missing+=(util-linux)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
# The binary alone: what it recommends would install and start Icinga's services.
command -v icinga2 >/dev/null || apt_install --no-install-recommends icinga2-bin
# The browser the console's test drives (tests/integration/test_console.py): Debian's, not a download;
# without what it recommends (a desktop's services).
command -v chromium >/dev/null || apt_install --no-install-recommends chromium fonts-dejavu-core

if docker_ok; then echo "docker engine running"; exit 0; fi
echo "starting dockerd"
rm -f /var/run/docker.pid
nohup dockerd >/var/log/runbook-dockerd.log 2>&1 &
for _ in $(seq 60); do
  if docker_ok; then echo "docker engine running"; exit 0; fi
  sleep 1
done
echo "dockerd did not start; last lines of /var/log/runbook-dockerd.log:" >&2
tail -n 20 /var/log/runbook-dockerd.log >&2
exit 1
