"""`runbook run ID --nagios`: the run as a Nagios/Icinga/Sensu plugin's output, so an existing monitoring
system can run runbooks as service checks.

The plugin conventions (the Monitoring Plugins Development Guidelines, which Icinga and Sensu follow):
the exit code is the state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `run` already exits so); the first
line is `SERVICE STATE - text | perfdata`; further lines are the long output (here, one per check).
Performance data is `'label'=value[UOM];[warn];[crit];[min];[max]`, one item per metric a check
reported, with the levels it was judged against where it has them (as plain numbers, as graphers read
them; note that a check here is WARNING/CRITICAL at or above a level, where a Nagios range `10` means
above 10). A `|` in any text would start the
perfdata, so text has none; values are plain decimals (no exponents, which parsers reject).

Rendered from the run's JSON report, so a run handed to the local daemon prints the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from agent.terminal import printable

__all__ = ["render", "unknown"]

_UNITS = (("_pct", "%"), ("_ms", "ms"), ("_s", "s"), ("_bytes", "B"))
_MAX_SUMMARY = 200  # characters of one check's summary in the first line


def render(report: Mapping[str, Any]) -> str:
    """The plugin output for a run's JSON report (`runbook run --json`'s document)."""
    checks = list(report.get("final_checks") or report.get("checks") or [])
    status = str(report.get("final_status") or report.get("status") or "UNKNOWN")
    failing = [c for c in checks if c.get("status") != "OK"]
    if failing:
        text = "; ".join(f"{c['id']}: {_text(str(c.get('summary', '')), _MAX_SUMMARY)}" for c in failing)
    else:
        text = f"all {len(checks)} checks OK" if checks else "no checks"
    if report.get("escalations") or any(r.get("escalation") for r in report.get("remediations") or []):
        text += " (escalated)"
    perfdata = " ".join(item for c in checks for item in _perfdata(c))
    name = str(report.get("runbook", "runbook")).upper()
    first = f"{_text(name, 64)} {status} - {text}" + (f" | {perfdata}" if perfdata else "")
    long_output = [
        f"[{c.get('status')}] {c['id']} ({c.get('check')}): {_text(str(c.get('summary', '')))}" for c in checks
    ]
    return "\n".join([first, *long_output])


def unknown(runbook_id: str, message: str) -> str:
    """The plugin output of a run that could not reach a verdict (exit 3)."""
    return f"{_text(runbook_id.upper(), 64)} UNKNOWN - {_text(message, _MAX_SUMMARY)}"


def _text(value: str, limit: int = 1000) -> str:
    """One line without the perfdata separator, control characters escaped."""
    flat = printable(" ".join(value.replace("|", "/").split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _perfdata(check: Mapping[str, Any]) -> list[str]:
    items = []
    thresholds: Mapping[str, Any] = check.get("thresholds") or {}
    for metric, value in (check.get("metrics") or {}).items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            continue
        unit = next((u for suffix, u in _UNITS if metric.endswith(suffix)), "")
        warn, crit = [*(thresholds.get(metric) or ()), None, None][:2]
        fields = [_number(value) + unit, _level(warn), _level(crit)]
        if unit == "%" and 0 <= value <= 100:  # (a container's CPU can pass 100%: several cores)
            fields += ["0", "100"]
        label = _label(metric if metric == check["id"] else f"{check['id']}_{metric}")
        items.append(f"{label}={';'.join(fields).rstrip(';')}")
    return items


def _label(label: str) -> str:
    """A label quoted when it holds spaces; what the format reserves (`'`, `=`, `|`) and any other
    whitespace or control character (a newline would end the first line) replaced."""
    label = "".join(
        "_" if ch in "'=|" or (ch != " " and (ch.isspace() or not ch.isprintable())) else ch for ch in label
    )
    return f"'{label}'" if " " in label else label


def _level(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return ""
    return _number(value)


def _number(value: float) -> str:
    """A plain decimal, as exact as the float's shortest repr: 97.5, 6, 0.0000001 — never 1e-07."""
    if float(value).is_integer():
        return str(int(value))
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
