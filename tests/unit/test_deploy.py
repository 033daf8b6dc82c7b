"""The shipped service definitions keep the daemon's files private and run it unprivileged."""

from __future__ import annotations

import configparser
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_systemd_unit_makes_files_private_and_leaves_room_for_connections() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "runbook.service")
    service = unit["Service"]
    assert service["UMask"] == "0077"
    assert service["StateDirectoryMode"] == "0700"
    assert int(service["LimitNOFILE"]) >= 4096
    assert service["User"] != "root" and "--decision-tokens-file" in service["ExecStart"]


def test_container_image_runs_as_its_own_user() -> None:
    lines = [line.split() for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(words[0] == "ENTRYPOINT" for words in lines[[w[0] for w in lines].index("USER") :])
