"""``reactor run`` as subprocesses that a test SIGKILLs and restarts, and the journal read back afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP

from reactor.ops.journal import Journal, RunRecord

REACTOR = str(Path(sys.executable).parent / "reactor")


def write_config(tmp: Path, fakes: list[FakeQMP], rules: str, *, extra: str = "") -> Path:
    rules_dir = tmp / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "test.yaml").write_text(rules)
    lines = [f"rules: {rules_dir}", f"state_dir: {tmp / 'state'}", "log: {level: info}", "vms:"]
    lines += [f"  - {{name: {f.name}, qmp: {f.address}}}" for f in fakes]
    cfg = tmp / "reactor.yaml"
    cfg.write_text("\n".join(lines) + "\n" + extra)
    return cfg


class Daemons:
    """Starts ``reactor run`` processes (one at a time) and SIGKILLs them; all are gone at the end."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self.proc = subprocess.Popen([REACTOR, "run", "-c", str(self.config)], stdout=out, stderr=out)
        self.starts += 1
        return self.proc

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
            assert self.proc.returncode == -signal.SIGKILL, self.log.read_text()[-3000:]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemons]]:
    made: list[Daemons] = []
    try:
        yield made
    finally:
        for d in made:
            d.close()


def read_runs(state: Path) -> list[RunRecord]:
    j = Journal(state / "journal.db")
    j.open_sync(readonly=True)
    try:
        return list(reversed(j.runs(limit=10_000)))
    finally:
        j.close_sync()


async def until(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - polling other processes' state
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def count(fake: FakeQMP, command: str) -> int:
    return sum(1 for c, _ in fake.commands if c == command)
