"""`make bench`: runbook against its peers, alternately in one run on this machine; medians and ratios.

Each figure runs `runbook` and its peer in turns (never all of one then all of the other), so a noisy
neighbour or a warming cache touches both alike. Prints a table and writes bench/results.json.

Usage: python -m bench.run [--rounds N] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import leftovers
from bench.scale import scale
from sandbox import stack

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RUNBOOK = [str(Path(sys.executable).parent / "runbook")]  # the installed command, as people run it
ANSIBLE = Path(os.environ.get("ANSIBLE_VENV", REPO / ".venv-ansible")) / "bin" / "ansible-playbook"
TOKEN = "bench-intake-token"  # noqa: S105 - the bench daemon's, on 127.0.0.1 only
CAP = 20.0  # how long a by-hand command is left hanging before it is counted as "at least this"


def environment(state_dir: Path) -> dict[str, str]:
    # The agent's own settings are the bench's to give; the bench's mark (what it starts) is kept.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k == leftovers.MARK}
    env.update(stack.AGENT_ENV)
    env.update(RUNBOOK_STATE_DIR=str(state_dir), RUNBOOK_API_TOKEN=TOKEN, ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def timed(argv: list[str], env: dict[str, str], *, cap: float = 120.0) -> float:
    """Wall time of one process in ms (`cap` seconds at most: then the cap, marked by the caller). A timer
    kills it at the cap; the wait itself blocks (subprocess's wait with a timeout polls, adding up to
    tens of milliseconds to every figure)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killer = threading.Timer(cap, process.kill)
    killer.start()
    try:
        process.wait()
    finally:
        killer.cancel()
    elapsed = (time.perf_counter() - start) * 1000
    return cap * 1000 if elapsed >= cap * 1000 else elapsed


def alternate(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Medians (ms) of each case, run in turns after one warm-up each."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for func in cases.values():
        func()
    for _ in range(rounds):
        for name, func in cases.items():
            samples[name].append(func())
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# --- cold CLI ---------------------------------------------------------------------------------------


def cold_cli(env: dict[str, str], rounds: int, daemon: Daemon | None) -> list[dict[str, Any]]:
    alone = {**env, "RUNBOOK_NO_DAEMON": "1"}  # the command does everything itself
    cases: dict[str, Callable[[], float]] = {
        "runbook": lambda: timed([*RUNBOOK, "run", "db-connection", "--dry-run"], alone),
        "by hand": lambda: timed(["bash", str(BENCH / "by_hand.sh")], env),
    }
    if daemon is not None:  # the same command, handed to the local daemon over its socket
        cases["runbook via daemon"] = lambda: timed([*RUNBOOK, "run", "db-connection", "--dry-run"], env)
    if ANSIBLE.exists():
        inventory = "localhost,"
        cases["ansible-playbook"] = lambda: timed([str(ANSIBLE), "-i", inventory, str(BENCH / "playbook.yml")], env)
    m = alternate(cases, rounds)
    peer = "by-hand script (5 of its 7 probes)"
    rows = [row("cold `runbook run db-connection` (7 checks)", m["runbook"], peer, m["by hand"])]
    if daemon is not None:
        # Counted, not assumed: a daemon that declined would have measured the cold path again.
        handed = _handed(daemon)
        assert handed >= rounds, f"only {handed} runs were handed to the daemon"
        via = m["runbook via daemon"]
        rows.append(row("the same, handed to a local daemon", via, peer, m["by hand"], handed=handed))
    if "ansible-playbook" in m:
        rows.append(row("cold `runbook run db-connection`", m["runbook"], "ansible-playbook", m["ansible-playbook"]))
        if daemon is not None:
            rows.append(
                row(
                    "the same, handed to a local daemon",
                    m["runbook via daemon"],
                    "ansible-playbook",
                    m["ansible-playbook"],
                )
            )
    helps = alternate(
        {
            "help": lambda: timed([*RUNBOOK, "--help"], env),
            "click": lambda: timed([sys.executable, "-c", "import click"], env),
        },
        rounds * 2,
    )
    rows.append(row("`runbook --help`", helps["help"], "python -c 'import click'", helps["click"]))
    return rows


def _handed(daemon: Daemon) -> int:
    with contextlib.closing(sqlite3.connect(daemon.state_dir / "state.sqlite3")) as db:
        query = "SELECT count(*) FROM runs WHERE runbook = 'db-connection' AND pid = ?"
        return int(db.execute(query, (daemon.proc.pid,)).fetchone()[0])


def row(what: str, ours: float, peer: str, theirs: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "what": what,
        "runbook_ms": round(ours, 1),
        "peer": peer,
        "peer_ms": None if theirs is None else round(theirs, 1),
        "ratio": None if not theirs else round(ours / theirs, 2),
        **extra,
    }


# --- the daemon --------------------------------------------------------------------------------------


class Daemon:
    def __init__(self, env: dict[str, str], state_dir: Path, *extra: str) -> None:
        with contextlib.closing(__import__("socket").socket()) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.state_dir = state_dir
        argv = [*RUNBOOK, "daemon", "--port", str(self.port), "--dry-run", *extra]
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.request("GET", "/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("bench: the daemon did not start")

    def request(self, method: str, path: str, body: Any = None, conn: http.client.HTTPConnection | None = None) -> Any:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def warm_daemon(env: dict[str, str], rounds: int) -> list[dict[str, Any]]:
    """Alert -> finished db-connection diagnosis, one alert at a time, from the daemon's own timestamps."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        daemon = Daemon({**env, "RUNBOOK_STATE_DIR": str(state)}, state, "--dedup-window", "0")
        try:
            for i in range(rounds + 3):
                status, _ = daemon.request("POST", "/v1/alerts", {"name": "PostgresDown", "labels": {"n": str(i)}})
                assert status == 202, status
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _unfinished(state):
                    time.sleep(0.005)
        finally:
            daemon.stop()
        with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db:
            latencies = [
                (finished - received) * 1000
                for finished, received in db.execute(
                    "SELECT r.finished, a.received FROM runs r JOIN alerts a ON a.run_id = r.run_id"
                    " WHERE r.finished IS NOT NULL AND a.disposition = 'run_started' ORDER BY r.created"
                )
            ][3:]
    floor = subprocess.run(
        [sys.executable, "-m", "bench.serial_probes", str(rounds)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    serial = float(floor.stdout.strip())
    return [
        row(
            "warm daemon: alert -> finished db-connection diagnosis, p50",
            statistics.median(latencies),
            "same probes, serial, warm process",
            serial,
            p90_ms=round(percentile(latencies, 90), 1),
        )
    ]


def _unfinished(state: Path) -> bool:
    with contextlib.closing(sqlite3.connect(state / "state.sqlite3", timeout=5)) as db:
        (count,) = db.execute("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')").fetchone()
    return bool(count)


# --- time to verdict ---------------------------------------------------------------------------------


@contextlib.contextmanager
def warm_executor(env: dict[str, str]) -> Iterator[Callable[[str], float]]:
    """A warm process's executor (dry run, nothing recorded but the audit): the daemon's path to a verdict."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from agent.audit import AuditLog
        from agent.config import load_settings
        from agent.executor import Executor
        from agent.loader import load_runbooks
        from agent.redaction import Redactor

        settings = load_settings(None)
        redactor = Redactor()
        runbooks = load_runbooks([REPO / "runbooks"], template_env=settings.template_env)
        audit = AuditLog(settings.audit_path, redactor)
        executor = Executor(runbooks, settings, redactor, audit, dry_run=True)

        def verdict(runbook_id: str) -> float:
            start = time.perf_counter()
            executor.run(runbook_id, dry_run=True, actor="bench")
            elapsed = (time.perf_counter() - start) * 1000
            # The verdict against the longest timeout of the runbook's checks: a hung target may hold the
            # verdict that long, no longer (the executor reports a check cut at its deadline as taking
            # exactly its timeout, so the run's wall time is the measure).
            longest = max(step.timeout for step in runbooks.runbooks[runbook_id].spec.checks)
            verdict.over_ms = elapsed - longest * 1000  # type: ignore[attr-defined]
            return elapsed

        yield verdict
    finally:
        os.environ.clear()
        os.environ.update(saved)


def verdicts(env: dict[str, str], rounds: int) -> list[dict[str, Any]]:
    rows = []
    with warm_executor(env) as verdict:
        ids = sorted(p.stem for p in (REPO / "runbooks").glob("*.yaml"))
        medians = alternate({i: (lambda i=i: verdict(i)) for i in ids}, rounds)  # type: ignore[misc]
        for runbook_id in ids:
            rows.append(row(f"healthy `{runbook_id}`, warm, dry run", medians[runbook_id], "target", 300.0))
        rows.extend(hung(env, verdict))
    return rows


def hung(env: dict[str, str], verdict: Callable[[str], float]) -> list[dict[str, Any]]:
    """One dependency paused: the verdict against the by-hand command's own behaviour (capped at CAP)."""
    rows = []
    cases = [
        ("db", "db-connection", ["psql", env["DATABASE_URL"], "-Atc", "SELECT 1"], "psql -c 'SELECT 1' (defaults)"),
    ]
    if shutil.which("redis-cli"):
        cases.append(("redis", "email-queue", ["redis-cli", "-u", env["REDIS_URL"], "PING"], "redis-cli PING"))
    for service, runbook_id, argv, peer in cases:
        name = stack.container_name(service)
        subprocess.run(["docker", "pause", name], check=True, capture_output=True)
        try:
            ours = verdict(runbook_id)
            over = verdict.over_ms  # type: ignore[attr-defined]
            theirs = timed(argv, env, cap=CAP)
        finally:
            subprocess.run(["docker", "unpause", name], check=True, capture_output=True)
        rows.append(
            row(
                f"`{runbook_id}` with {service} paused (hung)",
                ours,
                peer + (f", killed at {CAP:g} s" if theirs >= CAP * 1000 else ""),
                theirs,
                verdict_past_longest_check_timeout_ms=round(over, 1),
                target_past_timeout_ms=500,
            )
        )
    return rows


# --- intake -----------------------------------------------------------------------------------------


def _wrk(daemon: Daemon, connections: int, seconds: int) -> dict[str, Any]:
    """Single-alert deliveries over `connections` keep-alive connections for `seconds` (bench/intake.lua)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(BENCH / "intake.lua")]
    done = subprocess.run(
        [*argv, f"http://127.0.0.1:{daemon.port}", "--", TOKEN],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    sent: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert sent["non_2xx"] == 0 and sent["socket_errors"] == 0, sent
    return sent


def intake(env: dict[str, str], seconds: int, clients: int = 8) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        daemon = Daemon(
            {**env, "RUNBOOK_STATE_DIR": str(state)}, state, "--alert-rate", "100000", "--alert-burst", "1000000"
        )
        try:
            time.sleep(10)  # idle: after its start-up sweep (host-resources) has run
            idle_kb = daemon.rss_kb()
            # The sender is wrk (C, one thread): Python client threads took most of a core of the two, and
            # measured themselves as much as the daemon. 8 connections (the target's), then 32: each batch
            # commit costs about as much as a few requests, so more senders at once share it more.
            sent = {n: _wrk(daemon, n, seconds) for n in (clients, 32)}
            with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db:
                (noise,) = db.execute("SELECT count(*) FROM alerts WHERE name = 'BenchNoise'").fetchone()
            # Each was answered only once recorded: every answered alert is there (and those in flight).
            answered = sum(s["requests"] for s in sent.values())
            assert noise >= answered, (noise, sent)

            group = {
                "version": "4",
                "status": "firing",
                "receiver": "runbook",
                "alerts": [
                    {"status": "firing", "labels": {"alertname": "BenchStorm", "n": str(i)}} for i in range(10_000)
                ],
            }
            start = time.perf_counter()
            status, _ = daemon.request("POST", "/v1/alerts/alertmanager", group)
            group_ms = (time.perf_counter() - start) * 1000
            assert status == 202, status

            for batch in range(10):
                group["alerts"] = [
                    {"status": "firing", "labels": {"alertname": "BenchFlood", "b": str(batch), "n": str(i)}}
                    for i in range(10_000)
                ]
                status, _ = daemon.request("POST", "/v1/alerts/alertmanager", group)
                assert status == 202, status
            time.sleep(3)  # the daemon returns a storm's leftovers to the system a second after it
            after_kb = daemon.rss_kb()
            with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db:
                (recorded,) = db.execute("SELECT count(*) FROM alerts").fetchone()
        finally:
            daemon.stop()
    return [
        *(
            row(
                f"intake: single-alert webhooks, {n} keep-alive connections (wrk), p99",
                s["p99_us"] / 1000,
                "target p99 (ms)",
                50.0,
                alerts_per_s=round(s["requests"] / (s["duration_us"] / 1e6)),
                target_alerts_per_s=2000,
                answered=s["requests"],
                sender_rate_limit="raised for the bench (default 500/s per sender)",
                p50_ms=round(s["p50_us"] / 1000, 1),
            )
            for n, s in sent.items()
        ),
        row("intake: one 10,000-alert Alertmanager group, answered", group_ms, "target", 1000.0),
        row(
            "daemon RSS idle (MB)",
            idle_kb / 1024,
            "target",
            80.0,
            after_alerts=recorded,
            rss_after_mb=round(after_kb / 1024, 1),
            growth_mb=round((after_kb - idle_kb) / 1024, 1),
        ),
    ]


# --- main --------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| what (ms unless it says) | runbook | peer or target | its figure | ratio |", "|---|---:|---|---:|---:|"]
    for r in rows:
        peer_ms = "" if r["peer_ms"] is None else f"{r['peer_ms']:,.1f}"
        extra = {k: v for k, v in r.items() if k not in ("what", "runbook_ms", "peer", "peer_ms", "ratio")}
        note = (" (" + ", ".join(f"{k} {v}" for k, v in extra.items()) + ")") if extra else ""
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['what']}{note} | {r['runbook_ms']:,.1f} | {r['peer']} | {peer_ms} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="Few rounds: to try the harness, not to quote.")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    # Bytecode, as an installed package has it (pip compiles at install time): an editable checkout in an
    # environment with PYTHONDONTWRITEBYTECODE would otherwise compile every module on every cold start.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *(str(REPO / d) for d in ("agent", "checks", "remediations"))],
        check=True,
    )
    stack.up()
    before = leftovers.take(_container_names)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        os.chmod(state, 0o700)
        env = environment(state)
        rows: list[dict[str, Any]] = []
        local = Daemon(env, state)  # the local daemon a `runbook run` may hand its run to
        try:
            rows += cold_cli(env, rounds, local)
        finally:
            local.stop()
        rows += warm_daemon(env, rounds * 4)
        rows += verdicts(env, rounds)
        rows += intake(env, seconds=3 if args.quick else 10)
        rows += scale(max(3, rounds // 3))
    # The hung figures made the app log errors: leave the sandbox as the tests expect it (a fresh app).
    client = stack.client()
    with contextlib.suppress(Exception):
        client.containers.get(stack.container_name("app")).remove(force=True)
    stack.up(client)
    client.close()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "rounds": rounds,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"\n{result['machine']}; medians of {rounds} rounds; written to {args.out}")
    # Measured, not assumed: a run that leaked a daemon, a peer's process or a container fails.
    if left := leftovers.wait_for_none(before, _container_names):
        print("\nbench: the run left behind:\n  " + "\n  ".join(left), file=sys.stderr)
        raise SystemExit(1)
    print("left behind: nothing (containers, processes, threads, temporary state)")


def _container_names() -> list[str]:
    client = stack.client()
    try:
        return [c.name for c in client.containers.list(all=True, ignore_removed=True)]
    finally:
        client.close()


if __name__ == "__main__":
    main()
