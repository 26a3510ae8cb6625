"""The traces page shows correlation state: counts and pending matches in the rules table, a cancellation,
and what `unless` decided in a pending match's trace (real headless Chromium, as tests/ops/test_page.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_fixtures import ARTIFACTS, browser
from http_fixtures import CORRELATION_RULES as RULES
from http_fixtures import reactor_site
from polling import eventually

__all__ = ["browser"]

playwright_api = pytest.importorskip("playwright.async_api", reason="the page test needs the playwright package")


async def test_the_rules_table_shows_counts_pending_and_cancelled(tmp_path: Path, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with reactor_site(tmp_path, rules=RULES) as site:
        site.fake.emit("STOP")
        site.fake.emit("RESET", {"guest": True, "reason": "guest-reset"})
        site.fake.emit("RESET", {"guest": True, "reason": "guest-reset"})
        engine = site.daemon.engine
        assert engine is not None
        await eventually(lambda: engine.correlation.snapshot("repeated-resets").get("counts") == {"vm1": 2})

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        await page.goto(site.url + "/")
        expect = playwright_api.expect
        unless = page.locator('#rules tr[data-rule="paused-too-long"] .corr[data-form="unless"]')
        await expect(unless).to_contain_text("unless RESUME/SHUTDOWN in 1 h: 1 pending (vm1 until ")
        count = page.locator('#rules tr[data-rule="repeated-resets"] .corr[data-form="count"]')
        await expect(count).to_contain_text("count 3 in 1 h (vm1: 2/3)")
        await page.screenshot(path=str(ARTIFACTS / "page-correlation.png"), full_page=True)

        site.fake.emit("RESUME")
        await eventually(lambda: not engine.correlation.snapshot("paused-too-long")["pending"])
        await page.reload()
        await expect(unless).to_contain_text("0 pending; last cancelled by RESUME from vm1")
        row = page.locator("#runs tbody tr").filter(has_text="paused-too-long").first
        await row.click()
        cond = page.locator('#trace-conditions .cond[data-kind="unless"]')
        await expect(cond).to_contain_text("not held")
        await expect(cond).to_contain_text("cancelled by RESUME from vm1")
        assert errors == [], errors
        await page.close()
