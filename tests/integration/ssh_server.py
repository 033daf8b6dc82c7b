"""An OpenSSH server on 127.0.0.1 standing in for a remote host's: its own config, host key and one authorized
client key, all made here (ssh-keygen); it dies with the test process. `sandbox/ensure-deps.sh` installs
openssh-server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import free_port
from tests.integration.remote_engine import _die_with_parent

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    port: int
    identity: Path  # the agent's key (authorized here)
    known_hosts: Path  # this server's host key, as a client's known_hosts file lists it
    stranger: Path  # a key this server does not authorize
    root: Path

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


@contextmanager
def ssh_server() -> Iterator[SshServer]:
    root = Path(tempfile.mkdtemp(prefix="rbtest-sshd-"))
    os.chmod(root, 0o700)
    host_key = _keygen(root / "host_key")
    identity = _keygen(root / "agent_key")
    stranger = _keygen(root / "stranger_key")
    (root / "authorized_keys").write_text((root / "agent_key.pub").read_text())
    port = free_port()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} " + " ".join((root / "host_key.pub").read_text().split()[:2]) + "\n")
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress 127.0.0.1:{port}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                f"PidFile {root / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "AllowStreamLocalForwarding local",
                "AllowTcpForwarding local",  # "no" would refuse socket forwards too (sshd ties them together)
                "X11Forwarding no",
                "MaxStartups 50:30:100",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
    with open(root / "sshd.log", "wb") as log:
        argv = [str(SSHD), "-D", "-e", "-f", str(config)]
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start:\n" + (root / "sshd.log").read_text()[-2000:])
            time.sleep(0.1)
        yield SshServer(port, identity, known_hosts, stranger, root)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)
