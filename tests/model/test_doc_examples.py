"""Held-out style check: every event example in QEMU's own documentation replays cleanly.

The QAPI schema files reactor's catalog is generated from
(``reactor/model/catalog/sources/{7.2,10.2}/*.json``) carry examples in their doc
comments, written by QEMU's developers, not by us::

    #     <- { "event": "BLOCK_IO_ERROR",
    #          "data": { ... },
    #          "timestamp": { "seconds": 1265044230, "microseconds": 450486 } }

They are extracted (an example may span several comment lines) and replayed
through ``reactor replay`` in a subprocess with a catch-all rule that logs.
The replay must exit 0 and report no line as "not a QMP event".  Examples
that are not valid JSON as written (QEMU elides with ``...``) are counted and
must be exactly the ones with an elision; none is silently dropped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import reactor.model.catalog

SOURCES = Path(reactor.model.catalog.__file__).parent / "sources"
VERSIONS = ("7.2", "10.2")
DATA = Path(__file__).parent.parent / "data" / "qemu-7.2-events.jsonl"
REACTOR = str(Path(sys.executable).with_name("reactor"))

#: A message from the server in QEMU's examples: ``<- {``, ``<-  {``, ``<-   {``.
_ARROW = re.compile(r"<-\s*\{")

CATCH_ALL = """\
rules:
  - name: log-everything
    on: "*"
    actions:
      - log: "{{ event.name }} from {{ vm.name }}: {{ event.data | tojson }}"
"""


@dataclass(frozen=True)
class Example:
    where: str        # file:line of the "<- {" line
    text: str         # the example as written (comment markers removed)
    obj: Any          # the parsed JSON, or None when it is not valid JSON


def _balanced_end(text: str) -> int | None:
    """Index just past the JSON object starting at text[0] (braces outside strings), or None."""
    depth = 0
    in_string = escaped = False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def extract(path: Path) -> list[Example]:
    """Every ``<- { "event": ... }`` example in the doc comments of one QAPI file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Example] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        body = line.lstrip()
        arrow = _ARROW.search(body) if body.startswith("#") else None
        if arrow is not None:
            start = i
            text = body[arrow.end() - 1:]
            while _balanced_end(text) is None and i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#"):
                i += 1
                nxt = lines[i].lstrip()[1:]
                if nxt.strip().startswith(("<-", "->")) or not nxt.strip():
                    break   # the next message or the end of the example: this one never closed
                text += "\n" + nxt
            end = _balanced_end(text)
            snippet = text[:end] if end is not None else text
            try:
                obj = json.loads(snippet)
            except json.JSONDecodeError:
                obj = None
            is_event = isinstance(obj, dict) and "event" in obj
            if is_event or (obj is None and '"event"' in snippet):
                out.append(Example(f"{path.parent.name}/{path.name}:{start + 1}", snippet, obj))
        i += 1
    return out


def all_examples() -> list[Example]:
    return [ex for v in VERSIONS for f in sorted((SOURCES / v).glob("*.json")) for ex in extract(f)]


def replay(tmp: Path, lines: list[str]) -> subprocess.CompletedProcess[str]:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "all.yaml").write_text(CATCH_ALL)
    events = tmp / "events.jsonl"
    events.write_text("".join(line + "\n" for line in lines))
    return subprocess.run([REACTOR, "replay", str(events), "--rules", str(tmp / "rules"), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_extractor_finds_the_examples() -> None:
    examples = all_examples()
    names = {ex.obj["event"] for ex in examples if ex.obj is not None}
    assert len(examples) > 120, len(examples)
    assert {"BLOCK_IO_ERROR", "SHUTDOWN", "VNC_CONNECTED", "GUEST_PANICKED", "DEVICE_DELETED"} <= names
    multi = [ex for ex in examples if "\n" in ex.text]
    assert multi, "examples spanning several lines are joined"


def test_only_elided_examples_are_not_json() -> None:
    """QEMU's docs sometimes elide with ``...``; any other unparsable example is an extractor bug."""
    bad = [ex for ex in all_examples() if ex.obj is None]
    assert all("..." in ex.text for ex in bad), [(ex.where, ex.text) for ex in bad if "..." not in ex.text]
    print(f"\n{len(bad)} doc examples elide with '...' and are not JSON: {[ex.where for ex in bad]}")


def test_every_qemu_doc_example_replays_cleanly(tmp_path: Path) -> None:
    examples = [ex for ex in all_examples() if ex.obj is not None]
    lines = [json.dumps({**ex.obj, "vm": f"doc-{i % 3}"}) for i, ex in enumerate(examples)]
    proc = replay(tmp_path, lines)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not a QMP event" not in proc.stdout + proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    matched = [r for r in records if r["type"] == "match" and r["event"] != "REACTOR_ACTION_FAILED"]
    assert len(matched) == len(examples)
    failed = [r for r in records if r["type"] == "step" and r["status"] != "ok"]
    assert not failed, failed[:3]
    print(f"\nreplayed {len(examples)} QEMU doc examples ({len({ex.obj['event'] for ex in examples})} events)")


def test_recorded_qemu_7_2_events_replay_cleanly(tmp_path: Path) -> None:
    lines = [line for line in DATA.read_text().splitlines() if line.strip()]
    if not lines:
        pytest.fail(f"{DATA} is empty")
    proc = replay(tmp_path, lines)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not a QMP event" not in proc.stdout + proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len([r for r in records if r["type"] == "match" and r["event"] != "REACTOR_ACTION_FAILED"]) == len(lines)
    assert all(r["status"] == "ok" for r in records if r["type"] == "step")
