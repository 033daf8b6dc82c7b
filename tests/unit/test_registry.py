import subprocess
import sys

import pytest
from pydantic import BaseModel

from agent.plugins import Outcome, PluginSet
from agent.registry import Registry, UnknownPlugin
from agent.status import Status


class NoParams(BaseModel):
    pass


def test_duplicate_name_raises() -> None:
    plugins = PluginSet("fake")

    @plugins.check("fake.one", NoParams)
    def one(ctx, params):  # type: ignore[no-untyped-def]
        return Outcome(Status.OK, "ok")

    registry = Registry(check_modules={}, remediation_modules={})
    registry.add_plugins(plugins)
    with pytest.raises(ValueError, match="already registered"):
        registry.add_plugins(plugins)


def test_signature_and_name_checked_at_registration() -> None:
    plugins = PluginSet("fake")
    with pytest.raises(TypeError):
        plugins.check("fake.bad", NoParams)(lambda ctx: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match=r"must be named 'fake\.<name>'"):
        plugins.check("other.name", NoParams)(lambda ctx, p: Outcome(Status.OK, ""))


def test_unknown_plugin_lists_known_names() -> None:
    with pytest.raises(UnknownPlugin) as info:
        Registry().check("postgres.nope")
    assert "postgres.connections" in str(info.value)


def test_plugin_modules_load_lazily_and_do_not_import_clients() -> None:
    code = (
        "import sys\n"
        "from agent.registry import Registry\n"
        "r = Registry()\n"
        "assert 'checks.redis' not in sys.modules\n"
        "r.check('postgres.query')\n"
        "assert 'checks.postgres' in sys.modules and 'checks.redis' not in sys.modules\n"
        "r.check_names(); r.remediation_names()\n"
        "heavy = [m for m in ('docker', 'psycopg', 'redis', 'httpx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
