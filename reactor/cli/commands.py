"""The ``reactor`` command line (see the product contract in DAEMON.md).

Exit codes: 0 success; 1 invalid input (rules, config, events); 2 usage;
``replay`` also 3 with ``--strict`` when a run failed, and 4 when the journal dropped rows (see
:data:`REPLAY_EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from reactor.errors import LoadError, ReactorError, SourceError
from reactor.version import __version__

if TYPE_CHECKING:
    from reactor.actions.registry import Registry
    from reactor.daemon.config import Config
    from reactor.rules.rule import RuleSet

# Each command imports what it uses, in its function: `reactor --help` loads argparse and
# this module only, `reactor check` the loader and the registry, not the engine or asyncio.

__all__ = ["REPLAY_EXIT_CODES", "error_json", "main"]

#: ``reactor replay``'s exit codes (README "Replay", ``reactor replay --help``).
REPLAY_EXIT_CODES = """\
exit codes:
  0  every event was read and replayed, even when steps or runs failed (with
     --strict: and every run ended ok; a step that failed under
     `on_error: continue` leaves its run ok; with --dry-run, runs end "dry-run")
  1  bad input: rules, config or event lines invalid (bad lines are reported
     with their line number, the rest is replayed), or refused before the first
     event: an mqtt step with no broker configured in -c, a broker that does not
     answer, a resource that does not start
  2  usage (argparse)
  3  with --strict: the input was good but a run failed (a step failed with
     `on_error: stop`, the default) or a message published to MQTT was not
     acknowledged
  4  journal rows dropped (with --journal: the journal could not keep up)
"""


def _json(obj: Any) -> str:
    from reactor.rules.template import to_jsonable

    return orjson.dumps(obj, default=to_jsonable, option=orjson.OPT_NON_STR_KEYS).decode()


def _setup_logging(verbosity: int, fmt: str = "text") -> None:
    level = logging.WARNING - 10 * verbosity
    from reactor.ops.logformat import configure

    configure(max(logging.DEBUG, min(logging.ERROR, level)), fmt)


def _registry(config: Config | None) -> Registry:
    from reactor.daemon.plugins import load_registry

    return load_registry(config.plugins if config else ())


def _load(args: argparse.Namespace, rule_dirs: Sequence[str]) -> tuple[Config | None, RuleSet]:
    from reactor.daemon.config import load_config
    from reactor.rules.loader import load_rules

    config = load_config(args.config) if getattr(args, "config", None) else None
    if config is None:
        return None, load_rules(list(rule_dirs) or ["rules"], registry=_registry(None))
    from reactor.daemon.reload import config_broker_errors, load_config_rules

    if not rule_dirs:   # the config's rules: missing paths at the config's positions, brokers checked
        return config, load_config_rules(config)[1]
    rules = load_rules(list(rule_dirs), registry=_registry(config))
    brokers = config_broker_errors(config, rules)
    if brokers:
        raise LoadError(list(brokers))
    return config, rules


def _print_errors(err: LoadError) -> None:
    for e in err.errors:
        print(str(e), file=sys.stderr)
    n = len(err.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


# -- commands ---------------------------------------------------------------------------

#: "(did you mean 'X'?)" in rule errors, "; did you mean 'X'?" at the end of some config errors.
_HINT = re.compile(r" \((did you mean .+?\?)\)|; (did you mean .+\?)$")


def error_json(err: SourceError | ReactorError) -> dict[str, Any]:
    """One error as ``reactor check --json`` prints it: file, line, column, message, hint (or None)."""
    pos = err.position if isinstance(err, SourceError) else None
    message = err.message if isinstance(err, SourceError) else str(err)
    found = _HINT.search(message)
    hint = (found.group(1) or found.group(2)) if found else None
    if found:
        message = message[: found.start()] + message[found.end():]
    return {"file": pos.path if pos else None, "line": pos.line if pos else None,
            "column": pos.col if pos else None, "message": message, "hint": hint}


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config, rules = _load(args, args.rules_dirs)
    except LoadError as err:
        if args.json:
            print(_json({"ok": False, "errors": [error_json(e) for e in err.errors]}))
        else:
            _print_errors(err)
        return 1
    except ReactorError as err:  # a plugin that does not import, the catalog ...
        if args.json:
            print(_json({"ok": False, "errors": [error_json(err)]}))
        else:
            print(f"reactor: {err}", file=sys.stderr)
        return 1
    files = len(rules.sources)
    if args.json:
        print(_json({"ok": True, "errors": [], "rules": [r.name for r in rules.rules], "files": list(rules.sources)}))
    elif not args.quiet:
        cfg = f", config {args.config}" if config is not None else ""
        print(f"ok: {len(rules)} rule{'s' if len(rules) != 1 else ''} in {files} file{'s' if files != 1 else ''}{cfg}")
    return 0


def _fmt_time(ts: float) -> str:
    """``ts`` as UTC ``YYYY-MM-DD HH:MM:SS.mmm`` (as ``datetime`` rounds it to microseconds, then cut)."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)   # half to even, as datetime.fromtimestamp
    sec = int(whole)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    if frac < 0 or not 0 <= sec < _MAX_GMTIME:
        return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if sec != _last_second[0]:   # replay and history print thousands per second: one strftime per second
        _last_second[:] = [sec, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))]
    return f"{_last_second[1]}.{us // 1000:03d}"


#: The second ``_fmt_time`` formatted last, and its text.
_last_second: list[Any] = [None, ""]
#: Seconds past which ``time.gmtime`` may not give a four-digit year (10000-01-01).
_MAX_GMTIME: Final = 253_402_300_800


def _print_record(rec: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out = {k: v for k, v in rec.items() if v is not None}
        print(_json(out), flush=True)
        return
    t = _fmt_time(rec["time"]) if isinstance(rec.get("time"), (int, float)) and rec["time"] > 0 else ""
    typ = rec["type"]
    if typ == "match":
        print(f"{t} MATCH {rec['rule']} vm={rec['vm']} event={rec['event']} run={rec.get('run')}")
    elif typ == "step":
        status = rec["status"]
        what = _json(rec.get("args"))
        tail = f" -> {_json(rec['result'])}" if rec.get("result") is not None else ""
        if rec.get("error"):
            tail = f" !! {rec['error']}"
        label = "would run" if status == "dry-run" else status
        print(f"{t}   step {rec['step']} {rec['action']} {what} [{label}]{tail}")
    else:
        print(f"{t} {typ.upper()} {rec['rule']} vm={rec['vm']} event={rec['event']}: {rec.get('reason', '')}")


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio

    from reactor.engine.clock import VirtualClock
    from reactor.engine.engine import Engine, tune_gc
    from reactor.engine.replay import ReplayRefused, ReplayServices, replay

    try:
        config, rules = _load(args, [args.rules] if args.rules else [])
    except LoadError as err:
        _print_errors(err)
        return 1
    as_json = args.json
    tune_gc()   # the rules and the catalog live for the whole replay: keep the collector off them

    def output(rec: dict[str, Any]) -> None:
        _print_record(rec, as_json)

    dropped = 0

    async def go() -> Any:
        nonlocal dropped
        clock = VirtualClock()
        journal = None
        async with asyncio.TaskGroup() as tg:
            services = ReplayServices(config, dry_run=args.dry_run, tg=tg)
            try:
                await services.start(rules)   # ReplayRefused before the first event
                if args.journal:
                    from reactor.ops.journal import Journal

                    journal = Journal(Path(args.journal),
                                      record_events=config.journal.events if config else "matched")
                    await journal.__aenter__()
                engine = Engine(rules, clock=clock, dry_run=args.dry_run, output=output, journal=journal,
                                labels=_labels_from(config), resources=services.resources)
                services.attach(engine)
                if args.events == "-":
                    result = await replay(sys.stdin, engine, clock, source="<stdin>",
                                            journal_wait=args.journal_wait)
                else:
                    with open(args.events, "rb") as f:  # noqa: ASYNC230 -- replay reads its input on the loop
                        result = await replay(f, engine, clock, source=args.events, journal_wait=args.journal_wait)
                result.undelivered = await services.flush()
                return result
            finally:
                await services.aclose()
                if journal is not None:
                    await journal.aclose()
                    dropped = journal.stats.dropped

    if args.events != "-" and not Path(args.events).exists():
        print(f"{args.events}: No such file or directory", file=sys.stderr)
        return 1
    refusals: list[str] = []

    async def guarded() -> Any:
        try:
            return await go()
        except* ReplayRefused as group:   # "PATH:LINE:COL: rule ..." or "replay: ...", as they are
            refusals.extend(str(e) for e in group.exceptions)
        except* OSError as group:
            err = group.exceptions[0]
            refusals.append(f"{args.events}: {getattr(err, 'strerror', None) or err}")
        except* ReactorError as group:   # the journal could not be opened
            refusals.extend(f"reactor: {e}" for e in group.exceptions)
        return None

    result = asyncio.run(guarded())
    if result is None:
        for line in refusals:
            print(line, file=sys.stderr)
        return 1
    for e in result.errors:
        print(e, file=sys.stderr)
    for e in result.undelivered:
        print(e, file=sys.stderr)
    failed = result.failed_runs
    if not as_json:
        print(f"replayed {result.events} events, {len(result.errors)} bad lines, {result.started} runs, "
              f"{failed} failed", file=sys.stderr)
    if result.errors:
        return 1
    if dropped:   # exit 4: the journal lost rows (it could not write them)
        print(f"{args.journal}: the journal dropped {dropped} rows (it could not write them)", file=sys.stderr)
        return 4
    return 3 if args.strict and (failed or result.undelivered) else 0


def _labels_from(config: Config | None) -> Any:
    if config is None:
        return None
    labels = {vm.name: dict(vm.labels) for vm in config.vms}
    return lambda name: labels.get(name, {})


def cmd_events(args: argparse.Namespace) -> int:
    from reactor.model.catalog import default_catalog

    cat = default_catalog()
    if args.name:
        if args.name not in cat:
            hint = cat.suggest(args.name)
            print(f"unknown event {args.name!r}" + (f" (did you mean {hint!r}?)" if hint else ""), file=sys.stderr)
            return 1
        if args.json:
            print(_json(cat.to_json(args.name)))
        else:
            print(cat.describe(args.name))
        return 0
    if args.json:
        print(_json(cat.to_json()))
        return 0
    for name in cat.names():
        schema = cat.get(name)
        assert schema is not None
        doc = (schema.doc.strip().splitlines() or [""])[0]
        vers = "reactor" if schema.builtin else ",".join(schema.versions)
        print(f"{name:<32} {vers:<10} {doc[:80]}")
    return 0


def _journal_path(args: argparse.Namespace, config: Config | None) -> Path:
    if args.journal:
        return Path(args.journal)
    state = config.state_dir if config else Path("state")
    return state / "journal.db"


def _open_journal(path: Path) -> Any:
    """The journal at ``path``, opened read-only (a running daemon keeps writing); JournalError if unreadable."""
    from reactor.ops.journal import Journal

    j = Journal(path)
    j.open_sync(readonly=True)
    return j


def cmd_history(args: argparse.Namespace) -> int:
    from reactor.daemon.config import load_config
    from reactor.model.duration import parse_duration

    try:
        config = load_config(args.config) if args.config else None
    except LoadError as err:
        _print_errors(err)
        return 1
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as err:
            print(f"--since: {err}", file=sys.stderr)
            return 2
    path = _journal_path(args, config)
    if not path.exists():
        if args.journal:
            how = ""
        elif config is None:
            how = (" (without -c, reactor history reads ./state/journal.db; give the daemon's config with"
                   " -c CONFIG to read its state_dir's journal, or a journal file with --journal PATH)")
        else:
            how = (f" (the journal of {args.config}'s state_dir; has the daemon run with this config?"
                   " Another journal: --journal PATH)")
        print(f"no journal at {path}{how}: nothing recorded yet", file=sys.stderr)
        # nothing recorded yet is the normal state before a first run (a script polling history --json gets
        # no lines and 0); a journal file named with --journal that is not there is a mistake
        return 1 if args.journal else 0
    try:
        j = _open_journal(path)
    except ReactorError as err:
        print(f"reactor: {err}", file=sys.stderr)
        return 1
    try:
        runs = j.runs(vm=args.vm, rule=args.rule, since=since, limit=args.limit, status=args.status)
    finally:
        j.close_sync()
    if args.event:
        runs = [r for r in runs if r.event_name == args.event]
    if args.json:
        for r in runs:
            print(_json(r))
        return 0
    if not runs:
        filtered = args.vm or args.rule or args.since or args.status or args.event
        print("no runs recorded" + (" for that filter" if filtered else ""))
    for r in reversed(runs):
        dur = f" {r.ended - r.started:.3f}s" if r.ended else ""
        why = f" error: {r.error}" if r.error else ""
        if r.outcome in ("pending", "late"):   # unless: a held match (cancelled, elapsed...), a late run
            why = f" ({r.error})" if r.error else ""
        tag = f" [{r.outcome}]" if r.outcome not in ("started", r.status) else ""
        print(f"{_fmt_time(r.started)} run {r.id} {r.rule} vm={r.vm} event={r.event_name}{tag} {r.status}{dur}{why}")
        for s in r.steps:
            tail = f" !! {s.error}" if s.error else ""
            print(f"    step {s.index} {s.action} {_json(s.args)} {s.status} {s.duration * 1000:.1f}ms{tail}")
    return 0


def _read_events(path: str) -> list[Any]:
    """One JSON object, or JSON lines; ValueError naming the line."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        obj = orjson.loads(text)
        return obj if isinstance(obj, list) else [obj]
    except orjson.JSONDecodeError:
        pass
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON: {err}") from err
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    from reactor.engine.explain import explain, format_verdicts
    from reactor.model.catalog import default_catalog

    try:
        config, rules = _load(args, args.rules or [])
    except LoadError as err:
        _print_errors(err)
        return 1
    try:
        objs = _read_events(args.event)
    except (OSError, ValueError) as err:
        print(f"{args.event}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
        return 1
    catalog = default_catalog()
    events = []
    for i, obj in enumerate(objs, 1):
        try:
            vm = args.vm or (obj.get("vm") if isinstance(obj, dict) else None) or "vm0"
            events.append(catalog.make_event(obj, vm=str(vm)))
        except ReactorError as err:
            print(f"{args.event}: event {i}: {err}", file=sys.stderr)
            return 1
    journal = None
    path = _journal_path(args, config)
    if args.journal or (config is not None and path.exists()):
        try:
            journal = _open_journal(path)
        except ReactorError as err:
            print(f"reactor: {err}", file=sys.stderr)
            return 1
    labels = _labels_from(config)
    try:
        for event in events:
            verdicts = explain(event, rules, labels=labels(event.vm) if labels else None, status=args.status,
                               journal=journal, now=event.timestamp if args.at == "event" else None)
            if args.json:
                print(_json({"event": event.name, "vm": event.vm, "problems": list(event.problems),
                             "rules": [v.to_json() for v in verdicts]}))
            else:
                print(format_verdicts(event, verdicts))
    finally:
        if journal is not None:
            journal.close_sync()
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from reactor.daemon.config import load_config
    from reactor.schemas.generate import config_schema, rules_schema

    try:
        config = load_config(args.config) if args.config else None
        reg = _registry(config)
    except (LoadError, ReactorError) as err:
        print(str(err), file=sys.stderr)
        return 1
    schema = rules_schema(registry=reg) if args.which == "rules" else config_schema()
    text = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from reactor.daemon.config import load_config
    from reactor.daemon.daemon import run_daemon

    try:
        config = load_config(args.config)
    except LoadError as err:
        _print_errors(err)
        return 1
    level = {"debug": 2, "info": 1, "warning": 0, "error": -1}[config.log.level]
    _setup_logging(-1 if args.quiet else max(args.verbose, level), config.log.format)
    try:
        return run_daemon(config, dry_run=args.dry_run, watch=not args.no_watch)
    except LoadError as err:
        _print_errors(err)
        return 1
    except (ReactorError, OSError) as err:   # a start-up error: one line, no traceback
        print(f"reactor: {err}", file=sys.stderr)
        return 1


def cmd_fleet(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from reactor.daemon.config import load_config
    from reactor.integrations.fleetview import fetch_status, format_status

    try:
        config = load_config(args.config)
    except LoadError as err:
        _print_errors(err)
        return 1
    fleet = config.section("fleet")
    brokers = dict(config.mqtt)
    if not brokers:
        print("reactor: fleet status needs a broker in the mqtt: section", file=sys.stderr)
        return 1
    name = getattr(fleet, "broker", None) or next(iter(brokers))
    b = brokers[name]
    prefix = getattr(fleet, "prefix", None) or b.prefix
    try:
        snap = asyncio.run(fetch_status(b.host, b.port, prefix=prefix, wait=args.wait, username=b.username,
                                        password=b.password.reveal() if b.password is not None else None))
    except Exception as err:  # the command's boundary: say why
        print(f"reactor: cannot read the fleet status from {b.host}:{b.port}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_status(snap))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from reactor.daemon.config import load_config
    from reactor.rules.arguments import describe_type

    try:
        config = load_config(args.config) if args.config else None
        reg = _registry(config)
    except (LoadError, ReactorError) as err:
        print(str(err), file=sys.stderr)
        return 1
    import dataclasses

    rows: list[dict[str, Any]] = []
    for spec in reg:
        fields = []
        for f in dataclasses.fields(spec.args):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            fields.append({"name": f.name, "type": describe_type(spec.hints.get(f.name)), "required": required})
        rows.append({"action": spec.name, "origin": spec.origin, "shorthand": spec.shorthand, "arguments": fields,
                     "doc": spec.doc.splitlines()[0] if spec.doc else ""})
    if args.json:
        print(_json(rows))
        return 0
    for r in rows:
        args_s = ", ".join(f"{a['name']}{'' if a['required'] else '?'}: {a['type']}" for a in r["arguments"])
        print(f"{r['action']:<12} {r['origin']}\n    {r['doc']}\n    arguments: {args_s}")
    return 0


def version_text() -> str:
    """``reactor --version``: the version, the distribution, and the QEMU versions the event catalog covers."""
    from reactor.model.catalog import default_catalog

    versions = ", ".join(default_catalog().qemu_versions)
    return (f"reactor {__version__} (distribution {DISTRIBUTION})\n"
            f"QEMU event catalogs: {versions} (a newer QEMU's other events and fields pass through untyped)")


#: The name this package is published under (``pip install qemu-reactor``); it imports and runs as ``reactor``.
DISTRIBUTION = "qemu-reactor"


class _Version(argparse.Action):
    """``--version`` without loading the catalog for every other command."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reactor", description="React to QEMU QMP events with YAML rules.")
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and the QEMU catalogs, then exit")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only (check: and no 'ok' line)")
    # the same options after the command (`reactor run -v`); SUPPRESS keeps a subparser from resetting the
    # value given before it (`reactor -v run`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="errors only (check: and no 'ok' line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    s = command("run", help="run the daemon in the foreground")
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--dry-run", action="store_true", help="connect and match, but send no mutating command")
    s.add_argument("--no-watch", action="store_true",
                   help="do not reload when rule files change (SIGHUP still reloads)")
    s.set_defaults(fn=cmd_run)

    s = command("check", help="load and validate rules (and the config)")
    s.add_argument("rules_dirs", nargs="*", metavar="RULES_DIR")
    s.add_argument("-c", "--config")
    s.add_argument("--json", action="store_true",
                   help="print the result as JSON on stdout, valid or not: "
                        "{ok, errors: [{file, line, column, message, hint}]}, and when valid rules and files")
    s.set_defaults(fn=cmd_check)

    s = command("replay", help="feed recorded events through the rules on a virtual clock",
                       description="Feed recorded events through the rules on a virtual clock. The steps run "
                                   "for real (webhook, and mqtt to the brokers of -c CONFIG); qmp steps fail "
                                   "(no VM), so use --dry-run to see what would run.",
                       epilog=REPLAY_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("events", metavar="EVENTS.jsonl", help="JSON lines of QMP events ('-' for stdin)")
    s.add_argument("--rules", metavar="DIR")
    s.add_argument("-c", "--config", help="VM labels, plugins and the MQTT brokers mqtt steps publish to")
    s.add_argument("--dry-run", action="store_true", help="execute no action; print what would run")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--strict", action="store_true",
                   help="exit 3 when a run failed or an MQTT message was not acknowledged (a CI gate)")
    s.add_argument("--journal", metavar="PATH", help="record into this journal file (exit 4 if it dropped rows)")
    s.add_argument("--journal-wait", metavar="SECONDS", type=float, default=60.0,
                   help="how long replay waits for a journal that writes nothing before going on without it "
                        "(default 60)")
    s.set_defaults(fn=cmd_replay)

    s = command("events", help="the typed QMP event catalog")
    s.add_argument("name", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_events)

    s = command("history", help="what the journal recorded")
    s.add_argument("--vm", help="only runs for this VM")
    s.add_argument("--rule", help="only runs of this rule")
    s.add_argument("--event", metavar="NAME", help="only runs started by this event")
    s.add_argument("--status", help="only runs with this status (ok, failed, skipped, throttled, dropped, running...)")
    s.add_argument("--since", metavar="DURATION", help="only runs started within DURATION (10m, 2h, 1d)")
    s.add_argument("--limit", type=int, default=50, help="at most this many runs, newest (default 50)")
    s.add_argument("--json", action="store_true", help="one JSON object per run, newest first")
    s.add_argument("-c", "--config")
    s.add_argument("--journal", metavar="PATH", help="the journal file (default: STATE_DIR/journal.db)")
    s.set_defaults(fn=cmd_history)

    s = command("explain", help="why each rule listening to an event would run or not")
    s.add_argument("event", metavar="EVENT.json", help="a QMP event object, or JSON lines of them ('-': stdin)")
    s.add_argument("--rules", metavar="DIR", action="append", help="rules directory or file (repeatable)")
    s.add_argument("-c", "--config", help="rules, VM labels and the journal from this config")
    s.add_argument("--vm", metavar="NAME", help="the VM the event comes from (default: its 'vm' member, or vm0)")
    s.add_argument("--status", default="running", help="the VM's run state before the event (default running)")
    s.add_argument("--journal", metavar="PATH", help="throttle and mode state from this journal")
    s.add_argument("--at", choices=("now", "event"), default="now",
                   help="the time windows and deadlines are taken at: now (default: a running daemon's journal) "
                        "or the event's own timestamp (a journal `reactor replay --journal` wrote)")
    s.add_argument("--json", action="store_true", help="one JSON object per event")
    s.set_defaults(fn=cmd_explain)

    s = command("schema", help="print the JSON Schema of rule files or of the config")
    s.add_argument("which", choices=["rules", "config"])
    s.add_argument("-c", "--config", help="include the actions of this config's plugins")
    s.add_argument("-o", "--output", metavar="PATH")
    s.set_defaults(fn=cmd_schema)

    s = command("fleet", help="fleet mode: hosts' presence and VMs' last state, from the broker")
    s.add_argument("what", choices=["status"])
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--wait", type=float, default=1.0, help="seconds to collect retained messages (default 1)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_fleet)

    s = command("plugins", help="the actions available, where they come from, their arguments")
    s.add_argument("-c", "--config")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_plugins)
    return p


#: the collector's thresholds while a command starts: imports, the catalog and the rules are many
#: long-lived objects and few cycles, and walking them every 700 allocations was ~15% of `reactor
#: check` on 1,000 rules (0.42-0.45 s instead of 0.51, pinned).  `run` and `replay` tune it again
#: once loaded (reactor.engine.engine.tune_gc).
START_GC_THRESHOLD = (50_000, 20, 20)


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(*START_GC_THRESHOLD)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        _setup_logging(-1 if args.quiet else args.verbose)
    try:
        code: int = args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
