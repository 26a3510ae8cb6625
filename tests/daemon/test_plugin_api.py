"""reactor.plugin and discovery: the public names, plugins from directories and installed packages,
load-time validation at PATH:LINE:COL, problems reported by plugin name, `reactor check`/`reactor plugins`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import reactor.plugin
import reactor.testing
from reactor.daemon.plugins import PluginLoadError, load_plugins
from reactor.errors import LoadError, PluginError
from reactor.testing import load_test_rules

REACTOR = [sys.executable, "-m", "reactor.cli"]

GOOD = '''
"""A plugin directory module."""
from dataclasses import dataclass
from reactor.plugin import ActionContext, Duration, SourceContext, action, secret, source


@dataclass(frozen=True)
class PingArgs:
    host: str
    count: int = 1
    timeout: Duration = Duration(2.0)
    credentials: str | None = secret(None)


@action("ping", shorthand="host", mutating=False)
async def ping(ctx: ActionContext, args: PingArgs) -> dict[str, object]:
    """Pretend to ping HOST."""
    return {"host": args.host, "count": args.count}


@dataclass(frozen=True)
class BeatConfig:
    name: str


@source("beat")
async def beat(ctx: SourceContext, config: BeatConfig) -> None:
    ctx.emit("BEAT", {"name": config.name})
'''


@pytest.mark.parametrize("module", [reactor.plugin, reactor.testing])
def test_public_names_are_sorted_and_real(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), name


def write(d: Path, name: str, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(textwrap.dedent(text))
    return p


def test_directory_plugin_is_discovered_and_validated_at_load(tmp_path: Path) -> None:
    f = write(tmp_path / "plugins", "pinger.py", GOOD)
    plugins = load_plugins([tmp_path / "plugins"], entry_points=False)
    spec = plugins.actions.get("ping")
    assert spec is not None and spec.origin == str(f)
    assert plugins.sources.get("beat") is not None
    (info,) = plugins.loaded
    assert (info.name, info.kind, info.actions, info.sources) == ("pinger", "directory", ("ping",), ("beat",))
    rules = """\
        rules:
          - name: r
            on: STOP
            actions:
              - ping: {host: a, count: many}
              - ping: {hots: a}
        """
    with pytest.raises(LoadError) as info_:
        load_test_rules(rules, registry=plugins.actions)
    assert [str(e) for e in info_.value.errors] == [
        "rules.yaml:5:32: ping: argument 'count': expected an integer, got string 'many'",
        "rules.yaml:6:16: ping: unknown argument 'hots' (did you mean 'host'?)",
    ]


async def test_secret_fields_are_redacted_in_what_ran(tmp_path: Path) -> None:
    write(tmp_path / "plugins", "pinger.py", GOOD)
    plugins = load_plugins([tmp_path / "plugins"], entry_points=False)
    out = await reactor.testing.run_rules("""\
        rules:
          - name: r
            on: STOP
            actions: [{ping: {host: a, credentials: hunter2}}]
        """, [reactor.testing.make_event("STOP")], registry=plugins.actions)
    assert out.called("ping") == [{"host": "a", "count": 1, "timeout": 2.0, "credentials": "***"}]


def test_every_plugin_problem_is_reported_by_name_and_position(tmp_path: Path) -> None:
    d = tmp_path / "plugins"
    write(d, "a_syntax.py", "def broken(:\n    pass\n")
    write(d, "b_missing.py", "import os\nimport no_such_module_xyz\n")
    write(d, "c_decl.py", """\
        from reactor.plugin import action

        @action("bad")
        async def bad(ctx, args: int) -> None:
            pass
        """)
    write(d, "d_dup.py", """\
        from dataclasses import dataclass
        from reactor.plugin import ActionContext, action

        @dataclass(frozen=True)
        class A:
            message: str

        @action("log")
        async def log(ctx: ActionContext, args: A) -> None:
            pass
        """)
    write(d, "e_list.py", "ACTIONS = ['not an action']\n")
    write(d, "_private.py", "raise SystemExit('never imported')\n")
    with pytest.raises(PluginLoadError) as info:
        load_plugins([d], entry_points=False)
    err = info.value
    assert isinstance(err, LoadError) and isinstance(err, PluginError)
    got = [str(e).replace(str(d) + "/", "") for e in err.errors]
    assert got[0].startswith("a_syntax.py:1:12: plugin a_syntax.py: import failed: SyntaxError")
    assert got[1] == ("b_missing.py:2:1: plugin b_missing.py: import failed: ModuleNotFoundError: "
                      "No module named 'no_such_module_xyz'")
    assert got[2].startswith("c_decl.py:3:2: plugin c_decl.py: invalid declaration: action 'bad': run(ctx, args) "
                             "must annotate args with a dataclass")
    assert got[3] == ("d_dup.py:8:1: plugin d_dup: action 'log' from d_dup.py is already defined by "
                      "reactor.actions.log")
    assert got[4] == ("plugin e_list.py: invalid declaration: ACTIONS holds 'not an action', which is not "
                      "declared with @reactor.plugin.action")
    assert len(got) == 5


def make_dist(site: Path, dist: str, module: str, text: str, *, group: str = "reactor.actions",
              target: str | None = None) -> None:
    """An installed distribution as pip leaves it: a package plus its .dist-info with entry points."""
    write(site / module, "__init__.py", text)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{module} = {target or module}\n")


def test_installed_packages_are_found_through_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    make_dist(site, "reactor-pinger", "reactor_pinger", GOOD)
    make_dist(site, "reactor-beats", "reactor_beats", GOOD.replace('"ping"', '"ping2"'),
              group="reactor.sources", target="reactor_beats:beat")
    monkeypatch.syspath_prepend(str(site))
    plugins = load_plugins()
    assert plugins.actions.get("ping").origin == "reactor-pinger (reactor_pinger)"  # type: ignore[union-attr]
    assert plugins.sources.get("beat").origin == "reactor-beats (reactor_beats:beat)"  # type: ignore[union-attr]
    assert "ping2" not in plugins.actions   # the reactor.sources entry point names only the source


def test_broken_installed_package_is_reported_with_its_position(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    make_dist(site, "reactor-broken", "reactor_broken", "X = 1\nraise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginLoadError) as info:
        load_plugins()
    (e,) = info.value.errors
    assert str(e) == (f"{site}/reactor_broken/__init__.py:2:1: plugin reactor-broken (reactor_broken): "
                      "import failed: RuntimeError: boom")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REACTOR, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_reactor_check_and_plugins_cover_plugins(tmp_path: Path) -> None:
    write(tmp_path / "plugins", "pinger.py", GOOD)
    write(tmp_path / "rules", "r.yaml", """\
        rules:
          - name: r
            on: STOP
            actions: [{ping: {host: a, count: x}}]
        """)
    (tmp_path / "reactor.yaml").write_text("rules: rules/\nplugins: [plugins/]\n")
    r = cli("check", "-c", "reactor.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "rules/r.yaml:4:39: ping: argument 'count': expected an integer, got string 'x'" in r.stderr
    r = cli("plugins", "-c", "reactor.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (ping,) = [row for row in json.loads(r.stdout) if row["action"] == "ping"]
    assert ping["origin"] == str(tmp_path / "plugins" / "pinger.py")
    assert [a["name"] for a in ping["arguments"]] == ["host", "count", "timeout", "credentials"]
    write(tmp_path / "plugins", "broken.py", "import no_such_module_xyz\n")
    r = cli("check", "-c", "reactor.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert f"{tmp_path}/plugins/broken.py:1:1: plugin {tmp_path}/plugins/broken.py: import failed" in r.stderr
