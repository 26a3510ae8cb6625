"""The daemon's configuration file (``reactor run -c CONFIG``).

Unknown keys are errors with ``PATH:LINE:COL`` and a "did you mean"; a
relative path is relative to the config file; ``${NAME}`` in a string is
replaced by that environment variable (an unset one is an error).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reactor.errors import ConfigError, LoadError, Position, SourceError
from reactor.model.duration import parse_duration
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match, parse

__all__ = ["Config", "DiscoverConfig", "HttpConfig", "JournalConfig", "LogConfig", "VMConfig", "load_config",
           "parse_config"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMMAND_GLOB = re.compile(r"^[a-z0-9_*?\[\]!-]+$")

TOP_KEYS = ("rules", "plugins", "state_dir", "host", "vms", "discover", "listen", "mqtt", "http", "log", "journal",
            "sources", "qmp", "bus", "libvirt", "fleet")


@dataclass(frozen=True, slots=True)
class VMConfig:
    name: str
    qmp: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiscoverConfig:
    glob: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "127.0.0.1:9187"
    token: str | None = None

    def __repr__(self) -> str:
        return f"HttpConfig(listen={self.listen!r}, token={'***' if self.token else None})"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class JournalConfig:
    events: Literal["all", "matched", "none"] = "matched"
    max_age: float | None = None
    max_size: int | None = None
    #: rows kept in memory while the journal cannot write; past that new rows are dropped and counted
    max_pending: int = 200_000


@dataclass(frozen=True, slots=True)
class QMPConfig:
    command_timeout: float = 10.0
    backoff_max: float = 5.0
    #: command globs the ``qmp`` action refuses (no opt-in; see reactor.actions.qmp)
    deny: tuple[str, ...] = ()
    #: rule-name glob -> the command globs those rules may send
    allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BusConfig:
    per_vm: int = 10_000
    total: int = 200_000


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    rules: tuple[Path, ...] = ()
    plugins: tuple[Path, ...] = ()
    state_dir: Path = Path("state")
    host: str = field(default_factory=socket.gethostname)
    vms: tuple[VMConfig, ...] = ()
    discover: tuple[DiscoverConfig, ...] = ()
    listen: tuple[str, ...] = ()
    mqtt: Mapping[str, Any] = field(default_factory=dict)
    http: HttpConfig | None = None
    log: LogConfig = field(default_factory=LogConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    qmp: QMPConfig = field(default_factory=QMPConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    #: raw nodes of sections parsed elsewhere (``sources``), by name
    sections: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        if name == "mqtt":
            return self.mqtt
        return self.sections.get(name)


class _Parser:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.errors: list[SourceError] = []

    def err(self, pos: Position, msg: str) -> None:
        self.errors.append(ConfigError(pos, msg))

    def keys(self, node: MapNode, allowed: tuple[str, ...], where: str) -> None:
        for k in node.entries:
            if k not in allowed:
                hint = close_match(k, allowed)
                self.err(node.key_pos(k), f"{where}unknown key {k!r}"
                         + (f" (did you mean {hint!r}?)" if hint else f"; keys: {', '.join(allowed)}"))

    def mapping(self, node: Node | None, what: str) -> MapNode | None:
        if node is None or (isinstance(node, ScalarNode) and node.value is None):
            return None
        if not isinstance(node, MapNode):
            self.err(node.pos, f"{what}: expected a mapping, got {node.kind}")
            return None
        return node

    def string(self, node: Node | None, what: str) -> str | None:
        if node is None:
            return None
        if isinstance(node, ScalarNode) and isinstance(node.value, str) and node.value:
            return node.value
        if isinstance(node, ScalarNode) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return str(node.value)
        self.err(node.pos, f"{what}: expected a string, got {node.kind}")
        return None

    def path(self, node: Node | None, what: str) -> Path | None:
        s = self.string(node, what)
        if s is None:
            return None
        p = Path(os.path.expanduser(s))
        return p if p.is_absolute() else (self.base / p)

    def paths(self, node: Node | None, what: str) -> tuple[Path, ...]:
        if node is None:
            return ()
        items = list(node.items) if isinstance(node, SeqNode) else [node]
        out = []
        for i in items:
            p = self.path(i, what)
            if p is not None:
                out.append(p)
        return tuple(out)

    def labels(self, node: Node | None, what: str) -> dict[str, str]:
        m = self.mapping(node, what)
        if m is None:
            return {}
        out = {}
        for k, v in m.items():
            if isinstance(v, ScalarNode) and v.value is not None and not isinstance(v.value, (list, dict)):
                out[k] = str(v.value).lower() if isinstance(v.value, bool) else str(v.value)
            else:
                self.err(v.pos, f"{what}.{k}: a label value must be a scalar, got {v.kind}")
        return out

    def commands(self, node: Node | None, what: str) -> tuple[str, ...]:
        """A list of QMP command names or globs (``query-*``)."""
        if node is None or (isinstance(node, ScalarNode) and node.value is None):
            return ()
        items = list(node.items) if isinstance(node, SeqNode) else [node]
        out = []
        for i in items:
            s = self.string(i, what)
            if s is not None and not _COMMAND_GLOB.match(s):
                self.err(i.pos, f"{what}: {s!r} is not a QMP command name or glob")
            elif s is not None:
                out.append(s)
        return tuple(out)

    def address(self, node: Node | None, what: str) -> str | None:
        s = self.string(node, what)
        if s is None:
            return None
        if _is_tcp(s):
            return s
        p = Path(os.path.expanduser(s))
        return str(p if p.is_absolute() else self.base / p)

    def vms(self, node: Node | None) -> tuple[VMConfig, ...]:
        if node is None or (isinstance(node, ScalarNode) and node.value is None):
            return ()
        if not isinstance(node, SeqNode):
            self.err(node.pos, f"vms: expected a list of VMs, got {node.kind}")
            return ()
        out = []
        seen: dict[str, Position] = {}
        for item in node:
            m = self.mapping(item, "vms[]")
            if m is None:
                if not isinstance(item, MapNode):
                    continue
                continue
            self.keys(m, ("name", "qmp", "labels"), "vms: ")
            name = self.string(m.get("name"), "vms.name")
            addr = self.address(m.get("qmp"), "vms.qmp")
            if "name" not in m:
                self.err(m.pos, "vms: a VM needs a 'name'")
            if "qmp" not in m:
                self.err(m.pos, "vms: a VM needs 'qmp' (a unix socket path or HOST:PORT)")
            if name is not None and name in seen:
                self.err(m.key_pos("name"), f"vms: duplicate VM name {name!r} (first at line {seen[name].line})")
            elif name is not None:
                seen[name] = m.key_pos("name")
            if name and addr:
                out.append(VMConfig(name=name, qmp=addr, labels=self.labels(m.get("labels"), "vms.labels")))
        return tuple(out)

    def discover(self, node: Node | None) -> tuple[DiscoverConfig, ...]:
        if node is None or (isinstance(node, ScalarNode) and node.value is None):
            return ()
        items = list(node.items) if isinstance(node, SeqNode) else [node]
        out = []
        for item in items:
            if isinstance(item, ScalarNode):
                g = self.path(item, "discover")
                if g is not None:
                    out.append(DiscoverConfig(glob=str(g)))
                continue
            m = self.mapping(item, "discover[]")
            if m is None:
                continue
            self.keys(m, ("glob", "labels"), "discover: ")
            g = self.path(m.get("glob"), "discover.glob")
            if "glob" not in m:
                self.err(m.pos, "discover: needs 'glob'")
            if g is not None:
                out.append(DiscoverConfig(glob=str(g), labels=self.labels(m.get("labels"), "discover.labels")))
        return tuple(out)

    def listen(self, node: Node | None) -> tuple[str, ...]:
        if node is None or (isinstance(node, ScalarNode) and node.value is None):
            return ()
        items = list(node.items) if isinstance(node, SeqNode) else [node]
        return tuple(a for a in (self.address(i, "listen") for i in items) if a)

    def choice(self, node: Node | None, what: str, choices: tuple[str, ...], default: str) -> str:
        if node is None:
            return default
        v = node.plain()
        if v not in choices:
            hint = close_match(str(v), choices)
            self.err(node.pos, f"{what}: {v!r} is not one of {', '.join(choices)}"
                     + (f" (did you mean {hint!r}?)" if hint else ""))
            return default
        return str(v)

    def duration(self, node: Node | None, what: str) -> float | None:
        if node is None:
            return None
        try:
            return parse_duration(node.plain())
        except ValueError as err:
            self.err(node.pos, f"{what}: {err}")
            return None

    def positive_int(self, node: Node | None, what: str, default: int) -> int:
        if node is None:
            return default
        v = node.plain()
        if type(v) is not int or v < 1:
            self.err(node.pos, f"{what}: expected a positive integer, got {v!r}")
            return default
        return v

    def size(self, node: Node | None, what: str) -> int | None:
        if node is None:
            return None
        v = node.plain()
        if type(v) is int and v > 0:
            return v
        m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*", str(v), re.I)
        if not m:
            self.err(node.pos, f"{what}: expected a size like 100MB or 1GiB, got {v!r}")
            return None
        unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
        return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]


def _is_tcp(s: str) -> bool:
    host, sep, port = s.rpartition(":")
    return bool(sep and host and port.isdigit() and "/" not in s)


def _substitute(node: Node, errors: list[SourceError], env: Mapping[str, str]) -> None:
    """Replace ``${NAME}`` in every string scalar, in place."""
    if isinstance(node, ScalarNode):
        if isinstance(node.value, str) and "${" in node.value:
            def repl(m: re.Match[str]) -> str:
                name = m.group(1)
                if name not in env:
                    errors.append(ConfigError(node.pos, f"environment variable {name} is not set"))
                    return ""
                return env[name]
            node.value = _ENV.sub(repl, node.value)
    elif isinstance(node, SeqNode):
        for i in node.items:
            _substitute(i, errors, env)
    elif isinstance(node, MapNode):
        for _, v in node.items():
            _substitute(v, errors, env)


def parse_config(text: str, path: str | Path, *, env: Mapping[str, str] | None = None,
                 sections: Mapping[str, Callable[[Node], Any]] | None = None) -> Config:
    """Parse config text; raises :class:`LoadError` listing every problem."""
    path = Path(path)
    base = path.resolve().parent
    p = _Parser(base)
    try:
        root = parse(text, str(path), ConfigError)
    except SourceError as err:
        raise LoadError([err]) from err
    if root is None:
        root = MapNode(Position(str(path), 1, 1), {})
    if not isinstance(root, MapNode):
        raise LoadError([ConfigError(root.pos, f"the config must be a mapping, got {root.kind}")])
    _substitute(root, p.errors, os.environ if env is None else env)
    p.keys(root, TOP_KEYS, "")
    rules = p.paths(root.get("rules"), "rules")
    plugins = p.paths(root.get("plugins"), "plugins")
    state_dir = p.path(root.get("state_dir"), "state_dir") or base / "state"
    host = p.string(root.get("host"), "host") or socket.gethostname()
    http = None
    hn = p.mapping(root.get("http"), "http")
    if hn is not None:
        p.keys(hn, ("listen", "token"), "http: ")
        http = HttpConfig(listen=p.string(hn.get("listen"), "http.listen") or "127.0.0.1:9187",
                          token=p.string(hn.get("token"), "http.token"))
    logc = LogConfig()
    ln = p.mapping(root.get("log"), "log")
    if ln is not None:
        p.keys(ln, ("level", "format"), "log: ")
        logc = LogConfig(
            level=p.choice(ln.get("level"), "log.level", ("debug", "info", "warning", "error"), "info"),
            format=p.choice(ln.get("format"), "log.format", ("text", "json"), "text"),  # type: ignore[arg-type]
        )
    jc = JournalConfig()
    jn = p.mapping(root.get("journal"), "journal")
    if jn is not None:
        p.keys(jn, ("events", "max_age", "max_size", "max_pending"), "journal: ")
        jc = JournalConfig(
            events=p.choice(jn.get("events"), "journal.events", ("all", "matched", "none"), "matched"),  # type: ignore[arg-type]
            max_age=p.duration(jn.get("max_age"), "journal.max_age"),
            max_size=p.size(jn.get("max_size"), "journal.max_size"),
            max_pending=p.positive_int(jn.get("max_pending"), "journal.max_pending", 200_000),
        )
    qc = QMPConfig()
    qn = p.mapping(root.get("qmp"), "qmp")
    if qn is not None:
        p.keys(qn, ("command_timeout", "backoff_max", "deny", "allow"), "qmp: ")
        allow: dict[str, tuple[str, ...]] = {}
        an = p.mapping(qn.get("allow"), "qmp.allow")
        for rule_glob, cn in an.items() if an is not None else ():
            allow[rule_glob] = p.commands(cn, f"qmp.allow.{rule_glob}")
        qc = QMPConfig(command_timeout=p.duration(qn.get("command_timeout"), "qmp.command_timeout") or 10.0,
                       backoff_max=p.duration(qn.get("backoff_max"), "qmp.backoff_max") or 5.0,
                       deny=p.commands(qn.get("deny"), "qmp.deny"), allow=allow)
    bc = BusConfig()
    bn = p.mapping(root.get("bus"), "bus")
    if bn is not None:
        p.keys(bn, ("per_vm", "total"), "bus: ")
        bc = BusConfig(per_vm=p.positive_int(bn.get("per_vm"), "bus.per_vm", 10_000),
                       total=p.positive_int(bn.get("total"), "bus.total", 200_000))
    mqtt: Mapping[str, Any] = {}
    mn = root.get("mqtt")
    if mn is not None and not (isinstance(mn, ScalarNode) and mn.value is None):
        from reactor.integrations.mqtt import parse_brokers

        try:
            mqtt = parse_brokers(mn)
        except SourceError as err:
            p.errors.append(err)
    extra: dict[str, Any] = {}
    ln_ = root.get("libvirt")
    if ln_ is not None and not (isinstance(ln_, ScalarNode) and ln_.value is None):
        from reactor.sources.libvirt.config import parse_libvirt

        try:
            extra["libvirt"] = parse_libvirt(ln_)
        except SourceError as err:
            p.errors.append(err)
    fn_ = root.get("fleet")
    if fn_ is not None and not (isinstance(fn_, ScalarNode) and fn_.value is None):
        from reactor.integrations.remote import parse_fleet

        try:
            extra["fleet"] = parse_fleet(fn_)
        except SourceError as err:
            p.errors.append(err)
        if not mqtt:
            p.err(root.key_pos("fleet"), "fleet: needs a broker in the mqtt: section")
    if mqtt:
        from reactor.integrations.homeassistant import bind_discovery

        mqtt = bind_discovery(mqtt, extra.get("fleet"), p.errors)
    for name, fn in (sections or {}).items():
        sn = root.get(name)
        if sn is not None:
            try:
                extra[name] = fn(sn)
            except SourceError as err:
                p.errors.append(err)
    sn = root.get("sources")
    if sn is not None and "sources" not in extra and not (isinstance(sn, ScalarNode) and sn.value is None):
        from reactor.daemon.plugins import load_plugins
        from reactor.sources import parse_sources

        try:
            extra["sources"] = parse_sources(sn, registry=load_plugins(plugins).sources)
        except SourceError as err:
            p.errors.append(err)
    cfg = Config(
        path=path, rules=rules, plugins=plugins, state_dir=state_dir, host=host,
        vms=p.vms(root.get("vms")), discover=p.discover(root.get("discover")), listen=p.listen(root.get("listen")),
        mqtt=mqtt, http=http, log=logc, journal=jc, qmp=qc, bus=bc, sections=extra,
    )
    if cfg.http is not None and cfg.http.token is None and not _loopback(cfg.http.listen):
        p.err(root.key_pos("http"), f"http.listen {cfg.http.listen!r} is not a loopback address: "
                                    "set http.token to allow it")
    if p.errors:
        raise LoadError(sorted(p.errors, key=lambda e: (e.position.line, e.position.col) if e.position else (0, 0)))
    return cfg


def _loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def load_config(path: str | Path) -> Config:
    """Read and parse a config file; raises :class:`LoadError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise LoadError([ConfigError(Position(str(p), 1, 1), f"cannot read config: {err.strerror or err}")]) from err
    return parse_config(text, p)
