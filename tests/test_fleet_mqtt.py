"""Fleet mode on real processes and real network faults: one reactor per namespace-host, a central one.

Hosts are network namespaces (``tests/netns.py``): each runs a mosquitto
bridged to the core broker and ``reactor run`` mirroring its VMs (fake QMP
servers on unix sockets, driven from this process).  The central reactor runs
in the core namespace with ``fleet: {events: true}`` and journals every event;
the tests read its journal.  Faults are nftables drop rules on a host's veth.
Set ``REACTOR_NETNS_LONG=1`` to also run the 60 s outage.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import FakeQMP
from netns import CORE_ADDR, PYTHON, REACTOR, FleetNet, available

pytestmark = [pytest.mark.mqtt, pytest.mark.skipif(available() is not None, reason=str(available()))]

HOST_CONFIG = """\
host: {host}
state_dir: state
rules: [rules]
discover:
  - glob: {vms}/*.qmp
mqtt:
  local:
    host: 127.0.0.1
    publish_events: {{qos: 1}}
fleet:
  commands: {commands}
"""

CENTRAL_CONFIG = """\
host: central
state_dir: state
rules: [rules]
journal: {{events: all}}
http:
  listen: 127.0.0.1:9187
mqtt:
  core:
    host: {core}
fleet:
  events: true
"""

CENTRAL_RULES = """\
rules:
  - name: resume-remote
    description: A VM paused on an I/O error anywhere in the fleet is resumed from the centre.
    on: BLOCK_IO_ERROR
    mode: parallel
    actions:
      - qmp: {execute: cont, vm: "{{ event.host }}/{{ vm.name }}", timeout: "{{ event.data.reason }}"}
"""

#: host1, host2 allow ``cont``; host3 only read-only queries (the default).
COMMANDS = {"host1": "{allow: [cont]}", "host2": "{allow: [cont]}", "host3": "true"}


class Fleet:
    def __init__(self, net: FleetNet, tmp: Path) -> None:
        self.net = net
        self.tmp = tmp
        self.central = tmp / "central" / "reactor"

    def vms_dir(self, host: str) -> Path:
        return self.tmp / host / "vms"

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.central / 'state' / 'journal.db'}?mode=ro", uri=True, timeout=5)

    def events(self, name: str, vm_prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
        with self.db() as db:
            rows = db.execute("SELECT host, vm, data FROM events WHERE name = ? AND vm LIKE ?",
                              (name, vm_prefix + "%")).fetchall()
        return [(h, v, json.loads(d)) for h, v, d in rows]

    def steps(self, vm: str) -> list[tuple[str, str | None, float]]:
        with self.db() as db:
            return db.execute(
                "SELECT s.status, s.error, s.duration FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE r.vm = ? AND s.action = 'qmp' ORDER BY s.run_id", (vm,)).fetchall()

    def host_commands(self, host: str) -> list[dict[str, Any]]:
        path = self.tmp / host / "reactor" / "state" / "journal.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT data FROM events WHERE name = 'REACTOR_REMOTE_COMMAND'").fetchall()
        return [json.loads(r[0]) for r in rows]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleetnet")
    with FleetNet(tmp, hosts=3) as net:
        f = Fleet(net, tmp)
        for host in net.hosts:
            vms = f.vms_dir(host)
            vms.mkdir(parents=True)
            net.start_reactor(host, HOST_CONFIG.format(host=host, vms=vms, commands=COMMANDS[host]))
        net.start_reactor("central", CENTRAL_CONFIG.format(core=CORE_ADDR),
                          rules={"central.yaml": CENTRAL_RULES})
        yield f


async def _until(check: Any, timeout: float, every: float = 0.1) -> float:
    """Poll ``check()`` until truthy; the seconds it took."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except sqlite3.OperationalError:
            pass
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(every)


async def _fakes(fleet: Fleet, host: str, names: list[str], status: str = "running") -> list[FakeQMP]:
    fakes = [FakeQMP(fleet.vms_dir(host) / f"{n}.qmp", name=n, status=status) for n in names]
    for fk in fakes:
        await fk.start()
    for fk in fakes:
        await fk.wait_sessions(1, timeout=15)
    return fakes


def _rtc(fk: FakeQMP, i: int) -> None:
    fk.emit("RTC_CHANGE", {"offset": i, "qom-path": "/machine/unattached/device[0]"})


def _io_error(fk: FakeQMP, timeout: str = "2s") -> None:
    fk.emit("BLOCK_IO_ERROR", {"device": "disk0", "node-name": "n0", "operation": "write", "action": "stop",
                               "reason": timeout})


async def test_steady_state_events_from_every_host_reach_the_central_reactor(fleet: Fleet) -> None:
    fakes = {h: await _fakes(fleet, h, [f"ss-{h}-{i}" for i in range(2)]) for h in fleet.net.hosts}
    await asyncio.sleep(1.0)  # the central link's subscriptions
    for fks in fakes.values():
        for fk in fks:
            for i in range(1, 21):
                _rtc(fk, i)
    await _until(lambda: len(fleet.events("RTC_CHANGE", "ss-")) == 3 * 2 * 20, 15)
    got = fleet.events("RTC_CHANGE", "ss-")
    assert {h for h, _, _ in got} == set(fleet.net.hosts)
    assert len({(h, v, d["offset"]) for h, v, d in got}) == 120
    for fks in fakes.values():
        for fk in fks:
            await fk.aclose()


async def test_remote_cont_replies_fast_and_refuses_off_list(fleet: Fleet) -> None:
    (ok,) = await _fakes(fleet, "host2", ["rc-ok"], status="paused")
    (no,) = await _fakes(fleet, "host3", ["rc-no"], status="paused")
    await asyncio.sleep(1.0)
    _io_error(ok)
    _io_error(no)
    await _until(lambda: fleet.steps("rc-ok") and fleet.steps("rc-no"), 15)
    (status, error, duration), = fleet.steps("rc-ok")
    assert status == "ok", error
    assert ok.status == "running"
    assert duration < 0.1, f"remote cont took {duration * 1000:.1f} ms"
    (status, error, _), = fleet.steps("rc-no")
    assert status != "ok" and "Refused" in (error or "") and "allow-list" in (error or "")
    assert no.status == "paused"
    await _until(lambda: any(c["outcome"] == "refused" and c["execute"] == "cont"
                             for c in fleet.host_commands("host3")), 5)
    await ok.aclose()
    await no.aclose()


async def test_remote_cont_expires_during_an_outage(fleet: Fleet) -> None:
    (fk,) = await _fakes(fleet, "host2", ["rx-1"], status="paused")
    await asyncio.sleep(1.0)
    net = fleet.net
    try:
        net.cut("host2", direction="in")  # the event gets out; the command cannot get in
        _io_error(fk, timeout="1s")
        await _until(lambda: fleet.steps("rx-1"), 15)
        await asyncio.sleep(2.0)
    finally:
        net.heal("host2")
    (status, _, _), = fleet.steps("rx-1")
    assert status != "ok"
    await _until(lambda: any(c["id"] and c["outcome"] == "expired" for c in fleet.host_commands("host2")), 30)
    assert fk.status == "paused"  # never executed
    await fk.aclose()


@pytest.mark.parametrize("outage", [
    10,
    pytest.param(60, marks=pytest.mark.skipif(not os.environ.get("REACTOR_NETNS_LONG"),
                                              reason="set REACTOR_NETNS_LONG=1 for the 60 s outage")),
])
async def test_host_cut_off_loses_nothing(fleet: Fleet, outage: int) -> None:
    prefix = f"cut{outage}-"
    fakes = await _fakes(fleet, "host1", [f"{prefix}{i}" for i in range(3)])
    await asyncio.sleep(1.0)
    n = 0
    net = fleet.net

    async def emit_for(seconds: float) -> None:
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
            for fk in fakes:
                _rtc(fk, n)
            await asyncio.sleep(0.02)

    await emit_for(1.0)
    net.cut("host1")
    try:
        await emit_for(outage)
    finally:
        net.heal("host1")
    healed = time.monotonic()
    total = 3 * n
    drained = await _until(lambda: len(fleet.events("RTC_CHANGE", prefix)) >= total, 60)
    await asyncio.sleep(1.0)
    got = fleet.events("RTC_CHANGE", prefix)
    keys = [(v, d["offset"]) for _, v, d in got]
    assert len(keys) == len(set(keys)) == total, (len(keys), len(set(keys)), total)
    print(f"outage {outage}s: {total} events, backlog drained {time.monotonic() - healed - 1.0:.2f}s "
          f"({drained:.2f}s) after the link returned")
    assert drained <= 5.0
    for fk in fakes:
        await fk.aclose()


async def test_lost_acknowledgements_deliver_duplicates_that_are_dropped(fleet: Fleet) -> None:
    prefix = "ack-"
    fakes = await _fakes(fleet, "host3", [f"{prefix}{i}" for i in range(2)])
    out = fleet.tmp / "ack-sub.jsonl"
    fleet.net.subscriber("core", CORE_ADDR, "reactor/host3/+/event/#", out)
    await asyncio.sleep(1.5)
    n = 0
    for _ in range(20):
        n += 1
        for fk in fakes:
            _rtc(fk, n)
        await asyncio.sleep(0.02)
    fleet.net.cut("host3", direction="in")  # publishes get through, PUBACKs do not
    try:
        for _ in range(200):
            n += 1
            for fk in fakes:
                _rtc(fk, n)
            await asyncio.sleep(0.02)
        await asyncio.sleep(8)  # the bridge's keepalive gives up on the silent link
    finally:
        fleet.net.heal("host3")
    total = 2 * n
    await _until(lambda: len(fleet.events("RTC_CHANGE", prefix)) >= total, 60)
    await asyncio.sleep(2.0)
    got = fleet.events("RTC_CHANGE", prefix)
    keys = [(v, d["offset"]) for _, v, d in got]
    assert len(keys) == len(set(keys)) == total
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    seen = [(json.loads(m["payload"])["vm"], json.loads(m["payload"])["data"]["offset"]) for m in raw]
    dups = len(seen) - len(set(seen))
    print(f"lost acknowledgements: {len(seen)} delivered to a plain subscriber, {dups} duplicates "
          f"({sum(m['dup'] for m in raw)} with DUP set); central kept {len(keys)} = every event once")
    for fk in fakes:
        await fk.aclose()


async def test_core_broker_restart_every_host_reconnects_nothing_lost(fleet: Fleet) -> None:
    prefix = "rst-"
    fakes = {h: await _fakes(fleet, h, [f"{prefix}{h}"]) for h in fleet.net.hosts}
    await asyncio.sleep(1.0)
    n = 0

    async def emit_for(seconds: float) -> None:
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
            for (fk,) in fakes.values():
                _rtc(fk, n)
            await asyncio.sleep(0.05)

    await emit_for(0.5)
    task = asyncio.create_task(emit_for(4.0))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(fleet.net.restart_core_broker, 1.0)
    await task
    total = 3 * n
    await _until(lambda: len(fleet.events("RTC_CHANGE", prefix)) >= total, 40)
    await asyncio.sleep(1.0)
    got = fleet.events("RTC_CHANGE", prefix)
    keys = [(v, d["offset"]) for _, v, d in got]
    assert len(keys) == len(set(keys)) == total
    for (fk,) in fakes.values():
        await fk.aclose()


def _api_fleet(fleet: Fleet) -> dict[str, Any]:
    code = "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9187/api/fleet').read().decode())"
    out = subprocess.run(fleet.net.exec_args("core", PYTHON, "-c", code), capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


async def test_fleet_status_and_api_show_presence_and_vm_states(fleet: Fleet) -> None:
    (fk,) = await _fakes(fleet, "host2", ["fs-1"], status="paused")
    await asyncio.sleep(1.0)
    out = await asyncio.to_thread(subprocess.run, fleet.net.exec_args(
        "core", REACTOR, "fleet", "status", "--json", "-c", fleet.central / "reactor.yaml"),
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert {h for h, v in snap["hosts"].items() if v["online"]} >= set(fleet.net.hosts), snap
    assert snap["hosts"]["host2"]["vms"]["fs-1"]["status"] == "paused"
    done = await asyncio.to_thread(subprocess.run, fleet.net.exec_args(
        "core", REACTOR, "fleet", "status", "-c", fleet.central / "reactor.yaml"), capture_output=True, text=True)
    text = done.stdout
    assert "host2" in text and "fs-1" in text and "paused" in text
    api = _api_fleet(fleet)
    assert api["hosts"]["host2"]["online"] and api["hosts"]["host2"]["vms"]["fs-1"]["status"] == "paused"
    assert api["link"]["connected"]
    fleet.net.cut("host1")
    try:  # the core notices the silent bridge after 1.5 keepalives and publishes its will
        await _until(lambda: not _api_fleet(fleet)["hosts"]["host1"]["online"], 20, every=0.5)
    finally:
        fleet.net.heal("host1")
    await _until(lambda: _api_fleet(fleet)["hosts"]["host1"]["online"], 20, every=0.5)
    await fk.aclose()
