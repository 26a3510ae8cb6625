"""The daemon's configuration file (``reactor run -c CONFIG``).

Unknown keys are errors with ``PATH:LINE:COL`` and a "did you mean"; a
relative path is relative to the config file (without ``rules:``, the rules
are ``rules/`` next to it); ``${NAME}`` in a string is replaced by that
environment variable (an unset one is an error), and a value that is one
``${NAME}`` and nothing else, for a key that wants an integer, a number or a
boolean, is read as one (``port: ${MQTT_PORT}``).  Addresses (``http.listen``,
``vms[].qmp`` as ``HOST:PORT``) are checked here: ports 1-65535.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from reactor.errors import ConfigError, LoadError, Position, SourceError
from reactor.model.duration import parse_duration
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match, kind_of, parse

__all__ = ["Config", "DiscoverConfig", "HttpConfig", "JournalConfig", "LogConfig", "VMConfig", "load_config",
           "parse_config"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMMAND_GLOB = re.compile(r"^[a-z0-9_*?\[\]!-]+$")
_PORT = re.compile(r"[0-9]+")
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

T = TypeVar("T")

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
    #: never empty: without ``rules:`` it is ``rules/`` next to the config file (``rules`` in the current
    #: directory when there is no file)
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
    #: where each ``rules:``/``plugins:`` path was written in the config file (not a setting: not compared)
    origins: Mapping[tuple[str, Path], Position] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rules:
            base = self.path.resolve().parent if self.path is not None else Path()
            object.__setattr__(self, "rules", (base / "rules",))

    def section(self, name: str) -> Any:
        if name == "mqtt":
            return self.mqtt
        return self.sections.get(name)

    def missing(self, key: Literal["rules", "plugins"]) -> list[SourceError]:
        """An error at the config's own ``PATH:LINE:COL`` for each ``rules:``/``plugins:`` path that is not there.

        Only for paths written in the config (the default ``rules/`` is left to the rule loader).
        """
        return _missing(key, self.rules if key == "rules" else self.plugins, self.origins)


class _Parser:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.errors: list[SourceError] = []
        #: (key, path) -> where the path was written (``Config.origins``)
        self.origins: dict[tuple[str, Path], Position] = {}
        #: scalars whose whole text was one ``${NAME}``, by position: (node, NAME)
        self.env: dict[Position, tuple[ScalarNode, str]] = {}

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
                self.origins.setdefault((what, p), i.pos)
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
        """A unix socket path (made absolute) or ``HOST:PORT``: a value without ``/`` but with ``:`` is meant
        as ``HOST:PORT`` and must be one (``./name:x`` is a file so named)."""
        s = self.string(node, what)
        if s is None or node is None:
            return None
        if "/" in s or ":" not in s:
            p = Path(os.path.expanduser(s))
            return str(p if p.is_absolute() else self.base / p)
        problem = _host_port_problem(s)
        if problem is not None:
            if not problem.startswith("port "):
                problem += f", nor a path (write ./{s} for a socket file of that name)"
            self.err(node.pos, f"{what}: {problem}")
            return None
        return s

    def host_port(self, node: Node | None, what: str, default: str) -> str:
        """``HOST:PORT`` (``[::1]:PORT``), port 1-65535; ``default`` when absent or wrong (the error is recorded)."""
        s = self.string(node, what)
        if s is None or node is None:
            return default
        problem = _host_port_problem(s)
        if problem is not None:
            self.err(node.pos, f"{what}: {problem}")
            return default
        return s

    # -- ${NAME} values ---------------------------------------------------------------------
    def from_env(self, node: Node) -> str:
        """`` (from ${NAME})`` when the node's whole value came from an environment variable, else ''."""
        ref = self.env.get(node.pos)
        return f" (from ${{{ref[1]}}})" if ref is not None and ref[0] is node else ""

    def typed(self, node: Node, want: type) -> Any:
        """The node's value; one that was a whole ``${NAME}`` is read as ``want`` (int, float, bool) when its
        text is one."""
        value = node.plain()
        ref = self.env.get(node.pos)
        if ref is None or ref[0] is not node or not isinstance(value, str):
            return value
        t = _typed(value)
        if t is None or isinstance(t, bool) != (want is bool) or (want is int and not isinstance(t, int)):
            return value
        return t

    def section(self, fn: Callable[[Node], T], node: Node) -> T:
        """``fn(node)`` for a section parsed elsewhere (``mqtt``, ``fleet``...): a whole ``${NAME}`` value it
        rejects as a string ("expected an integer, got string") is typed from its text (an integer, a number,
        a boolean) and ``fn`` runs again; an error at such a value says which variable it came from."""
        undo: dict[Position, tuple[str, SourceError]] = {}
        while True:
            try:
                return fn(node)
            except SourceError as err:
                ref = self.env.get(err.position) if err.position is not None else None
                if ref is None:
                    raise
                sn, name = ref
                where = f" (from ${{{name}}})"
                if isinstance(sn.value, str) and sn.pos not in undo and "got string" in err.message:
                    t = _typed(sn.value)
                    if t is not None:
                        undo[sn.pos] = (sn.value, err)
                        sn.value = t
                        continue
                    where = f" (the value of ${{{name}}} does not read as one)"
                elif sn.pos in undo and f"got {kind_of(sn.value)}" in err.message:
                    # typed, it is rejected too: its text is not of the type the key wants
                    sn.value, err = undo[sn.pos]
                    where = f" (the value of ${{{name}}} does not read as one)"
                raise ConfigError(err.position, err.message + where) from err

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
            return parse_duration(self.typed(node, float))
        except ValueError as err:
            self.err(node.pos, f"{what}: {err}{self.from_env(node)}")
            return None

    def positive_int(self, node: Node | None, what: str, default: int) -> int:
        if node is None:
            return default
        v = self.typed(node, int)
        if type(v) is not int or v < 1:
            self.err(node.pos, f"{what}: expected a positive integer, got {v!r}{self.from_env(node)}")
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


def _missing(key: str, paths: tuple[Path, ...], origins: Mapping[tuple[str, Path], Position]) -> list[SourceError]:
    out: list[SourceError] = []
    for p in paths:
        pos = origins.get((key, p))
        if pos is None:
            continue
        if key == "rules" and not p.exists():
            out.append(ConfigError(pos, f"rules: no such rules file or directory: {p}"))
        elif key == "plugins" and not p.is_dir():
            out.append(ConfigError(pos, f"plugins: no such directory: {p}" if not p.exists()
                                   else f"plugins: not a directory: {p}"))
    return out


def _host_port_problem(s: str) -> str | None:
    """What is wrong with ``HOST:PORT`` (``[::1]:PORT``, port 1-65535), or None."""
    host, sep, port = s.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host.strip() or not _PORT.fullmatch(port):
        return f"{s!r} is not HOST:PORT (like 127.0.0.1:9187 or [::1]:9187)"
    if not 1 <= int(port) <= 65535:
        return f"port {port} is not between 1 and 65535"
    return None


def _typed(text: str) -> int | float | bool | None:
    """The integer, number or boolean ``text`` spells (as YAML would read it unquoted), or None."""
    t = text.strip()
    if _INT.fullmatch(t):
        return int(t)
    if t.lower() in _BOOLS:
        return _BOOLS[t.lower()]
    if _FLOAT.fullmatch(t):
        return float(t)
    return None


def _substitute(node: Node, errors: list[SourceError], env: Mapping[str, str],
                whole: dict[Position, tuple[ScalarNode, str]]) -> None:
    """Replace ``${NAME}`` in every string scalar, in place; a scalar that was one ``${NAME}`` and nothing
    else goes into ``whole`` (a key expecting an integer, a number or a boolean reads its text as one)."""
    if isinstance(node, ScalarNode):
        if isinstance(node.value, str) and "${" in node.value:
            only = _ENV.fullmatch(node.value)
            if only is not None and only.group(1) in env:
                whole[node.pos] = (node, only.group(1))

            def repl(m: re.Match[str]) -> str:
                name = m.group(1)
                if name not in env:
                    errors.append(ConfigError(node.pos, f"environment variable {name} is not set"))
                    return ""
                return env[name]
            node.value = _ENV.sub(repl, node.value)
    elif isinstance(node, SeqNode):
        for i in node.items:
            _substitute(i, errors, env, whole)
    elif isinstance(node, MapNode):
        for _, v in node.items():
            _substitute(v, errors, env, whole)


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
    _substitute(root, p.errors, os.environ if env is None else env, p.env)
    p.keys(root, TOP_KEYS, "")
    rules = p.paths(root.get("rules"), "rules") or (base / "rules",)
    plugins = p.paths(root.get("plugins"), "plugins")
    state_dir = p.path(root.get("state_dir"), "state_dir") or base / "state"
    host = p.string(root.get("host"), "host") or socket.gethostname()
    http = None
    hn = p.mapping(root.get("http"), "http")
    if hn is not None:
        p.keys(hn, ("listen", "token"), "http: ")
        http = HttpConfig(listen=p.host_port(hn.get("listen"), "http.listen", "127.0.0.1:9187"),
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
            mqtt = p.section(parse_brokers, mn)
        except SourceError as err:
            p.errors.append(err)
    extra: dict[str, Any] = {}
    ln_ = root.get("libvirt")
    if ln_ is not None and not (isinstance(ln_, ScalarNode) and ln_.value is None):
        from reactor.sources.libvirt.config import parse_libvirt

        try:
            extra["libvirt"] = p.section(parse_libvirt, ln_)
        except SourceError as err:
            p.errors.append(err)
    fn_ = root.get("fleet")
    if fn_ is not None and not (isinstance(fn_, ScalarNode) and fn_.value is None):
        from reactor.integrations.remote import parse_fleet

        try:
            extra["fleet"] = p.section(parse_fleet, fn_)
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
                extra[name] = p.section(fn, sn)
            except SourceError as err:
                p.errors.append(err)
    sn = root.get("sources")
    if sn is not None and "sources" not in extra and not (isinstance(sn, ScalarNode) and sn.value is None):
        from reactor.daemon.plugins import load_plugins
        from reactor.sources import parse_sources

        try:
            missing = _missing("plugins", plugins, p.origins)   # the sources need the plugins loaded now
            p.errors.extend(missing)
            registry = load_plugins([d for d in plugins if d.is_dir()]).sources
            extra["sources"] = p.section(lambda n: parse_sources(n, registry=registry), sn)
        except SourceError as err:
            p.errors.append(err)
    cfg = Config(
        path=path, rules=rules, plugins=plugins, state_dir=state_dir, host=host,
        vms=p.vms(root.get("vms")), discover=p.discover(root.get("discover")), listen=p.listen(root.get("listen")),
        mqtt=mqtt, http=http, log=logc, journal=jc, qmp=qc, bus=bc, sections=extra, origins=p.origins,
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
