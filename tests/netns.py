"""A fleet of hosts as Linux network namespaces: a core broker, host brokers bridged to it, reactors.

::

    with FleetNet(tmp_path, hosts=3) as net:      # needs root, ip, nft, mosquitto
        net.start_reactor("host1", config_text)   # `reactor run` inside host1's namespace
        net.cut("host1")                          # nft drops everything on host1's veth
        net.cut("host1", direction="in")          # only core -> host1 (acknowledgements lost)
        net.heal("host1")
        net.restart_core_broker(down=1.0)
        net.start_delay_proxy("host2", "127.0.0.1:18830", f"{CORE_ADDR}:1883", delay=0.025)
        net.bridge_address["host2"] = "127.0.0.1:18830"; net.restart_broker("host2")  # bridge via the proxy
        net.netem("host1", delay_ms=25)           # both ways on host1's veth (raises when netem is missing)

Topology: namespace ``<tag>c`` (core) holds bridge ``br0`` with 10.231.0.1/24
and the core mosquitto; namespace ``<tag>hN`` (hostN) holds ``eth0``
10.231.0.(10+N), a veth whose peer is a port of ``br0``, and a mosquitto on
127.0.0.1:1883 bridged to the core (persistent session, QoS 1 queued,
``topic <prefix>/# out 1``, ``<prefix>/<host>/+/command in 1``).  Nothing is
routed out of these namespaces.  :meth:`FleetNet.close` kills every process
it started and deletes the namespaces (their veths go with them); it runs also
when a test fails.  ``python tests/netns.py sub ADDR PORT FILTER OUT`` is a
subscriber that writes each message (topic, payload, dup flag) as a JSON
line, run inside a namespace by :meth:`FleetNet.subscriber`.

Latency: this kernel has no ``netem``; :meth:`FleetNet.start_delay_proxy` runs
``tests/delayproxy.py`` (a userspace TCP proxy adding a one-way delay each
way) in a namespace, and ``bridge_address`` points a host's bridge at it.
:func:`netem_missing` says why ``tc ... netem`` cannot be used, after trying it
in a throwaway namespace; :meth:`FleetNet.netem` delays a host's veth both ways.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["CORE_ADDR", "FleetNet", "available", "netem_missing"]

CORE_ADDR = "10.231.0.1"
ROOT = Path(__file__).resolve().parent.parent
REACTOR = ROOT / ".venv" / "bin" / "reactor"
PYTHON = ROOT / ".venv" / "bin" / "python"


def available() -> str | None:
    """Why namespaces cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft", "mosquitto"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed"
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@functools.cache
def netem_missing() -> str | None:
    """Why the netem qdisc cannot be used here (None when it can): tries it in a throwaway namespace."""
    if shutil.which("tc") is None and not Path("/usr/sbin/tc").exists():
        return "tc is not installed (iproute2)"
    ns = f"rfnetem{os.getpid() % 100000}"
    if (made := _run("ip", "netns", "add", ns, check=False)).returncode != 0:
        return f"cannot create a namespace to try netem: {made.stderr.strip()}"
    try:
        cmd = ("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        tried = _run("ip", "netns", "exec", ns, *cmd, check=False)
        if tried.returncode != 0:
            return f"the netem qdisc is missing: `{' '.join(cmd)}` says {tried.stderr.strip()!r}"
        return None
    finally:
        _run("ip", "netns", "del", ns, check=False)


class FleetNet:
    """Namespaces, veths, brokers and reactors of one test session."""

    def __init__(self, directory: Path, hosts: int = 3, prefix: str = "reactor") -> None:
        self.dir = directory
        self.tag = f"rf{os.getpid() % 100000}"
        self.core = f"{self.tag}c"
        self.hosts = [f"host{i}" for i in range(1, hosts + 1)]
        self.prefix = prefix
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.namespaces: list[str] = []
        #: ``ADDR:PORT`` a host's bridge connects to instead of the core (read when its broker starts).
        self.bridge_address: dict[str, str] = {}

    def ns(self, host: str) -> str:
        return self.core if host in ("core", "central") else f"{self.tag}h{host.removeprefix('host')}"

    def addr(self, host: str) -> str:
        return CORE_ADDR if host == "core" else f"10.231.0.{10 + int(host.removeprefix('host'))}"

    def __enter__(self) -> FleetNet:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- topology -------------------------------------------------------------------
    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        core = self.core
        _run("ip", "netns", "add", core)
        self.namespaces.append(core)
        self.ip(core, "link", "set", "lo", "up")
        self.ip(core, "link", "add", "br0", "type", "bridge")
        self.ip(core, "addr", "add", f"{CORE_ADDR}/24", "dev", "br0")
        self.ip(core, "link", "set", "br0", "up")
        for host in self.hosts:
            ns = self.ns(host)
            n = host.removeprefix("host")
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            peer = f"{self.tag}v{n}"
            _run("ip", "link", "add", peer, "netns", core, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.ip(core, "link", "set", peer, "master", "br0")
            self.ip(core, "link", "set", peer, "up")
            self.ip(ns, "link", "set", "lo", "up")
            self.ip(ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            self.ip(ns, "link", "set", "eth0", "up")
            self.nft(ns, "add table inet cut")
            self.nft(ns, "add chain inet cut input { type filter hook input priority 0 ; }")
            self.nft(ns, "add chain inet cut output { type filter hook output priority 0 ; }")
        self.start_broker("core")
        for host in self.hosts:
            self.start_broker(host)

    def ip(self, ns: str, *args: str) -> None:
        _run("ip", "-n", ns, *args)

    def nft(self, ns: str, rule: str) -> None:
        _run("ip", "netns", "exec", ns, "nft", rule)

    def exec_args(self, host: str, *args: str | Path) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *map(str, args)]

    # -- faults -----------------------------------------------------------------------
    def cut(self, host: str, direction: str = "both") -> None:
        """Drop packets on ``host``'s veth: ``both``, ``in`` (core -> host only) or ``out``."""
        ns = self.ns(host)
        if direction in ("both", "in"):
            self.nft(ns, 'add rule inet cut input iifname "eth0" drop')
        if direction in ("both", "out"):
            self.nft(ns, 'add rule inet cut output oifname "eth0" drop')

    def loss(self, host: str, percent: int) -> None:
        """Drop ``percent`` % of packets both ways, at random (nft numgen)."""
        ns = self.ns(host)
        self.nft(ns, f'add rule inet cut input iifname "eth0" numgen random mod 100 < {percent} drop')
        self.nft(ns, f'add rule inet cut output oifname "eth0" numgen random mod 100 < {percent} drop')

    def heal(self, host: str) -> None:
        ns = self.ns(host)
        self.nft(ns, "flush chain inet cut input")
        self.nft(ns, "flush chain inet cut output")

    # -- processes --------------------------------------------------------------------
    def _spawn(self, key: str, host: str, *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
        old = self.procs.pop(key, None)
        if old is not None:
            self._kill(old)
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.exec_args(host, *args), stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.dir, start_new_session=True)
        self.procs[key] = proc
        return proc

    def broker_config(self, host: str) -> Path:
        d = self.dir / host
        d.mkdir(exist_ok=True)
        lines = [
            "per_listener_settings false", "allow_anonymous true", "persistence true", "user root",
            f"persistence_location {d}/", "autosave_interval 1", "max_queued_messages 1000000",
            "max_inflight_messages 1000", "set_tcp_nodelay true", "log_type error", "log_type warning",
            "log_type notice", "log_dest stdout",
        ]
        if host == "core":
            lines += [f"listener 1883 {CORE_ADDR}", "listener 1883 127.0.0.1"]
        else:
            p = self.prefix
            address = self.bridge_address.get(host, f"{CORE_ADDR}:1883")
            lines += [
                "listener 1883 127.0.0.1",
                f"connection {host}-core", f"address {address}", f"remote_clientid bridge-{host}",
                "cleansession false", "bridge_protocol_version mqttv311", "try_private true",
                "keepalive_interval 5", "restart_timeout 1 2", "start_type automatic",
                f"notification_topic {p}-bridge/{host}", "notifications_local_only false",
                f"topic {p}/# out 1", f"topic {p}/{host}/+/command in 1",
            ]
        path = d / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_broker(self, host: str) -> None:
        conf = self.broker_config(host)
        self._spawn(f"broker-{host}", host, "mosquitto", "-c", conf, log=self.dir / host / "mosquitto.log")
        addr = "127.0.0.1"
        self.wait_port(host, addr, 1883)

    def wait_port(self, host: str, addr: str, port: int, timeout: float = 10.0) -> None:
        code = f"import socket;socket.create_connection(({addr!r},{port}),0.5).close()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(self.exec_args(host, sys.executable, "-c", code), capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{host}: nothing listens on {addr}:{port}")

    def restart_core_broker(self, down: float = 0.0) -> None:
        proc = self.procs.pop("broker-core")
        self._kill(proc, signal.SIGTERM)
        time.sleep(down)
        self.start_broker("core")

    def restart_broker(self, host: str) -> None:
        """Stop ``host``'s mosquitto (SIGTERM: it saves its queue) and start it with a fresh config."""
        proc = self.procs.pop(f"broker-{host}", None)
        if proc is not None:
            self._kill(proc, signal.SIGTERM)
        self.start_broker(host)

    # -- latency ----------------------------------------------------------------------
    def start_delay_proxy(self, host: str, listen: str, target: str, delay: float, jitter: float = 0.0,
                          nodelay: bool = True) -> Path:
        """Run ``tests/delayproxy.py`` in ``host``'s namespace (one per host); its log."""
        log = self.dir / f"delayproxy-{host}.log"
        args: list[str | Path] = [PYTHON, Path(__file__).resolve().parent / "delayproxy.py", listen, target,
                                  "--delay", str(delay), "--jitter", str(jitter)]
        if not nodelay:
            args.append("--no-nodelay")
        self._spawn(f"proxy-{host}", host, *args, log=log)
        addr, _, port = listen.rpartition(":")
        self.wait_port(host, addr, int(port))
        return log

    def stop_delay_proxy(self, host: str) -> None:
        proc = self.procs.pop(f"proxy-{host}", None)
        if proc is not None:
            self._kill(proc, signal.SIGTERM)

    def quickack(self, on: bool) -> None:
        """The core acknowledges every segment from the hosts at once (route attribute ``quickack``).

        mosquitto 2.0's bridge connection keeps Nagle's algorithm on (``set_tcp_nodelay``
        covers accepted sockets only): a reply it writes right after a PUBACK waits for the
        core's ACK of that PUBACK, which Linux delays up to 40 ms unless the route says quickack.
        """
        _run("ip", "-n", self.core, "route", "replace", f"{CORE_ADDR.rsplit('.', 1)[0]}.0/24", "dev", "br0",
             "proto", "kernel", "scope", "link", "src", CORE_ADDR, *(["quickack", "1"] if on else []))

    def netem(self, host: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Delay ``host``'s veth both ways with netem (CalledProcessError when the qdisc is missing)."""
        spec = ["delay", f"{delay_ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
        for ns, dev in ((self.ns(host), "eth0"), (self.core, f"{self.tag}v{host.removeprefix('host')}")):
            _run("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", *spec)

    def netem_clear(self, host: str) -> None:
        for ns, dev in ((self.ns(host), "eth0"), (self.core, f"{self.tag}v{host.removeprefix('host')}")):
            _run("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check=False)

    def start_reactor(self, host: str, config: str, rules: dict[str, str] | None = None) -> Path:
        """Write ``config`` (and rule files) to ``DIR/<host>/reactor/`` and run ``reactor run`` there."""
        d = self.dir / host / "reactor"
        (d / "rules").mkdir(parents=True, exist_ok=True)
        for name, text in (rules or {}).items():
            (d / "rules" / name).write_text(text)
        (d / "reactor.yaml").write_text(config)
        self._spawn(f"reactor-{host}", host, REACTOR, "run", "--no-watch", "-c", d / "reactor.yaml",
                    log=d / "reactor.log")
        return d

    def stop_reactor(self, host: str) -> None:
        proc = self.procs.pop(f"reactor-{host}", None)
        if proc is not None:
            self._kill(proc, signal.SIGTERM)

    def subscriber(self, host: str, addr: str, topic: str, out: Path) -> subprocess.Popen[bytes]:
        return self._spawn(f"sub-{out.name}", host, PYTHON, Path(__file__).resolve(), "sub", addr, "1883", topic, out,
                           log=self.dir / f"{out.name}.log")

    def _kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def close(self) -> None:
        for key in list(self.procs):
            self._kill(self.procs.pop(key))
        for ns in reversed(self.namespaces):
            _run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def _subscribe(addr: str, port: int, topic: str, out: str) -> None:
    import paho.mqtt.client as mqtt

    f = open(out, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        f.write(json.dumps({"t": time.time(), "topic": msg.topic, "dup": bool(msg.dup),
                            "payload": msg.payload.decode("utf-8", "replace")}) + "\n")

    def on_connect(c: Any, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
        c.subscribe(topic, 1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{os.getpid()}")
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect(addr, port)
    client.loop_forever()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "sub":
        _subscribe(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        sys.exit("usage: python -m tests.netns sub ADDR PORT TOPIC-FILTER OUT.jsonl")
