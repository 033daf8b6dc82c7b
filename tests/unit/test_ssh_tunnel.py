"""The ssh:// forwards' private directory (the forwards themselves are tested against a real sshd in
tests/integration/test_remote_engine.py)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent import ssh_tunnel


def test_two_first_forwards_at_once_share_one_locked_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two ssh:// engines used for the first time together: one directory, whose lock stays held (an
    # unlocked one is swept by the next agent on the host, live sockets and all).
    monkeypatch.setattr(ssh_tunnel, "_state", {"atexit": True})
    real_sweep = ssh_tunnel._sweep
    monkeypatch.setattr(ssh_tunnel, "_sweep", lambda: (time.sleep(0.1), real_sweep())[1])
    start = threading.Barrier(2)

    def first_use() -> Path:
        start.wait()
        return ssh_tunnel._directory()

    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: first_use(), range(2)))
    try:
        assert made[0] == made[1]
        held = ssh_tunnel._state["held"]
        assert isinstance(held, int) and os.fstat(held)  # still open: the directory is still ours
        real_sweep()  # what another agent's start-up does
        assert made[0].is_dir()
    finally:
        for directory in set(made):
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(ssh_tunnel._state.get("held"), int):
            os.close(ssh_tunnel._state["held"])  # type: ignore[arg-type]
