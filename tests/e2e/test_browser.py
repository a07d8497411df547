"""The web page in a real browser: Debian's Chromium via Playwright, against real Gunicorn."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.processes import Service, base_env, free_port, start_gunicorn, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_MS = 30_000
LABEL = re.compile(r"class_[0-9]")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Belt and braces: nothing but 127.0.0.1 resolves, so nothing can leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def _unavailable(reason: str) -> None:
    """Skip the browser tests, except under CI where a missing browser is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        _unavailable("Chromium is not installed (apt-get install -y chromium)")
    return str(path)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def web(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Real Gunicorn (2 workers, private model server) serving the tiny model; yield its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("browser") / "gunicorn.log"
    env = base_env(MODEL_PATH=str(tiny_model))
    service: Service = start_gunicorn(env, log_path, port, "--workers", "2")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, timeout_s=180, service=service)
        yield base_url
    finally:
        service.stop()


@pytest.fixture
def page(browser: Any, web: str) -> Iterator[Any]:
    """A fresh page; every request it makes is recorded in ``page.requested_urls``."""
    context = browser.new_context(base_url=web, viewport={"width": 1100, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    new_page = context.new_page()
    requested: list[str] = []
    new_page.on("request", lambda request: requested.append(request.url))
    new_page.requested_urls = requested
    problems: list[str] = []
    new_page.on(
        "console", lambda message: message.type == "error" and problems.append(message.text)
    )
    new_page.on("pageerror", lambda error: problems.append(str(error)))
    new_page.problems = problems
    try:
        yield new_page
    finally:
        context.close()


@pytest.fixture
def photo_file(photo_jpeg: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "coffee.jpg"
    path.write_bytes(photo_jpeg)
    return path


def _classify(page: Any, path: Path) -> None:
    """Open the page, pick the file and press Classify."""
    from playwright.sync_api import expect  # noqa: PLC0415

    page.goto("/")
    expect(page.locator("#model-status")).to_have_attribute("data-state", "ready")
    page.locator("#file-input").set_input_files(str(path))
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_role("button", name="Classify").click()


def _percent(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)%\s*", text)
    assert match, f"not a percentage: {text!r}"
    return float(match.group(1))


def test_page_classifies_a_photo(
    page: Any, web: str, photo_file: Path, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    ready = requests.get(f"{web}/readyz", timeout=10).json()
    response = page.goto("/")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page).to_have_title("onemodel")
    expect(page.get_by_role("heading", name="onemodel", level=1)).to_be_visible()
    expect(page.locator("#model-name")).to_have_text(ready["model"])
    height, width = ready["input_size"]
    expect(page.locator("#model-input")).to_contain_text(
        f"{width} \N{MULTIPLICATION SIGN} {height}"
    )

    _classify(page, photo_file)
    rows = page.locator("#result-list > li.result-row")
    expect(rows).to_have_count(5)
    expect(page.locator("#result-meta")).to_contain_text("ms")
    expect(page.locator("#error-box")).to_be_hidden()

    labels = [text.strip() for text in rows.locator(".result-label").all_inner_texts()]
    shown = [_percent(text) for text in rows.locator(".result-score").all_inner_texts()]
    raw = [float(rows.nth(i).get_attribute("data-score")) for i in range(5)]
    assert all(LABEL.fullmatch(label) for label in labels), labels
    assert len(set(labels)) == 5, labels
    assert shown == sorted(shown, reverse=True), shown
    assert raw == sorted(raw, reverse=True), raw

    with photo_file.open("rb") as handle:
        api = requests.post(
            f"{web}/predict",
            params={"top_k": 5},
            files={"file": ("coffee.jpg", handle, "image/jpeg")},
            timeout=30,
        )
    assert api.status_code == 200, api.text
    expected = api.json()["predictions"]
    assert labels == [prediction["label"] for prediction in expected]
    for got_raw, got_shown, prediction in zip(raw, shown, expected, strict=True):
        assert got_raw == pytest.approx(prediction["score"], abs=1e-4)
        assert got_shown == pytest.approx(prediction["score"] * 100, abs=0.011)

    # Bars are proportional to the scores (the widest belongs to the top score).
    widths = [rows.nth(i).locator(".result-fill").bounding_box()["width"] for i in range(5)]
    track = rows.nth(0).locator(".result-bar").bounding_box()["width"]
    for width_px, score in zip(widths, raw, strict=True):
        assert width_px == pytest.approx(max(score * track, 2), abs=1.5)

    screenshot = artifacts_dir / "web-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    data = screenshot.read_bytes()
    assert len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n")


def test_page_shows_the_error_of_a_non_image(
    page: Any, web: str, tmp_path: Path, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    fake = tmp_path / "notes.jpg"
    fake.write_text("this is a text file, not a JPEG\n")
    with fake.open("rb") as handle:
        api = requests.post(
            f"{web}/predict", files={"file": ("notes.jpg", handle, "image/jpeg")}, timeout=30
        )
    assert api.status_code == 415
    error = api.json()["error"]

    _classify(page, fake)
    box = page.get_by_role("alert")
    expect(box).to_be_visible()
    expect(box.locator("#error-message")).to_have_text(error["message"])
    expect(box.locator("#error-code")).to_have_text(f"415 {error['code']}")
    expect(page.locator("#result-list > li")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "web-page-error.png"), full_page=True)


def test_page_only_talks_to_its_own_origin(page: Any, web: str, photo_file: Path) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    _classify(page, photo_file)
    expect(page.locator("#result-list > li.result-row")).to_have_count(5)
    # No script error and no CSP violation (those are logged as console errors).
    assert page.problems == []
    urls = page.requested_urls
    assert any(urlsplit(url).path == "/predict" for url in urls), urls
    assert any(urlsplit(url).path == "/static/app.js" for url in urls), urls
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            assert parts.scheme == "data" or url.startswith(f"blob:{web}/"), url
            continue
        assert parts.scheme == "http" and parts.hostname == "127.0.0.1", url
        assert f"{parts.scheme}://{parts.netloc}" == web, url


def test_page_shows_when_the_model_server_is_not_ready(page: Any, artifacts_dir: Path) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    reason = "the model server is still loading the model"
    page.route(
        "**/readyz",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            headers={"Retry-After": "1"},
            body=f'{{"ready": false, "reason": "{reason}"}}',
        ),
    )
    page.goto("/")
    expect(page.locator("#model-status")).to_have_attribute("data-state", "not-ready")
    expect(page.get_by_role("status")).to_contain_text("Model server not ready")
    expect(page.locator("#not-ready")).to_be_visible()
    expect(page.locator("#not-ready")).to_contain_text(reason)
    page.screenshot(path=str(artifacts_dir / "web-page-not-ready.png"), full_page=True)

    # Once /readyz answers 200 again, the page recovers by itself.
    page.unroute("**/readyz")
    expect(page.locator("#model-status")).to_have_attribute("data-state", "ready")
    expect(page.locator("#not-ready")).to_be_hidden()
