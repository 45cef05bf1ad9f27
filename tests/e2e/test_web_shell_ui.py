"""The web shell in the UI: "Open shell" on the Agents page, typing into the browser terminal (xterm.js under
the UI's strict CSP) and seeing the answer, in Debian's Chromium against a real cloud and agent."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.harness import Cloud
from tests.e2e.test_web_ui import backend, browser, page, screenshot, shots, sign_in, ui_cloud  # noqa: F401 (fixtures)


def test_open_shell_types_echo_hi_and_sees_hi(page: Page, ui_cloud: Cloud, shots: Path) -> None:  # noqa: F811
    sign_in(page)
    page.goto("/#/agents")
    page.locator("tr[data-agent='web-1'] .open-shell").click()
    expect(page.locator("#shell-status")).to_contain_text("Connected to web-1")
    rows = page.locator("#terminal .xterm-rows")
    expect(rows).to_contain_text(re.compile(r"[$#]"))  # the prompt arrived
    page.locator("#terminal").click()
    page.keyboard.type("echo hi")
    page.keyboard.press("Enter")
    expect(rows.locator("> div").filter(has_text=re.compile(r"^hi\s*$"))).to_have_count(1)
    screenshot(page, shots, "web-shell")
    task_id = page.locator("#shell-task a").inner_text().split()[1]
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    expect(page.locator("#shell-status")).to_contain_text("the shell exited with code 0")
    done = ui_cloud.wait_final(task_id)
    assert done["status"] == "success"
    assert "hi" in [line["message"] for line in ui_cloud.logs(task_id)]
