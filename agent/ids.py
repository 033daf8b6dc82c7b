"""Ids in URL paths, as the API and the console take them: bounded and plain, so a hostile path is a 422
with a reason, never a value the state store refuses with an error (PostgreSQL refuses NUL in text,
SQLite an integer over 64 bits)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from agent.alerts import NO_NUL  # a string a text column can hold: PostgreSQL's refuses NUL

__all__ = ["NO_NUL", "IncidentId", "RunId"]


RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1)]
