"""Correlation state where users look: ``/api/rules`` (counts, pending matches, cancellations), ``/api/runs``
(the ``pending`` and ``cancelled`` rows) and ``/metrics`` (each outcome, keys held), on the real daemon."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from http_fixtures import CORRELATION_RULES as RULES
from http_fixtures import get_json, reactor_site
from polling import eventually
from prometheus_client.parser import text_string_to_metric_families


async def test_api_rules_runs_and_metrics_show_correlation_state(tmp_path: Path) -> None:
    async with reactor_site(tmp_path, rules=RULES) as site, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        site.fake.emit("STOP")
        site.fake.emit("RESET", {"guest": True, "reason": "guest-reset"})
        site.fake.emit("RESET", {"guest": True, "reason": "guest-reset"})

        async def rules() -> dict[str, dict[str, object]] | None:
            got = {r["name"]: r for r in await get_json(client, site, "/api/rules")}
            corr = got["repeated-resets"].get("correlation") or {}
            return got if corr.get("counts") == {"vm1": 2} else None

        got = await eventually(rules)
        unless = got["paused-too-long"]
        assert unless["unless"]["event"] == ["RESUME", "SHUTDOWN"] and unless["unless"]["within"] == 3600.0
        (pending,) = unless["correlation"]["pending"]
        assert pending["vm"] == "vm1" and pending["until"] - pending["since"] == 3600.0 and not pending["late"]
        assert got["repeated-resets"]["count"]["min"] == 3

        site.fake.emit("RESUME")

        async def cancelled() -> list[dict[str, object]] | None:
            got = {r["name"]: r for r in await get_json(client, site, "/api/rules")}
            c = got["paused-too-long"]["correlation"]
            return c["cancelled"] if c["cancelled"] and not c["pending"] else None

        (c,) = await eventually(cancelled)
        assert c["by"] == "RESUME" and c["by_vm"] == "vm1"
        runs = await get_json(client, site, "/api/runs?rule=paused-too-long")
        assert [(r["outcome"], r["status"]) for r in runs] == [("pending", "cancelled")]
        assert "cancelled by RESUME" in runs[0]["error"]
        trace = await get_json(client, site, f"/api/runs/{runs[0]['id']}")
        (cond,) = [c for c in trace["conditions"] if c["kind"] == "unless"]
        assert cond["held"] is False and any("cancelled by RESUME" in d for d in cond["detail"])

        async with client.get(site.url + "/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}

        def value(family: str, **labels: str) -> float:
            for s in families[family].samples:
                if all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
            raise AssertionError(f"no sample {family} {labels}")

        assert value("reactor_runs", rule="paused-too-long", outcome="pending") == 1
        assert value("reactor_runs", rule="paused-too-long", outcome="cancelled") == 1
        assert value("reactor_runs", rule="repeated-resets", outcome="counted") == 2
        assert value("reactor_correlation_keys", rule="repeated-resets", form="count") == 1
        assert value("reactor_correlation_keys", rule="paused-too-long", form="unless") == 0
