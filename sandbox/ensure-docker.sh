#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock: install Debian's docker.io if missing
# and start dockerd in the background (CI machines start with nothing running).
set -euo pipefail
if docker_ok() { python3 - <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
try:
    s.connect("/var/run/docker.sock"); s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    sys.exit(0 if b"OK" in s.recv(1024) else 1)
except OSError:
    sys.exit(1)
PY
}; docker_ok; then echo "docker engine running"; exit 0; fi
if ! command -v dockerd >/dev/null; then
  echo "installing docker.io and debootstrap (Debian packages)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
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
