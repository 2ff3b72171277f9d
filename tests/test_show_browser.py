"""The tour and the microscope in a real browser: headless Debian Chromium driven by Playwright, pages opened from disk.

Every image must load (naturalWidth > 0, lazy ones after scrolling them into view), every local link must lead to
a page that exists and opens, and the console must stay free of errors. A photo named like an XSS payload must
show as text. Screenshots land in the test's tmp folder (and in ``$CONVLENS_SCREENSHOTS`` when set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.browser


def _chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run does this)")
    return path


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    exe = _chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser, path: Path, shots: list[Path] | None = None, shot: str | None = None, *,
          width: int = 1280, full: bool = False):
    """Open ``path``; return (page, console errors, dialogs). Scrolls every image into view and waits for it."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}"))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    for img in page.query_selector_all("img"):
        img.scroll_into_view_if_needed()
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20_000)
    page.evaluate("window.scrollTo(0, 0)")
    if shot is not None and shots is not None:
        target = Path(shot)
        page.screenshot(path=str(target), full_page=full)
        shots.append(target)
    return page, errors, dialogs


def _assert_images_loaded(page) -> int:
    bad = page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    assert not bad, f"images that did not load: {bad[:5]}"
    return page.evaluate("document.images.length")


def _local_links(page, base: Path) -> list[Path]:
    hrefs = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    out = []
    for h in hrefs:
        u = urlparse(h)
        if u.scheme == "file":
            out.append(Path(unquote(u.path)))
        else:
            assert u.scheme == "" or h.startswith("#"), f"link leaves the site: {h}"
    return out


def _save_shots(shots: list[Path]) -> None:
    dest = os.environ.get("CONVLENS_SCREENSHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        for s in shots:
            shutil.copy(s, Path(dest) / s.name)


def test_tour_opens_in_chromium(browser, lite0, tmp_path: Path) -> None:
    from convlens.show.tour import run_tour

    report = run_tour(lite0, tmp_path / "tour", quick=True, only=["model", "predictions", "weights"])
    assert report.counts.get("ok") == 3, [(s.key, s.status, s.error) for s in report.sections]
    shots: list[Path] = []
    page, errors, dialogs = _open(browser, report.path, shots, str(tmp_path / "tour.png"), full=True)
    n = _assert_images_loaded(page)
    assert n >= 3
    assert not errors, errors
    assert not dialogs
    # the anchors of the table of contents point at sections of this page; result.json is linked and exists
    ids = set(page.evaluate("Array.from(document.querySelectorAll('section[id]')).map(s => s.id)"))
    anchors = page.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))")
    assert anchors and all(a.startswith("#") and a[1:] in ids for a in anchors)
    for link in _local_links(page, report.path.parent):
        assert link.exists(), link
    page.click("nav a[href='#weights']")
    assert page.evaluate("location.hash") == "#weights"
    # skipped sections are reported in their place
    assert page.locator("section#fooling .badge.skipped").count() == 1
    page.close()
    _save_shots(shots)
    assert shots[0].stat().st_size > 10_000


def test_microscope_opens_in_chromium_and_escapes_file_names(browser, tiny, tmp_path: Path) -> None:
    from convlens.show.microscope import build_microscope

    data = tmp_path / "photos"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        name = f"{XSS}.jpg" if i == 0 else f"photo {i} & co.jpg"
        Image.fromarray(arr).save(data / name)
    site = build_microscope(tiny, data, tmp_path / "site", layers=["conv2", "conv4"], k=3, vis_steps=4,
                            vis_size=32, progress=False)
    shots: list[Path] = []
    page, errors, dialogs = _open(browser, site.index, shots, str(tmp_path / "microscope-index.png"))
    _assert_images_loaded(page)
    assert not errors and not dialogs, (errors, dialogs)
    layer_links = [p for p in _local_links(page, site.index.parent) if p.name == "index.html"]
    assert len(layer_links) == 2
    page.click("text=conv2")
    page.wait_for_load_state("load")
    assert page.url.endswith("layers/conv2/index.html")
    for img in page.query_selector_all("img"):
        img.scroll_into_view_if_needed()
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    assert _assert_images_loaded(page) == 2 * 8  # top patch + feature vis for each of 8 channels
    page.click("a[href='0.html']")
    page.wait_for_load_state("load")
    page.close()

    # the channel page that lists the XSS-named photo
    hits = [p for p in (tmp_path / "site" / "layers").rglob("*.html") if "onerror=alert" in p.read_text()]
    assert hits, "the XSS file name should appear (escaped) on some channel page"
    for p in (tmp_path / "site").rglob("*.html"):
        assert XSS not in p.read_text(), f"unescaped user file name in {p}"
    page, errors, dialogs = _open(browser, hits[0], shots, str(tmp_path / "microscope-channel.png"), full=True)
    _assert_images_loaded(page)
    assert not errors and not dialogs, (errors, dialogs)
    assert page.locator("img[src='x']").count() == 0  # the name did not become an element
    assert XSS in page.inner_text("body")  # it shows as text
    links = _local_links(page, hits[0].parent)
    assert links and all(p.exists() for p in links)
    page.close()
    _save_shots(shots)
