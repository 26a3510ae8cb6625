"""The ``libvirt:`` config section.

::

    libvirt:
      - uri: qemu:///system        # default qemu:///system
        domains: ["web-*", db-1]   # globs on the domain name; default: every domain
        labels: {env: prod}        # labels of these VMs, for rules' vms: {labels: ...}

Each entry is one libvirt connection.  :func:`parse_libvirt` is what
``reactor.daemon.config`` calls for the section; it raises
:class:`~reactor.errors.ConfigError` at the position of the first problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reactor.errors import ConfigError
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match

__all__ = ["DEFAULT_URI", "LibvirtConfig", "parse_libvirt"]

DEFAULT_URI = "qemu:///system"
_KEYS = ("uri", "domains", "labels")


@dataclass(frozen=True, slots=True)
class LibvirtConfig:
    """One libvirt connection and the domains reactor watches through it."""

    uri: str = DEFAULT_URI
    domains: tuple[str, ...] = ("*",)
    labels: Mapping[str, str] = field(default_factory=dict)


def _string(node: Node, what: str) -> str:
    if not isinstance(node, ScalarNode) or not isinstance(node.value, str) or not node.value:
        raise ConfigError(node.pos, f"libvirt: {what} must be a non-empty string, got {node.kind}")
    return node.value


def _entry(node: Node) -> LibvirtConfig:
    if not isinstance(node, MapNode):
        raise ConfigError(node.pos, f"libvirt: each entry must be a mapping (uri, domains, labels), got {node.kind}")
    for key in node.entries:
        if key not in _KEYS:
            hint = close_match(key, list(_KEYS))
            more = f" (did you mean {hint!r}?)" if hint else f" (expected one of {', '.join(_KEYS)})"
            raise ConfigError(node.key_pos(key), f"libvirt: unknown key {key!r}{more}")
    uri = DEFAULT_URI
    un = node.get("uri")
    if un is not None:
        uri = _string(un, "uri")
        if "://" not in uri:
            raise ConfigError(un.pos, f"libvirt: uri {uri!r} is not a libvirt URI (like qemu:///system)")
    domains: tuple[str, ...] = ("*",)
    dn = node.get("domains")
    if dn is not None:
        if isinstance(dn, SeqNode):
            if not dn.items:
                raise ConfigError(dn.pos, "libvirt: domains is empty (leave it out to watch every domain)")
            domains = tuple(_string(i, "each domain glob") for i in dn.items)
        else:
            domains = (_string(dn, "domains (a glob or a list of globs)"),)
    labels: dict[str, str] = {}
    ln = node.get("labels")
    if ln is not None:
        if not isinstance(ln, MapNode):
            raise ConfigError(ln.pos, f"libvirt: labels must be a mapping, got {ln.kind}")
        for k, v in ln.items():
            if not isinstance(v, ScalarNode) or v.value is None or isinstance(v.value, dict | list):
                raise ConfigError(v.pos, f"libvirt: label {k!r} must be a scalar, got {v.kind}")
            labels[k] = str(v.value).lower() if isinstance(v.value, bool) else str(v.value)
    return LibvirtConfig(uri=uri, domains=domains, labels=labels)


def parse_libvirt(node: Node) -> tuple[LibvirtConfig, ...]:
    """The ``libvirt:`` section: a list of connections (a single mapping is one connection)."""
    if isinstance(node, MapNode):
        return (_entry(node),)
    if not isinstance(node, SeqNode):
        raise ConfigError(node.pos, f"libvirt: expected a list of connections ({{uri, domains}}), got {node.kind}")
    if not node.items:
        raise ConfigError(node.pos, "libvirt: no connection given")
    out = [_entry(item) for item in node.items]
    seen: set[str] = set()
    for item, cfg in zip(node.items, out, strict=True):
        if cfg.uri in seen:
            raise ConfigError(item.pos, f"libvirt: uri {cfg.uri!r} is listed twice")
        seen.add(cfg.uri)
    return tuple(out)
