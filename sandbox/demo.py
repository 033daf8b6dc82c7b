"""`make demo`: the sandbox up, a real fault, the runbook diagnosing it (dry run beside it), fixing and
verifying it, and the audit trail of that run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox import faults, stack

RUNBOOK = [sys.executable, "-m", "agent.cli"]


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def runbook(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    print("$ runbook " + " ".join(args), flush=True)
    result = subprocess.run([*RUNBOOK, *args], env=env, text=True, capture_output=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    print(f"(exit code {result.returncode})", flush=True)
    return result


def last_run_id(audit: Path) -> str:
    lines = audit.read_text().splitlines()
    return str(json.loads(lines[-1])["run_id"])


def main() -> int:
    dc = stack.client()
    state = Path(tempfile.mkdtemp(prefix="runbook-demo-"))
    env = {**os.environ, **stack.AGENT_ENV, "RUNBOOK_STATE_DIR": str(state), "NO_COLOR": "1"}
    banner("1. The sandbox is healthy: app-down reports OK")
    runbook("run", "app-down", env=env)

    banner("2. Fault: the app is killed (SIGKILL, exit code 137)")
    faults.kill_app(dc)
    print("$ docker kill --signal KILL sandbox-app-1")

    banner("3. Dry run (staging mode): every check, the exact plan, nothing changed")
    runbook("run", "app-down", "--dry-run", env=env)

    banner("4. Live: the runbook diagnoses, restarts the app within policy, and verifies the fix")
    runbook("run", "app-down", env=env)
    run_id = last_run_id(state / "audit.jsonl")

    banner("5. The audit trail of that run, and the hash chain verified")
    runbook("audit", "show", "--run", run_id, env=env)
    runbook("audit", "verify", env=env)

    banner("6. Limits, locks and breakers in force")
    runbook("status", env=env)
    print(f"\naudit log and state kept in {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
