"""Settings through pydantic-settings: every setting from RUNBOOK_<SETTING>, the names people already
export, secrets from files (NAME_FILE, Docker secrets, systemd credentials), the YAML file below the
environment, and every problem reported at once, each naming where its value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Settings, load_settings
from agent.exceptions import ConfigError
from agent.paths import ENV_NAMES, SETTING_VARIABLES


def test_every_setting_has_a_runbook_variable_and_the_handoff_compares_them_all() -> None:
    assert set(SETTING_VARIABLES) == set(Settings.model_fields)
    for setting, names in SETTING_VARIABLES.items():
        assert f"RUNBOOK_{setting.upper()}" in names, setting
        assert set(names) <= set(ENV_NAMES)
    assert {"DATABASE_URL_FILE", "RUNBOOK_DATABASE_URL_FILE", "REDIS_URL_FILE", "CREDENTIALS_DIRECTORY"} <= set(
        ENV_NAMES
    )


def test_each_setting_from_its_variable(tmp_path: Path) -> None:
    env = {
        "RUNBOOK_STATE_DIR": str(tmp_path),
        "RUNBOOK_CONNECT_TIMEOUT": "1.5s",
        "RUNBOOK_READ_TIMEOUT": "1m",
        "RUNBOOK_MAX_PARALLEL_CHECKS": "3",
        "RUNBOOK_MAX_TARGETS_PER_RUN": "2",
        "RUNBOOK_DEFAULT_LIMIT": "7",
        "RUNBOOK_LIMIT_WINDOW": "2h",
        "RUNBOOK_DEFAULT_COOLDOWN": "0",
        "RUNBOOK_LOCK_TTL": "10m",
        "RUNBOOK_APPLY_TIMEOUT": "90s",
        "RUNBOOK_TEMPLATE_ENV": "APP_URL, SHOP_URL",
        "RUNBOOK_ALERT_RETENTION": "1w",
        "RUNBOOK_RUN_RETENTION": "30d",
        "RUNBOOK_ENVIRONMENT": "staging",
        "RUNBOOK_REDIS_URL": "redis://new:6379/0",
        "REDIS_URL": "redis://old:6379/0",  # the RUNBOOK_ name is the stronger
        "DATABASE_URL": "postgresql://db/app",
        "RUNBOOK_ALERTMANAGER_URL": "http://am:9093",
    }
    settings = load_settings(env=env)
    assert settings.alertmanager_url == "http://am:9093"
    assert (settings.connect_timeout, settings.read_timeout, settings.max_parallel_checks) == (1.5, 60.0, 3)
    assert (settings.max_targets_per_run, settings.default_limit, settings.limit_window) == (2, 7, 7200.0)
    assert (settings.default_cooldown, settings.lock_ttl, settings.apply_timeout) == (0.0, 600.0, 90.0)
    assert settings.template_env == ["APP_URL", "SHOP_URL"]
    assert (settings.alert_retention, settings.run_retention) == (7 * 86400.0, 30 * 86400.0)
    assert settings.environment == "staging" and settings.redis_url == "redis://new:6379/0"
    assert settings.database_url == "postgresql://db/app" and isinstance(settings, Settings)
    assert load_settings(env={**env, "RUNBOOK_TEMPLATE_ENV": '["A", "B"]'}).template_env == ["A", "B"]


def test_secrets_from_files_docker_secrets_and_systemd_credentials(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://app:s3cret@db/app\n")  # the newline editors and echo add
    assert load_settings(env={"DATABASE_URL_FILE": str(secret)}).database_url == "postgresql://app:s3cret@db/app"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis_url").write_text("redis://:pw@cache:6379/0")
    loaded = load_settings(env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert loaded.redis_url == "redis://:pw@cache:6379/0"
    # A variable is stronger than a credential file; the variable and its _FILE together are an error.
    assert load_settings(env={"CREDENTIALS_DIRECTORY": str(credentials), "REDIS_URL": "redis://x"}).redis_url == (
        "redis://x"
    )
    with pytest.raises(ConfigError, match="DATABASE_URL and DATABASE_URL_FILE are both set"):
        load_settings(env={"DATABASE_URL": "postgresql://x", "DATABASE_URL_FILE": str(secret)})
    with pytest.raises(ConfigError, match=r"REDIS_URL_FILE=.*nosuch: cannot read"):
        load_settings(env={"REDIS_URL_FILE": str(tmp_path / "nosuch")})


def test_the_environment_is_stronger_than_the_file_and_every_problem_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("compose_project: shop\nlock_ttl: 5m\nmax_parallel_checks: many\nnosuch: 1\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env={"RUNBOOK_LOCK_TTL": "never", "RUNBOOK_DEFAULT_LIMIT": "0"})
    lines = raised.value.message.splitlines()
    assert (
        f"{config}: max_parallel_checks: Input should be a valid integer, unable to parse string as an integer" in lines
    )
    assert any(line.startswith(f"{config}: nosuch: Extra inputs are not permitted") for line in lines)
    assert any(line.startswith("RUNBOOK_LOCK_TTL: lock_ttl: expected a duration") for line in lines)
    assert any(line.startswith("RUNBOOK_DEFAULT_LIMIT: default_limit: Input should be greater") for line in lines)
    assert len(lines) == 4, lines
    config.write_text("compose_project: shop\nlock_ttl: 5m\n")
    settings = load_settings(config, env={"RUNBOOK_COMPOSE_PROJECT": "web"})
    assert (settings.compose_project, settings.lock_ttl) == ("web", 300.0)


def test_the_first_variable_set_wins_and_only_a_variable_with_its_own_file_conflicts(tmp_path: Path) -> None:
    secret = tmp_path / "db"
    secret.write_text("postgresql://file/app")
    env = {"DATABASE_URL": "postgresql://legacy/app", "RUNBOOK_DATABASE_URL_FILE": str(secret)}
    assert load_settings(env=env).database_url == "postgresql://file/app"  # RUNBOOK_ names first
    env = {"RUNBOOK_DATABASE_URL": "postgresql://new/app", "DATABASE_URL_FILE": str(secret)}
    assert load_settings(env=env).database_url == "postgresql://new/app"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_settings(env={"DATABASE_URL_FILE": str(tmp_path / "empty")})


def test_secret_files_are_not_read_for_a_setting_the_environment_gives(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "database_url").write_bytes(b"\xff\xfe not text")
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(env=env)
    assert load_settings(env={**env, "DATABASE_URL": "postgresql://x/app"}).database_url == "postgresql://x/app"


def test_problems_never_quote_a_secret_and_all_sources_report(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("database_url: postgresql://u:s3cretpw@h/db: x\n")  # a YAML error on that line
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env={"RUNBOOK_CONNECT_TIMEOUT": "postgresql://u:an0ther@h/db", "REDIS_URL_FILE": "/"})
    message = raised.value.message
    assert "s3cretpw" not in message and "an0ther" not in message
    assert f"{config}:1:" in message and "not valid YAML" in message
    assert "REDIS_URL_FILE=/: cannot read" in message and "RUNBOOK_CONNECT_TIMEOUT: connect_timeout" in message
    config.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(config, env={})
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(config, env={})


def test_the_alertmanager_url_is_an_http_url_and_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "am"
    secret.write_text("https://runbook:s3cret@am.example:9093\n")
    assert load_settings(env={"RUNBOOK_ALERTMANAGER_URL_FILE": str(secret)}).alertmanager_url == (
        "https://runbook:s3cret@am.example:9093"
    )
    with pytest.raises(ConfigError, match=r"alertmanager_url.*http:// or https://"):
        load_settings(env={"RUNBOOK_ALERTMANAGER_URL": "am.example:9093"})
    # A password with a stray "/" makes the URL mean another host: refused, the password never quoted.
    for bad in ("http://runbook:1234/Zm9vYmFy@am:9093", "http://runbook:s3cr/et@am:9093", "http://am:99999"):
        with pytest.raises(ConfigError, match="percent-encode") as info:
            load_settings(env={"RUNBOOK_ALERTMANAGER_URL": bad})
        assert "Zm9vYmFy" not in str(info.value) and "s3cr" not in str(info.value)


def test_a_blank_list_variable_is_unset() -> None:
    assert load_settings(env={"RUNBOOK_TEMPLATE_ENV": "  "}).template_env == ["APP_URL"]


def test_a_secret_from_a_pipe_is_never_read_for_the_handoff_digest(tmp_path: Path) -> None:
    """The handoff's files digest does not drain a pipe (the command reads it itself) and matches nothing."""
    import os

    from agent.paths import files_digest

    read, write = os.pipe()
    try:
        os.write(write, b"postgresql://u:pw@h/db\n")
        pipe = Path(f"/dev/fd/{read}")
        assert files_digest([pipe]) != files_digest([pipe])  # never matched: never handed over
        assert os.read(read, 100) == b"postgresql://u:pw@h/db\n"  # still all there
    finally:
        os.close(read)
        os.close(write)
    regular = tmp_path / "f"
    regular.write_text("x")
    assert files_digest([regular]) == files_digest([regular])


def test_a_tls_engine_as_the_docker_cli_reaches_it(tmp_path: Path) -> None:
    import trustme

    certs = tmp_path / "certs"
    certs.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    client = ca.issue_cert("agent")
    client.cert_chain_pems[0].write_to_path(str(certs / "cert.pem"))
    client.private_key_pem.write_to_path(str(certs / "key.pem"))
    env = {"DOCKER_HOST": "tcp://web-2:2376", "DOCKER_CERT_PATH": str(certs)}
    # Any non-empty DOCKER_TLS_VERIFY is on, as for the docker CLI ("0" too).
    for value in ("1", "0", "yes"):
        settings = load_settings(env={**env, "DOCKER_TLS_VERIFY": value})
        assert settings.docker_tls and settings.docker_certs == certs
    assert not load_settings(env=env).docker_tls
    # A unix socket has no TLS: a variable left over from another engine changes nothing.
    assert not load_settings(env={"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path / "none")}).docker_tls
    with pytest.raises(ConfigError, match="needs its port"):
        load_settings(env={"DOCKER_HOST": "tcp://web-2"})
    with pytest.raises(ConfigError, match=r"no ca\.pem, cert\.pem, key\.pem"):
        load_settings(env={**env, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path / "none")})
    (certs / "key.pem").write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"key\.pem is encrypted"):
        load_settings(env={**env, "DOCKER_TLS_VERIFY": "1"})


def _keygen(path: Path, passphrase: str = "") -> Path:
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


def test_an_ssh_engine_as_the_docker_cli_takes_it(tmp_path: Path) -> None:
    """ssh://[user@]host[:port], nothing in it ssh could read as an option; a key usable without a
    passphrase; the known_hosts file and the remote socket checked before ssh ever runs."""
    key = _keygen(tmp_path / "id")
    known = tmp_path / "known_hosts"
    known.write_text("")
    env = {
        "DOCKER_HOST": "ssh://deploy@web-2.example:2222",
        "RUNBOOK_DOCKER_SSH_IDENTITY": str(key),
        "RUNBOOK_DOCKER_SSH_KNOWN_HOSTS": str(known),
    }
    forward = load_settings(env=env).docker_forward
    argv = forward.argv(Path("/run/x.sock"))
    assert argv[-2:] == ["--", "web-2.example"] and argv[argv.index("-l") + 1] == "deploy"
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-L") + 1] == "/run/x.sock:/var/run/docker.sock"
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", f"UserKnownHostsFile={known}"} <= set(argv)
    assert load_settings(env={"DOCKER_HOST": "unix:///run/docker.sock"}).docker_forward is None
    refused = {
        "ssh://-oProxyCommand=touch%20x": "is not ssh://",
        "ssh://-oProxyCommand=x@web": "is not ssh://",
        "ssh://web -oProxyCommand=x": "is not ssh://",
        "ssh://u:pw@web": "no password",
        "ssh://web/var/run/docker.sock": "set apart",
        "ssh://web:99999": "bad port",
        "ssh://web:0": "bad port",
        "ssh://[::1]junk:22": "is not ssh://",
        "ssh://we\nb": "is not ssh://",
    }
    for url, why in refused.items():
        with pytest.raises(ConfigError, match=why):
            load_settings(env={**env, "DOCKER_HOST": url})
    # As docker-py reads it: the scheme in any case, space around it; checked and forwarded as ssh://.
    for url in ("SSH://deploy@web-2.example:2222", " ssh://deploy@web-2.example:2222 "):
        assert load_settings(env={**env, "DOCKER_HOST": url}).docker_forward == forward
    with pytest.raises(ConfigError, match="is not ssh://"):
        load_settings(env={**env, "DOCKER_HOST": "SSH://-oProxyCommand=x"})
    ipv6 = load_settings(env={**env, "DOCKER_HOST": "ssh://root@[::1]:22"}).docker_forward.argv(Path("/l"))
    assert ipv6[-2:] == ["--", "::1"]
    for socket in ("relative:path", "/run/docker.sock\n", "/run/a b.sock"):
        with pytest.raises(ConfigError, match="docker_ssh_socket"):
            load_settings(env={**env, "RUNBOOK_DOCKER_SSH_SOCKET": socket})
    with pytest.raises(ConfigError, match=r"docker_ssh_known_hosts .*No such file"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_KNOWN_HOSTS": str(tmp_path / "none")})
    spaced = tmp_path / "known hosts"
    spaced.write_text("")
    with pytest.raises(ConfigError, match="without spaces"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_KNOWN_HOSTS": str(spaced)})
    import os

    os.mkfifo(tmp_path / "fifo")  # never opened: it would block the agent's start
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_IDENTITY": str(tmp_path / "fifo")})
    loose = _keygen(tmp_path / "loose")
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_IDENTITY": str(loose)})
    cut = tmp_path / "cut"
    lines = key.read_text().splitlines()
    cut.write_text("\n".join([lines[0], lines[1][:-3], lines[-1]]))
    cut.chmod(0o600)
    with pytest.raises(ConfigError, match="not a readable OpenSSH private key"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_IDENTITY": str(cut)})
    with pytest.raises(ConfigError, match="passphrase"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_IDENTITY": str(_keygen(tmp_path / "locked", "s3cret"))})
    with pytest.raises(ConfigError, match=r"docker_ssh_identity .*No such file"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_IDENTITY": str(tmp_path / "nokey")})
    (tmp_path / "pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n")
    (tmp_path / "pem").chmod(0o600)
    with pytest.raises(ConfigError, match="passphrase"):
        load_settings(env={**env, "RUNBOOK_DOCKER_SSH_IDENTITY": str(tmp_path / "pem")})


def test_an_inventory_engine_over_ssh_names_its_own_fields(tmp_path: Path) -> None:
    import json

    key = _keygen(tmp_path / "id")
    engines = {"far": {"docker_host": "ssh://root@far", "ssh_identity": str(key), "ssh_socket": "/run/d.sock"}}
    settings = load_settings(env={"RUNBOOK_ENGINES": json.dumps(engines)})
    forward = settings.engine_settings("far").docker_forward
    assert (forward.url, forward.remote_socket, forward.identity) == ("ssh://root@far", "/run/d.sock", key)
    engines["far"]["ssh_identity"] = str(tmp_path / "nokey")
    with pytest.raises(ConfigError, match=r"engines\.far: ssh_identity"):
        load_settings(env={"RUNBOOK_ENGINES": json.dumps(engines)})
    # One engine is one engine however it is reached: another user, the port written, the host's case...
    same = {"a": {"docker_host": "ssh://root@far"}, "b": {"docker_host": "ssh://deploy@FAR:22"}}
    with pytest.raises(ConfigError, match=r"the same engine as engines\.a"):
        load_settings(env={"RUNBOOK_ENGINES": json.dumps(same)})
    # ...and two engines on one host are two (rootless and rootful Docker), each with its own socket.
    two = {"a": {"docker_host": "ssh://far"}, "b": {"docker_host": "ssh://far", "ssh_socket": "/run/user/1000/d.sock"}}
    settings = load_settings(env={"RUNBOOK_DOCKER_SSH_SOCKET": "/elsewhere.sock", "RUNBOOK_ENGINES": json.dumps(two)})
    assert settings.engine_settings("a").docker_forward.remote_socket == "/var/run/docker.sock"  # its own default


def test_the_handoff_compares_an_ssh_engines_login() -> None:
    """Another key, another known_hosts or another ssh agent is another login: a run is handed to the
    local daemon only if they are the same for both."""
    from agent.paths import ENV_NAMES, secret_files

    env = {"RUNBOOK_DOCKER_SSH_IDENTITY": "/etc/runbook/key", "RUNBOOK_DOCKER_SSH_KNOWN_HOSTS": "/etc/runbook/kh"}
    assert {Path("/etc/runbook/key"), Path("/etc/runbook/kh")} <= set(secret_files(env))
    assert "SSH_AUTH_SOCK" in ENV_NAMES
