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
        # Wheels for the base's own Python, not this one's: dependencies differ by version. pip's
        # --python-version does not reach `python_full_version` markers, so the one such dependency (redis
        # needs async-timeout before 3.11.3, as Debian's 3.11.2 is) is named; pip installs it if needed.
        python = dc.containers.run(
            base, ["python3", "-c", "import platform; print(platform.python_version())"], remove=True
        )
        shutil.rmtree(WHEELS, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(WHEELS), str(REPO)], check=True)
        project = next(WHEELS.glob("runbook-*.whl"))
        target = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python.decode().strip()]
        wanted = [str(project), "pip", "async-timeout>=4.0.3"]
        subprocess.run([*pip, "download", *target, "--dest", str(WHEELS), *wanted], check=True)
        revision = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="runbook:latest")
    args = parser.parse_args()
    image = build(args.tag)
    print(f"built {args.tag} ({image[:19]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
