"""The web UI at `/`, used as a person would: Debian's Chromium (headless, driven by Playwright) against a real
cloud and a real agent process. Screenshots of the main pages go to $TIANGONG_UI_SCREENSHOTS (e.g. docs/ui)
when it is set, else to a temporary directory; each is checked to be a real picture of the page."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    FilePayload,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.e2e.harness import ADMIN, ROOT, Cloud, cloud_env, wait_for

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without these Chromium keeps trying its own background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
HOSTILE = "<img src=x onerror=alert(1)>"
WAIT_MS = 30_000  # on a loaded 2-core machine, five seconds (Playwright's default) is not always enough
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def backend() -> None:
    """SQLite only: the UI is a client of the API, whose own tests cover both database backends."""
    return None


@pytest.fixture(scope="module")
def ui_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """One cloud and one agent process, `web-1`, whose labels include markup."""
    c = Cloud(tmp_path_factory.mktemp("cloud"), cloud_env()).start()
    c.agent("web-1", max_concurrency=4, TIANGONG_LABELS=json.dumps({"env": "staging", "role": HOSTILE}))
    yield c
    c.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TIANGONG_UI_SCREENSHOTS (relative to the repository) or a temporary directory."""
    asked = os.environ.get("TIANGONG_UI_SCREENSHOTS")
    where = (ROOT / asked) if asked else tmp_path_factory.mktemp("ui-screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def page(browser: Browser, ui_cloud: Cloud) -> Iterator[Page]:
    """A fresh browser context (its own session storage) on the UI; fails the test if a dialog opens or a
    script error happens (markup in data must never run)."""
    context = browser.new_context(viewport=VIEWPORT, base_url=ui_cloud.url, accept_downloads=True)
    pg = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not _expected_console(message.text):
            errors.append(message.text)

    pg.on("dialog", on_dialog)
    pg.on("console", on_console)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(WAIT_MS)
    yield pg
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert errors == [], f"script errors: {errors}"


def _expected_console(text: str) -> bool:
    # Chromium logs each 4xx/5xx response it fetched; the wrong-token and conflict tests cause them on purpose.
    return text.startswith("Failed to load resource")


def sign_in(page: Page, token: str = ADMIN) -> None:
    page.goto("/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("#topbar")).to_be_visible()


def open_task(page: Page, task_id: str) -> None:
    page.goto(f"/#/tasks/{task_id}")
    expect(page.locator("#task-fields")).to_contain_text("Command")


def task_status(page: Page) -> Locator:
    return page.locator(".page-head .badge")


# -- screenshots --------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header (its first chunk, IHDR)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# Decoding a 1280x800 PNG in pure Python takes seconds; a blank page decodes it in milliseconds.
_COLOURS = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], {type: "image/png"}));
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const px = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const counts = new Map();
  for (let i = 0; i < px.length; i += 4) {
    const key = (px[i] << 16) | (px[i + 1] << 8) | px[i + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return {pixels: px.length / 4, colours: counts.size, top: Math.max(...counts.values())};
}"""


def screenshot(page: Page, shots: Path, name: str) -> Path:
    """Save the page as the user sees it (the viewport) and check the picture: a PNG of the viewport's
    size that is not blank (many colours, no single colour filling almost all of it)."""
    path = shots / f"{name}.png"
    data = page.screenshot(path=str(path))
    assert _png_size(data) == (VIEWPORT["width"], VIEWPORT["height"])
    checker = page.context.new_page()
    try:
        stats = checker.evaluate(_COLOURS, base64.b64encode(data).decode())
    finally:
        checker.close()
    assert stats["pixels"] == VIEWPORT["width"] * VIEWPORT["height"]
    assert stats["colours"] > 50, f"{name}.png has only {stats['colours']} colours: blank?"
    assert stats["top"] < 0.95 * stats["pixels"], f"{name}.png is almost one colour"
    return path


# -- the server side of the UI -------------------------------------------------------------------------


def test_the_ui_is_served_at_root_with_a_strict_policy(ui_cloud: Cloud) -> None:
    index = httpx.get(f"{ui_cloud.url}/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert index.headers["cache-control"] == "no-cache" and index.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in re.sub(r'<script type="module" src="/ui/[\w/.]+"></script>', "", index.text)
    script = httpx.get(f"{ui_cloud.url}/ui/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["cache-control"] == "no-cache" and script.headers["etag"]
    again = httpx.get(f"{ui_cloud.url}/ui/js/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304
    missing = httpx.get(f"{ui_cloud.url}/ui/nothing.js")
    assert missing.status_code == 404 and "error" in missing.json()
    assert "/" not in httpx.get(f"{ui_cloud.url}/openapi.json").json()["paths"]


# -- the pages -----------------------------------------------------------------------------------------


def test_sign_in_keeps_the_token_in_session_storage_only(page: Page, shots: Path) -> None:
    page.goto("/")
    expect(page.locator("#token")).to_be_visible()
    expect(page.locator("#topbar")).to_be_hidden()
    screenshot(page, shots, "login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-message")).to_have_text("This token was not accepted: invalid token.")
    assert page.evaluate("sessionStorage.length") == 0
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    expect(page.locator("#topbar")).to_be_visible()
    expect(page.locator("h1")).to_have_text("Tasks")
    assert page.evaluate("sessionStorage.getItem('tiangong.token')") == ADMIN
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.click("#signout")
    expect(page.locator("#token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_run_form_creates_a_task_that_the_list_shows(page: Page, ui_cloud: Cloud, shots: Path) -> None:
    sign_in(page)
    page.click("nav >> text=Run a task")
    expect(page.locator("#run-agent")).to_have_value("web-1")
    page.select_option("#run-type", "shell")
    page.fill("#run-command", 'echo "hello from the form: $GREETING"')
    page.fill("#run-env", "GREETING=bonjour")
    screenshot(page, shots, "run")
    page.click("#run-submit")
    expect(page).to_have_url(re.compile(r"#/tasks/task-\d+$"))
    task_id = page.url.rsplit("/", 1)[1]
    expect(task_status(page)).to_have_text("success")
    expect(page.locator("#log")).to_contain_text("hello from the form: bonjour")
    assert ui_cloud.task(task_id)["env"] == {"GREETING": "bonjour"}
    page.click("nav >> text=Tasks")
    row = page.locator(f"#tasks-table tr[data-task='{task_id}']")
    expect(row).to_contain_text("success")
    expect(row).to_contain_text('echo "hello from the form: $GREETING"')


def test_a_bad_run_form_says_what_is_wrong(page: Page) -> None:
    sign_in(page)
    page.goto("/#/run")
    page.fill("#run-command", "true")
    page.fill("#run-params", "[1, 2]")
    page.click("#run-submit")
    expect(page.locator("#run-message")).to_contain_text("params: must be a JSON object")
    page.fill("#run-params", '{"cwd": 5}')
    page.click("#run-submit")
    expect(page.locator("#run-message")).to_contain_text("The task was not created")
    assert "#/run" in page.url


def test_filters_and_paging_change_the_list(page: Page, ui_cloud: Cloud, shots: Path) -> None:
    made = [ui_cloud.run(agent_id="web-1", type="shell", command=f"echo batch {i}")["id"] for i in range(11)]
    failed = [ui_cloud.run(agent_id="web-1", type="shell", command=f"echo no; exit {i}")["id"] for i in (2, 3)]
    slow = ui_cloud.run(agent_id="web-1", type="shell", command="sleep 30", exec_timeout=1)
    assert slow["status"] == "timeout"
    waiting = ui_cloud.create(agent_id="web-1", type="shell", command="sleep 60").json()["id"]
    assert ui_cloud.http.post(f"/api/v1/tasks/{waiting}/cancel").status_code == 200
    python = ui_cloud.run(agent_id="web-1", type="python", command="print('from python')")["id"]
    sign_in(page)
    page.goto("/#/tasks?page_size=10")
    rows = page.locator("#tasks-table tbody tr")
    expect(rows).to_have_count(10)
    total = ui_cloud.http.get("/api/v1/tasks").json()["total"]
    expect(page.locator("#page-info")).to_have_text(f"Page 1 of {-(-total // 10)} · {total} tasks")
    first_page = rows.evaluate_all("rows => rows.map(r => r.dataset.task)")
    assert first_page[0] == python  # newest first
    page.click("#next-page")
    expect(page.locator("#page-info")).to_contain_text("Page 2 of")
    second_page = rows.evaluate_all("rows => rows.map(r => r.dataset.task)")
    assert second_page and not set(second_page) & set(first_page)
    page.select_option("#f-status", "failed")
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.task)")) == sorted(failed)
    assert "page=" not in page.url  # a new filter starts at page 1
    page.select_option("#f-status", "")
    page.select_option("#f-type", "python")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task", python)
    page.select_option("#f-type", "")
    page.fill("#f-q", "batch 7")
    page.click("#task-filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task", made[7])
    page.fill("#f-q", "")
    page.fill("#f-until", "2001-01-01T00:00")
    page.click("#task-filters button[type=submit]")
    expect(page.locator("#tasks-body")).to_contain_text("No task matches these filters")
    page.fill("#f-until", "")
    page.fill("#f-since", "2001-01-01T00:00")
    page.select_option("#f-agent_id", "web-1")
    expect(page.locator("#page-info")).to_contain_text(f"· {total} tasks")
    page.goto("/#/tasks")
    expect(rows.first).to_have_attribute("data-task", python)
    screenshot(page, shots, "tasks")


def test_the_task_page_follows_a_running_task_live(page: Page, ui_cloud: Cloud, shots: Path) -> None:
    # The task prints on both streams, then waits for a file in its working directory (the agent's work
    # dir) that the test creates once it has seen the lines in the page: the log is shown while the task
    # runs, not read after it ended.
    gate = ui_cloud.agents[0].data_dir / "work" / "release.approved"
    command = (
        "for i in 1 2 3 4 5; do\n"
        '  echo "step $i/5: deploying web-$i"\n'
        '  echo "warning: web-$i disk 91% full" >&2\n'
        "  sleep 0.1\n"
        "done\n"
        "until [ -e release.approved ]; do sleep 0.05; done\n"
        'echo "release done"\n'
    )
    created = ui_cloud.create(agent_id="web-1", type="shell", command=command)
    task_id = created.json()["id"]
    sign_in(page)
    open_task(page, task_id)
    log = page.locator("#log")
    expect(log.locator(".log-stderr", has_text="warning: web-5 disk 91% full")).to_have_count(1)
    expect(task_status(page)).to_have_text("running")
    expect(page.locator("#log-state")).to_have_text("● live")
    expect(log.locator(".log-stdout")).to_have_count(5)
    expect(log.locator(".log-stderr")).to_have_count(5)
    expect(log.locator(".log-stdout").first.locator(".log-stream")).to_have_text("out")
    expect(log.locator(".log-stderr").first.locator(".log-stream")).to_have_text("err")
    out_colour = log.locator(".log-stdout .log-msg").first.evaluate("e => getComputedStyle(e).color")
    err_colour = log.locator(".log-stderr .log-msg").first.evaluate("e => getComputedStyle(e).color")
    assert out_colour != err_colour
    screenshot(page, shots, "task")
    gate.touch()
    expect(task_status(page)).to_have_text("success")
    expect(log.locator(".log-stdout").last).to_have_text(re.compile("release done"))
    expect(page.locator("#exit-code")).to_have_text("0")
    expect(page.locator("#log-state")).to_have_text("ended: success")
    page.uncheck("input[data-stream=stderr]")
    expect(log.locator(".log-stderr").first).to_be_hidden()
    expect(log.locator(".log-stdout").first).to_be_visible()


def test_cancel_a_running_task_from_its_page(page: Page, ui_cloud: Cloud) -> None:
    task_id = ui_cloud.create(agent_id="web-1", type="shell", command="echo started; sleep 120").json()["id"]
    sign_in(page)
    open_task(page, task_id)
    expect(page.locator("#log")).to_contain_text("started")
    expect(task_status(page)).to_have_text("running")
    expect(page.locator("#retry")).to_be_disabled()
    page.click("#cancel")
    expect(task_status(page)).to_have_text("canceled")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#retry")).to_be_enabled()
    assert ui_cloud.task(task_id)["status"] == "canceled"


def test_retry_a_failed_task_from_its_page(page: Page, ui_cloud: Cloud) -> None:
    command = 'echo "attempt $TIANGONG_TASK_ATTEMPT"; [ "$TIANGONG_TASK_ATTEMPT" -ge 2 ] || exit 3'
    task_id = ui_cloud.run(agent_id="web-1", type="shell", command=command)["id"]
    sign_in(page)
    open_task(page, task_id)
    expect(task_status(page)).to_have_text("failed")
    expect(page.locator("#exit-code")).to_have_text("3")
    expect(page.locator("#cancel")).to_be_disabled()
    page.click("#retry")
    expect(page.locator("#task-message")).to_contain_text("queued again")
    expect(task_status(page)).to_have_text("success")
    expect(page.locator("#log")).to_contain_text("attempt 2")
    expect(page.locator("#log .log-attempt")).to_have_text("attempt 2")
    expect(page.locator("#exit-code")).to_have_text("0")
    page.click("#retry")
    expect(page.locator("#task-message")).to_contain_text("queued again")  # a finished task can run again


def test_agents_page_shows_the_agent_online_with_labels_and_running_tasks(
    page: Page, ui_cloud: Cloud, shots: Path, tmp_path: Path
) -> None:
    go_on = tmp_path / "go-on"
    busy = ui_cloud.create(agent_id="web-1", type="shell", command=f"while [ ! -e '{go_on}' ]; do sleep 0.05; done")
    task_id = busy.json()["id"]
    try:
        sign_in(page)
        wait_for(lambda: ui_cloud.task(task_id)["status"] == "running", what=f"{task_id} running")
        page.click("nav >> text=Agents")
        row = page.locator("#agents-table tr[data-agent='web-1']")
        expect(row.locator(".state")).to_have_text("online")
        expect(row.locator(".label-chip")).to_have_text(["env=staging", f"role={HOSTILE}"])
        expect(row.locator(".running")).to_have_text("1 / 4")
        expect(row).to_contain_text(re.compile(r"\d+ s ago"))
        expect(row).to_contain_text("shell")
        screenshot(page, shots, "agents")
        row.locator(".running").click()
        expect(page.locator("#tasks-table tbody tr")).to_have_count(1)
        expect(page.locator("#tasks-table tbody tr").first).to_have_attribute("data-task", task_id)
    finally:
        go_on.touch()
    ui_cloud.wait_final(task_id)


def test_files_upload_with_progress_dedup_and_download(page: Page, ui_cloud: Cloud, shots: Path) -> None:
    content = b"".join(f"INSERT INTO t VALUES ({i}, 'row {i}');\n".encode() for i in range(120_000))
    sign_in(page)
    page.click("nav >> text=Files")
    page.set_input_files(
        "#upload-input", files=[FilePayload(name="migration.sql", mimeType="text/plain", buffer=content)]
    )
    page.evaluate(
        """() => { window.__progress = [];
          new MutationObserver(() => window.__progress.push(document.querySelector('#upload-progress').value))
            .observe(document.querySelector('#upload-progress'), {attributes: true}); }"""
    )
    page.click("#upload-button")
    result = page.locator("#upload-result")
    expect(result).to_contain_text("Stored")
    stored = re.search(r"file-\d+", result.inner_text())
    assert stored is not None
    file_id = stored.group(0)
    expect(page.locator("#upload-percent")).to_contain_text("100%")
    assert page.evaluate("window.__progress").count(0) <= 1 and 100 in page.evaluate("window.__progress")
    expect(page.locator(f"#files-table tr[data-file='{file_id}']")).to_contain_text("migration.sql")
    page.set_input_files("#upload-input", files=[FilePayload(name="copy.sql", mimeType="text/plain", buffer=content)])
    page.click("#upload-button")
    expect(result).to_contain_text(f"Already stored as {file_id}")
    expect(result).to_contain_text("nothing new was saved")
    expect(page.locator("#files-table tbody tr")).to_have_count(ui_cloud.http.get("/api/v1/files").json()["total"])
    screenshot(page, shots, "files")
    with page.expect_download() as download:
        page.click(f"button[data-download='{file_id}']")
    assert download.value.suggested_filename == "migration.sql"
    assert Path(download.value.path()).read_bytes() == content


def test_markup_in_data_is_shown_as_text(page: Page, ui_cloud: Cloud) -> None:
    task_id = ui_cloud.run(agent_id="web-1", type="shell", command=f"echo '{HOSTILE}'; echo '{HOSTILE}' >&2")["id"]
    r = ui_cloud.http.post("/api/v1/files", files={"file": (f"{HOSTILE}.txt", b"hostile name")})
    assert r.status_code in (200, 201), r.text
    sign_in(page)
    open_task(page, task_id)
    expect(page.locator("#task-command")).to_have_text(f"echo '{HOSTILE}'; echo '{HOSTILE}' >&2")
    expect(page.locator("#log .log-stdout .log-msg")).to_have_text(HOSTILE)
    expect(page.locator("#log .log-stderr .log-msg")).to_have_text(HOSTILE)
    page.goto("/#/tasks")
    expect(page.locator(f"#tasks-table tr[data-task='{task_id}'] .command")).to_contain_text(HOSTILE)
    page.goto("/#/files")
    expect(page.locator("#files-table")).to_contain_text(r.json()["name"])
    page.goto("/#/agents")
    expect(page.locator("#agents-table")).to_contain_text(f"role={HOSTILE}")
    assert page.locator("img[src=x]").count() == 0  # the page fixture also fails on any dialog


def test_a_token_revoked_during_the_session_sends_back_to_sign_in(page: Page, ui_cloud: Cloud) -> None:
    created = ui_cloud.http.post(
        "/api/v1/tokens", json={"name": "ui-reader", "agents": ["*"], "types": ["*"], "can": ["read"]}
    )
    assert created.status_code == 201, created.text
    sign_in(page, created.json()["token"])
    expect(page.locator("#page-info")).to_contain_text("Page 1 of")
    assert ui_cloud.http.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 204
    page.click("text=Refresh")
    expect(page.locator("#login-message")).to_contain_text("Your session ended")
    expect(page.locator("#topbar")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_fleet_run_shows_its_agents_and_links_each_child(page: Page, ui_cloud: Cloud, shots: Path) -> None:
    body = {"agent_selector": {"ids": ["web-1"]}, "type": "shell", "command": "echo fleet-ui", "sync": True}
    r = ui_cloud.http.post("/api/v1/tasks", json=body)
    assert r.status_code == 201 and r.json()["status"] == "success", r.text
    parent, child = r.json()["id"], r.json()["fleet"]["results"][0]["task_id"]
    sign_in(page)
    page.goto("/#/tasks")
    expect(page.locator(f'#tasks-table tr[data-task="{parent}"]')).to_contain_text("fleet · 1 agent")
    open_task(page, parent)
    expect(page.locator("#task-fields")).to_contain_text("fleet run on 1 agent")
    row = page.locator('#children-table tr[data-agent="web-1"]')
    expect(row).to_contain_text("success")
    expect(row.locator("td.num")).to_have_text("0")
    expect(page.locator("#fleet-summary")).to_contain_text("1 success")
    expect(page.locator("#fleet-summary")).to_contain_text("outcome: success")
    expect(page.locator("#retry")).to_be_disabled()
    screenshot(page, shots, "fleet-run")
    row.locator(f'a:text("{child}")').click()
    expect(page.locator("#task-fields")).to_contain_text("fleet-ui")
    expect(page.locator("#parent-link")).to_have_text(parent)
