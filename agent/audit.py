"""The audit log: hash-chained JSON lines, appended under a lock and fsynced, each redacted before it is written."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.exceptions import AuditError
from agent.files import open_private, refusal
from agent.redaction import Redactor

__all__ = [
    "GENESIS",
    "AuditLog",
    "AuditSink",
    "ChainRecord",
    "RepairResult",
    "VerifyResult",
    "merged",
    "read_records",
    "repair",
    "verify",
]

GENESIS = "0" * 64
_CHUNK = 64 * 1024


def _sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(fh: Any) -> tuple[bytes, bool] | None:
    """The last line of a file opened in binary mode, read backwards from the end, and whether it is
    complete (ends with a newline): a torn write leaves a last line without one. Linear in the line's
    length: each chunk is searched once and the chunks are joined once (the lock is held meanwhile)."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return None
    chunks: list[bytes] = []
    pos = end
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        fh.seek(pos)
        chunk = fh.read(step)
        # The file's last byte is the line's own newline when it is complete: not the line before's.
        cut = chunk.rfind(b"\n", 0, len(chunk) - 1 if not chunks else len(chunk))
        if cut != -1:
            chunks.append(chunk[cut + 1 :])
            break
        chunks.append(chunk)
    buf = b"".join(reversed(chunks))
    return buf.rstrip(b"\n"), buf.endswith(b"\n")


def _seq(line: bytes) -> int | None:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return None


def _open(path: Path) -> Any:
    # The log holds what the agent saw and did: 0600 in a 0700 directory, whatever the umask.
    return os.fdopen(open_private(path, os.O_RDWR | os.O_APPEND), "a+b")


def _damaged(path: Path) -> AuditError:
    return AuditError(f"audit log {path} ends with a damaged line (a torn write?); run `runbook audit repair`")


class AuditSink:
    """Appends events, each chained to the line before it.

    The lock covers read-last-line + append + head update, so several processes keep one chain."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._head_tmp = path.with_name(path.name + ".head.tmp")  # written, then renamed over the head

    def write(self, **event: Any) -> None:
        self.write_many([event])

    def write_many(self, events: list[dict[str, Any]]) -> None:
        """Append the events in order, durable together: one lock, one fsync, one head update."""
        if not events:
            return
        try:
            with _open(self.path) as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    self._append(fh, events)
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            # Fail closed: the caller must not act on what it could not record.
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror or exc}") from None

    def _append(self, fh: Any, events: list[dict[str, Any]]) -> None:
        last = _last_line(fh)
        if last is None:
            prev, seq = GENESIS, 1
        else:
            line, complete = last
            last_seq = _seq(line)
            if not complete or last_seq is None:
                # Fail closed: appending after a torn line would bury it in the chain.
                raise _damaged(self.path)
            prev, seq = _sha(line), last_seq + 1
        lines = []
        for event in events:
            record = {"seq": seq, **event, "prev": prev}
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()
            lines.append(line + b"\n")
            prev, seq = _sha(line), seq + 1
        seq -= 1  # the last one written
        fh.seek(0, os.SEEK_END)
        fh.write(b"".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
        # The head records where the chain ends, so a removed tail is found too.
        fd = open_private(self._head_tmp, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"seq": seq, "sha256": _sha(line)}))
        os.replace(self._head_tmp, self.head_path)

    def problem(self) -> str | None:
        """Why the next record could not be written, or None: a damaged last line, an unwritable file, a
        file (or the head's temporary file) that writes would refuse (see `files.refusal`)."""
        for path in (self.path, self._head_tmp):
            if why := refusal(path):
                return f"audit log {path.name}: {why}"
        try:
            with open(self.path, "rb") as fh:
                last = _last_line(fh)
        except FileNotFoundError:
            return None if os.access(_existing_parent(self.path), os.W_OK) else "audit log directory not writable"
        except OSError as exc:
            return f"audit log unreadable: {exc.strerror or exc}"
        if last is not None and (not last[1] or _seq(last[0]) is None):
            return "audit log ends with a damaged line (run `runbook audit repair`)"
        if not os.access(self.path, os.W_OK):
            return "audit log not writable"
        return None


def timestamp() -> str:
    """An audit record's time: ISO 8601, UTC, with a Z."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class AuditLog:
    """Records the steps of one run. Every event is redacted before it is written.

    A bound context, a timestamp and the redactor, then the sink: the two steps of a structlog chain,
    written out, because importing structlog cost every cold `runbook run` ~55 ms for them."""

    def __init__(self, path: Path, redactor: Redactor, **context: Any) -> None:
        self.path = path
        self._redactor = redactor
        self._sink = AuditSink(path)
        self._context: dict[str, Any] = dict(context)
        # Told of every record once it is durable (the daemon's operational log, agent.logs); never
        # allowed to fail the write it follows.
        self.observer: Callable[[list[dict[str, Any]]], None] | None = None

    def bind(self, **context: Any) -> AuditLog:
        bound = object.__new__(AuditLog)
        bound.path, bound._redactor, bound._sink = self.path, self._redactor, self._sink
        bound._context = {**self._context, **context}
        bound.observer = self.observer
        return bound

    def record(self, event: str, **fields: Any) -> None:
        self.record_many([(event, fields)])

    def record_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Several records made durable together (one fsync): for steps that are one moment, such as the
        payloads one group commit of the daemon's intake takes."""
        stamp = timestamp()
        prepared: list[dict[str, Any]] = []
        for event, fields in events:
            # A record held back to be written with others keeps the time it was made (its own "ts").
            data: dict[str, Any] = {**self._context, "ts": stamp, **fields, "event": event}
            prepared.append(self._redactor.data(data))
        # Hashing and chaining happen in the sink, under its lock.
        self._sink.write_many(prepared)
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer(prepared)

    def problem(self) -> str | None:
        """Why a record could not be written now (checked cheaply: the log's last line), or None."""
        return AuditSink(self.path).problem()


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


@dataclass(frozen=True)
class RepairResult:
    removed_bytes: int
    saved_to: Path | None
    seq: int | None  # the sealing record's sequence number


def repair(path: Path, actor: str) -> RepairResult:
    """Seal a torn tail (a write cut short by a full disk or a crash): the bytes after the last valid
    record are moved to a side file (nothing recorded is thrown away) and an `audit_repaired` record,
    chained to the last valid one, says what was removed. Without a torn tail nothing changes."""
    sink = AuditSink(path)
    with _open(path) as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.seek(0)
            data = fh.read()
            keep = len(data)
            # Walk back over trailing lines that are not complete, valid records.
            while keep > 0:
                cut = data.rfind(b"\n", 0, keep - 1) + 1
                line = data[cut:keep]
                if line.endswith(b"\n") and _seq(line.rstrip(b"\n")) is not None:
                    break
                keep = cut
            torn = data[keep:]
            if not torn:
                return RepairResult(0, None, None)
            saved = path.with_name(f"{path.name}.torn-{int(time.time())}")
            fd = open_private(saved, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "wb") as side:
                side.write(torn)
                side.flush()
                os.fsync(side.fileno())
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
            event = {
                "event": "audit_repaired",
                "ts": datetime.now(UTC).isoformat(),
                "actor": actor,
                "mode": "admin",
                "removed_bytes": len(torn),
                "removed_sha256": _sha(torn),
                "saved_to": str(saved),
            }
            sink._append(fh, [event])
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    last = verify(path)
    return RepairResult(len(torn), saved, last.records)


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
    if not head.exists():
        if count:
            return VerifyResult(False, count, f"head file {head} is missing: a removed tail could not be found")
        return VerifyResult(True, count)
    try:
        marker = json.loads(head.read_text())
        head_seq = int(marker["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return VerifyResult(False, count, f"head file {head} is damaged")
    if head_seq > count:
        return VerifyResult(
            False,
            count,
            f"file ends at record {count} but the last record written was {head_seq}: truncated",
            count + 1,
        )
    if head_seq < count:
        return VerifyResult(
            False,
            count,
            f"head file is behind the log: records after {head_seq} were not written by the agent",
            head_seq + 1,
        )
    if marker.get("sha256") != prev:
        return VerifyResult(False, count, "the last record is not the one the agent wrote (edited)", count)
    return VerifyResult(True, count)


@dataclass(frozen=True)
class ChainRecord:
    """One record of a merged view, and the chain (agent's audit log) it came from."""

    chain: str
    record: dict[str, Any]


def merged(paths: list[Path], run_id: str | None = None) -> list[ChainRecord]:
    """The records of several agents' audit logs (each agent keeps its own chain) in one timeline, ordered
    by their time, then by chain and sequence: what every agent that touched a run saw and did. Each chain
    is verified first; one that is not intact is refused (AuditError naming it and its first bad line),
    since its order and content cannot be trusted. Times come from each agent's clock: keep them in sync
    (NTP) for the order across agents to mean anything."""
    found: list[tuple[float, int, int, ChainRecord]] = []
    for index, path in enumerate(paths):
        if not path.exists():
            raise AuditError(f"{path}: no audit log")
        result = verify(path)
        if not result.ok:
            where = f"{path}:{result.line}" if result.line else str(path)
            raise AuditError(f"{where}: {result.problem}; not merged")
        for record in read_records(path):
            if run_id is None or record.get("run_id") == run_id:
                seq = record.get("seq")
                at = (_epoch(record.get("ts")), index, seq if isinstance(seq, int) else 0)
                found.append((*at, ChainRecord(str(path), record)))
    found.sort(key=lambda item: item[:3])
    return [item[3] for item in found]


def _epoch(stamp: Any) -> float:
    """A record's time as a number (ISO strings do not sort as text: `...:15Z` after `...:15.000001Z`)."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
