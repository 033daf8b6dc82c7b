"""Docker engines over SSH (`ssh://user@host`): the remote engine's socket forwarded by OpenSSH's client to
a private local socket, which docker-py then reaches over its unix transport.

Why not docker-py's own ssh:// support: it needs paramiko, and docker-py imports paramiko (and
cryptography) on every `import docker` once it is installed, a cost on every cold start. The docker CLI
runs the system's `ssh` too. So the user's ssh config, agent and known_hosts apply as they do for
`docker -H ssh://...`; each HTTP connection is a new channel through the forward (a "can connect" check
still connects); and a check's deadline still cuts its own connections, as on any unix socket.

One forward per engine per process: started when first used (and proven: the engine answers a ping
through it), started again if it died (a dropped link ends it within ServerAliveInterval x
ServerAliveCountMax), ended when the process exits, however it exits (the forward's parent-death signal
is tied to a thread that lives as long as the process). Host keys are checked strictly, and ssh is never
allowed to ask anything (BatchMode).
"""

from __future__ import annotations

import atexit
import base64
import binascii
import collections
import contextlib
import fcntl
import math
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["Forward", "TunnelFailed", "check_key", "close_all", "engine_key", "local_socket", "parse"]

DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"
# What may appear in an ssh argument that comes from configuration: nothing ssh could read as an option
# (a leading "-"), no whitespace, no ":" in a socket path (it separates the two ends of -L).
_NETLOC = re.compile(
    r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]{0,31})@)?"
    r"(?:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,252})|\[(?P<ip6>[0-9A-Fa-f:.]{2,45})\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
SOCKET_PATH = re.compile(r"/[A-Za-z0-9._/-]{1,200}")
_FILE_PATH = re.compile(r"[^\s\"'\\]{1,1000}")  # a path ssh's -o reads whole (no space, no quote)
_STDERR_LINES = 20  # ssh's last words kept per forward, for the reason it failed
_LOCK_FILE = "lock"


class TunnelFailed(Exception):
    """The forward could not be made (ssh refused, the host key unknown, no answer in time)."""


@dataclass(frozen=True)
class SshHost:
    user: str | None
    host: str
    port: int | None


def parse(url: str) -> SshHost:
    """`ssh://[user@]host[:port]`, as the docker CLI takes it; ValueError naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if scheme != "ssh" or not sep:
        raise ValueError(f"not an ssh:// address: {url}")
    netloc = rest[:-1] if rest.endswith("/") else rest
    if "/" in netloc or "?" in netloc or "#" in netloc:
        raise ValueError("ssh://[user@]host[:port] only: the engine's socket on the host is set apart (ssh_socket)")
    match = _NETLOC.fullmatch(netloc)
    if match is None:
        if ":" in netloc.partition("@")[0] and "@" in netloc:
            raise ValueError("no password in an ssh:// address: the agent logs in with a key (or its ssh agent)")
        raise ValueError(f"{url!r} is not ssh://[user@]host[:port] (a user, a host name or [IPv6], a port)")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"bad port in {url}")
    return SshHost(match["user"], match["name"] or match["ip6"], port)


def engine_key(url: str, remote_socket: str) -> str:
    """One engine however it is reached over ssh: its host (any case), port and socket, not the user
    logging in (two users reaching one engine would keep two sets of locks and limits for it)."""
    target = parse(url)
    return f"ssh://{target.host.lower()}:{target.port or 22}{remote_socket}"


def check_path(field: str, path: Path) -> None:
    """A file ssh is given on its command line: a regular file, its path in one piece."""
    if not _FILE_PATH.fullmatch(str(path)):
        raise ValueError(f"{field} {path}: a path without spaces or quotes (ssh would split it)")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ValueError(f"{field} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{field} {path}: not a regular file")


def check_key(path: Path, field: str = "ssh_identity") -> None:
    """A private key ssh can use without asking: a regular file, private to its owner (ssh ignores any
    other), not protected by a passphrase (the agent cannot be asked one; an ssh agent holding it is the
    way for such a key)."""
    check_path(field, path)
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{field} {path}: readable by others; ssh ignores such a key (chmod 600)")
    try:
        with open(path, "rb") as key:
            head = key.read(65_536)
    except OSError as exc:
        raise ValueError(f"{field} {path}: {exc.strerror}") from None
    text = head.decode("ascii", "replace")
    locked = f"{field} {path} is protected by a passphrase; the agent cannot be asked one (use an ssh agent)"
    if "ENCRYPTED" in text:  # PEM (PKCS#1 "Proc-Type: 4,ENCRYPTED", PKCS#8 "ENCRYPTED PRIVATE KEY")
        raise ValueError(locked)
    match = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----\s+([A-Za-z0-9+/=\s]+?)-----END", text)
    if match:
        # openssh-key-v1: the magic, then the cipher's name as a length-prefixed string ("none": no passphrase)
        try:
            body = base64.b64decode("".join(match.group(1).split()))
        except (binascii.Error, ValueError):
            raise ValueError(f"{field} {path}: not a readable OpenSSH private key") from None
        magic = b"openssh-key-v1\0"
        if not body.startswith(magic) or len(body) < len(magic) + 4:
            raise ValueError(f"{field} {path}: not a readable OpenSSH private key")
        size = int.from_bytes(body[len(magic) : len(magic) + 4], "big")
        if body[len(magic) + 4 : len(magic) + 4 + size] != b"none":
            raise ValueError(locked)
    elif "PRIVATE KEY" not in text:
        raise ValueError(f"{field} {path}: not a private key")


@dataclass(frozen=True)
class Forward:
    """One engine over SSH, as the settings name it: the forward's identity (one per process)."""

    url: str
    remote_socket: str = DEFAULT_REMOTE_SOCKET
    identity: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: float = 2.0

    def argv(self, local: Path) -> list[str]:
        target = parse(self.url)
        argv = [
            "ssh",
            "-N",  # no command: only the forward
            "-T",
            "-n",
            "-o", "BatchMode=yes",  # never a prompt: a password or passphrase would hang the agent
            "-o", "StrictHostKeyChecking=yes",  # an unknown or changed host key is a refusal, not a question
            "-o", "VerifyHostKeyDNS=no",  # host keys from the known_hosts files only
            "-o", "UpdateHostKeys=no",  # the agent writes no known_hosts (a dry run changes nothing)
            "-o", "ExitOnForwardFailure=yes",
            "-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
            "-o", "ServerAliveInterval=5",  # a dead link ends the forward within 15 s: the next use restarts it
            "-o", "ServerAliveCountMax=3",
            "-o", "StreamLocalBindMask=0177",  # the local socket is the engine: this user's only
            "-o", "StreamLocalBindUnlink=yes",
            "-o", "ControlMaster=no",
            "-o", "ControlPath=none",
            "-o", "PermitLocalCommand=no",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if target.user:
            argv += ["-l", target.user]
        if target.port:
            argv += ["-p", str(target.port)]
        argv += ["-L", f"{local}:{self.remote_socket}", "--", target.host]
        return argv


class _Tunnel:
    def __init__(self, forward: Forward, local: Path, process: subprocess.Popen[bytes]) -> None:
        self.forward = forward
        self.local = local
        self.process = process
        self.stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._pipe: IO[bytes] | None = process.stderr
        self._reader = threading.Thread(target=self._read, name="runbook-ssh-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._pipe is not None
        for line in self._pipe:  # ends when ssh does
            text = line[:500].decode("utf-8", "replace").strip()
            if text:
                self.stderr.append(text)

    def alive(self) -> bool:
        return self.process.poll() is None

    def why(self, default: str) -> str:
        self._reader.join(timeout=0.5)  # ssh's last line, once it has exited
        return self.stderr[-1] if self.stderr else default

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=1)
        if not self._reader.is_alive() and self._pipe is not None:
            # (A reader still blocked — the pipe held open by a grandchild — keeps it: closing would wait.)
            self._pipe.close()
        with contextlib.suppress(OSError):
            self.local.unlink()


_LOCK = threading.Lock()
_TUNNELS: dict[Forward, _Tunnel] = {}
_STARTING: dict[Forward, threading.Lock] = {}
_FAILED: dict[Forward, tuple[float, str]] = {}  # the last attempt's failure: waiters for it share it
_state: dict[str, object] = {}  # the private directory, its lock, the spawning thread: made when first needed
_DIRECTORY = threading.Lock()  # two engines' first forwards at once make one directory, never two
_count = [0]


def _directory() -> Path:
    """This process's private directory (0700, short: a unix socket's path is at most 107 bytes), made
    again if something removed it; a lock on a file in it, held for the process's life, marks it in use
    (across pid namespaces too)."""
    with _DIRECTORY:
        return _directory_now()


def _directory_now() -> Path:
    directory = _state.get("dir")
    if isinstance(directory, Path) and _still_ours(directory):
        return directory
    _sweep()
    directory = Path(tempfile.mkdtemp(prefix="runbook-ssh-"))
    held = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    old = _state.get("held")
    if isinstance(old, int):
        with contextlib.suppress(OSError):
            os.close(old)
    _state["dir"], _state["held"] = directory, held
    if not _state.get("atexit"):
        _state["atexit"] = atexit.register(close_all)
    return directory


def _still_ours(directory: Path) -> bool:
    """The directory made earlier is still there as made: a real directory (not a link), this user's,
    private. Removed meanwhile (a /tmp cleaner), its name (shown in ssh's command line) could have been
    taken by another user, whose directory would then hold the sockets Docker's calls go through."""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0


def _sweep() -> None:
    """Remove what agents killed -9 left (their forwards died with them; their directories did not):
    this user's directories whose lock no process holds."""
    for old in Path(tempfile.gettempdir()).glob("runbook-ssh-*"):
        with contextlib.suppress(OSError):
            if old.is_symlink() or not old.is_dir() or old.lstat().st_uid != os.getuid():
                continue
            fd = os.open(old / _LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: its process holds it
                shutil.rmtree(old, ignore_errors=True)
            finally:
                os.close(fd)


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ssh from one long-lived thread: the parent-death signal (setpriv --pdeathsig) follows the
    thread that started the process, and this one lives as long as the agent, so the forward ends with
    the agent even if it is killed -9, never with the check thread that first needed it. (setpriv is
    util-linux's, on every Debian; without it, a forward outlives an agent killed -9 until its link
    drops.)"""
    with _LOCK:
        spawner = _state.get("spawner")
        if spawner is None:
            spawner = _state["spawner"] = ThreadPoolExecutor(1, thread_name_prefix="runbook-ssh")
    assert isinstance(spawner, ThreadPoolExecutor)
    setpriv = shutil.which("setpriv")
    if setpriv:
        argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True
        )

    try:
        return spawner.submit(start).result()
    except RuntimeError as exc:  # the process is ending (the executor shut down): no new forwards
        raise TunnelFailed(f"ssh: not started: {exc}") from None


def _ping(local: Path, deadline: float) -> str | None:
    """Through the forward, the engine's answer to a ping: None if it answered, else why not. ssh opens
    the remote socket only when a connection comes, so a wrong `ssh_socket`, or a user who may not use
    it, shows here: the connection is closed at once."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "no answer from the engine through the forward in time"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(remaining)
                conn.connect(str(local))
                conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                head = conn.recv(64)
        except (ConnectionRefusedError, FileNotFoundError):
            time.sleep(0.02)  # ssh binds the socket before it listens: a moment between the two
            continue
        except TimeoutError:
            return "no answer from the engine through the forward in time"
        except (ConnectionResetError, BrokenPipeError):
            head, error = b"", None  # closed by ssh: the remote socket would not open
        except OSError as exc:
            head, error = b"", exc.strerror
        else:
            error = None
        if head.startswith(b"HTTP/"):
            return None
        return error or "the connection was closed: no Docker engine at that socket, or the user may not use it"


def local_socket(forward: Forward, wait: float) -> str:
    """`unix://...`: the local end of `forward`, started (or started again) if need be, waiting up to
    `wait` seconds in all — for another thread's attempt, or for ssh to connect, log in and listen,
    and the engine to answer through it. Threads waiting for one attempt share its failure."""
    asked = time.monotonic()
    deadline = asked + wait
    with _LOCK:
        starting = _STARTING.setdefault(forward, threading.Lock())
    if not starting.acquire(timeout=max(0.0, wait)):
        raise TunnelFailed(f"ssh: no forward within {wait:g}s (another check is still making it)")
    try:
        with _LOCK:
            tunnel = _TUNNELS.get(forward)
            failed = _FAILED.get(forward)
        if failed is not None and failed[0] >= asked:
            raise TunnelFailed(failed[1])  # the attempt this thread waited for failed: so does this one
        if tunnel is not None and tunnel.alive() and tunnel.local.exists():
            return f"unix://{tunnel.local}"
        if tunnel is not None:  # it died (a dropped link, a restarted host): a new one
            with _LOCK:
                _TUNNELS.pop(forward, None)
            tunnel.stop()
        try:
            return _start(forward, deadline, wait)
        except TunnelFailed as exc:
            with _LOCK:
                _FAILED[forward] = (time.monotonic(), str(exc))
            raise
    finally:
        starting.release()


def _start(forward: Forward, deadline: float, wait: float) -> str:
    if shutil.which("ssh") is None:
        raise TunnelFailed("ssh:// needs OpenSSH's client (ssh), which is not installed")
    with _LOCK:
        _count[0] += 1
        number = _count[0]
    local = _directory() / f"engine-{number}.sock"
    tunnel = _Tunnel(forward, local, _spawn(forward.argv(local)))
    while not local.exists():
        if not tunnel.alive():
            reason = tunnel.why(f"ssh exited with status {tunnel.process.returncode}")
            tunnel.stop()
            raise TunnelFailed(f"ssh: {reason}")
        if time.monotonic() > deadline:
            tunnel.stop()
            raise TunnelFailed(f"ssh: no forward within {wait:g}s (connecting or logging in)")
        time.sleep(0.02)
    problem = _ping(local, deadline)
    if problem is not None:
        reason = tunnel.why(problem) if not tunnel.alive() else problem
        tunnel.stop()
        raise TunnelFailed(f"ssh: {reason} ({forward.remote_socket})")
    with _LOCK:
        _TUNNELS[forward] = tunnel
        _FAILED.pop(forward, None)
    return f"unix://{local}"


def close_all() -> None:
    """End every forward and remove the private directory (at exit)."""
    with _LOCK:
        tunnels = list(_TUNNELS.values())
        _TUNNELS.clear()
        _FAILED.clear()
    for tunnel in tunnels:
        tunnel.stop()
    directory, held = _state.pop("dir", None), _state.pop("held", None)
    if isinstance(directory, Path):
        shutil.rmtree(directory, ignore_errors=True)
    if isinstance(held, int):
        with contextlib.suppress(OSError):
            os.close(held)
    spawner = _state.pop("spawner", None)
    if isinstance(spawner, ThreadPoolExecutor):
        spawner.shutdown(wait=False)
