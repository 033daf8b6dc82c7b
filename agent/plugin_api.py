"""Everything a check or remediation pack needs, in one place: import from here, not from the engine's
modules (their layout may change; this surface changes only with notice).

A pack is a Python package with entry points, e.g. in its pyproject.toml:

    [project.entry-points."runbook.checks"]
    example = "example_pack.checks"          # a module with `plugins = PluginSet("example")`
    [project.entry-points."runbook.remediations"]
    example = "example_pack.remediations"    # `plugins = PluginSet("example")`, planning only
    [project.entry-points."runbook.effects"]
    example = "example_pack.effects"         # `effects = EffectSet("example")`, what applies the plans

The entry point's name is the family: every check or remediation of the module is `<family>.<name>`.
Effects are a group of their own because only a live process's applier may load them (a dry run never
imports anything that can act). The built-in families (docker, swarm, postgres, redis, host, http, tcp) are
registered the same way.
"""

from __future__ import annotations

from agent.changes import Change, EffectSpec
from agent.context import ApplyContext, CheckContext, PlanContext
from agent.docker_engine import read_logs
from agent.exceptions import ApplyError, PlanError, TargetUnreachable
from agent.files import open_private, private_dir
from agent.params import Params
from agent.patterns import PatternError, compile_linear, compile_linear_bytes
from agent.plugins import EffectSet, Outcome, PluginSet
from agent.schema import Duration, DurationMs, DurationOrZero
from agent.status import Status, worst
from agent.thresholds import above

__all__ = [
    "ApplyContext",
    "ApplyError",
    "Change",
    "CheckContext",
    "Duration",
    "DurationMs",
    "DurationOrZero",
    "EffectSet",
    "EffectSpec",
    "Outcome",
    "Params",
    "PatternError",
    "PlanContext",
    "PlanError",
    "PluginSet",
    "Status",
    "TargetUnreachable",
    "above",
    "compile_linear",
    "compile_linear_bytes",
    "open_private",
    "private_dir",
    "read_logs",
    "worst",
]
