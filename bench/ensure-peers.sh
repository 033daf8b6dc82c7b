#!/usr/bin/env bash
# What the benchmark's peers need: the guide's by-hand tools (psql from postgresql-client, redis-cli from
# redis-tools, the docker CLI from docker.io) and Ansible (ansible-core, in its own virtualenv so that
# its dependencies never mix with the agent's).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v wrk >/dev/null || missing+=(wrk)  # the intake figure's sender
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

venv="${ANSIBLE_VENV:-.venv-ansible}"
if [ ! -x "$venv/bin/ansible-playbook" ]; then
  echo "installing ansible-core into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'ansible-core>=2.16,<3'
fi
