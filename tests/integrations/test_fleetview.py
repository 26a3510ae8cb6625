"""reactor.integrations.fleetview's pure parts: the lag histogram and event dedupe."""

from __future__ import annotations

import random

from reactor.integrations.fleetview import LAG_BOUNDS_MS, Dedupe, Lag
from reactor.model.event import Event


def test_lag_quantiles_are_bucket_bounds_within_a_quarter() -> None:
    rng = random.Random(8)
    values = [rng.lognormvariate(1.0, 1.2) for _ in range(20_000)]
    lag = Lag()
    for v in values:
        lag.add(v)
    values.sort()
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert exact <= lag.quantile(q) <= exact * 1.26
    s = lag.summary()
    assert s["n"] == 20_000 and s["max"] == round(values[-1], 3) and sum(s["buckets"].values()) == 20_000
    assert s["p99"] == round(lag.quantile(0.99), 3)


def test_lag_edges() -> None:
    lag = Lag()
    assert lag.quantile(0.5) == 0.0 and lag.summary()["buckets"] == {}
    for ms in (-3.0, 0.0, 0.1, 1.0, 250_000.0):  # a clock behind, the smallest bucket, the open one
        lag.add(ms)
    assert lag.summary()["buckets"] == {"0.1": 3, "1": 1, "inf": 1}
    assert lag.quantile(1.0) == 250_000.0 and lag.quantile(0.5) == 0.1
    assert LAG_BOUNDS_MS[0] == 0.1 and LAG_BOUNDS_MS[-1] == 100_000.0


def test_dedupe_by_host_vm_seq_and_timestamp() -> None:
    d = Dedupe(per_vm=2)
    a = Event("STOP", {}, 1.0, "vm1", host="h1", seq=1)
    assert not d.seen(a) and d.seen(Event("STOP", {}, 1.0, "vm1", host="h1", seq=1))
    assert not d.seen(Event("STOP", {}, 2.0, "vm1", host="h1", seq=1))  # a restarted host: seq again, new time
    assert not d.seen(Event("STOP", {}, 1.0, "vm1", host="h2", seq=1))
    assert not d.seen(Event("STOP", {}, 3.0, "vm1", host="h1", seq=2))
    assert not d.seen(a)  # forgotten: only 2 ids per host/VM
    assert (d.duplicates, d.accepted) == (1, 5)
