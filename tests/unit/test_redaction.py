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
