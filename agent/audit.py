"""The audit log: hash-chained JSON lines, appended under a lock and fsynced, written through structlog."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.exceptions import AuditError
from agent.redaction import Redactor

__all__ = ["GENESIS", "AuditLog", "AuditSink", "VerifyResult", "read_records", "verify"]

GENESIS = "0" * 64


def _sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(fh: Any) -> bytes | None:
    """The last complete line of a file opened in binary mode, read backwards from the end."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return None
    chunk, pos, buf = 4096, end, b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        # The file ends with "\n"; the line starts after the newline before that one.
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut != -1:
            return bytes(buf[cut + 1 :].rstrip(b"\n"))
    return bytes(buf.rstrip(b"\n"))


class AuditSink:
    """structlog's final "logger": appends one event, chained to the line before it.

    The lock covers read-last-line + append + head update, so several processes keep one chain."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")

    def write(self, **event: Any) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    self._append(fh, event)
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            # Fail closed: the caller must not act on what it could not record.
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror or exc}") from None

    def _append(self, fh: Any, event: dict[str, Any]) -> None:
        last = _last_line(fh)
        if last is None:
            prev, seq = GENESIS, 1
        else:
            try:
                seq = int(json.loads(last)["seq"]) + 1
            except (ValueError, KeyError, TypeError):
                raise AuditError(
                    f"audit log {self.path} ends with a damaged line; run `runbook audit verify`"
                ) from None
            prev = _sha(last)
        record = {"seq": seq, **event, "prev": prev}
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        fh.seek(0, os.SEEK_END)
        fh.write(line + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
        # The head records where the chain ends, so a removed tail is found too.
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        tmp.write_text(json.dumps({"seq": seq, "sha256": _sha(line)}))
        os.replace(tmp, self.head_path)

    # structlog calls the method named like the log level.
    info = write
    msg = write


class AuditLog:
    """Records the steps of one run. Every event is redacted before it is written."""

    def __init__(self, path: Path, redactor: Redactor, **context: Any) -> None:
        self.path = path
        self._redactor = redactor

        def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
            redacted: dict[str, Any] = self._redactor.data(event)
            return redacted

        # The last processor's mapping reaches AuditSink.info(**event): hashing happens under its lock.
        def as_kwargs(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
            return event

        self._log = structlog.wrap_logger(
            AuditSink(path),
            processors=[structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"), redact, as_kwargs],
            context_class=dict,
            cache_logger_on_first_use=False,
        ).bind(**context)

    def bind(self, **context: Any) -> AuditLog:
        bound = object.__new__(AuditLog)
        bound.path, bound._redactor, bound._log = self.path, self._redactor, self._log.bind(**context)
        return bound

    def record(self, event: str, **fields: Any) -> None:
        self._log.info(event, **fields)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                yield json.loads(raw)
            except ValueError:
                continue


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    problem: str | None = None
    line: int | None = None


def verify(path: Path) -> VerifyResult:
    """Walk the chain; name the first line that was edited, removed, reordered or cut off."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return VerifyResult(False, 0, f"cannot read {path}: {exc.strerror}")
    if data and not data.endswith(b"\n"):
        lines = data.split(b"\n")
        return VerifyResult(False, len(lines) - 1, "last line is incomplete: file truncated", len(lines))
    prev, count = GENESIS, 0
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            record = json.loads(line)
            seq, recorded_prev = int(record["seq"]), record["prev"]
        except (ValueError, KeyError, TypeError):
            return VerifyResult(False, count, "not a valid audit record (edited or damaged)", number)
        if recorded_prev != prev:
            return VerifyResult(
                False, count, "hash chain broken: this line or the one before it was edited, removed or moved", number
            )
        if seq != number:
            return VerifyResult(False, count, f"sequence {seq} where {number} was expected (lines removed)", number)
        prev, count = _sha(line), count + 1
    head = path.with_name(path.name + ".head")
    if head.exists():
        try:
            marker = json.loads(head.read_text())
        except (OSError, ValueError):
            return VerifyResult(False, count, f"head file {head} is damaged")
        if marker.get("seq") != count or marker.get("sha256") != prev:
            return VerifyResult(
                False,
                count,
                f"file ends at record {count} but the last record written was {marker.get('seq')}: truncated",
                count + 1,
            )
    return VerifyResult(True, count)
