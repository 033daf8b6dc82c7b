"""`make demo`: the sandbox up, a real fault, the runbook diagnosing it, and the audit trail of that run."""

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


def runbook(*args: str, env: dict[str, str], quiet: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*RUNBOOK, *args], env=env, text=True, capture_output=True)
    if quiet:
        return result
    print("$ runbook " + " ".join(args), flush=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    print(f"(exit code {result.returncode})", flush=True)
    return result


def main() -> int:
    dc = stack.client()
    state = Path(tempfile.mkdtemp(prefix="runbook-demo-"))
    env = {**os.environ, **stack.AGENT_ENV, "RUNBOOK_STATE_DIR": str(state), "NO_COLOR": "1"}
    banner("1. The sandbox is healthy: app-down reports OK")
    runbook("run", "app-down", env=env)

    banner("2. Fault: the app is killed (SIGKILL, exit code 137)")
    faults.kill_app(dc)
    print("$ docker kill --signal KILL sandbox-app-1")

    banner("3. The runbook diagnoses it")
    result = runbook("run", "app-down", "--json", env=env, quiet=True)
    run_id = json.loads(result.stdout)["run_id"]
    runbook("run", "app-down", env=env)

    banner("4. The audit trail of that run, and the chain verified")
    runbook("audit", "show", "--run", run_id, env=env)
    runbook("audit", "verify", env=env)

    banner("5. Back to healthy (the sandbox restarts the app)")
    stack.up(dc)
    runbook("run", "app-down", env=env)
    print(f"\naudit log kept in {state}/audit.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
