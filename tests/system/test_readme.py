"""The README's operator advice, followed as written in a clean directory."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
REACTOR = str(Path(sys.executable).with_name("reactor"))
QEMU = shutil.which("qemu-system-x86_64")


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start:end if end >= 0 else None]


def _sh_block(text: str) -> str:
    found = re.search(r"```sh\n(.*?)```", text, re.S)
    assert found is not None
    return found.group(1)


def _greeting(path: Path, timeout: float) -> bytes | None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


@pytest.mark.qemu
def test_a_second_qmp_monitor_for_operators_as_the_readme_says(tmp_path: Path) -> None:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed")
    block = _sh_block(_section("### One client per monitor socket"))
    options = re.findall(r"-qmp (unix:(\S+?),\S+)", block)
    assert len(options) == 2, block
    (reactor_sock, ops_sock) = (tmp_path / Path(p).name.replace(".qmp", f"-{i}.qmp")
                                for i, (_, p) in enumerate(options))
    argv = [QEMU, "-machine", "none", "-display", "none", "-nodefaults"]
    for (opt, path), sock in zip(options, (reactor_sock, ops_sock), strict=True):
        argv += ["-qmp", opt.replace(path, str(sock))]
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = None
    try:
        deadline = time.monotonic() + 10
        while not (reactor_sock.exists() and ops_sock.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "r.yaml").write_text("rules:\n  - name: a\n    on: STOP\n    actions: [{log: x}]\n")
        (tmp_path / "reactor.yaml").write_text(
            f"rules: [rules]\nstate_dir: state\nvms:\n  - {{name: web-1, qmp: {reactor_sock}}}\n")
        daemon = subprocess.Popen([REACTOR, "run", "-v", "-c", "reactor.yaml"], cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "web-1: connected to" in line:
                break
        else:
            pytest.fail("the daemon never connected")
        # the monitor reactor holds serves nobody else ...
        assert _greeting(reactor_sock, 1.0) is None
        # ... the second one greets an operator, and takes commands
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(ops_sock))
            assert b'"QMP"' in s.recv(4096)
            s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n')
            got = b""
            while b"status" not in got:
                got += s.recv(4096)
            assert b'"running": true' in got or b'"status": "running"' in got
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(30)
        qemu.kill()
        qemu.wait(10)


def test_the_development_commands_come_with_the_test_extra() -> None:
    block = _sh_block(_section("## Development"))
    pip = next(line for line in block.splitlines() if "pip install" in line)
    assert "-e '.[test]'" in pip
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    test_extra = {re.split(r"[<>=\[ ]", req, maxsplit=1)[0] for req in extras["test"]}
    tools = {shlex.split(line, comments=True)[0].removeprefix(".venv/bin/") for line in block.splitlines()
             if line.startswith(".venv/bin/") and "pip" not in line}
    assert tools == {"pytest", "mypy", "ruff"}
    assert tools <= test_extra
    assert "libvirt" in extras   # the ",libvirt" the comment mentions
