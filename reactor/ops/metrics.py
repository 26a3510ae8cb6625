"""Prometheus metrics: collectors that read reactor's counters when scraped.

Nothing here runs per event beyond two cheap hooks the HTTP listener installs:
:class:`EventCounts` (a dict increment per event, for ``reactor_events_total``
by VM and name, bounded in label sets) and :class:`StepDurations` (a bucket
increment per finished step, for the step duration histograms).  Everything
else (run outcomes, queue depths and drops, VM connections, the journal's
latency) is read from the engine, the bus, the fleet and the journal at
scrape time by :class:`ReactorCollector`, registered in a private
:class:`~prometheus_client.CollectorRegistry` (never the global one).

Families (all prefixed ``reactor_``)::

    events_total{vm,name}                  events dispatched (label sets capped)
    events_unlabelled_total                events past the label-set cap
    engine_events_total, events_invalid_total, matches_total, condition_errors_total
    runs_total{rule,outcome,mode}          ok, failed, skipped, cancelled, dry-run, throttled, dropped...; correlation
                                           outcomes: pending, cancelled, elapsed, late, counted, no_after,
                                           overflow, state_dropped
    correlation_keys{rule,form}            keys holding after/count/unless state now
    correlation_overflow_total{rule}       new keys refused: the rule's table was full (MAX_KEYS)
    runs_in_flight
    step_duration_seconds{action}          histogram
    bus_queue_depth{vm}, bus_queued_events, bus_dropped_total{vm}
    vm_connected{vm}, vm_state{vm,state}, vm_reconnects_total{vm}, vm_events_received_total{vm}
    vm_read_pauses_total{vm}, vm_read_paused_seconds_total{vm}   (backpressure: the reader waited for room)
    journal_healthy, journal_pending_rows, journal_rows_written_total,
    journal_dropped_rows_total{kind}, journal_write_errors_total,
    journal_flush_seconds (summary), journal_flush_last_seconds, journal_size_bytes (database + WAL on disk)
    rules_loaded, rule_reloads_total
    http_stream_clients, http_stream_clients_dropped_total, http_requests_rejected_total{reason}
    loop_lag_seconds, loop_lag_max_seconds, loop_stalls_total, loop_stalled_seconds_total
                                           (when the daemon has a ``looplag``: reactor.ops.looplag.LoopLag)
    resume_attempts_total{outcome}         resume attempts ended: resumed, flap, probe-failed, cont-failed,
                                           disconnected (when a rule uses ``resume``)
    resume_gave_up_total, resume_not_needed_total (query-status said: not io-error)
    resume_active, resume_waiting, resume_backoff   VMs holding a resume slot / queued for one / backing off
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from reactor.errors import JournalError
from reactor.model.event import Event
from reactor.sources.qmp import VMState

__all__ = [
    "STEP_BUCKETS",
    "EventCounts",
    "HttpCounts",
    "ReactorCollector",
    "StepDurations",
    "make_registry",
]

#: Upper bounds (seconds) of the step duration buckets; ``+Inf`` is implied.
STEP_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_VM_STATES: Final = tuple(s.value for s in VMState)


class EventCounts:
    """Events by (VM, name), with at most ``max_series`` label sets; the rest counted apart.

    Event names come from QEMU and VM names from configuration, discovery or
    other sources, so neither is trusted to stay few: once ``max_series``
    pairs exist, events of new pairs only increment :attr:`overflow`.
    """

    __slots__ = ("counts", "max_series", "overflow")

    def __init__(self, max_series: int = 2000) -> None:
        self.max_series = max_series
        self.counts: dict[tuple[str, str], int] = {}
        self.overflow = 0

    def __call__(self, event: Event) -> None:
        key = (event.vm, event.name)
        try:
            self.counts[key] += 1
        except KeyError:
            if len(self.counts) < self.max_series:
                self.counts[key] = 1
            else:
                self.overflow += 1


class StepDurations:
    """Cumulative step duration histograms by action (a bounded number of actions)."""

    __slots__ = ("_data", "buckets", "max_actions", "overflow")

    def __init__(self, buckets: Sequence[float] = STEP_BUCKETS, max_actions: int = 500) -> None:
        self.buckets = tuple(buckets)
        self.max_actions = max_actions
        #: action -> [bucket counts..., +Inf count, sum]
        self._data: dict[str, list[float]] = {}
        self.overflow = 0

    def observe(self, action: str, seconds: float) -> None:
        row = self._data.get(action)
        if row is None:
            if len(self._data) >= self.max_actions:
                self.overflow += 1
                return
            row = self._data[action] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def snapshot(self) -> Iterator[tuple[str, list[tuple[str, float]], float]]:
        """``(action, cumulative buckets as (le, count), sum)`` for each action seen."""
        for action, row in list(self._data.items()):
            total = 0.0
            out: list[tuple[str, float]] = []
            for bound, n in zip((*self.buckets, float("inf")), row[:-1], strict=True):
                total += n
                out.append(("+Inf" if bound == float("inf") else repr(bound), total))
            yield action, out, row[-1]


class HttpCounts:
    """The HTTP listener's own counters (filled by :mod:`reactor.ops.http`)."""

    __slots__ = ("rejected", "stream_clients", "stream_dropped")

    def __init__(self) -> None:
        self.stream_clients = 0
        self.stream_dropped = 0
        self.rejected: Counter[str] = Counter()


class ReactorCollector(Collector):
    """Reads the daemon's counters at scrape time.

    ``daemon`` is a :class:`reactor.daemon.daemon.Daemon` (typed loosely: the
    collector only reads attributes, and each part is optional while the
    daemon starts or stops).
    """

    def __init__(self, daemon: Any, events: EventCounts, steps: StepDurations, http: HttpCounts) -> None:
        self.daemon = daemon
        self.events = events
        self.steps = steps
        self.http = http

    def collect(self) -> Iterable[Metric]:
        yield from self._events()
        yield from self._runs()
        yield from self._steps()
        yield from self._bus()
        yield from self._vms()
        yield from self._journal()
        yield from self._http()
        yield from self._loop()
        yield from self._resume()

    # -- families ---------------------------------------------------------------------------
    def _events(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("reactor_events", "Events dispatched, by VM and event name.",
                                  labels=["vm", "name"])
        for (vm, name), n in list(self.events.counts.items()):
            fam.add_metric([vm, name], n)
        yield fam
        yield CounterMetricFamily("reactor_events_unlabelled",
                                  "Events not counted by VM and name: the label-set cap was reached.",
                                  value=self.events.overflow)
        engine = self.daemon.engine
        stats: Counter[str] = engine.stats if engine is not None else Counter()
        for key, name, doc in (
            ("events", "reactor_engine_events", "Events the engine dispatched."),
            ("events_invalid", "reactor_events_invalid", "Events that did not fit the catalog's schema."),
            ("matches", "reactor_matches", "Rule matches (before throttle and mode)."),
            ("condition_errors", "reactor_condition_errors", "Rule 'if' conditions that failed to evaluate."),
        ):
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))

    def _runs(self) -> Iterator[Metric]:
        engine = self.daemon.engine
        fam = CounterMetricFamily("reactor_runs", "Rule runs by rule and outcome; mode is the rule's mode.",
                                  labels=["rule", "outcome", "mode"])
        in_flight = 0
        rules = 0
        if engine is not None:
            ruleset = engine.rules
            rules = len(ruleset)
            for (rule, outcome), n in list(engine.run_outcomes.items()):
                r = ruleset.get(rule)
                fam.add_metric([rule, outcome, r.mode if r is not None else ""], n)
            in_flight = engine.runs_in_flight
        yield fam
        yield GaugeMetricFamily("reactor_runs_in_flight", "Runs executing now.", value=in_flight)
        yield GaugeMetricFamily("reactor_rules_loaded", "Rules in force.", value=rules)
        yield CounterMetricFamily("reactor_rule_reloads", "Rule reloads (successful or not) since start.",
                                  value=getattr(self.daemon, "reloads", 0))
        keys = GaugeMetricFamily("reactor_correlation_keys", "Keys holding after/count/unless state, by rule.",
                                 labels=["rule", "form"])
        overflow = CounterMetricFamily("reactor_correlation_overflow",
                                       "New correlation keys refused because the rule's table was full.",
                                       labels=["rule"])
        if engine is not None:
            for (rule, form), n in sorted(engine.correlation.sizes().items()):
                keys.add_metric([rule, form], n)
            for rule, n in sorted(engine.correlation.overflow.items()):
                overflow.add_metric([rule], n)
        yield keys
        yield overflow

    def _steps(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily("reactor_step_duration_seconds", "Duration of rule steps, by action.",
                                    labels=["action"])
        for action, buckets, total in self.steps.snapshot():
            fam.add_metric([action], buckets, total)
        yield fam

    def _bus(self) -> Iterator[Metric]:
        engine = self.daemon.engine
        depth = GaugeMetricFamily("reactor_bus_queue_depth", "Events queued for the engine, by VM.",
                                  labels=["vm"])
        dropped = CounterMetricFamily("reactor_bus_dropped", "Events dropped by the bus (queue full), by VM.",
                                      labels=["vm"])
        total = 0
        if engine is not None:
            bus = engine.bus
            total = len(bus)
            for vm in _vm_names(self.daemon, bus.dropped):
                depth.add_metric([vm], bus.depth(vm))
            for vm, n in list(bus.dropped.items()):
                dropped.add_metric([vm], n)
        yield depth
        yield GaugeMetricFamily("reactor_bus_queued_events", "Events queued for the engine, all VMs.", value=total)
        yield dropped

    def _vms(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily("reactor_vm_connected", "1 while the VM's QMP connection is up.",
                                      labels=["vm"])
        state = GaugeMetricFamily("reactor_vm_state", "The VM connection's state (1 for the current one).",
                                  labels=["vm", "state"])
        reconnects = CounterMetricFamily("reactor_vm_reconnects", "Successful QMP connections after the first.",
                                         labels=["vm"])
        received = CounterMetricFamily("reactor_vm_events_received", "QMP events received from the VM.",
                                       labels=["vm"])
        pauses = CounterMetricFamily("reactor_vm_read_pauses", "Times the VM's socket was not read: its bus "
                                     "queue was full (backpressure).", labels=["vm"])
        paused = CounterMetricFamily("reactor_vm_read_paused_seconds", "Seconds the VM's socket was not read "
                                     "for want of room in its bus queue.", labels=["vm"])
        fleet = self.daemon.fleet
        for conn in list(fleet) if fleet is not None else ():
            connected.add_metric([conn.name], 1 if conn.connected else 0)
            current = conn.state.value
            for s in _VM_STATES:
                state.add_metric([conn.name, s], 1 if s == current else 0)
            reconnects.add_metric([conn.name], conn.reconnects)
            received.add_metric([conn.name], conn.events_received)
            pauses.add_metric([conn.name], conn.read_pauses)
            paused.add_metric([conn.name], conn.paused_seconds)
        yield from (connected, state, reconnects, received, pauses, paused)

    def _journal(self) -> Iterator[Metric]:
        journal = _journal_of(self.daemon)
        if journal is None:
            return
        stats = journal.stats
        yield GaugeMetricFamily("reactor_journal_healthy", "1 while journal writes succeed.",
                                value=1 if journal.healthy else 0)
        yield GaugeMetricFamily("reactor_journal_pending_rows", "Rows recorded and not yet written.",
                                value=stats.pending)
        yield CounterMetricFamily("reactor_journal_rows_written", "Rows written to the journal.",
                                  value=stats.written)
        dropped = CounterMetricFamily("reactor_journal_dropped_rows", "Rows dropped (pending bound reached).",
                                      labels=["kind"])
        for kind, n in stats.dropped_by_kind.items():
            dropped.add_metric([kind], n)
        yield dropped
        yield CounterMetricFamily("reactor_journal_write_errors", "Journal writes that failed.",
                                  value=stats.write_errors)
        yield SummaryMetricFamily("reactor_journal_flush_seconds", "Journal write (flush) latency.",
                                  count_value=stats.flushes, sum_value=stats.flush_latency_avg * stats.flushes)
        yield GaugeMetricFamily("reactor_journal_flush_last_seconds", "Latency of the last journal write.",
                                value=stats.flush_latency_last)
        yield GaugeMetricFamily("reactor_journal_size_bytes", "Bytes the journal's files take on disk "
                                "(database and write-ahead log).", value=_file_bytes(journal))

    def _http(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("reactor_http_stream_clients", "Clients connected to /api/events.",
                                value=self.http.stream_clients)
        yield CounterMetricFamily("reactor_http_stream_clients_dropped",
                                  "Event stream clients dropped for not keeping up.",
                                  value=self.http.stream_dropped)
        rejected = CounterMetricFamily("reactor_http_requests_rejected", "HTTP requests refused, by reason.",
                                       labels=["reason"])
        for reason, n in list(self.http.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected


    def _loop(self) -> Iterator[Metric]:
        lag = getattr(self.daemon, "looplag", None)
        if lag is None:
            return
        yield GaugeMetricFamily("reactor_loop_lag_seconds", "Event-loop lag of the latest sample.", value=lag.last)
        yield GaugeMetricFamily("reactor_loop_lag_max_seconds", "Largest event-loop lag since start.",
                                value=lag.max)
        yield CounterMetricFamily("reactor_loop_stalls", "Event-loop lags above the stall threshold.",
                                  value=lag.stalls)
        yield CounterMetricFamily("reactor_loop_stalled_seconds", "Sum of the event-loop stalls' lengths.",
                                  value=lag.stalled_seconds)


    def _resume(self) -> Iterator[Metric]:
        from reactor.actions.resume import ResumeCoordinator

        coord = getattr(self.daemon, "resources", {}).get(ResumeCoordinator)
        if not isinstance(coord, ResumeCoordinator):
            return
        outcomes = dict(coord.outcomes)
        attempts = CounterMetricFamily("reactor_resume_attempts", "Resume attempts ended, by outcome.",
                                       labels=["outcome"])
        for outcome in ("resumed", "flap", "probe-failed", "cont-failed", "disconnected"):
            attempts.add_metric([outcome], outcomes.get(outcome, 0))
        yield attempts
        yield CounterMetricFamily("reactor_resume_gave_up", "Resumes given up (REACTOR_RESUME_GAVE_UP).",
                                  value=outcomes.get("gave-up", 0))
        yield CounterMetricFamily("reactor_resume_not_needed",
                                  "Resume steps that found the VM not paused by an I/O error.",
                                  value=outcomes.get("not-io-error", 0))
        phases = Counter(st.get("phase") for st in list(coord.states.values()))
        yield GaugeMetricFamily("reactor_resume_active", "VMs holding a resume slot now.", value=coord.active)
        yield GaugeMetricFamily("reactor_resume_waiting", "VMs queued for a resume slot.", value=coord.waiting)
        yield GaugeMetricFamily("reactor_resume_backoff", "VMs waiting out a resume backoff.",
                                value=phases.get("backoff", 0))


def _vm_names(daemon: Any, extra: Iterable[str]) -> list[str]:
    names: dict[str, None] = {}
    fleet = daemon.fleet
    if fleet is not None:
        for conn in list(fleet):
            names[conn.name] = None
    for vm in extra:
        names[vm] = None
    return list(names)


def make_registry(*collectors: Collector) -> CollectorRegistry:
    """A private registry holding ``collectors`` (the process-wide default registry is not used)."""
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    return registry


def _file_bytes(journal: Any) -> int:
    """The size of the journal's database file and its ``-wal``/``-shm`` companions (stat calls only)."""
    path = getattr(journal, "path", None)
    if path is None:
        return 0
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):   # no -wal file between checkpoints
            total += os.stat(f"{path}{suffix}").st_size
    return total


def _journal_of(daemon: Any) -> Any:
    """The daemon's journal, or None while it has none (``Daemon.journal`` raises JournalError)."""
    try:
        return daemon.journal
    except (JournalError, AttributeError):  # not running yet, or not a daemon (tests)
        return None
