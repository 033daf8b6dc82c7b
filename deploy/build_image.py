"""Build the daemon's container image (deploy/Dockerfile) with nothing pulled from a registry.

Two steps: this host's pip builds wheels of the project and every dependency into build/wheels (from the
package index or mirror it is configured for), then Docker builds the image on the locally built Debian
base (sandbox/build-base-image.sh, made here if missing) from those wheels alone.

    python deploy/build_image.py [--tag runbook:latest]      (make image)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox import stack  # noqa: E402 - after the repository is on the path

WHEELS = REPO / "build" / "wheels"


def build(tag: str, base: str = stack.BASE_IMAGE) -> str:
    """Build the image; its id."""
    dc = stack.client()
    try:
        try:
            dc.images.get(base)
        except docker.errors.ImageNotFound:  # built as the sandbox builds it
            subprocess.run(["bash", str(REPO / "sandbox" / "build-base-image.sh"), base], check=True)
        # Wheels for the base's own Python and platform, not this host's: dependencies differ by version,
        # and this host's glibc or CPU may not be the base's. pip's --python-version does not reach
        # `python_full_version` markers, so the one such dependency (redis needs async-timeout before
        # 3.11.3, as Debian's 3.11.2 is) is named; pip installs it only where needed.
        probe = "import platform; print(platform.python_version(), platform.machine(), platform.libc_ver()[1])"
        python, machine, glibc = dc.containers.run(base, ["python3", "-c", probe], remove=True).decode().split()
        # A clean tree for setuptools: a build/lib left from an earlier build would ship deleted modules.
        for stale in (REPO / "build" / "lib", WHEELS, *REPO.glob("build/bdist.*")):
            shutil.rmtree(stale, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(WHEELS), str(REPO)], check=True)
        project = next(WHEELS.glob("runbook-*.whl"))
        target = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
        for abi in (f"cp{''.join(python.split('.')[:2])}", "abi3", "none"):
            target += ["--abi", abi]
        for platform in _manylinux(machine, glibc):
            target += ["--platform", platform]
        wanted = [str(project), "pip", "async-timeout>=4.0.3"]
        subprocess.run([*pip, "download", *target, "--dest", str(WHEELS), *wanted], check=True)
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
        revision = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if revision and status.stdout.strip():
            revision += "-dirty"  # built from uncommitted changes: not what the commit holds
        image, _ = dc.images.build(
            path=str(REPO),
            dockerfile="deploy/Dockerfile",
            tag=tag,
            rm=True,
            pull=False,
            buildargs={"BASE": base, "VERSION": version("runbook"), "REVISION": revision or "unknown"},
        )
        return str(image.id)
    finally:
        dc.close()


def _manylinux(machine: str, glibc: str) -> list[str]:
    """The manylinux platform tags a glibc of this version runs, newest first (with the legacy names)."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise SystemExit(f"the base image's glibc {glibc} is not one pip has wheels for")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{machine}" for m, name in legacy.items() if m <= minor]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="runbook:latest")
    args = parser.parse_args()
    image = build(args.tag)
    print(f"built {args.tag} ({image[:19]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
