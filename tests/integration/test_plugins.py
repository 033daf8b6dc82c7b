"""Plugins as packages: a check pack installed with pip (entry point `runbook.checks`) is found without
editing this project, written against agent.plugin_api alone, and runs against the real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import cli

pytestmark = pytest.mark.integration

PACK = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "runbook-example-pack"
        version = "0.1.0"

        [project.entry-points."runbook.checks"]
        example = "example_pack.checks"

        [tool.setuptools]
        packages = ["example_pack"]
    """,
    "example_pack/__init__.py": "",
    "example_pack/checks.py": '''
        """An example check pack: keys in a Redis database."""

        from pydantic import Field

        from agent.plugin_api import CheckContext, Outcome, Params, PluginSet, above

        plugins = PluginSet("example")


        class KeysParams(Params):
            url: str = Field(description="Redis URL.")
            warn: int | None = Field(None, ge=1, description="Keys from which the result is WARNING.")
            crit: int | None = Field(None, ge=1, description="Keys from which the result is CRITICAL.")


        @plugins.check("example.redis_keys", KeysParams)
        def redis_keys(ctx: CheckContext, params: KeysParams) -> Outcome:
            """Keys in the Redis database of a URL."""
            keys = int(ctx.clients.redis(params.url).dbsize())
            return Outcome(
                above(keys, params.warn, params.crit),
                f"{keys} keys (example pack)",
                metrics={"keys": float(keys)},
                thresholds={"keys": (params.warn, params.crit)},
            )
    ''',
}

RUNBOOK = """
id: keys
title: Keys
severity: SEV-4
checks:
  - id: keys
    check: example.redis_keys
    with: {url: "URL", warn: 2}
"""


def test_an_installed_check_pack_is_found_and_runs(agent_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "pack"
    for name, text in PACK.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(textwrap.dedent(text).lstrip())
    # pip as a user runs it (building with setuptools from the index the project installs from), into a
    # directory on these processes' path only: the venv stays as it was whatever becomes of the test.
    site = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert list(site.glob("runbook_example_pack-0.1.0.dist-info/entry_points.txt"))
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    # A database of the sandbox's Redis that nothing else uses: its key count is the test's to set.
    url = agent_env["REDIS_URL"].rsplit("/", 1)[0] + "/13"
    (runbooks / "keys.yaml").write_text(RUNBOOK.replace("URL", url))
    with_pack = {**agent_env, "PYTHONPATH": str(site)}

    # Without the pack, the runbook names an unknown check; with it, it is valid and documented.
    without = cli(agent_env, "validate", str(runbooks))
    assert without.returncode == 2 and "example.redis_keys" in without.stderr, without.stderr
    assert cli(with_pack, "validate", str(runbooks)).returncode == 0
    shown = cli(with_pack, "show", "example.redis_keys", "--json")
    assert shown.returncode == 0 and "Keys from which the result is WARNING." in shown.stdout
    schema = json.loads(cli(with_pack, "schema").stdout)
    assert "example.redis_keys" in schema["$defs"]["CheckStep"]["properties"]["check"]["enum"]

    # It runs against the real Redis, through the engine's own client and deadline.
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        ran = cli(with_pack, "run", "keys", "--runbooks", str(runbooks), "--json", "--dry-run")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        [check] = json.loads(ran.stdout)["checks"]
        assert check["check"] == "example.redis_keys" and check["summary"] == "0 keys (example pack)"
        assert check["thresholds"] == {"keys": [2, None]}
        client.mset({"a": 1, "b": 2})
        warned = cli(with_pack, "run", "keys", "--runbooks", str(runbooks), "--nagios", "--dry-run")
        assert warned.returncode == 1, warned.stdout + warned.stderr
        assert warned.stdout.startswith("KEYS WARNING - keys: 2 keys (example pack) | keys=2;2")
    finally:
        client.flushdb()
        client.close()
