"""A QMP command a step sends, checked against the QMP command catalog at load.

The ``qmp`` and ``libvirt_qmp`` actions (and any plugin action that declares
``command=(NAME_ARG, ARGUMENTS_ARG)``) name a command and give its arguments.
When the rules load, a literal command name must be in the catalog of the
supported QEMU versions ("did you mean"), every literal argument name must be
one of the command's, every required argument must be given, and literal
values must fit the argument's QAPI type (nested objects and lists too).
Templated names and values (``{{ }}``) are checked only when they render, by
QEMU.
"""

from __future__ import annotations

from collections.abc import Mapping

from reactor.errors import Position, RuleError
from reactor.model.catalog.commands import CommandCatalog
from reactor.model.catalog.schema import FieldSpec, TypeSpec
from reactor.rules.matcher import literal_problem
from reactor.rules.source import MapNode, Node, ScalarNode, SeqNode, close_match
from reactor.rules.template import is_template

__all__ = ["check_command_call"]


def _templated(node: Node) -> bool:
    if isinstance(node, ScalarNode):
        return isinstance(node.value, str) and is_template(node.value)
    if isinstance(node, SeqNode):
        return any(_templated(i) for i in node.items)
    if isinstance(node, MapNode):
        return any(is_template(k) or _templated(v) for k, v in node.items())
    return False


class _Checker:
    def __init__(self, command: str, what: str, errors: list[RuleError]) -> None:
        self.command = command
        self.what = what
        self.errors = errors

    def err(self, pos: Position, msg: str) -> None:
        self.errors.append(RuleError(pos, msg))

    def members(self, fields: Mapping[str, FieldSpec], node: MapNode, path: str, open_: bool,
                owner: str | None = None) -> None:
        where = f"{self.what}.arguments{path}"
        hinted: set[str] = set()
        for key, sub in node.items():
            if is_template(key):
                continue
            f = fields.get(key)
            if f is None:
                if open_:
                    continue
                hint = close_match(key, [f for f in fields if f not in node])
                if hint is not None:
                    hinted.add(hint)
                what = "argument" if owner is None else "member"
                known = f"; its {what}s: {', '.join(fields)}" if fields else f"; it takes no {what}s"
                self.err(node.key_pos(key), f"{where}: {owner or self.command} has no {what} {key!r}"
                         + (f" (did you mean {hint!r}?)" if hint else known))
                continue
            self.value(f.type, sub, f"{path}.{key}")
        for name, f in fields.items():
            if not f.optional and name not in node and name not in hinted:
                needs = f"{self.command} needs argument" if owner is None else f"{owner} needs member"
                self.err(node.pos, f"{where}: {needs} {name!r} ({f.type})")

    def value(self, ts: TypeSpec, node: Node, path: str) -> None:
        if _templated(node):
            return
        where = f"{self.what}.arguments{path}"
        if ts.kind == "object" and ts.fields and isinstance(node, MapNode):
            self.members(ts.fields, node, path, False, ts.name or "the object")
            return
        if ts.kind == "array" and ts.items is not None and isinstance(node, SeqNode):
            for i, item in enumerate(node.items):
                self.value(ts.items, item, f"{path}[{i}]")
            return
        if ts.kind == "alternate" and isinstance(node, MapNode):
            objects = [c for c in ts.choices if c.kind == "object"]
            if len(objects) == 1 and objects[0].fields:
                self.members(objects[0].fields, node, path, False, objects[0].name or "the object")
                return
        prob = literal_problem(ts, node.plain())
        if prob is not None:
            self.err(node.pos, f"{where}: {prob}")


def check_command_call(command: Node, arguments: Node | None, commands: CommandCatalog,
                       errors: list[RuleError], *, what: str) -> None:
    """Check a step's QMP command name and literal arguments; problems go to ``errors``.

    ``what`` prefixes the messages (the action's name): ``qmp: unknown QMP
    command 'contt' (did you mean 'cont'?)``, ``qmp.arguments: ...``.
    """
    if not isinstance(command, ScalarNode) or not isinstance(command.value, str) or is_template(command.value):
        return
    name = command.value
    schema = commands.get(name)
    if schema is None:
        hint = commands.suggest(name)
        versions = ", ".join(commands.qemu_versions) or "?"
        errors.append(RuleError(command.pos, f"{what}: unknown QMP command {name!r}"
                                + (f" (did you mean {hint!r}?)" if hint else f"; not in QEMU {versions}")))
        return
    checker = _Checker(name, what, errors)
    if arguments is None or (isinstance(arguments, ScalarNode) and arguments.value is None):
        required = [n for n, f in schema.arguments.items() if not f.optional]
        if required:
            errors.append(RuleError(command.pos, f"{what}: {name} needs argument"
                                    f"{'s' if len(required) > 1 else ''} {', '.join(map(repr, required))}"))
        return
    if isinstance(arguments, MapNode):
        checker.members(schema.arguments, arguments, "", schema.open)
