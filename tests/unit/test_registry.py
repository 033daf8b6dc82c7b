import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def _dist(site: Path, name: str, checks: dict[str, str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{family} = {module}\n" for family, module in checks.items())
    (info / "entry_points.txt").write_text(f"[runbook.checks]\n{lines}")


def test_families_come_from_entry_points_and_may_not_take_a_built_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.exceptions import ConfigError
    from agent.registry import DEFAULT_CHECK_MODULES, installed_modules

    site = tmp_path / "site"
    _dist(site, "pack_one", {"mine": "pack_one.checks"})
    monkeypatch.syspath_prepend(str(site))
    found = installed_modules("runbook.checks", DEFAULT_CHECK_MODULES)
    assert found["mine"] == "pack_one.checks" and found["docker"] == "checks.docker"

    _dist(site, "pack_two", {"mine": "pack_two.checks"})  # two packs, one family
    with pytest.raises(ConfigError, match=r"family 'mine': pack_\w+\.checks and pack_\w+\.checks"):
        installed_modules("runbook.checks", DEFAULT_CHECK_MODULES)

    other = tmp_path / "other"
    _dist(other, "evil", {"docker": "evil.checks"})  # a pack may not replace the built-in docker checks
    monkeypatch.setattr(sys, "path", [str(other), *[p for p in sys.path if p != str(site)]])
    with pytest.raises(ConfigError, match=r"evil declares the built-in runbook\.checks family 'docker'"):
        installed_modules("runbook.checks", DEFAULT_CHECK_MODULES)


def test_a_module_must_be_the_family_it_is_installed_as_and_never_import_effects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack cannot register `tcp.*` under a name of its own, nor load what acts when plans are made."""
    from agent.exceptions import ConfigError

    (tmp_path / "sneaky_checks.py").write_text(
        "from agent.plugin_api import Outcome, Params, PluginSet, Status\n"
        "plugins = PluginSet('tcp')\n"
        "@plugins.check('tcp.connect', Params)\n"
        "def connect(ctx, params):\n    return Outcome(Status.OK, 'not the real one')\n"
    )
    (tmp_path / "acting_plans.py").write_text(
        "import remediations.effects.redis  # noqa: F401\nfrom agent.plugin_api import PluginSet\n"
        "plugins = PluginSet('acting')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(check_modules={"mine": "sneaky_checks", "tcp": "checks.tcp"}, remediation_modules={})
    with pytest.raises(ConfigError, match="installed as the family 'mine' but declares PluginSet\\('tcp'\\)"):
        registry.check("mine.anything")
    assert registry.check("tcp.connect").func.__module__ == "checks.tcp"  # the real one, untouched

    monkeypatch.delitem(sys.modules, "remediations.effects.redis", raising=False)
    plans = Registry(check_modules={}, remediation_modules={"acting": "acting_plans"})
    with pytest.raises(ConfigError, match=r"imported remediations\.effects\.redis"):
        plans.remediation("acting.anything")


def _slow_imports(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Each checks module's import takes a while, as docker's or psycopg's first import does in a daemon."""
    import importlib

    import agent.registry

    real = importlib.import_module

    def slow(name: str, package: str | None = None) -> object:
        if name.startswith("checks."):
            time.sleep(seconds)
        return real(name, package)

    monkeypatch.setattr(agent.registry.importlib, "import_module", slow)


def test_the_first_checks_of_a_family_at_once_all_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # A run starts its checks together; the first of a family loads it. Each must get its check, not a
    # "docker.container already registered" from the load another check's thread had begun.
    _slow_imports(monkeypatch, 0.05)
    registry = Registry()
    names = ["docker.container", "docker.log_matches", "docker.stats", "docker.error_rate"] * 2
    start = threading.Barrier(len(names))

    def first_use(name: str) -> str:
        start.wait()
        return registry.check(name).name

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(first_use, names)) == names


def test_an_effects_import_elsewhere_is_not_blamed_on_a_checks_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # The live applier imports an effects module while a check's thread loads a family: only a module's
    # own imports count against it.
    from agent.apply import Applier
    from agent.config import load_settings

    _slow_imports(monkeypatch, 0.2)
    monkeypatch.delitem(sys.modules, "remediations.effects.redis", raising=False)
    registry = Registry()
    applier = Applier(load_settings(env={}))
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(registry.check, "redis.ping")
        time.sleep(0.05)  # the family's load has begun
        applier._effect("redis.queue.pause")
        assert loading.result().name == "redis.ping"


def test_a_check_asked_for_while_its_family_registers_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A family counts as loaded only once its plugins are in: a check asked for meanwhile waits for the
    # load, never finds the family loaded and its check missing.
    real = Registry.add_plugins

    def slowly(self: Registry, plugins: PluginSet) -> None:
        time.sleep(0.2)
        real(self, plugins)

    monkeypatch.setattr(Registry, "add_plugins", slowly)
    registry = Registry()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(registry.check, "tcp.connect")
        time.sleep(0.1)  # imported, registering
        assert registry.check("tcp.connect").name == "tcp.connect"
        assert first.result().name == "tcp.connect"
