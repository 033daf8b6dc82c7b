"""`make bench` fails when it leaves something behind: each kind of leftover is seen, and what was there
before (or is the container runtime's) is not."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import leftovers


def test_nothing_new_is_nothing_left() -> None:
    before = leftovers.take(lambda: ["sandbox-app-1"])
    assert leftovers.strays(before, leftovers.take(lambda: ["sandbox-app-1"])) == []


def test_a_child_process_still_running_is_left() -> None:
    before = leftovers.take()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        found = leftovers.strays(before, leftovers.take())
        assert any(line.startswith(f"process {child.pid}:") for line in found), found
    finally:
        child.kill()
        child.wait()
    assert not any(f"process {child.pid}:" in line for line in leftovers.strays(before, leftovers.take()))


def test_an_orphan_of_a_killed_peer_is_left() -> None:
    """A peer killed at its cap (bash) leaves its child (psql) running, reparented to init or whichever
    subreaper: still the bench's, by the mark it inherited."""
    before = leftovers.take()
    # The shell starts a sleeper in the background and exits: the sleeper is orphaned.
    out = subprocess.run(
        ["bash", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(out.stdout.strip())
    try:
        found = leftovers.strays(before, leftovers.take())
        assert any(line.startswith(f"process {orphan}:") for line in found), found
    finally:
        subprocess.run(["kill", "-9", str(orphan)], check=False)


def test_a_thread_left_running_is_left() -> None:
    before = leftovers.take()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="bench-leak", daemon=True)
    thread.start()
    try:
        assert "thread bench-leak" in leftovers.strays(before, leftovers.take())
    finally:
        stop.set()
        thread.join()
    assert "thread bench-leak" not in leftovers.strays(before, leftovers.take())


def test_a_new_container_and_a_temporary_state_directory_are_left() -> None:
    before = leftovers.take(lambda: ["sandbox-app-1"])
    made = Path(tempfile.mkdtemp(prefix=leftovers.TEMP_PREFIXES[0]))
    try:
        after = leftovers.take(lambda: ["sandbox-app-1", "rbbench-web-1", "someone-elses"])
        found = leftovers.strays(before, after)
        assert "container rbbench-web-1" in found and "container someone-elses" not in found
        assert f"temporary directory {tempfile.gettempdir()}/{made.name}" in found
    finally:
        made.rmdir()


def test_waiting_gives_a_stopping_process_its_time() -> None:
    before = leftovers.take()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    start = time.monotonic()
    reaper = threading.Thread(target=child.wait, name="reaper")  # as a stopped daemon is waited for
    reaper.start()
    try:
        assert leftovers.wait_for_none(before, within=30) == []
    finally:
        reaper.join()
    assert time.monotonic() - start >= 0.3  # it waited for the exit rather than missing the child


def test_someone_elses_new_process_is_not_the_benchs() -> None:
    import os

    before = leftovers.take()
    env = {k: v for k, v in os.environ.items() if k != leftovers.MARK}
    out = subprocess.run(
        ["bash", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
        env=env,  # started by another user's shell: not marked, and not the bench's child once orphaned
    )
    other = int(out.stdout.strip())
    try:
        assert not any(line.startswith(f"process {other}:") for line in leftovers.strays(before, leftovers.take()))
    finally:
        subprocess.run(["kill", "-9", str(other)], check=False)


def test_what_the_bench_starts_carries_its_mark(tmp_path: Path) -> None:
    # The bench gives its commands an environment of its own (no RUNBOOK_ settings but its own): the
    # mark must survive that, or an orphan of a killed peer would not be known as the bench's.
    import os

    from bench.run import environment

    leftovers.take()
    assert environment(tmp_path)[leftovers.MARK] == os.environ[leftovers.MARK]
