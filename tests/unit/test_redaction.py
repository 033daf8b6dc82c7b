import time

import pytest

from agent.redaction import MASK, Redactor


def test_url_passwords_are_masked_whatever_the_scheme() -> None:
    r = Redactor()
    assert r.text("postgresql://app:s3cr3t@db:5432/app") == f"postgresql://app:{MASK}@db:5432/app"
    assert r.text("redis://:hunter22@127.0.0.1:6379/0") == f"redis://:{MASK}@127.0.0.1:6379/0"
    assert "s3cr3t" not in r.text("failed to connect to http://u:s3cr3t@example.invalid/x")


def test_key_value_dsn_and_bearer_tokens() -> None:
    r = Redactor()
    assert "pw123" not in r.text("host=db user=app password=pw123 dbname=app")
    assert "pw123" not in r.text("host=db password='pw123' dbname=app")
    assert "abc.def" not in r.text("Authorization: Bearer abc.def")
    assert "tok" not in r.text("?token=tok&x=1").replace("token", "")


@pytest.mark.parametrize(
    "text",
    [
        '{"msg": "Database connection error", "db": {"password": "hunter22"}}',
        "psycopg.OperationalError: {'password': 'hunter22', 'host': 'db'}",
        '{"access_token":"hunter22"}',
        '"api_key" : "hunter22"',
        "client_secret=hunter22",
        '{"refresh-token": "hunter22"}',
        '{"db_password":"hunter22"}',
        "{'PGPASSWORD': 'hunter22'}",
        '{"api_token": "hunter22"}',
        '{"password": "a\\"b-hunter22"}',  # an escaped quote stays inside the value
        '{"msg": "bad config {\\"db_password\\":\\"hunter22\\"}"}',  # JSON inside a JSON string
        '{"password" => "hunter22"}',  # Ruby's inspect
    ],
)
def test_secrets_in_json_and_dict_text_are_masked(text: str) -> None:
    # A log line a check matched, or an exception's text: the same keys, quoted.
    out = Redactor().text(text)
    assert "hunter22" not in out and MASK in out, out


def test_libpq_and_webhook_variables_are_secret() -> None:
    r = Redactor()
    r.add_from_env({"PGPASSWORD": "pg-hunter22", "SLACK_WEBHOOK_URL": "https://hooks.example/services/T0/B0/xyz123"})
    out = r.text("PGPASSWORD=pg-hunter22 posted to https://hooks.example/services/T0/B0/xyz123")
    assert "pg-hunter22" not in out and "xyz123" not in out, out


def test_known_secret_values_are_masked_anywhere() -> None:
    r = Redactor(["correct-horse-battery"])
    r.add("postgresql://u:p%40ss-word@h/db")
    assert r.text("the value correct-horse-battery leaked") == f"the value {MASK} leaked"
    # The decoded form of a percent-encoded password is known too.
    assert "p@ss-word" not in r.text("auth failed for p@ss-word")


def test_secrets_from_environment() -> None:
    r = Redactor()
    r.add_from_env({"API_TOKEN": "tok-12345", "DATABASE_URL": "postgresql://u:dbpass99@h/d", "HOME": "/root"})
    out = r.text("tok-12345 dbpass99 /root")
    assert "tok-12345" not in out and "dbpass99" not in out and "/root" in out


def test_nested_data() -> None:
    r = Redactor(["topsecret"])
    data = {"a": ["x topsecret", {"b": "topsecret"}], "n": 3}
    assert r.data(data) == {"a": [f"x {MASK}", {"b": MASK}], "n": 3}


def test_environment_assignments_in_container_config() -> None:
    r = Redactor()
    env = ["DB_PASSWORD=hunter2hunter", "STRIPE_API_KEY=sk_live_abc", "GITHUB_TOKEN=ghp_x1", "LOG_LEVEL=info"]
    out = r.data(env)
    assert out == ["DB_PASSWORD=***", "STRIPE_API_KEY=***", "GITHUB_TOKEN=***", "LOG_LEVEL=info"]


def test_names_of_secrets_by_their_words() -> None:
    r = Redactor()
    env = ["DB_PASS=pw1", "STRIPE_SK=sk_live_1", "SENTRY_DSN=https://k@o1.ingest.sentry.io/2", "AUTH_HEADER=x"]
    assert r.data(env) == ["DB_PASS=***", "STRIPE_SK=***", "SENTRY_DSN=***", "AUTH_HEADER=***"]
    # Words, not substrings: these are not secrets.
    assert (
        r.text("PASSENGER_COUNT=3 CACHE_KEY_PREFIX=rb status=500") == "PASSENGER_COUNT=3 CACHE_KEY_PREFIX=rb status=500"
    )


def test_secret_named_keys_in_data_are_masked_whole() -> None:
    r = Redactor()
    data = {"password": "plain words", "apiKey": "abc", "x-auth-token": "t", "key": "bull:email:wait", "n": 1}
    assert r.data(data) == {"password": MASK, "apiKey": MASK, "x-auth-token": MASK, "key": "bull:email:wait", "n": 1}


def test_key_like_url_users_are_masked() -> None:
    r = Redactor()
    assert r.text("https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42") == (
        f"https://{MASK}@o1.ingest.sentry.io/42"
    )
    assert r.text("git clone https://ghp_abcdefghijklmnopqrstuvwxyz@github.com/x") == (
        f"git clone https://{MASK}@github.com/x"
    )
    assert r.text("postgresql://runbook@db/app") == "postgresql://runbook@db/app"  # a plain user name stays


# Inputs shaped to make a backtracking pattern re-scan: long runs of what a pattern starts with,
# never followed by what it needs to finish.
HOSTILE = [
    "a" * 1_048_576,
    "a:" * 524_288,
    "a://" * 262_144,
    "a://b:" + "c" * 1_048_570,
    "PASSWORD" * 131_072,
    "password " * 116_508,
    "password='" + "x" * 1_048_566,
    "Bearer " * 149_796,
    "x_" * 524_288 + "=",
    '"password"' * 104_857,
    "'access_token' " * 69_905,
    '{"password"' + " " * 1_048_565,
    '"' * 1_048_576,
    '"db_password": "' + "\\" * 1_048_558,
    "'" + "k" * 1_048_575,
    '"password":"\\"' * 65_536,
    '\\"db_password\\":' * 58_254,
    '{"db_password": "' + '\\"a' * 349_520,
    "A" * 1_048_575 + "=",
    "@:" * 524_288,
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:12]))
def test_redaction_is_linear_on_hostile_text(text: str) -> None:
    r = Redactor(["some-known-secret"])
    started = time.process_time()
    r.text(text)
    # A quadratic pattern takes minutes on 1 MiB; linear ones take milliseconds (CPU time, so a busy
    # machine does not make this flaky).
    assert time.process_time() - started < 1.0


def test_values_of_other_types_are_redacted_as_the_text_they_become() -> None:
    # A plugin's check may put objects in its details; JSON would make them text, unredacted.
    from dataclasses import dataclass
    from pathlib import PurePosixPath

    from agent.models import CheckResult
    from agent.status import Status

    @dataclass
    class Found:
        dsn: str

    class Opaque:
        def __str__(self) -> str:
            return "connect to postgresql://app:hunter2hunter2@db/app"

    redactor = Redactor(["s3cr3t-token-value"])
    data = redactor.data({"a": {1, "s3cr3t-token-value"}, "b": Opaque(), "c": PurePosixPath("/x/s3cr3t-token-value")})
    assert "hunter2hunter2" not in str(data) and "s3cr3t-token-value" not in str(data)
    assert data["c"] == f"/x/{MASK}" and sorted(data["a"], key=str) == sorted([1, MASK], key=str)
    result = CheckResult(
        "c", "x.y", Status.OK, "ok", 1.0, details={"found": Found("postgresql://u:hunter2hunter2@h/d")}
    )
    assert "hunter2hunter2" not in str(redactor.data(result.to_json()))  # a dataclass in details: a dict
    assert redactor.data({"n": 1, "f": 0.5, "t": True, "none": None}) == {"n": 1, "f": 0.5, "t": True, "none": None}


def test_the_working_directory_is_not_a_secret() -> None:
    redactor = Redactor()
    redactor.add_from_env({"PWD": "/home/ops/runbooks", "OLDPWD": "/tmp/work", "DB_PASSWORD": "hunter2hunter2"})
    assert redactor.text("/home/ops/runbooks/db.yaml, hunter2hunter2") == f"/home/ops/runbooks/db.yaml, {MASK}"
