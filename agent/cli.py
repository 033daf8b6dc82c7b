"""The `runbook` command line. Heavy libraries (docker, psycopg, redis, rich) load inside commands."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from agent import completion
from agent.cli_errors import errors_as_one_line as _errors_as_one_line
from agent.exceptions import AuditError, ConfigError, RunbookError, UnknownRunbook
from agent.paths import default_runbooks_dirs, default_state_dir, files_digest, secret_files, setting_from_env
from agent.redaction import MASK, Redactor, secrets_in_url
from agent.terminal import printable

if TYPE_CHECKING:  # pydantic and yaml load only for commands that read the config, never for --help
    from agent.config import Settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    def __init__(self, verbose: bool, config: Path | None) -> None:
        self.verbose = verbose
        self.config = config
        self._settings: Settings | None = None
        self._incident_policy: Any = None
        self.redactor = Redactor()
        self.redactor.add_from_env(os.environ)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from agent.config import load_settings

            self._settings = load_settings(self.config)
            for url in (self._settings.database_url, self._settings.redis_url, self._settings.docker_host):
                if url:
                    self.redactor.add(url)
            for engine in self._settings.engines.values():  # as the default engine's address is
                self.redactor.add(engine.docker_host)
            for url in (self._settings.alertmanager_url, self._settings.state_url):
                if url:  # its password, if it has one; where it is may be shown
                    self.redactor.add(*secrets_in_url(url))
        return self._settings

    @property
    def config_file(self) -> Path | None:
        return self.config or (Path(os.environ["RUNBOOK_CONFIG"]) if os.environ.get("RUNBOOK_CONFIG") else None)

    def _setting(self, field: str) -> Any:
        """A setting read the cheap way when no config file is in play (the environment is all there is),
        so that a command handed to the local daemon never imports the settings' validation."""
        if self._settings is None and self.config_file is None:
            return setting_from_env(field)
        return getattr(self.settings, field)

    @property
    def state_dir(self) -> Path:
        configured = self._setting("state_dir")
        return Path(configured) if configured else default_state_dir()

    @property
    def policy_file(self) -> Path | None:
        configured = self._setting("policy_file")
        return Path(configured) if configured else None

    def runbooks_dirs(self, given: Sequence[Path]) -> list[Path]:
        if given:
            return list(given)
        return default_runbooks_dirs(self._setting("runbooks_dir"))

    def load(self, given: Sequence[Path] = ()) -> Any:
        from agent.loader import load_runbooks

        settings = self.settings
        return load_runbooks(
            self.runbooks_dirs(given), template_env=settings.template_env, inventory=settings.engine_labels
        )

    @property
    def actor(self) -> str:
        return _actor()

    @property
    def incident_policy(self) -> Any:
        """The incident half of the policy file (the guide's targets without one); its secrets masked."""
        if self._incident_policy is None:
            from agent.policy import load_incident_policy

            self._incident_policy = load_incident_policy(self.settings.policy_file)
            self.redactor.add(*self._incident_policy.secrets)
        return self._incident_policy

    def echo(self, text: str, *, err: bool = False) -> None:
        """One line for a person: secrets masked, control characters from outside text escaped."""
        click.echo(printable(self.redactor.text(text)), err=err)


_runbooks_option = click.option(
    "--runbooks",
    "runbooks_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Runbook directory or file (repeatable). Default: $RUNBOOK_DIR, ./runbooks.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runbook", prog_name="runbook", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.option("--config", type=click.Path(path_type=Path), help="Config file (YAML). Default: $RUNBOOK_CONFIG.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, config: Path | None) -> None:
    """Executable, audited incident-response runbooks.

    Exit codes of `run` (Nagios's): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, which is also what any error
    that keeps it from a verdict exits with. Other commands: 0 done, 1 found a problem (a broken audit
    chain, no such run), 2 a usage or input error.
    """
    ctx.obj = _State(verbose, config)


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _print_json(state: _State, data: Any, *, redact: bool = True) -> None:
    """JSON for scripts: redacted like every output (not the project's own plugin docs: the patterns
    would mask words in them, as in "secret: its password is masked")."""
    click.echo(json.dumps(state.redactor.data(data) if redact else data, indent=2))


@cli.command("list")
@_runbooks_option
@_json_option
@click.pass_obj
@_errors_as_one_line
def list_(state: _State, runbooks_dirs: tuple[Path, ...], as_json: bool) -> None:
    """List the runbooks: id, severity, title."""
    runbooks = state.load(runbooks_dirs)
    rows = []
    for runbook_id in runbooks.ids():
        loaded = runbooks.runbooks[runbook_id]
        spec = loaded.spec
        if not as_json:
            click.echo(f"{spec.id:18} {spec.severity:6} {spec.title}  ({len(spec.checks)} checks)")
        rows.append(
            {
                "id": spec.id,
                "severity": spec.severity,
                "title": spec.title,
                "checks": len(spec.checks),
                "remediations": len(spec.remediations),
                "file": str(loaded.path),
            }
        )
    if as_json:
        _print_json(state, rows)


@cli.command("schema")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write it to FILE instead.")
@click.pass_obj
@_errors_as_one_line
def schema_command(state: _State, out: Path | None) -> None:
    """The JSON Schema (draft 2020-12) of runbook files, for editors: with yaml-language-server, a runbook
    starting `# yaml-language-server: $schema=runbook.schema.json` is checked and completed as typed."""
    from agent.runbook_schema import runbook_schema

    text = json.dumps(runbook_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the schema: {exc.strerror}") from None
    click.echo(f"wrote {out}", err=True)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@_json_option
@click.pass_obj
@_errors_as_one_line
def validate(state: _State, paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate runbooks; every problem on one line as file:line: field: reason (exit 2 on any).

    With --json: {"valid": ..., "runbooks": [...]} or {"valid": false, "errors": [{file, line, field,
    message}, ...]}, exit 2 on any problem too."""
    from agent.exceptions import RunbookValidationError

    try:
        runbooks = state.load(paths)
    except RunbookValidationError as exc:
        if not as_json:
            raise
        found = [p.to_json() if hasattr(p, "to_json") else {"message": str(p)} for p in exc.found]
        _print_json(state, {"valid": False, "errors": found})
        sys.exit(exc.exit_code)
    if as_json:
        _print_json(state, {"valid": True, "runbooks": runbooks.ids()})
        return
    click.echo(f"{len(runbooks.ids())} runbooks valid: {', '.join(runbooks.ids())}")


@cli.command()
@click.argument("name", shell_complete=completion.names)
@_runbooks_option
@_json_option
@click.pass_obj
@_errors_as_one_line
def show(state: _State, name: str, runbooks_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Show a runbook, or a check/remediation's parameters (e.g. `show postgres.connections`)."""
    from agent.output import plugin_json, show_plugin, show_runbook

    runbooks = state.load(runbooks_dirs)
    if "." in name:
        if as_json:
            _print_json(state, plugin_json(runbooks.registry, name), redact=False)
        else:
            click.echo(show_plugin(runbooks.registry, name))
        return
    if name not in runbooks.runbooks:
        raise UnknownRunbook(f"unknown runbook {name!r} (known: {', '.join(runbooks.ids())})")
    loaded = runbooks.runbooks[name]
    if as_json:
        spec = loaded.spec.model_dump(mode="json", by_alias=True)
        for param_name, param in loaded.spec.params.items():
            if param.secret:  # as the text shows it
                spec["params"][param_name]["default"] = MASK
        _print_json(state, {"file": str(loaded.path), **spec})
        return
    click.echo(show_runbook(loaded, runbooks.registry))


def _parse_params(values: Sequence[str], param_file: Path | None = None) -> dict[str, str]:
    """--param KEY=VALUE overrides, and a --param-file of KEY=VALUE lines (`-`: stdin) for values that
    must not show in the process list (a secret DSN)."""
    params: dict[str, str] = {}
    if param_file is not None:
        try:
            text = sys.stdin.read() if str(param_file) == "-" else param_file.read_text()
        except OSError as exc:
            raise ConfigError(f"{param_file}: cannot read param file: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{param_file}:{number}: expected KEY=VALUE")
            params[key.strip()] = value
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--param")
        params[key.strip()] = value
    return params


_param_option = click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a runbook param."
)
_param_file_option = click.option(
    "--param-file",
    type=click.Path(path_type=Path, allow_dash=True),
    help="KEY=VALUE lines (`-`: stdin): params kept out of the process list, e.g. a secret DSN.",
)


class _UnknownUsage(click.UsageError):
    exit_code = 3


class _Unknown(click.ClickException):
    exit_code = 3


class _VerdictCommand(click.Command):
    """A command whose exit code is a monitoring verdict (Nagios's 0/1/2/3): what keeps it from one — a
    usage error too — is 3 UNKNOWN, never 2, which a monitoring system reads as CRITICAL."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # (click's parser consumes the list)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if "--nagios" in given:  # the monitoring system shows stdout: the error goes there too
                from agent.nagios import unknown

                runbook_id = next((a for a in given if not a.startswith("-")), "runbook")
                click.echo(unknown(runbook_id, exc.format_message()))
            raise _UnknownUsage(exc.format_message(), exc.ctx) from None


def _unknown_on_error(func: F) -> F:
    """Inside `errors_as_one_line`: an error that keeps a run from its verdict exits 3 UNKNOWN."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RunbookError as exc:
            exc.exit_code = 3
            _nagios_unknown(args[0], kwargs, exc.message)
            raise
        except click.ClickException as exc:  # a malformed --param
            _nagios_unknown(args[0], kwargs, exc.format_message())
            raise _Unknown(exc.format_message()) from None
        except KeyboardInterrupt:  # click would make it exit 1, WARNING
            _nagios_unknown(args[0], kwargs, "interrupted")
            raise _Unknown("interrupted") from None
        except (click.exceptions.Exit, SystemExit):
            raise
        except Exception as exc:  # an internal error: errors_as_one_line reports it (exit 3)
            _nagios_unknown(args[0], kwargs, f"internal error: {type(exc).__name__}: {exc}")
            raise

    return wrapper  # type: ignore[return-value]


def _nagios_unknown(state: _State, kwargs: dict[str, Any], message: str) -> None:
    """With --nagios, an error is also the plugin's output: monitoring systems show stdout, not stderr."""
    if kwargs.get("nagios"):
        from agent.nagios import unknown

        state.echo(unknown(str(kwargs.get("runbook_id", "runbook")), message))


@cli.command(cls=_VerdictCommand)
@click.argument("runbook_id", shell_complete=completion.runbook_ids)
@click.option("--dry-run", is_flag=True, help="Check and plan only; nothing is changed.")
@_param_option
@_param_file_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--nagios",
    is_flag=True,
    help="Print as a Nagios/Icinga plugin: `ID STATE - text | perfdata`, then a line per check.",
)
@click.option("-y", "--yes", is_flag=True, help="Approve manual remediations (their plans are still shown).")
@_runbooks_option
@click.pass_obj
@_errors_as_one_line
@_unknown_on_error
def run(
    state: _State,
    runbook_id: str,
    dry_run: bool,
    params: tuple[str, ...],
    param_file: Path | None,
    as_json: bool,
    nagios: bool,
    yes: bool,
    runbooks_dirs: tuple[Path, ...],
) -> None:
    """Run a runbook: checks against the live stack, then the remediations they call for, within policy.

    Manual remediations show their exact plan and ask y/N on a terminal; --yes approves; with neither
    they are recorded as pending. --dry-run runs every check and shows every plan, and changes nothing.
    """
    if nagios and as_json:
        raise click.UsageError("--nagios and --json are two output formats: choose one")
    overrides = _parse_params(params, param_file)
    # --nagios is rendered here from the run's JSON document, wherever the run happens.
    as_document = as_json or nagios
    handed = _hand_over(
        state, runbook_id, overrides, dry_run=dry_run, as_json=as_document, yes=yes, given=runbooks_dirs
    )
    if handed is not None:
        sys.stdout.write(_nagios_from_document(handed.stdout) if nagios else handed.stdout)
        sys.stdout.flush()
        sys.stderr.write(handed.stderr)
        sys.exit(handed.exit_code)

    from agent.audit import AuditLog
    from agent.executor import Executor
    from agent.output import Printer, after_run
    from agent.policy import load_policy
    from agent.state import StateStore

    runbooks = state.load(runbooks_dirs)
    if runbook_id not in runbooks.runbooks:
        raise UnknownRunbook(f"unknown runbook {runbook_id!r} (known: {', '.join(runbooks.ids())})")
    settings = state.settings
    actor = _actor()
    audit = AuditLog(settings.audit_path, state.redactor)
    policy = load_policy(settings.policy_file, settings.environment)
    store = StateStore(settings.state_location)
    # A dry run's process is a dry-run process: it has no applier to build, whatever happens.
    executor = Executor(runbooks, settings, state.redactor, audit, policy=policy, state=store, dry_run=dry_run)
    printer = Printer(state.redactor, enabled=not as_document)
    interactive = not as_document and sys.stdin.isatty() and sys.stdout.isatty()

    def approve(step: Any, plan: Any) -> bool | None:
        if yes:
            return True
        if not interactive:
            return None
        return printer.ask_approval(step, plan)

    try:
        with printer.progress(runbooks.runbooks[runbook_id].spec) as progress:
            report = executor.run(
                runbook_id, overrides=overrides, dry_run=dry_run, actor=actor, progress=progress, approve=approve
            )
    finally:
        store.close()
    from agent.cli_incidents import deliver, incident_after_run

    record, incidents, trouble = incident_after_run(state, runbooks, report)
    output: Literal["text", "json", "nagios"] = "nagios" if nagios else "json" if as_json else "text"
    after_run(report, record, trouble, output=output, printer=printer, raw=click.echo, echo=state.echo)
    deliver(state, incidents)
    sys.exit(report.exit_status.exit_code)


def _nagios_from_document(document: str) -> str:
    """The plugin output of a run the daemon did, from the JSON document it printed."""
    from agent.nagios import render

    try:
        return render(json.loads(document)) + "\n"
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _Unknown(f"the local daemon's report was not understood: {exc}") from None


def _hand_over(
    state: _State,
    runbook_id: str,
    overrides: dict[str, str],
    *,
    dry_run: bool,
    as_json: bool,
    yes: bool,
    given: Sequence[Path],
) -> Any:
    """The run done by the local daemon (see agent.handoff), or None to run it here."""
    from agent import handoff

    if os.environ.get("RUNBOOK_NO_DAEMON"):
        return None
    request = handoff.request_for(
        runbook_id,
        overrides,
        dry_run=dry_run,
        as_json=as_json,
        yes=yes,
        runbooks_dirs=state.runbooks_dirs(given),
        config_file=state.config_file,
        policy_file=state.policy_file,
    )
    return handoff.run_once(state.state_dir, request)


def _actor() -> str:
    from agent.handoff import actor

    return actor()


def _store(state: _State) -> Any:
    from agent.state import StateStore

    return StateStore(state.settings.state_location)


def _admin_audit(state: _State) -> Any:
    from agent.audit import AuditLog

    return AuditLog(state.settings.audit_path, state.redactor, actor=_actor(), mode="admin")


@cli.command()
@click.option("--reason", default="", help="Why: shown with every denial while paused.")
@click.pass_obj
@_errors_as_one_line
def pause(state: _State, reason: str) -> None:
    """Deny every remediation (checks still run) until `runbook resume`."""
    from agent import admin

    admin.pause(_store(state), _admin_audit(state), _actor(), reason)
    click.echo("remediation paused: every remediation is denied until `runbook resume`")


@cli.command()
@click.pass_obj
@_errors_as_one_line
def resume(state: _State) -> None:
    """Allow remediations again after `runbook pause`."""
    from agent import admin

    admin.resume(_store(state), _admin_audit(state), _actor())
    click.echo("remediation resumed")


@cli.command()
@click.argument("target")
@click.pass_obj
@_errors_as_one_line
def reset(state: _State, target: str) -> None:
    """Close a target's circuit breaker (a person has looked), e.g. `runbook reset container:sandbox-app-1`."""
    from agent import admin

    admin.reset_breaker(_store(state), _admin_audit(state), target)
    state.echo(f"circuit breaker on {target} closed")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
@_errors_as_one_line
def prune(state: _State, as_json: bool) -> None:
    """Delete state past its retention (alerts 14 days, runs 90 days by default; the audit log is kept)."""
    from agent.retention import prune as prune_state

    counts = prune_state(_store(state), state.settings, _admin_audit(state))
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo("pruned: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


@cli.command()
@_json_option
@click.pass_obj
@_errors_as_one_line
def status(state: _State, as_json: bool) -> None:
    """Agents, pause switch, open circuit breakers, held locks and pending approvals."""
    import time

    store = _store(state)
    paused = store.paused()
    agents = _agents(store, state.settings.agent_dead_after)
    queued, oldest = store.queue()
    if as_json:
        _print_json(
            state,
            {
                "agents": agents,
                "queue": {"queued": queued, "oldest": oldest},
                "paused": {"reason": paused[0], "by": paused[1], "since": paused[2]} if paused else None,
                "breakers": [vars(b) for b in store.breakers()],
                "locks": [{"target": t, "run_id": r, "expires": e} for t, r, e in store.locks()],
                "pending": [
                    {"run_id": r, "remediation": m, "fingerprint": f, "at": at} for r, m, f, at in store.pending()
                ],
            },
        )
        return
    state.echo(f"remediation: {'PAUSED by ' + paused[1] + ': ' + paused[0] if paused else 'enabled'}")
    for agent in agents:
        holds = [f"run {r}" for r in agent["runs"]] + [f"lock {t}" for t in agent["locks"]]
        state.echo(
            f"agent {agent['agent_id']} ({agent['version']}): {agent['state']}, heartbeat"
            f" {agent['heartbeat_age']:.0f}s ago" + (f"; holds {', '.join(holds)}" if holds else "")
        )
    if queued:
        state.echo(f"queue: {queued} run(s) waiting, the oldest for {max(0.0, store.now() - (oldest or 0)):.0f}s")
    for b in store.breakers():
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b.until))
        state.echo(f"circuit open: {b.target} ({b.reason}; run {b.run_id}) until {until} UTC")
    for target, run_id, _ in store.locks():
        state.echo(f"locked: {target} by run {run_id}")
    for run_id, remediation, fingerprint, _ in store.pending():
        state.echo(f"pending approval: run {run_id} {remediation} (plan {fingerprint})")


def _agents(store: Any, dead_after: float) -> list[dict[str, Any]]:
    """The daemons sharing this state: alive (heartbeat within `agent_dead_after`), lost, or stopped, and
    what each holds. One stopped more than an hour ago is left out (pruned with the alerts' retention)."""
    now = store.now()  # the state's clock, as the agents' heartbeats are
    out = []
    for agent in store.agents():
        if agent.stopped is not None and now - agent.stopped > 3600:
            continue  # stopped cleanly a while ago: history, not status
        locks, runs = store.held_by(agent)
        alive = agent.stopped is None and now - agent.heartbeat <= dead_after
        out.append(
            {
                **vars(agent),
                "state": "stopped"
                if agent.stopped is not None
                else ("stopping" if agent.stopping is not None else "alive")
                if alive
                else "lost",
                "heartbeat_age": max(0.0, now - agent.heartbeat),
                "locks": locks,
                "runs": runs,
            }
        )
    return out


def _security(
    token_file: Path | None,
    hmac_file: Path | None,
    decision_file: Path | None,
    public_metrics: bool,
    alert_rate: float = 500.0,
    alert_burst: float = 20_000.0,
) -> Any:
    from pydantic import ValidationError

    from agent.api import ApiSecurity

    def read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None

    def secret(path: Path | None, env: str) -> str | None:
        if path is None and os.environ.get(env + "_FILE"):
            path = Path(os.environ[env + "_FILE"])
        if path is not None:
            return read(path).strip()
        return os.environ.get(env) or None

    token = secret(token_file, "RUNBOOK_API_TOKEN")
    if not token or len(token) < 12:
        raise ConfigError(
            "the daemon needs an API token of 12+ characters: --token-file, RUNBOOK_API_TOKEN_FILE or RUNBOOK_API_TOKEN"
        )
    people: dict[str, str] = {}
    decision_file = decision_file or (
        Path(os.environ["RUNBOOK_DECISION_TOKENS_FILE"]) if os.environ.get("RUNBOOK_DECISION_TOKENS_FILE") else None
    )
    if decision_file is not None:
        for number, line in enumerate(read(decision_file).splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            person, sep, person_token = line.partition(":")
            if not sep or not person.strip() or not person_token.strip():
                raise ConfigError(f"{decision_file}:{number}: expected `name: token`")
            people[person.strip()] = person_token.strip()
    try:
        return ApiSecurity(
            intake_token=token,
            decision_tokens=people,
            hmac_secret=secret(hmac_file, "RUNBOOK_HMAC_SECRET"),
            public_metrics=public_metrics,
            alert_rate=alert_rate,
            alert_burst=alert_burst,
        )
    except ValidationError as exc:
        raise ConfigError(f"daemon credentials: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=int)
@click.option("--dry-run", is_flag=True, help="Staging: every run only checks and plans; nothing is applied.")
@click.option("--token-file", type=click.Path(path_type=Path), help="Intake token file. Default: $RUNBOOK_API_TOKEN.")
@click.option(
    "--decision-tokens-file",
    type=click.Path(path_type=Path),
    help="`name: token` lines: who may read runs and decide. Default: $RUNBOOK_DECISION_TOKENS_FILE.",
)
@click.option("--hmac-secret-file", type=click.Path(path_type=Path), help="Also require HMAC signatures on intake.")
@click.option("--public-metrics", is_flag=True, help="Serve /metrics and /openapi.json without a credential.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16), help="Runs at once.")
@click.option("--queue-size", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--dedup-window", default=300.0, show_default=True, help="Seconds a repeated alert joins the last run.")
@click.option("--shutdown-deadline", default=30.0, show_default=True, help="Seconds to finish in-flight checks.")
@click.option(
    "--max-connections", default=1000, show_default=True, type=click.IntRange(8), help="Open connections at most."
)
@click.option(
    "--request-timeout", default=30.0, show_default=True, help="Seconds for a request to arrive whole (slow senders)."
)
@click.option(
    "--alert-rate", default=500.0, show_default=True, type=click.FloatRange(min=1), help="Alerts/s a sender, sustained."
)
@click.option("--no-local-socket", is_flag=True, help="Take no runs from `runbook run` on this host.")
@click.option(
    "--alert-burst", default=20_000.0, show_default=True, type=click.FloatRange(min=1), help="Alerts a sender at once."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    envvar="RUNBOOK_LOG_LEVEL",
    help="Operational log lines on stderr at this level and above ($RUNBOOK_LOG_LEVEL).",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    envvar="RUNBOOK_LOG_FORMAT",
    help="Default: json, or console when stderr is a terminal ($RUNBOOK_LOG_FORMAT).",
)
@_runbooks_option
@click.pass_obj
@_errors_as_one_line
def daemon(
    state: _State,
    host: str,
    port: int,
    dry_run: bool,
    token_file: Path | None,
    decision_tokens_file: Path | None,
    hmac_secret_file: Path | None,
    public_metrics: bool,
    workers: int,
    queue_size: int,
    dedup_window: float,
    shutdown_deadline: float,
    max_connections: int,
    request_timeout: float,
    alert_rate: float,
    alert_burst: float,
    no_local_socket: bool,
    log_level: str,
    log_format: str | None,
    runbooks_dirs: tuple[Path, ...],
) -> None:
    """Receive alerts (Alertmanager webhooks) and run the matching runbooks within policy.

    Logs one structured line per request, alert, run start and end, remediation decision and escalation
    to stderr (redacted); the audit log stays the record.
    """
    from agent import memory

    memory.limit_arenas()  # before any thread starts
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator

    import uvicorn
    from fastapi import FastAPI

    from agent import logs
    from agent.api import create_app
    from agent.daemon import Daemon
    from agent.local_runs import LocalSocket, LocalSocketUnavailable, add_local_runs
    from agent.policy import load_policy
    from agent.server import ACCEPT_BATCH, connection_budget, guarded_protocol, quiet_accept_errors

    # What the files hold before anything reads them: the local socket compares it after (LocalSocket.bind)
    # and hands runs over only to commands whose files hold the same (agent.paths.run_files_digest).
    files_before = files_digest([state.config_file, *secret_files()])
    policy_before = files_digest([state.policy_file])
    security = _security(token_file, hmac_secret_file, decision_tokens_file, public_metrics, alert_rate, alert_burst)
    incident_policy = state.incident_policy
    state.redactor.add(
        security.intake_token,
        *security.decision_tokens.values(),
        *([security.hmac_secret] if security.hmac_secret else []),
    )
    runbooks = state.load(runbooks_dirs)
    settings = state.settings
    logs.configure(log_level, log_format, state.redactor)
    service = Daemon(
        runbooks,
        settings,
        state.redactor,
        policy=load_policy(settings.policy_file, settings.environment),
        incident_policy=incident_policy,
        dry_run=dry_run,
        workers=workers,
        queue_size=queue_size,
        dedup_window=dedup_window,
    )
    app = create_app(service, security)
    # `runbook run` on this host hands its runs over this socket (agent.handoff), unless told not to.
    bound = None
    if not no_local_socket:
        try:
            bound = LocalSocket.bind(
                settings.state_dir,
                state.runbooks_dirs(runbooks_dirs),
                state.config_file,
                settings.policy_file,
                loaded=(files_before, policy_before),
            )
            add_local_runs(app, service, bound[0])
        except LocalSocketUnavailable as exc:
            click.echo(f"runbook daemon: no local socket ({exc}); `runbook run` will run here itself", err=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        quiet_accept_errors(asyncio.get_running_loop())
        service.start()
        logs.log(logs.INFO, "daemon_started", host=host, port=port, dry_run=dry_run, runbooks=len(runbooks.ids()))
        yield
        # SIGTERM: uvicorn stops accepting; in-flight checks finish, no new remediation starts.
        logs.log(logs.INFO, "daemon_stopping", deadline_s=shutdown_deadline)
        service.stop(shutdown_deadline)
        if bound is not None:  # here: uvicorn raises the signal again once it has served, ending the process
            bound[0].close()

    app.router.lifespan_context = lifespan
    # Connections never take the descriptors the agent itself needs.
    connections = connection_budget(max_connections)
    click.echo(
        f"runbook daemon on http://{host}:{port} ({'dry-run' if dry_run else 'live'}, {len(runbooks.ids())} runbooks,"
        f" {len(security.decision_tokens)} decision credentials, at most {connections} connections)"
    )
    config = uvicorn.Config(
        logs.RequestLog(app),
        host=host,
        port=port,
        log_level="warning",
        http=guarded_protocol(connections, request_timeout),
        backlog=ACCEPT_BATCH,
        timeout_graceful_shutdown=int(shutdown_deadline),
        server_header=False,
        # asyncio's own loop, whatever else is installed: the accept-error handling above and the
        # connection guard are written and tested for it (uvloop measured no faster here).
        loop="asyncio",
    )
    listeners = [config.bind_socket()] + ([bound[1]] if bound else [])

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # At once, not after uvicorn has waited for open connections: no new change starts meanwhile.
            service.stopping.set()
            super().handle_exit(sig, frame)

    try:
        Server(config).run(sockets=listeners)
    finally:
        if bound is not None:
            bound[0].close()


@cli.command()
@click.option("--status", type=click.Choice(["queued", "running", "finished", "interrupted"]))
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True)
@click.pass_obj
@_errors_as_one_line
def runs(state: _State, status: str | None, as_json: bool, limit: int) -> None:
    """Recent runs (CLI and daemon alike), newest first, with pending approvals."""
    import time

    store = _store(state)
    rows = store.runs(status=status, limit=limit)
    pending = {(p[0], p[1]): p[2] for p in store.pending()}
    if as_json:
        secret = _secret_params(state)
        for row in rows:
            row.pop("report", None)
            row["params"] = {k: ("***" if k in secret.get(row["runbook"], ()) else v) for k, v in row["params"].items()}
            row["pending"] = [
                {"remediation": r, "fingerprint": f} for (run_id, r), f in pending.items() if run_id == row["run_id"]
            ]
        click.echo(json.dumps(state.redactor.data(rows), indent=2))
        return
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["created"]))
        waiting = [f"{r} (plan {f})" for (run_id, r), f in pending.items() if run_id == row["run_id"]]
        line = (
            f"{row['run_id']}  {when}  {row['runbook']:16} {row['status']:11} {row['result'] or '-':8} {row['actor']}"
        )
        state.echo(line + (f"  pending: {', '.join(waiting)}" if waiting else ""))


def _secret_params(state: _State) -> dict[str, set[str]]:
    """Runbook id -> its secret params, to mask what older versions stored; {} if runbooks do not load."""
    try:
        runbooks = state.load()
    except RunbookError:
        return {}
    return {rid: {n for n, p in rb.spec.params.items() if p.secret} for rid, rb in runbooks.runbooks.items()}


def _decide(
    state: _State,
    run_id: str,
    approve: bool,
    remediation: str | None,
    fingerprint: str | None,
    reason: str,
    runbooks_dirs: tuple[Path, ...],
    secret_params: dict[str, str] | None = None,
    *,
    as_json: bool = False,
) -> None:
    from agent.audit import AuditLog
    from agent.executor import Executor
    from agent.policy import load_policy
    from agent.state import StateStore

    settings = state.settings
    store = StateStore(settings.state_location)
    runbooks = state.load(runbooks_dirs)
    executor = Executor(
        runbooks,
        settings,
        state.redactor,
        AuditLog(settings.audit_path, state.redactor),
        policy=load_policy(settings.policy_file, settings.environment),
        state=store,
    )
    decision = executor.decide_pending(
        run_id,
        approve=approve,
        approver=_actor(),
        remediation=remediation,
        fingerprint=fingerprint,
        reason=reason,
        secret_params=secret_params,
    )
    if not as_json:
        outcome = f" -> {decision.outcome}" if decision.outcome else ""
        state.echo(f"{decision.id}: {decision.decision}{outcome} ({decision.decision_reason})")
    if decision.escalation:
        state.echo(f"runbook: ESCALATE {decision.id}: {decision.escalation}", err=True)
    from agent.cli_incidents import incident_after_decision

    record = incident_after_decision(state, runbooks, run_id, decision, echo=not as_json)
    if as_json:  # one JSON document on stdout: the decision, and the incident it updated
        incident = {"id": record.id, "status": record.status} if record is not None else None
        _print_json(state, {"run_id": run_id, **decision.to_json(), "incident": incident})


@cli.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.option("--remediation", help="Which pending remediation of the run (if several).")
@click.option("--plan", "fingerprint", help="The plan fingerprint approved (as shown); refused if the plan changed.")
@_param_option
@_param_file_option
@_runbooks_option
@_json_option
@click.pass_obj
@_errors_as_one_line
def approve(
    state: _State,
    run_id: str,
    remediation: str | None,
    fingerprint: str | None,
    params: tuple[str, ...],
    param_file: Path | None,
    runbooks_dirs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Approve a pending manual remediation: planned again, applied only if the plan is unchanged.

    Without --plan, the pending plan is shown and asked about (y/N) on a terminal; elsewhere --plan is
    needed: what is approved is a plan someone saw. A run given secret params (never stored) needs them
    again: --param-file with the same values."""
    if fingerprint is None and param_file is not None and str(param_file) == "-":
        # stdin is the params, read to its end: there is no answer left to read from it.
        raise click.UsageError("with --param-file -, name the plan approved: --plan FINGERPRINT (see `runbook runs`)")
    overrides = _parse_params(params, param_file)
    if fingerprint is None:
        fingerprint = _plan_shown_and_confirmed(state, run_id, remediation)
    _decide(state, run_id, True, remediation, fingerprint, "", runbooks_dirs, overrides, as_json=as_json)


def _at_a_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _plan_shown_and_confirmed(state: _State, run_id: str, remediation: str | None) -> str | None:
    """The fingerprint of the one pending plan, once a person at a terminal has seen it and said yes.
    None when there is not exactly one (decide_pending then says why: none, or which of several)."""
    store = _store(state)
    plans = [p for p in store.pending_plans(run_id) if remediation in (None, p[0])]
    if len(plans) != 1:
        return None
    name, fingerprint, plan = plans[0]
    if not _at_a_terminal():
        raise click.UsageError(
            f"approving needs the plan approved: --plan {fingerprint} ({name}'s pending plan; see `runbook runs`)"
        )
    state.echo(f"{name}: plan {fingerprint}")
    for change in plan.get("changes", []):
        state.echo(f"  - {change.get('summary', change)}")
    if not click.confirm(f"Apply {name}'s plan {fingerprint}?", default=False):
        raise click.ClickException("not approved: nothing was changed")
    return str(fingerprint)


@cli.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.option("--remediation", help="Which pending remediation of the run (if several).")
@click.option("--reason", default="", help="Why (recorded).")
@_runbooks_option
@_json_option
@click.pass_obj
@_errors_as_one_line
def reject(
    state: _State, run_id: str, remediation: str | None, reason: str, runbooks_dirs: tuple[Path, ...], as_json: bool
) -> None:
    """Reject a pending manual remediation (recorded; nothing changes)."""
    _decide(state, run_id, False, remediation, None, reason, runbooks_dirs, as_json=as_json)


@cli.group()
def audit() -> None:
    """Read and verify the audit log."""


@audit.command("verify")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@_json_option
@click.pass_obj
@_errors_as_one_line
def audit_verify(state: _State, file: Path | None, as_json: bool) -> None:
    """Check the hash chain; name the first edited, removed, reordered or truncated line (exit 1)."""
    from agent.audit import verify

    path = file or state.settings.audit_path
    result = verify(path)
    if as_json:
        fields = {"ok": result.ok, "records": result.records, "line": result.line, "problem": result.problem}
        _print_json(state, {"file": str(path), **fields})
        sys.exit(0 if result.ok else 1)
    if not result.ok:
        where = f"{path}:{result.line}" if result.line else str(path)
        raise AuditError(f"{where}: {result.problem}")
    click.echo(f"{path}: {result.records} records, chain intact")


@audit.command("show")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--run", "run_id", help="Only this run's records.", shell_complete=completion.run_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
@click.pass_obj
@_errors_as_one_line
def audit_show(state: _State, files: tuple[Path, ...], run_id: str | None, as_json: bool) -> None:
    """Show audit records, oldest first.

    Given several agents' audit logs (FILES: each agent keeps its own chain), each chain is verified and
    their records are merged into one timeline, each line naming the log it came from: what every agent
    that touched a run saw and did."""
    from agent.audit import merged, read_records
    from agent.output import audit_line

    if len(files) > 1:
        for item in merged(list(files), run_id):
            if as_json:
                click.echo(json.dumps({"chain": item.chain, **item.record}))
            else:
                click.echo(printable(f"[{item.chain}] {audit_line(item.record)}"))
        return
    path = files[0] if files else state.settings.audit_path
    if not path.exists():
        raise AuditError(f"{path}: no audit log yet")
    for record in read_records(path):
        if run_id and record.get("run_id") != run_id:
            continue
        click.echo(json.dumps(record) if as_json else printable(audit_line(record)))


@audit.command("repair")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.pass_obj
@_errors_as_one_line
def audit_repair(state: _State, file: Path | None) -> None:
    """Seal a torn last line (a write cut short: disk full, a crash) so records can be written again.

    The torn bytes are kept in a side file and an `audit_repaired` record says what was removed."""
    from agent.audit import repair

    path = file or state.settings.audit_path
    if not path.exists():
        raise AuditError(f"{path}: no audit log yet")
    result = repair(path, _actor())
    if not result.removed_bytes:
        click.echo(f"{path}: nothing to repair (it ends with a complete record)")
        return
    click.echo(
        f"{path}: removed a torn tail of {result.removed_bytes} bytes (kept in {result.saved_to});"
        f" sealed by record {result.seq}"
    )


def _register() -> None:
    from agent.cli_incidents import incident, postmortem

    cli.add_command(incident)
    cli.add_command(postmortem)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="runbook")


if __name__ == "__main__":
    main()
