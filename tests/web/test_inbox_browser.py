"""The demo's emails as a recipient sees them: each HTML part rendered in headless Chromium.

Parsing the markup says what the HTML holds; a browser says what a reader sees. These tests render sent
messages with Playwright driving Debian's Chromium and assert on the visible text and the laid-out elements:
no tag shows as text, no "None", the open pixel is a 1×1 image, and the page's language is the message's.
They skip when Chromium or Playwright is missing, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PATRON_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network and no display (as root, without a sandbox).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TAG_AS_TEXT = re.compile(r"<\s*/?\s*[A-Za-z!]")


def _missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}: the browser tests must run under CI")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PATRON_TEST_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _sample(outbox: Path) -> list[email.message.EmailMessage]:
    """One message per language, plus one from a customer with no first name if the demo has one."""
    chosen: dict[str, email.message.EmailMessage] = {}
    for path in sorted(outbox.iterdir()):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        language = message["Content-Language"] or ""
        chosen.setdefault(language, message)
        if len(chosen) >= 4:
            break
    return list(chosen.values())


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_demo_emails_show_no_markup_as_text(runner, app, browser, tmp_path):
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    messages = _sample(Path(app.instance_path) / "outbox" / "new")
    assert {m["Content-Language"].split(",")[0].strip() for m in messages} >= {"en", "es"}

    page = browser.new_page(viewport={"width": 800, "height": 1200})
    for number, message in enumerate(messages):
        html = message.get_body(("html",)).get_content()
        page.set_content(html, wait_until="domcontentloaded")
        page.screenshot(path=str(tmp_path / f"message-{number}.png"), full_page=True)
        visible = page.evaluate("document.body.innerText")
        assert not TAG_AS_TEXT.search(visible), f"markup shown as text in {message['To']}: {visible[-300:]!r}"
        assert not re.search(r"\bNone\b|\bUndefined\b|\{\{|\{%", visible), visible
        # The unsubscribe link and, beside it, the preference page's are there to click: laid out, not hidden.
        unsubscribe = page.locator("a[href*='/u/']:not([href$='#preferences'])")
        assert unsubscribe.count() == 1 and unsubscribe.is_visible()
        preferences = page.locator("a[href$='#preferences']")
        assert preferences.count() == 1 and preferences.is_visible()
        assert preferences.get_attribute("href") == unsubscribe.get_attribute("href") + "#preferences"

        # The open pixel is an image the reader never sees: an element 1×1, not text.
        pixels = page.evaluate(
            """[...document.images].filter(i => i.getAttribute('src').includes('/o/'))
                .map(i => [i.getAttribute('width'), i.getAttribute('height')])"""
        )
        assert pixels == [["1", "1"]], pixels

        language = message["Content-Language"].split(",")[0].strip()
        assert page.evaluate("document.documentElement.lang") == language
    page.close()
