#!/usr/bin/env bash
# The guide's "Database Connection Failed" investigation typed by hand, as a script: the peer that a cold
# `runbook run db-connection` is measured against. Each line is what an engineer would type.
# Needs DATABASE_URL (the sandbox's) and the docker CLI; prints what the engineer would read.
set -u
docker ps --filter label=com.docker.compose.service=app --format '{{.Names}} {{.Status}}'
docker logs --since 2m sandbox-app-1 2>&1 | grep -c "Database connection error"
psql "$DATABASE_URL" -Atc "SELECT 1"
psql "$DATABASE_URL" -Atc "SELECT count(*), current_setting('max_connections') FROM pg_stat_activity"
psql "$DATABASE_URL" -Atc "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
exit 0
