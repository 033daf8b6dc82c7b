"""A second Docker engine on this machine, standing in for a remote host: its own dockerd (own data root,
exec root, socket and cgroup parent, no bridge), reached over tcp://127.0.0.1 with TLS verified both
ways, with certificates the test makes (trustme). Its one image is made here too, from Debian's static
busybox (`docker import`): nothing is pulled, nothing is copied from the main engine."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.integration.harness import free_port

IMAGE = "rbtest-busybox:latest"
BUSYBOX = Path("/bin/busybox")  # busybox-static (sandbox/ensure-deps.sh installs it)


@dataclass(frozen=True)
class RemoteEngine:
    host: str  # tcp://127.0.0.1:PORT, TLS only
    certs: Path  # the agent's client side: ca.pem, cert.pem, key.pem (as DOCKER_CERT_PATH)
    admin: docker.DockerClient  # the test's own way in: the engine's unix socket
    socket: Path  # that socket (what an ssh:// engine forwards)

    def env(self) -> dict[str, str]:
        """What the agent is given to reach it, as the docker CLI would be; and, as on many machines, a
        system CA bundle for requests in the environment (which must not replace the engine's CA)."""
        return {
            "DOCKER_HOST": self.host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.certs),
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
            "CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        }


def _certificates(root: Path) -> tuple[Path, Path]:
    """(server dir, client dir): a CA, the engine's certificate for 127.0.0.1, and a client's."""
    import trustme

    ca = trustme.CA()
    server, client = root / "server", root / "client"
    for directory in (server, client):
        directory.mkdir(mode=0o700)
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    engine = ca.issue_cert("127.0.0.1")
    engine.cert_chain_pems[0].write_to_path(str(server / "cert.pem"))
    engine.private_key_pem.write_to_path(str(server / "key.pem"))
    agent = ca.issue_cert("runbook-agent")
    agent.cert_chain_pems[0].write_to_path(str(client / "cert.pem"))
    agent.private_key_pem.write_to_path(str(client / "key.pem"))
    os.chmod(client / "key.pem", 0o600)
    return server, client


def stranger_certificates(root: Path, trusted_ca: Path) -> Path:
    """A client certificate from a CA the engine does not trust; the client itself trusts the engine's
    CA (`trusted_ca`), so it is the engine that refuses the connection."""
    import trustme

    ca = trustme.CA()
    directory = root / "stranger"
    directory.mkdir(mode=0o700)
    shutil.copy(trusted_ca, directory / "ca.pem")
    cert = ca.issue_cert("mallory")
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    return directory


def _busybox_image(admin: docker.DockerClient) -> None:
    """A two-megabyte image: busybox as sh and sleep, imported from a tar made here."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for name in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    repository, tag = IMAGE.split(":")
    admin.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag, changes=['CMD ["sleep", "600"]'])


BRIDGE = "rbtest-br0"  # the engine's own bridge (10.213.7.0/24), never docker0; the next engine's: -br1


def _bridge(up: bool, index: int = 0) -> None:
    """Make (or remove) an extra engine's bridge. Not `--bridge=none`: with it, dockerd deletes the
    interface `docker0` at start, the main engine's default bridge, breaking every container after."""
    name = f"rbtest-br{index}"
    subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    if up:
        for argv in (
            ["ip", "link", "add", "name", name, "type", "bridge"],
            ["ip", "addr", "add", f"10.213.{7 + index}.1/24", "dev", name],
            ["ip", "link", "set", name, "up"],
        ):
            subprocess.run(argv, capture_output=True, check=True)


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


def _die_with_parent() -> None:
    """In the engine's process before exec: SIGTERM when the test process dies, however it dies."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


@contextmanager
def remote_engine(index: int = 0) -> Iterator[RemoteEngine]:
    """An extra engine; several at once with different `index`es (the scale benchmark runs two)."""
    root = Path(tempfile.mkdtemp(prefix="rbtest-engine-"))
    os.chmod(root, 0o700)
    server, client = _certificates(root)
    port = free_port()
    (root / "daemon.json").write_text("{}")  # not /etc/docker/daemon.json: this engine is configured here
    _bridge(up=True, index=index)
    argv = [
        "dockerd",
        f"--config-file={root / 'daemon.json'}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        f"--host=unix://{root / 'docker.sock'}",
        f"--host=tcp://127.0.0.1:{port}",
        "--tlsverify",
        f"--tlscacert={server / 'ca.pem'}",
        f"--tlscert={server / 'cert.pem'}",
        f"--tlskey={server / 'key.pem'}",
        f"--bridge=rbtest-br{index}",
        "--iptables=false",
        "--ip-masq=false",
        "--ip-forward=false",
        f"--cgroup-parent=rbtest-engine{index or ''}",
        # Its own containerd namespaces, should it find a system containerd to share.
        f"--containerd-namespace=rbtest-engine{index or ''}",
        f"--containerd-plugins-namespace=rbtest-engine{index or ''}-plugins",
    ]
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    # A fixed API version: docker-py would otherwise ask the engine for it here, before it is up.
    admin = docker.DockerClient(base_url=f"unix://{root / 'docker.sock'}", timeout=60, version="1.41")
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(Exception):
                admin.ping()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the second dockerd did not start:\n" + (root / "dockerd.log").read_text()[-2000:])
            time.sleep(0.2)
        _busybox_image(admin)
        yield RemoteEngine(f"tcp://127.0.0.1:{port}", client, admin, root / "docker.sock")
    finally:
        with contextlib.suppress(Exception):
            for container in admin.containers.list(all=True):
                container.remove(force=True)
        admin.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its containerd too
                process.wait()
        # Its mounts go with it; anything still mounted under the root is let go before removal.
        for mount in sorted(_mounts_under(root), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
        _bridge(up=False, index=index)
