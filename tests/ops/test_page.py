"""The traces page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The real daemon (in-process) serves the page; a fake QMP VM emits events that
rules act on.  The test checks what a person would: the page loads with the
VM, the rules and the runs; a new event appears live without a reload; a
run's trace opens with the triggering event, the conditions that held and each
step's arguments (secrets redacted), result and timing.  Screenshots go to
``test-artifacts/`` (look at them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser_fixtures import ARTIFACTS, browser, playwright_api
from http_fixtures import SECRET, io_error, reactor_site
from polling import eventually

__all__ = ["browser"]


async def test_the_page_shows_live_events_and_a_runs_trace(tmp_path: Path, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with reactor_site(tmp_path) as site:
        site.fake.emit("BLOCK_IO_ERROR", io_error("disk0"))
        site.fake.emit("RTC_CHANGE", {"offset": 1, "qom-path": "/machine/rtc"})
        await eventually(lambda: site.daemon.engine is not None and site.daemon.engine.run_outcomes.total() >= 2)

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        await page.goto(site.url + "/")

        # loads: the VM, the rules with their last outcome, the runs, a live stream
        expect = playwright_api.expect
        await expect(page.locator('#vms tr[data-vm="vm1"]')).to_contain_text("connected")
        await expect(page.locator('#vms tr[data-vm="vm1"]')).to_contain_text("7.2.0")
        await expect(page.locator("#login")).to_be_hidden()
        await expect(page.locator('#rules tr[data-rule="resume-on-io-error"]')).to_contain_text("ok")
        await expect(page.locator('#rules tr[data-rule="clock-check"]')).to_contain_text("failed")
        await expect(page.locator("#runs tbody tr")).to_have_count(2)
        await expect(page.locator("#live")).to_have_text("stream: live")
        await expect(page.locator("#ready")).to_have_text("ready")

        # a new event appears live (no reload), and its run shows up in the list
        site.fake.emit("BLOCK_IO_ERROR", io_error("disk-live"))
        await expect(page.locator('#events li[data-name="BLOCK_IO_ERROR"]').filter(has_text="disk-live")
                     ).to_have_count(1, timeout=10_000)
        await expect(page.locator("#runs tbody tr")).to_have_count(3, timeout=10_000)
        await page.screenshot(path=str(ARTIFACTS / "page-overview.png"), full_page=True)

        # a run's trace opens: event, conditions, steps with arguments, results, timings
        row = page.locator("#runs tbody tr").filter(has_text="resume-on-io-error").first
        await row.click()
        trace = page.locator("#trace")
        await expect(trace).to_be_visible()
        await expect(page.locator("#trace-title")).to_contain_text("resume-on-io-error")
        await expect(page.locator("#trace-event")).to_contain_text("BLOCK_IO_ERROR")
        await expect(page.locator("#trace-event")).to_contain_text("disk-live")
        conds = page.locator("#trace-conditions .cond")
        await expect(conds).to_have_count(4)
        await expect(page.locator('#trace-conditions .cond[data-kind="match"]').first).to_contain_text("held")
        await expect(page.locator('#trace-conditions .cond[data-kind="if"]')).to_contain_text("device")
        steps = page.locator("#trace-steps .step")
        await expect(steps).to_have_count(3)
        await expect(steps.nth(0)).to_contain_text("write error on vm1: disk-live")
        await expect(steps.nth(1).locator(".args")).to_contain_text('"API_TOKEN": "***"')
        await expect(steps.nth(1).locator(".result")).to_contain_text("disk-live")
        await expect(steps.nth(2)).to_contain_text("qmp")
        assert "ms" in (await steps.nth(0).locator(".step-head").inner_text())
        assert SECRET not in await page.content()
        assert page.url.endswith("#run/" + (await row.get_attribute("data-run-id") or ""))
        await page.screenshot(path=str(ARTIFACTS / "page-trace.png"), full_page=True)

        # a failed run's trace shows the error; a deep link opens directly
        failed = page.locator("#runs tbody tr").filter(has_text="clock-check").first
        run_id = await failed.get_attribute("data-run-id")
        page2 = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page2.goto(f"{site.url}/#run/{run_id}")
        await expect(page2.locator("#trace-steps .step .step-error")).to_contain_text("exited with 1")
        await page2.close()

        assert errors == [], errors
        await page.close()


async def test_the_page_asks_for_the_token_when_one_is_configured(tmp_path: Path, browser: Any) -> None:
    expect = playwright_api.expect
    async with reactor_site(tmp_path, token="page-token") as site:
        page = await browser.new_page()
        await page.goto(site.url + "/")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#vms tbody tr")).to_have_count(0)
        await page.fill("#token", "page-token")
        await page.click("#login button")
        await expect(page.locator('#vms tr[data-vm="vm1"]')).to_contain_text("connected")
        await expect(page.locator("#live")).to_have_text("stream: live", timeout=10_000)
        site.fake.emit("BLOCK_IO_ERROR", io_error("disk-token"))
        await expect(page.locator("#events li").filter(has_text="disk-token")).to_have_count(1, timeout=10_000)
        await expect(page.locator("#login")).to_be_hidden()
        await page.close()


async def test_the_vm_table_shows_resumes_waiting_for_a_slot(tmp_path: Path, browser: Any) -> None:
    from fakeqmp import FakeQMP
    from ports import free_port
    from resume_fixtures import daemon_for
    from resume_fixtures import io_error as write_error

    port = free_port()
    async with FakeQMP(tmp_path / "vm1.qmp", name="vm1", status="io-error") as one, \
            FakeQMP(tmp_path / "vm2.qmp", name="vm2", status="io-error") as two, \
            daemon_for(tmp_path, [one, two], "{settle: 0s, verify: 20s, max_concurrent: 1}", http_port=port):
        one.emit("BLOCK_IO_ERROR", write_error())
        await eventually(lambda: one.status == "running")
        two.emit("BLOCK_IO_ERROR", write_error())
        page = await browser.new_page(viewport={"width": 1400, "height": 800})
        await page.goto(f"http://127.0.0.1:{port}/")
        expect = playwright_api.expect
        await expect(page.locator('#vms tr[data-vm="vm1"]')).to_contain_text("verifying")
        await expect(page.locator('#vms tr[data-vm="vm2"]')).to_contain_text("waiting #1")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "page-resume-waiting.png"))
        await page.close()
