"""The serial floor for a warm diagnosis: db-connection's probes one after another in a warm Python process,
each with a fresh connection (what a check must see), no concurrency. Prints the median of ROUNDS in ms.

Usage: python -m bench.serial_probes ROUNDS   (DATABASE_URL and APP_URL from the environment)
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
import urllib.request

import docker
import psycopg

ERRORS = re.compile(r"Database connection error")
FIVE_HUNDRED = re.compile(r'" 5\d\d ')


def probes(dsn: str, app_url: str) -> None:
    engine = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto", timeout=4)
    try:
        container = engine.containers.list(all=True, filters={"label": "com.docker.compose.service=app"})[0]
        logs = container.logs(since=int(time.time()) - 120).decode(errors="replace")
        sum(1 for _ in ERRORS.finditer(logs))
        for sql in (
            "SELECT 1",
            "SELECT count(*), current_setting('max_connections') FROM pg_stat_activity",
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'",
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND now() - query_start > interval '5 min'",
        ):
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute(sql).fetchall()
        with urllib.request.urlopen(app_url + "/health", timeout=4) as response:  # noqa: S310 - the sandbox's
            response.read()
        logs = container.logs(since=int(time.time()) - 120).decode(errors="replace")
        sum(1 for _ in FIVE_HUNDRED.finditer(logs))
    finally:
        engine.close()


def main() -> None:
    rounds = int(sys.argv[1])
    dsn, app_url = os.environ["DATABASE_URL"], os.environ["APP_URL"]
    probes(dsn, app_url)  # warm: imports, first connections
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        probes(dsn, app_url)
        times.append((time.perf_counter() - start) * 1000)
    print(statistics.median(times))


if __name__ == "__main__":
    main()
