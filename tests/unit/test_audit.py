from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from agent.audit import AuditLog, read_records, repair, verify
from agent.exceptions import AuditError
from agent.redaction import Redactor


def write(path: Path, n: int, **context: str) -> None:
    log = AuditLog(path, Redactor(), **context)
    for i in range(n):
        log.record("check_result", i=i)


def test_chain_verifies_and_records_carry_context(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 5, run_id="r1", actor="me@host", mode="live")
    assert verify(path).ok and verify(path).records == 5
    records = list(read_records(path))
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev"] == "0" * 64
    assert {r["run_id"] for r in records} == {"r1"} and records[0]["ts"].endswith("Z")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("tamper", ["edit", "remove", "reorder", "truncate_line", "remove_tail"])
def test_tampering_is_found_and_the_line_named(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 6)
    lines = _lines(path)
    if tamper == "edit":
        record = json.loads(lines[2])
        record["i"] = 99
        lines[2] = json.dumps(record, separators=(",", ":")) + "\n"
        expected_line = 4  # the next line's hash no longer matches
    elif tamper == "remove":
        del lines[2]
        expected_line = 3
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
        expected_line = 2
    elif tamper == "truncate_line":
        lines[-1] = lines[-1][:20]
        expected_line = 6
    else:
        lines = lines[:-2]
        expected_line = 5
    path.write_text("".join(lines))
    result = verify(path)
    assert not result.ok
    assert result.line == expected_line, result


def _writer(path: str, n: int) -> None:
    write(Path(path), n)


def test_two_processes_writing_at_once_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), 150)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    result = verify(path)
    assert result.ok, result
    assert result.records == 300


def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, Redactor(["sup3r-secret-value"]), actor="a")
    log.record("run_started", params={"dsn": "postgresql://u:pw-in-url@h/d", "x": "sup3r-secret-value"})
    text = path.read_text()
    assert "pw-in-url" not in text and "sup3r-secret-value" not in text


def test_unwritable_log_raises_audit_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl", Redactor())
    with pytest.raises(AuditError, match="cannot write audit log"):
        log.record("run_started")


def test_a_torn_tail_fails_closed_until_repaired(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 3)
    with open(path, "ab") as fh:
        fh.write(b'{"seq":4,"event":"check_res')  # the disk filled mid-write
    log = AuditLog(path, Redactor())
    assert log.problem() is not None
    with pytest.raises(AuditError, match="audit repair"):
        log.record("check_result")
    result = repair(path, "oncall@host")
    assert result.removed_bytes == 27 and result.saved_to is not None
    assert result.saved_to.read_bytes() == b'{"seq":4,"event":"check_res'  # kept, not thrown away
    assert log.problem() is None
    log.record("check_result", i=5)
    verified = verify(path)
    assert verified.ok and verified.records == 5
    sealed = list(read_records(path))[3]
    assert (sealed["event"], sealed["removed_bytes"], sealed["seq"]) == ("audit_repaired", 27, 4)
    assert repair(path, "oncall@host").removed_bytes == 0  # nothing more to repair


def test_a_complete_but_unterminated_last_line_is_torn_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 2)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with pytest.raises(AuditError):
        AuditLog(path, Redactor()).record("x")
    assert path.read_bytes().count(b"\n") == 1  # nothing was appended after the torn line


def test_verify_fails_without_the_head_or_with_a_head_behind(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 3)
    head = path.with_name("audit.jsonl.head")
    saved = head.read_text()
    head.unlink()
    missing = verify(path)
    assert not missing.ok and "missing" in (missing.problem or "")
    head.write_text(saved)
    write(path, 1)  # a record the head now lags ...
    head.write_text(saved)  # ... as if written by something that did not update it
    behind = verify(path)
    assert not behind.ok and "behind" in (behind.problem or "") and behind.line == 4


def test_log_and_head_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "audit.jsonl"
        write(path, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name("audit.jsonl.head").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64 * 1024])
def test_the_last_line_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    import io
    import random

    from agent import audit as audit_module

    monkeypatch.setattr(audit_module, "_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(300):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randint(1, 20)))
        body = data[:-1] if data.endswith(b"\n") else data
        expected = (body.rsplit(b"\n", 1)[-1], data.endswith(b"\n"))
        assert audit_module._last_line(io.BytesIO(data)) == expected, data


def test_a_huge_last_line_is_read_in_linear_time(tmp_path: Path) -> None:
    # A record made huge by outside text must not stall every writer behind the lock: the old search
    # took minutes for this size (quadratic); the bound is a hundred times what a linear read takes.
    import time

    from agent import audit as audit_module

    path = tmp_path / "big"
    path.write_bytes(b'{"seq":1}\n' + b"x" * (48 * 1024 * 1024) + b"\n")
    start = time.monotonic()
    with open(path, "rb") as fh:
        line, complete = audit_module._last_line(fh) or (b"", False)
    assert complete and len(line) == 48 * 1024 * 1024
    assert time.monotonic() - start < 20
