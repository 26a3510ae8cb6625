"""The published package: `python -m build` makes an sdist and a wheel; the wheel installs into a clean
virtualenv (no editable install, no source tree on the path) and `reactor --version` / `reactor check rules/`
run from it, with the package data (catalog, schemas, the traces page) inside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = "qemu-reactor"
DATA = ("reactor/model/catalog/events.json", "reactor/schemas/rules.schema.json",
        "reactor/schemas/config.schema.json", "reactor/ops/static/index.html", "reactor/ops/static/app.js",
        "reactor/ops/static/style.css", "reactor/py.typed")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


#: never part of a build: what a checkout accumulates (a stale build/ would put deleted modules in the wheel)
_SCRATCH = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
                                  ".ruff_cache", ".hypothesis", ".pytest_cache", "state", "test-artifacts")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """sdist and wheel built from a clean copy of the source tree (the checkout is left as it was)."""
    src = tmp_path_factory.mktemp("src") / "qemu-reactor"
    shutil.copytree(ROOT, src, ignore=_SCRATCH)
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(src)],
                       capture_output=True, text=True, timeout=600, check=False, env=_clean_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    yield out


def test_the_distribution_name_is_not_the_taken_one() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == DIST
    assert meta["scripts"] == {"reactor": "reactor.cli:main"}
    assert any(d.startswith("build>=1.0") for d in meta["optional-dependencies"]["test"])
    for plugin in (ROOT / "plugins").glob("*/pyproject.toml"):   # plugins depend on us by the new name
        deps = tomllib.loads(plugin.read_text())["project"]["dependencies"]
        assert DIST in deps and "reactor" not in deps, (plugin, deps)


def test_sdist_and_wheel_carry_the_package_data(dist: Path) -> None:
    wheels = list(dist.glob("qemu_reactor-*.whl"))
    sdists = list(dist.glob("qemu_reactor-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for path in DATA:
        assert path in names, path
    assert not any(n.startswith(("tests/", "plugins/", "bench/")) for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheels[0]).read(meta).decode()
    assert f"Name: {DIST}" in text and "Provides-Extra: libvirt" in text
    with tarfile.open(sdists[0]) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for path in DATA:
        assert path in members, path


def test_the_wheel_runs_from_a_clean_venv(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = next(dist.glob("qemu_reactor-*.whl"))
    env = _clean_env()
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                       timeout=600, check=False, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    reactor = env_dir / "bin" / "reactor"

    # from outside the source tree, so nothing but the installed wheel can be imported
    p = subprocess.run([str(py), "-c", "import reactor, sys; print(reactor.__file__)"], capture_output=True,
                       text=True, check=True, env=env, cwd=tmp_path)
    assert str(env_dir) in p.stdout, p.stdout

    p = subprocess.run([str(reactor), "--version"], capture_output=True, text=True, check=False, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    import reactor as here
    from reactor.model.catalog import default_catalog

    assert f"reactor {here.__version__}" in p.stdout
    for v in default_catalog().qemu_versions:
        assert v in p.stdout.split("QEMU event catalogs:")[1], p.stdout

    # the shipped rules check with the installed catalog; a schema and the page come from package data
    p = subprocess.run([str(reactor), "check", str(ROOT / "rules")], capture_output=True, text=True, check=False,
                       env=env, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("ok: "), p.stdout + p.stderr
    p = subprocess.run([str(reactor), "events", "BLOCK_IO_ERROR"], capture_output=True, text=True, check=False,
                       env=env, cwd=tmp_path)
    assert p.returncode == 0 and "nospace" in p.stdout, p.stderr
    p = subprocess.run([str(py), "-c", "import importlib.resources as r; "
                        "print(len(r.files('reactor.ops').joinpath('static/index.html').read_text()))"],
                       capture_output=True, text=True, check=True, env=env, cwd=tmp_path)
    assert int(p.stdout) > 100
