"""End to end in a real headless Chromium (Debian's ``chromium`` package), driven by Playwright.

Run with ``pytest tests/viewer/test_browser.py``; ``.ci/run`` installs the browser with
``apt-get install -y chromium``. Playwright's own browser download is never used.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmat_plugins.viewer.server import ViewerServer
from tests.viewer.conftest import LABEL_BOXES, XSS_QUESTION, BuiltRun

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                       reason="needs Debian's chromium at /usr/bin/chromium: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def viewer(built_run: BuiltRun) -> Iterator[ViewerServer]:
    server = ViewerServer.open(built_run.out, plugins=built_run.plugins).start()
    assert server.wait_indexed()
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, viewer: ViewerServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("dialog", lambda dialog: (page.errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    yield page
    context.close()


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions. They poll from the driver, so the page's strict
    Content-Security-Policy (no eval) does not get in the way, unlike ``wait_for_function``."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (which may evaluate in the page) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def open_list(page: Any, viewer: ViewerServer) -> None:
    page.goto(viewer.url)
    page.wait_for_selector("tr.sample-row")


def test_list_shows_every_sample(page: Any, viewer: ViewerServer) -> None:
    open_list(page, viewer)
    assert page.locator("tr.sample-row").count() == 6
    assert page.errors == []


def test_status_filter_narrows_the_list(page: Any, viewer: ViewerServer) -> None:
    open_list(page, viewer)
    page.select_option("#filter-status", "reflected")
    expect(page.locator("tr.sample-row")).to_have_count(1)
    assert page.locator("tr.sample-row td.question").inner_text() == "What number is printed after the word?"


def test_tool_filter_and_search_combine(page: Any, viewer: ViewerServer) -> None:
    open_list(page, viewer)
    page.select_option("#filter-tool", "ocr")
    expect(page.locator("tr.sample-row")).to_have_count(4)
    page.fill("#filter-q", "printed")
    page.click("#filters button[type=submit]")
    expect(page.locator("tr.sample-row")).to_have_count(1)
    assert "printed" in page.locator("tr.sample-row td.question").inner_text()


def test_quarantined_rows_are_listed_with_their_reason(page: Any, viewer: ViewerServer) -> None:
    open_list(page, viewer)
    page.select_option("#filter-status", "quarantined")
    page.wait_for_selector("tr.quarantine-row")
    assert "image_missing" in page.locator("tr.quarantine-row").inner_text()


def test_opening_a_sample_draws_its_boxes_over_the_image(page: Any, viewer: ViewerServer, built_run: BuiltRun) -> None:
    open_list(page, viewer)
    page.click("text=How many people are in the image?")
    page.wait_for_selector("#dialogue .step")
    wait_until(lambda: page.evaluate("document.querySelector('img.sample-image').naturalWidth") > 0)
    assert page.locator("svg.boxes g.box[data-tool=face_detection]").count() >= 1
    labels = page.locator("svg.boxes g.box[data-tool=test_label_boxes] text").evaluate_all("nodes => nodes.map(n => n.textContent)")
    assert sorted(labels) == sorted(LABEL_BOXES)
    helmet = page.locator("svg.boxes g.box[data-tool=test_label_boxes] rect").first
    assert float(helmet.get_attribute("x")) == pytest.approx(LABEL_BOXES["helmet"][0][0] * 512)


def test_sample_page_shows_the_dialogue_the_reflection_and_both_exports(page: Any, viewer: ViewerServer, built_run: BuiltRun) -> None:
    page.goto(f"{viewer.url}#/sample/{built_run.seq_of('viewer/recheck-count')}")
    page.wait_for_selector("#dialogue .step")
    assert page.locator("#dialogue .step").count() == 5
    assert page.locator("#dialogue .step-reflection").count() == 1
    assert "the count skips the second column" in page.locator("#verdicts").inner_text()
    assert page.locator("#ground-truth").inner_text() == "42"
    assert page.locator("#final-answer").inner_text() == "42"
    assert page.locator("#rr .msg").count() == len(built_run.exported("rr.jsonl")["viewer/recheck-count"]["messages"])
    assert page.locator("#orr .msg").count() == 3


def test_question_holding_script_is_shown_as_text_and_never_runs(page: Any, viewer: ViewerServer, built_run: BuiltRun) -> None:
    page.goto(f"{viewer.url}#/sample/{built_run.seq_of('viewer/script-question')}")
    page.wait_for_selector("#dialogue .step")
    assert page.locator("#question-text").inner_text() == XSS_QUESTION
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#app script, #app img[src=x], #app b").count() == 0
    open_list(page, viewer)
    assert XSS_QUESTION in page.locator("table.samples").inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_dashboard_draws_every_chart(page: Any, viewer: ViewerServer) -> None:
    page.goto(viewer.url + "#/dashboard")
    page.wait_for_selector(".charts")
    titles = page.locator(".chart h2").all_inner_texts()
    for expected in ("Yield per stage", "Yield per source", "Steps per sample", "Tool calls per operator",
                     "Reflection: verdicts per critic", "Tokens and cost per source", "Failures by reason"):
        assert expected.upper() in (t.upper() for t in titles)
    assert page.locator(".chart svg rect.bar").count() > 5
    assert page.locator("table.latency tbody tr").count() >= 2


def test_dashboard_shows_the_run_beside_the_paper(page: Any, viewer: ViewerServer) -> None:
    page.goto(viewer.url + "#/dashboard")
    page.wait_for_selector("table.paper-table")
    row = page.locator('table.paper-table tr[data-section="collections"][data-figure="visual_cot"]')
    expect(row).to_contain_text("48.1%")  # the paper's share of Visual CoT dialogues
    expect(row).to_have_class("departs")  # this run holds none of it
    assert page.locator("table.paper-table tr.departs").count() >= 1
    assert page.errors == []
