"""`make demo`: the sandbox up, a real fault, the runbook diagnosing it (dry run beside it), fixing and
verifying it, the audit trail of that run, the incident it opened and resolved with the messages the team's
chat got (a local receiver), and the post-mortem draft."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sandbox import faults, stack

RUNBOOK = [sys.executable, "-m", "agent"]


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
    finished = [json.loads(line) for line in audit.read_text().splitlines() if '"event":"run_finished"' in line]
    return str(finished[-1]["run_id"])


class ChatReceiver:
    """A local stand-in for the team's chat: takes the Slack-style webhook posts the agent sends."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        texts = self.texts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                texts.append(json.loads(body).get("text", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/chat"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> int:
    dc = stack.client()
    state = Path(tempfile.mkdtemp(prefix="runbook-demo-"))
    chat = ChatReceiver()
    policy = state / "policy.yaml"
    policy.write_text(
        "channels:\n"
        f"  team-chat: {{type: slack, url: '{chat.url}'}}\n"
        "notify: [team-chat]\n"
        "escalation:\n"
        "  - {name: On-Call Engineer, notify: [team-chat], until: acknowledged}\n"
    )
    env = {
        **os.environ,
        **stack.AGENT_ENV,
        "RUNBOOK_STATE_DIR": str(state),
        "RUNBOOK_POLICY": str(policy),
        "NO_COLOR": "1",
    }
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

    banner("7. The incident the runs opened and resolved, and what the team's chat was told")
    runbook("incident", "list", "--status", "all", env=env)
    runbook("incident", "show", "1", env=env)
    for number, text in enumerate(chat.texts, 1):
        print(f"--- message {number} to team-chat ---\n{text}")

    banner("8. The post-mortem draft (Markdown and an SVG timeline), from the incident and the audit log")
    draft = state / "INC-1-postmortem.md"
    runbook("postmortem", "1", "-o", str(draft), env=env)
    print("\n".join(draft.read_text().splitlines()[:24]) + "\n...")
    print(f"\naudit log, state and the post-mortem kept in {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
