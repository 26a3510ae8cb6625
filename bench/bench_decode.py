"""JSON line -> typed event: reactor's decode against msgspec's typed decode (issue 14: the size of a lever).

    .venv/bin/python bench/bench_decode.py [--events N] [--runs R] [--json]

reactor turns a QMP line into an event in two steps: ``orjson.loads``, then
``Catalog.make_event`` (the envelope's checks, the event's schema check, the
typed class).  msgspec (not a dependency of reactor; ``pip install msgspec``
into the bench's environment) decodes a line straight into typed structs and
checks it against their types in C.  This bench builds, from the same
catalog (``Catalog.get``), one msgspec struct per event of the stream (its
``data`` members with their types, optional ones defaulting to absent; the
envelope's ``timestamp`` and ``vm``), tagged by ``event``, and decodes
``bench_engine.make_stream``'s quiet stream (1,000 rules, 1 event in 10
matching) both ways, in turns, pinned to CPU 0.

What msgspec checks here is less than ``make_event``: member types and enum
values, not the integer ranges of QAPI's sized integers; alternates and
recursive objects are ``Any``.  Its structs are not ``Mapping``s either: the
rule language, templates and plugins read ``event.data`` as one, so a
``Mapping`` over each struct (or ``msgspec.to_builtins``) would be paid on top
(the ``to_builtins`` column).  Without msgspec the bench says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import cpu_model, make_rules, make_stream, pin_one_core

from reactor.model.catalog import default_catalog
from reactor.model.catalog.catalog import Catalog
from reactor.model.catalog.schema import FieldSpec, TypeSpec

_SCALARS: dict[str, Any] = {"str": str, "int": int, "number": float, "bool": bool, "null": None}


def struct_types(catalog: Catalog, names: list[str]) -> list[type[Any]]:
    """One tagged msgspec struct per event in ``names`` (members as in the catalog)."""
    import msgspec  # type: ignore[import-not-found,unused-ignore]  # optional: the bench only

    made: dict[str, Any] = {}

    def py(t: TypeSpec, where: str) -> Any:
        if t.kind in _SCALARS:
            return _SCALARS[t.kind]
        if t.kind == "enum" and t.values:
            return Literal[t.values]
        if t.kind == "array":
            return list[py(t.items, where) if t.items is not None else Any]  # type: ignore[misc]
        if t.kind == "object" and t.fields:
            return struct(f"{where}_{t.name or 'obj'}", t.fields)
        return Any   # alternates, recursive references, `any`

    def struct(name: str, fields: Mapping[str, FieldSpec]) -> Any:
        if name in made:
            return made[name]
        members: list[tuple[Any, ...]] = []
        rename: dict[str, str] = {}
        for qmp, f in fields.items():
            attr = qmp.replace("-", "_")
            rename[attr] = qmp
            tp = py(f.type, name)
            members.append((attr, Union[tp, None], None) if f.optional else (attr, tp))  # noqa: UP007
        members.sort(key=lambda m: len(m) == 3)   # required members first
        made[name] = cls = msgspec.defstruct(name, members, rename=rename, omit_defaults=True,
                                             forbid_unknown_fields=True)
        return cls

    timestamp = msgspec.defstruct("Timestamp", [("seconds", int), ("microseconds", int)])

    out = []
    for n in names:
        schema = catalog.get(n)
        if schema is None:
            raise SystemExit(f"{n}: not in the catalog")
        data = struct(f"{n}_data", schema.fields)
        out.append(msgspec.defstruct(n, [("data", data), ("timestamp", timestamp), ("vm", str)],
                                     tag_field="event", tag=n))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import msgspec  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("msgspec is not installed (pip install msgspec): nothing to compare")
        return 0
    pinned = pin_one_core()
    catalog = default_catalog()
    lines = make_stream(make_rules(1000), args.events, match_share=0.1).lines
    names = sorted({orjson.loads(line)["event"] for line in lines})
    decoder = msgspec.json.Decoder(Union[tuple(struct_types(catalog, names))])  # noqa: UP007
    make = catalog.make_event

    def reactor() -> None:
        for line in lines:
            obj = orjson.loads(line)
            make(obj, vm=obj.get("vm", "vm0"), host=obj.get("host"))

    def typed() -> None:
        decode = decoder.decode
        for line in lines:
            decode(line)

    def typed_dict() -> None:
        decode, builtins = decoder.decode, msgspec.to_builtins
        for line in lines:
            builtins(decode(line).data)

    for line in lines:   # both accept every line of the stream, and agree on its data
        obj = orjson.loads(line)
        if make(obj, vm=obj["vm"]).problems or msgspec.to_builtins(decoder.decode(line).data) != obj["data"]:
            raise SystemExit(f"the decoders disagree on {line!r}")
    ways: dict[str, Callable[[], None]] = {"orjson_make_event": reactor, "msgspec_typed": typed,
                                           "msgspec_typed_to_builtins": typed_dict}
    samples: dict[str, list[float]] = {k: [] for k in ways}
    for fn in ways.values():
        fn()   # warm up
    for _ in range(args.runs):
        for name, fn in ways.items():
            c0 = time.process_time()
            fn()
            samples[name].append((time.process_time() - c0) / len(lines) * 1e6)
    result = {k: statistics.median(v) for k, v in samples.items()}
    if args.json:
        print(orjson.dumps({"cpu": cpu_model(), "pinned": pinned, "events": len(lines), "event_types": len(names),
                            "us_per_event": result, "msgspec": msgspec.__version__}).decode())
        return 0
    print(f"JSON line -> typed event: {cpu_model()}, {pinned}, {len(lines):,} events of {len(names)} types, "
          f"median of {args.runs} (us per event, CPU)")
    print(f"  orjson.loads + Catalog.make_event      {result['orjson_make_event']:6.2f}")
    print(f"  msgspec {msgspec.__version__} typed structs          {result['msgspec_typed']:6.2f}")
    print(f"  msgspec typed, data to_builtins        {result['msgspec_typed_to_builtins']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
