#!/bin/sh
# PostgreSQL for the sandbox: a superuser for the agent (runbook) and a plain role for the app.
set -eu
PGDATA=/var/lib/sandbox-pg
mkdir -p /var/run/postgresql && chown postgres /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres "$PGDATA"
  printf '%s\n' "${AGENT_PASSWORD:?AGENT_PASSWORD is required}" > /tmp/pw && chown postgres /tmp/pw
  runuser -u postgres -- initdb -D "$PGDATA" -E UTF8 --locale=C -U runbook --pwfile=/tmp/pw --auth=scram-sha-256 >/dev/null
  rm -f /tmp/pw
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
max_connections = ${MAX_CONNECTIONS:-30}
superuser_reserved_connections = 3
CONF
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  runuser -u postgres -- postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD:-app-sandbox}';
CREATE DATABASE app OWNER app;
SQL
fi
exec runuser -u postgres -- postgres -D "$PGDATA"
