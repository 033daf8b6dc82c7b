"""Docker engines over SSH (`ssh://user@host`): the remote engine's socket forwarded by OpenSSH's client to
a private local socket, which docker-py then reaches over its unix transport.

Why not docker-py's own ssh:// support: it needs paramiko, and docker-py imports paramiko (and
cryptography) on every `import docker` once it is installed, a cost on every cold start. The docker CLI
runs the system's `ssh` too. So the user's ssh config, agent and known_hosts apply as they do for
`docker -H ssh://...`; each HTTP connection is a new channel through the forward (a "can connect" check
still connects); and a check's deadline still cuts its own connections, as on any unix socket.

One forward per engine per process: started when first used, started again if it died (a dropped link
ends it within ServerAliveInterval x ServerAliveCountMax), ended when the process exits, however it
exits (the forward's parent-death signal is tied to a thread that lives as long as the process).
Host keys are checked strictly, and ssh is never allowed to ask anything (BatchMode).
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Forward", "TunnelFailed", "check_key", "close_all", "local_socket", "parse"]

DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"
# What may appear in an ssh argument that comes from configuration: nothing ssh could read as an option
# (a leading "-"), no whitespace, no ":" in a socket path (it separates the two ends of -L).
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$|^[0-9A-Fa-f:.]{2,45}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
SOCKET_PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,200}$")
_STDERR_LINES = 20  # ssh's last words kept per forward, for the reason it failed


class TunnelFailed(Exception):
    """The forward could not be made (ssh refused, the host key unknown, no answer in time)."""


@dataclass(frozen=True)
class SshHost:
    user: str | None
    host: str
    port: int | None


def parse(url: str) -> SshHost:
    """`ssh://[user@]host[:port]`, as the docker CLI takes it; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "ssh":
        raise ValueError(f"not an ssh:// address: {url}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("ssh://[user@]host[:port] only: the remote socket is set by ssh_socket, not in the address")
    if parts.password is not None:
        raise ValueError("no password in an ssh:// address: the agent logs in with a key (ssh_identity or its agent)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url}") from None
    host = parts.hostname or ""
    if not _HOST.match(host):
        raise ValueError(f"bad host name in {url}")
    user = parts.username
    if user is not None and not _USER.match(user):
        raise ValueError(f"bad user name in {url}")
    return SshHost(user, host, port)


def check_key(path: Path) -> None:
    """A private key ssh can use without asking: present, readable, not protected by a passphrase (the
    agent cannot be asked one; an ssh agent holding it is the way for such a key)."""
    try:
        with open(path, "rb") as key:
            head = key.read(65_536)
    except OSError as exc:
        raise ValueError(f"ssh_identity {path}: {exc.strerror}") from None
    text = head.decode("ascii", "replace")
    if "ENCRYPTED" in text:  # PEM (PKCS#1 "Proc-Type: 4,ENCRYPTED", PKCS#8 "ENCRYPTED PRIVATE KEY")
        raise ValueError(f"ssh_identity {path} is protected by a passphrase; the agent cannot be asked one")
    match = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----\s+([A-Za-z0-9+/=\s]+?)-----END", text)
    if match:
        # openssh-key-v1: the magic, then the cipher's name as a length-prefixed string ("none": no passphrase)
        body = base64.b64decode("".join(match.group(1).split()) + "==", validate=False)
        magic = b"openssh-key-v1\0"
        if body.startswith(magic) and len(body) >= len(magic) + 4:
            size = int.from_bytes(body[len(magic) : len(magic) + 4], "big")
            cipher = body[len(magic) + 4 : len(magic) + 4 + size]
            if cipher != b"none":
                raise ValueError(f"ssh_identity {path} is protected by a passphrase; the agent cannot be asked one")
    elif "PRIVATE KEY" not in text:
        raise ValueError(f"ssh_identity {path}: not a private key")


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
        self._reader = threading.Thread(target=self._read, name="runbook-ssh-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:  # ends when ssh does
            text = line[:500].decode("utf-8", "replace").strip()
            if text:
                self.stderr.append(text)

    def alive(self) -> bool:
        return self.process.poll() is None

    def why(self) -> str:
        self._reader.join(timeout=0.5)  # ssh's last line, once it has exited
        return self.stderr[-1] if self.stderr else f"ssh exited with status {self.process.returncode}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=1)
        if self.process.stderr is not None:
            self.process.stderr.close()
        with contextlib.suppress(OSError):
            self.local.unlink()


_LOCK = threading.Lock()
_TUNNELS: dict[Forward, _Tunnel] = {}
_STARTING: dict[Forward, threading.Lock] = {}
_state: dict[str, object] = {}  # the private directory and the spawning thread, made when first needed
_count = [0]


def _directory() -> Path:
    directory = _state.get("dir")
    if directory is None:
        _sweep()
        # Short, private (0700), this process's own: a unix socket's path is at most 107 bytes.
        directory = _state["dir"] = Path(tempfile.mkdtemp(prefix=f"runbook-ssh-{os.getpid()}-"))
        atexit.register(close_all)
    assert isinstance(directory, Path)
    return directory


def _sweep() -> None:
    """Remove what agents killed -9 left (their forwards died with them; their directories did not):
    this user's directories whose process is gone."""
    for old in Path(tempfile.gettempdir()).glob("runbook-ssh-*-*"):
        pid = old.name.split("-")[2]
        with contextlib.suppress(OSError, ValueError):
            if old.lstat().st_uid == os.getuid() and old.is_dir() and not old.is_symlink() and int(pid) > 0:
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    shutil.rmtree(old, ignore_errors=True)


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ssh from one long-lived thread: the parent-death signal (setpriv --pdeathsig) follows the
    thread that started the process, and this one lives as long as the agent, so the forward ends with
    the agent even if it is killed -9, never with the check thread that first needed it."""
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

    return spawner.submit(start).result()


def local_socket(forward: Forward, wait: float) -> str:
    """`unix://...`: the local end of `forward`, started (or started again) if need be, waiting up to
    `wait` seconds for ssh to connect, log in and listen."""
    with _LOCK:
        starting = _STARTING.setdefault(forward, threading.Lock())
    with starting:
        with _LOCK:
            tunnel = _TUNNELS.get(forward)
        if tunnel is not None and tunnel.alive() and tunnel.local.exists():
            return f"unix://{tunnel.local}"
        if tunnel is not None:  # it died (a dropped link, a restarted host): a new one
            tunnel.stop()
        with _LOCK:
            _count[0] += 1
            local = _directory() / f"engine-{_count[0]}.sock"
        if shutil.which("ssh") is None:
            raise TunnelFailed("ssh:// needs OpenSSH's client (ssh), which is not installed")
        tunnel = _Tunnel(forward, local, _spawn(forward.argv(local)))
        deadline = time.monotonic() + wait
        while not local.exists():
            if not tunnel.alive():
                reason = tunnel.why()
                tunnel.stop()
                raise TunnelFailed(f"ssh: {reason}")
            if time.monotonic() > deadline:
                tunnel.stop()
                raise TunnelFailed(f"ssh: no forward within {wait:g}s (connecting or logging in)")
            time.sleep(0.02)
        with _LOCK:
            _TUNNELS[forward] = tunnel
        return f"unix://{local}"


def close_all() -> None:
    """End every forward and remove the private directory (at exit; a daemon's stop)."""
    with _LOCK:
        tunnels = list(_TUNNELS.values())
        _TUNNELS.clear()
    for tunnel in tunnels:
        tunnel.stop()
    directory = _state.pop("dir", None)
    if isinstance(directory, Path):
        shutil.rmtree(directory, ignore_errors=True)
    spawner = _state.pop("spawner", None)
    if isinstance(spawner, ThreadPoolExecutor):
        spawner.shutdown(wait=False)
