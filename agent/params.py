"""The base of every check's and remediation's params (`with:`): unknown keys are errors, values frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Params"]


class Params(BaseModel):
    """Subclass it with the fields a step's `with:` takes; their descriptions are what `runbook show`
    and the runbook JSON Schema tell authors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
