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


def test_a_directory_replaced_meanwhile_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Removed by a /tmp cleaner, its name (in ssh's command line) taken by someone else: a directory
    # that is not a real private one of this user is never used again; a new one is made.
    monkeypatch.setattr(ssh_tunnel, "_state", {"atexit": True})
    first = ssh_tunnel._directory()
    made = [first]
    try:
        for replace in ("link", "open"):
            shutil.rmtree(made[-1])
            if replace == "link":
                elsewhere = tmp_path / "theirs"
                elsewhere.mkdir(mode=0o700)
                os.symlink(elsewhere, made[-1])
            else:
                os.mkdir(made[-1], 0o700)
                os.chmod(made[-1], 0o777)  # theirs, or not private any more
            again = ssh_tunnel._directory()
            assert again != made[-1] and not again.is_symlink() and (os.stat(again).st_mode & 0o077) == 0
            if made[-1].is_symlink():
                made[-1].unlink()
            else:
                shutil.rmtree(made[-1], ignore_errors=True)
            made.append(again)
    finally:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(ssh_tunnel._state.get("held"), int):
            os.close(ssh_tunnel._state["held"])  # type: ignore[arg-type]
