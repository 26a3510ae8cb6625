"""Test helpers that are part of reactor's public API: for reactor's own tests and for plugins'.

* :func:`make_event` builds the typed event reactor would make from QMP;
* :func:`run_rules` runs a rule set against a list of events on a virtual
  clock and returns an :class:`Outcome` (which actions ran with which
  arguments, matches, emitted events);
* :class:`FakeVM` is a fake QMP VM (canned answers, recorded commands);
* :class:`ActionHarness` / :func:`run_action` run one action as a rule step
  would, with its resources started on a :class:`FakeDaemon`;
* :func:`run_source` runs an event source on a virtual clock;
* :mod:`reactor.testing.qemu` launches real QEMU processes.
"""

from reactor.testing.events import make_event, qmp_time
from reactor.testing.harness import ActionHarness, FakeDaemon, InstantClock, convert_args, run_action
from reactor.testing.scenario import ActionCall, Outcome, load_test_rules, run_rules
from reactor.testing.sources import run_source
from reactor.testing.vm import FakeVM, Responder

__all__ = [
    "ActionCall",
    "ActionHarness",
    "FakeDaemon",
    "FakeVM",
    "InstantClock",
    "Outcome",
    "Responder",
    "convert_args",
    "load_test_rules",
    "make_event",
    "qmp_time",
    "run_action",
    "run_rules",
    "run_source",
]
