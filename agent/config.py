"""Settings: targets (DATABASE_URL, REDIS_URL, DOCKER_HOST), paths, timeouts and limits.

Read through pydantic-settings from, strongest first: the environment (every setting has a variable:
`RUNBOOK_<SETTING>`, plus the names people already export: DATABASE_URL, REDIS_URL, DOCKER_HOST,
RUNBOOK_DIR, RUNBOOK_POLICY, RUNBOOK_ENV), secrets in files (`DATABASE_URL_FILE=/run/secrets/db`, a
Docker secret or a systemd credential named after the setting: `database_url`), then the YAML config
file (--config / RUNBOOK_CONFIG), then the defaults. Every problem is reported, each naming where its
value came from.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.exceptions import ConfigError
from agent.inventory import ENGINE_NAME
from agent.paths import DOCKER_SECRETS, SECRET_SETTINGS, SETTING_VARIABLES, default_state_dir
from agent.redaction import Redactor
from agent.schema import Duration, DurationOrZero
from agent.silences import check_url

__all__ = ["Settings", "load_settings"]

MAX_SECRET_FILE = 65_536  # bytes of a secret read from a file: a DSN, never a disk image
MAX_CONFIG_FILE = 1 << 20

# pydantic-settings logs every source's values at DEBUG when PYDANTIC_SETTINGS_DEBUG is set: DSNs with
# their passwords. Never below WARNING here.
logging.getLogger("pydantic_settings").setLevel(logging.WARNING)


def _default_state_dir() -> Path:
    return default_state_dir()


EngineName = Annotated[str, StringConstraints(pattern=ENGINE_NAME)]
LabelText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{0,63}$")]


class Engine(BaseModel):
    """One Docker engine of the inventory, reached as the docker CLI reaches one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    docker_host: str = Field(
        description="unix:///var/run/docker.sock, tcp://host:2376 (with TLS), or ssh://user@host[:port]."
    )
    tls_verify: bool = Field(False, description="TLS verified both ways (a tcp:// engine).")
    cert_path: Path | None = Field(None, description="ca.pem, cert.pem, key.pem for this engine.")
    ssh_identity: Path | None = Field(None, description="An ssh:// engine's private key (default: ssh's own).")
    ssh_known_hosts: Path | None = Field(None, description="Its host key (default: ssh's known_hosts files).")
    ssh_socket: str | None = Field(None, description="The engine's socket on that host (/var/run/docker.sock).")
    labels: dict[LabelText, LabelText] = Field(default_factory=dict, description="For `hosts: key=value`.")
    connect_timeout: Duration | None = Field(None, gt=0, description="This engine's own (a far one: longer).")
    read_timeout: Duration | None = Field(None, gt=0)

    @field_validator("docker_host")
    @classmethod
    def _scheme_as_written(cls, host: str) -> str:
        return _normal_host(host)


class Settings(BaseModel):
    """What the agent talks to and where it writes. Every field can come from the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(None, description="PostgreSQL DSN (DATABASE_URL).")
    redis_url: str | None = Field(None, description="Redis URL (REDIS_URL).")
    docker_host: str | None = Field(None, description="Docker engine (DOCKER_HOST); default: the local socket.")
    docker_tls_verify: bool = Field(
        False, description="Talk to a tcp:// engine over TLS, verified both ways (DOCKER_TLS_VERIFY)."
    )
    docker_cert_path: Path | None = Field(
        None,
        description="Directory of ca.pem, cert.pem, key.pem for a TLS engine (DOCKER_CERT_PATH; default ~/.docker).",
    )
    docker_ssh_identity: Path | None = Field(
        None, description="Private key for an ssh:// engine (default: ssh's own: its config, agent, ~/.ssh)."
    )
    docker_ssh_known_hosts: Path | None = Field(
        None, description="known_hosts file holding an ssh:// engine's host key (default: ssh's own files)."
    )
    docker_ssh_socket: str = Field("/var/run/docker.sock", description="The Docker socket on an ssh:// engine's host.")
    compose_project: str = Field("sandbox", description="Compose project whose services runbooks name.")
    runbooks_dir: Path | None = Field(None, description="Where runbooks live (RUNBOOK_DIR).")
    state_dir: Path = Field(default_factory=_default_state_dir, description="State directory.")
    audit_log: Path | None = Field(None, description="Audit log path; default: STATE_DIR/audit.jsonl.")
    connect_timeout: Duration = Field(2.0, gt=0, description="Time to connect to any target (2s).")
    read_timeout: Duration = Field(4.0, gt=0, description="How long to wait for any target's answer (4s).")
    max_parallel_checks: int = Field(8, ge=1, le=64, description="Checks run at once.")
    policy_file: Path | None = Field(None, description="Environment policy file (RUNBOOK_POLICY).")
    environment: str | None = Field(None, description="Which environment of the policy file applies (RUNBOOK_ENV).")
    max_targets_per_run: int = Field(5, ge=1, description="Blast radius: targets one run may change.")
    default_limit: int = Field(3, ge=1, description="Changes per target per limit_window when a runbook sets none.")
    limit_window: Duration = Field(3600.0, gt=0, description="The default rate-limit window (1h).")
    default_cooldown: DurationOrZero = Field(60.0, ge=0, description="A target's rest after a change (1m).")
    lock_ttl: Duration = Field(
        900.0, gt=0, description="A target lock's life if its holder vanishes (renewed while it works)."
    )
    apply_timeout: Duration = Field(120.0, gt=0, description="Time any one effect may take (2m).")
    backup_dir: Path | None = Field(
        None,
        description="Backups postgres.restore may restore from, and where it dumps first; default STATE_DIR/backups.",
    )
    template_env: list[str] = Field(
        default_factory=lambda: ["APP_URL"],
        description="Environment variables runbook templates may read as `env.NAME`; no others are visible.",
    )
    alert_retention: Duration = Field(14 * 86400.0, gt=0, description="Alerts kept this long (14d).")
    run_retention: Duration = Field(90 * 86400.0, gt=0, description="Finished runs kept this long (90d).")
    alertmanager_url: str | None = Field(
        None,
        description="Alertmanager, for the silences of remediations with `silence: true` (basic auth may be in it).",
    )

    engines: dict[EngineName, Engine] = Field(
        default_factory=dict,
        description="The Docker engines runbook steps may name in `hosts:` (RUNBOOK_ENGINES: JSON); none: the one"
        " docker_host.",
    )
    state_url: str | None = Field(
        None,
        description="Shared state in PostgreSQL (postgresql://...) for several agents; default: SQLite in state_dir.",
    )
    agent_dead_after: Duration = Field(
        30.0,
        ge=1,
        le=3600,
        description="A daemon silent this long is lost: the agents sharing its state interrupt its runs (30s).",
    )

    @field_validator("engines")
    @classmethod
    def _all_is_reserved(cls, engines: dict[str, Engine]) -> dict[str, Engine]:
        if "all" in engines:
            raise ValueError("an engine may not be named `all` (hosts: all selects every engine)")
        return engines

    @model_validator(mode="after")
    def _engines_reachable_as_configured(self) -> Settings:
        """Each engine as its own settings would be checked: a port for tcp://, its certificate files; and
        each engine once (two names for one engine would keep two sets of locks and limits for it)."""
        seen: dict[str, str] = {}
        for name, engine in self.engines.items():
            if not engine.docker_host.startswith(("unix://", "tcp://", "ssh://")):
                raise ValueError(f"engines.{name}.docker_host: unix://, tcp:// or ssh://")
            try:
                on_engine = self.engine_settings(name, check=True)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                message = message.replace("docker_cert_path (DOCKER_CERT_PATH)", "cert_path")
                message = re.sub(r"^docker_ssh_", "ssh_", message)
                raise ValueError(f"engines.{name}: {message}") from None
            where = on_engine.engine_key
            if where in seen:
                raise ValueError(f"engines.{name}: the same engine as engines.{seen[where]} ({engine.docker_host})")
            seen[where] = name
        return self

    @property
    def engine_labels(self) -> dict[str, dict[str, str]]:
        """The inventory as `hosts:` selects from it: each engine's name and labels, in order."""
        return {name: dict(engine.labels) for name, engine in self.engines.items()}

    def engine_is_default(self, name: str) -> bool:
        """Whether an engine of the inventory is the default one (`docker_host`): its targets are then
        named as a step without hosts names them, so both meet the same locks and limits."""
        return self.engine_settings(name).engine_key == self.engine_key

    @property
    def engine_key(self) -> str:
        """The default engine, however its address is written (a trailing slash; over ssh, the user)."""
        host = self.docker_host or "unix:///var/run/docker.sock"
        if host.startswith("ssh://"):
            from agent.ssh_tunnel import engine_key

            return engine_key(host, self.docker_ssh_socket)
        return _engine_key(host)

    def engine_settings(self, name: str, *, check: bool = False) -> Settings:
        """These settings, on the inventory's engine `name` (its host, TLS and timeouts)."""
        engine = self.engines[name]
        update: dict[str, Any] = {
            "engines": {},
            "docker_host": engine.docker_host,
            "docker_tls_verify": engine.tls_verify,
            "docker_cert_path": engine.cert_path,
            "docker_ssh_identity": engine.ssh_identity,
            "docker_ssh_known_hosts": engine.ssh_known_hosts,
            # Each engine its own, as its certificates: never another host's socket path.
            "docker_ssh_socket": engine.ssh_socket or "/var/run/docker.sock",
        }
        if engine.connect_timeout is not None:
            update["connect_timeout"] = engine.connect_timeout
        if engine.read_timeout is not None:
            update["read_timeout"] = engine.read_timeout
        if check:
            return Settings.model_validate({**self.model_dump(exclude={"engines"}), **update})
        return self.model_copy(update=update)

    @field_validator("state_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("state_url must be a postgresql:// URL (leave it unset for SQLite in state_dir)")
        return url

    @field_validator("alertmanager_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> Settings:
        if self.connect_timeout > self.read_timeout:
            raise ValueError("connect_timeout must not exceed read_timeout")
        return self

    @field_validator("docker_tls_verify", mode="before")
    @classmethod
    def _any_value_is_on(cls, value: Any) -> Any:
        # As the docker CLI reads DOCKER_TLS_VERIFY: any non-empty value turns TLS on ("0" too).
        return bool(value.strip()) if isinstance(value, str) else value

    @field_validator("docker_host")
    @classmethod
    def _port_given(cls, host: str | None) -> str | None:
        host = None if host is None else _normal_host(host)
        if host is not None and host.startswith("tcp://") and not urlsplit(host).port:
            raise ValueError("a tcp:// engine needs its port (2376 with TLS, as dockerd listens)")
        if host is not None and host.startswith("ssh://"):
            from agent.ssh_tunnel import parse

            parse(host)  # the address, before anything else of it is looked at
        return host

    @model_validator(mode="after")
    def _docker_ssh(self) -> Settings:
        """An ssh:// engine as the docker CLI takes it, and what ssh is given checked before it runs: its
        address (nothing in it an option), a key it can use without asking, the host key file."""
        if not (self.docker_host or "").startswith("ssh://"):
            return self
        from agent import ssh_tunnel

        if not ssh_tunnel.SOCKET_PATH.fullmatch(self.docker_ssh_socket):
            socket = self.docker_ssh_socket
            raise ValueError(f"docker_ssh_socket: an absolute path of letters, digits and ._/- ({socket!r})")
        if self.docker_ssh_identity is not None:
            ssh_tunnel.check_key(self.docker_ssh_identity, "docker_ssh_identity")
        if self.docker_ssh_known_hosts is not None:
            ssh_tunnel.check_path("docker_ssh_known_hosts", self.docker_ssh_known_hosts)
        return self

    @property
    def docker_forward(self) -> Any:
        """An ssh:// engine's forward (agent.ssh_tunnel.Forward), or None for any other engine."""
        if not (self.docker_host or "").startswith("ssh://"):
            return None
        from agent.ssh_tunnel import Forward

        return Forward(
            url=self.docker_host or "",
            remote_socket=self.docker_ssh_socket,
            identity=self.docker_ssh_identity,
            known_hosts=self.docker_ssh_known_hosts,
            connect_timeout=self.connect_timeout,
        )

    @model_validator(mode="after")
    def _docker_tls(self) -> Settings:
        """As the docker CLI: TLS for a tcp:// engine (a unix socket has none), with the client's certificate
        and the CA it trusts from one directory. Checked here, so a missing or passphrase-protected file
        is a configuration error naming it, not every check's failure (or a prompt on the terminal)."""
        if not self.docker_tls:
            return self
        certs = self.docker_certs
        missing = [name for name in ("ca.pem", "cert.pem", "key.pem") if not (certs / name).is_file()]
        if missing:
            raise ValueError(f"docker_cert_path (DOCKER_CERT_PATH) {certs}: no {', '.join(missing)}")
        try:
            with open(certs / "key.pem", "rb") as key:
                head = key.read(4096)
        except OSError as exc:
            raise ValueError(f"docker_cert_path {certs}: key.pem: {exc.strerror}") from None
        if b"ENCRYPTED" in head:
            raise ValueError(f"docker_cert_path {certs}: key.pem is encrypted; the agent cannot be asked a passphrase")
        return self

    @property
    def docker_tls(self) -> bool:
        """Whether the engine is reached over TLS: asked for, and a tcp:// engine."""
        return self.docker_tls_verify and (self.docker_host or "").startswith(("tcp://", "https://"))

    @property
    def docker_certs(self) -> Path:
        return self.docker_cert_path or Path.home() / ".docker"

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.state_dir / "audit.jsonl"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def state_location(self) -> Path | str:
        """Where the state store is: the shared PostgreSQL database, or SQLite in the state directory."""
        return self.state_url or self.state_path

    @property
    def backups_path(self) -> Path:
        return self.backup_dir or self.state_dir / "backups"

    def template_view(self) -> dict[str, Any]:
        """What runbook templates see as `config`."""
        return {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "docker_host": self.docker_host,
            "compose_project": self.compose_project,
        }


# What one load reads (set by load_settings for the sources below; a context variable, so that two
# threads loading settings at once each see their own).
_LOAD: contextvars.ContextVar[_Load] = contextvars.ContextVar("runbook_settings_load")


class _Load:
    def __init__(self, env: Mapping[str, str], config_file: Path | None) -> None:
        self.env = env
        self.config_file = config_file
        self.origin: dict[str, str] = {}  # setting -> where its value came from (for error messages)
        self.problems: list[str] = []  # found while reading, before validation


class _Environment(PydanticBaseSettingsSource):
    """Each setting's variables (agent.paths.SETTING_VARIABLES), the RUNBOOK_ one first, and NAME_FILE
    for the secret ones. A list setting takes JSON or comma-separated names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # (the whole mapping is made in __call__)

    def __call__(self) -> dict[str, Any]:
        load = _LOAD.get()
        values: dict[str, Any] = {}
        for name, variables in SETTING_VARIABLES.items():
            for variable in variables:  # the first one set wins: a variable, or (a secret) its _FILE
                file_variable = f"{variable}_FILE" if name in SECRET_SETTINGS else None
                given, from_file = load.env.get(variable), load.env.get(file_variable) if file_variable else None
                if given and from_file:
                    load.problems.append(f"{variable} and {file_variable} are both set: give {name} one way")
                    break
                if given:
                    values[name], load.origin[name] = given, variable
                    break
                if from_file and file_variable:
                    value = _read_secret(Path(from_file), file_variable, load)
                    if value:
                        values[name], load.origin[name] = value, file_variable
                    break
            if name == "engines" and isinstance(values.get(name), str):
                try:
                    values[name] = json.loads(values[name])
                except ValueError:
                    load.problems.append(f"{load.origin[name]}: engines: expected JSON (a mapping of engines)")
                    del values[name]
            if name == "template_env" and isinstance(values.get(name), str):
                names = _names(values[name])
                if names is None:
                    del values[name]  # blank: unset, as an empty variable is
                else:
                    values[name] = names
        return values


class _SecretFiles(PydanticBaseSettingsSource):
    """Secret settings from files named after them: Docker secrets (/run/secrets/database_url) and
    systemd credentials ($CREDENTIALS_DIRECTORY/database_url, LoadCredential=database_url:...). Only for
    a setting the environment did not give (its value wins; these files are then not even read)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        load = _LOAD.get()
        values: dict[str, Any] = {}
        directories = [DOCKER_SECRETS]
        if load.env.get("CREDENTIALS_DIRECTORY"):
            directories.append(Path(load.env["CREDENTIALS_DIRECTORY"]))  # systemd's, stronger
        for name in sorted(SECRET_SETTINGS):
            variables = SETTING_VARIABLES[name]
            if any(load.env.get(v) or load.env.get(f"{v}_FILE") for v in variables):
                continue
            for directory in directories:
                path = directory / name
                try:
                    present = path.is_file()
                except OSError as exc:  # a directory only root may read, a name too long
                    load.problems.append(f"{path}: cannot read: {exc.strerror}")
                    continue
                if present:
                    value = _read_secret(path, str(path), load)
                    if value:
                        values[name], load.origin[name] = value, str(path)
        return values


class _ConfigFile(PydanticBaseSettingsSource):
    """The YAML config file, if there is one. What is wrong with it is reported with the rest; its text
    never is (a YAML error's excerpt could hold a password)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        load = _LOAD.get()
        path = load.config_file
        if path is None:
            return {}
        try:
            if not path.is_file():
                load.problems.append(f"{path}: cannot read config file: not a regular file")
                return {}
            with path.open("rb") as handle:
                data = handle.read(MAX_CONFIG_FILE + 1)
        except OSError as exc:
            load.problems.append(f"{path}: cannot read config file: {exc.strerror}")
            return {}
        if len(data) > MAX_CONFIG_FILE:
            load.problems.append(f"{path}: a config file larger than {MAX_CONFIG_FILE} bytes")
            return {}
        try:
            loaded = yaml.safe_load(data.decode()) or {}
        except UnicodeDecodeError:
            load.problems.append(f"{path}: not UTF-8 text")
            return {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            load.problems.append(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or 'syntax error'}")
            return {}
        if not isinstance(loaded, dict):
            load.problems.append(f"{path}: expected a mapping of settings")
            return {}
        for key in loaded:
            load.origin.setdefault(str(key), str(path))
        return loaded


class _Sourced(Settings, BaseSettings):
    """Settings as loaded: the same model, filled from the sources above in their order of strength."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_Environment(settings_cls), _SecretFiles(settings_cls), _ConfigFile(settings_cls))


def _read_secret(path: Path, named_by: str, load: _Load) -> str | None:
    """A secret file's text without its trailing newline; None (and a problem) if it cannot be had.
    Regular files only: a pipe is read by the command itself, never by two readers."""
    where = named_by if named_by == str(path) else f"{named_by}={path}"
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        load.problems.append(f"{where}: cannot read: {exc.strerror}")
        return None
    if len(data) > MAX_SECRET_FILE:
        load.problems.append(f"{where}: larger than {MAX_SECRET_FILE} bytes")
        return None
    try:
        text = data.decode().rstrip("\r\n")  # the newline editors and `echo` add
    except UnicodeDecodeError:
        load.problems.append(f"{where}: not UTF-8 text")
        return None
    if not text:
        load.problems.append(f"{where}: empty")
        return None
    return text


def _names(value: str) -> Any:
    """A list setting from a variable: a JSON list, or names separated by commas; None when blank."""
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text  # validation says what is wrong with it
    return [part.strip() for part in text.split(",") if part.strip()]


def load_settings(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, secret files and an optional YAML file (RUNBOOK_CONFIG), in that
    order of strength. Every problem is reported at once (ConfigError, one line each)."""
    env = os.environ if env is None else env
    path = config_file or (Path(env["RUNBOOK_CONFIG"]) if env.get("RUNBOOK_CONFIG") else None)
    load = _Load(env, path)
    token = _LOAD.set(load)
    lines: list[str] = []
    settings: Settings | None = None
    try:
        settings = _Sourced()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            where = load.origin.get(str(error["loc"][0]) if error["loc"] else "", "settings")
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}: {field}: {message}")
    finally:
        _LOAD.reset(token)
    if load.problems or lines or settings is None:
        # A message may quote what was given (`got 'postgresql://u:pw@h'`): masked as all output is.
        redactor = Redactor()
        raise ConfigError("\n".join(redactor.text(line) for line in load.problems + lines))
    return settings


def _normal_host(host: str) -> str:
    """An engine's address as docker-py reads it: no surrounding space, the scheme in lower case (so that
    `SSH://` is checked as ssh:// is, and goes through the same forward)."""
    host = host.strip()
    scheme, sep, rest = host.partition("://")
    return f"{scheme.lower()}{sep}{rest}" if sep else host


def _engine_key(docker_host: str) -> str:
    """One engine however its address is written (a trailing slash, the scheme's case)."""
    scheme, _, rest = docker_host.partition("://")
    return f"{scheme.lower()}://{rest.rstrip('/')}"
