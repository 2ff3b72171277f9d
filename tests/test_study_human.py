"""The human study: the SQLite store (each answer on disk as given, resumable, one order per person), the app's
security (only dataset files, escaping, local clients only, JSON-only answers), the report's numbers against answers
scored by hand, the CLI, and a real browser session: label ten photos, close, reopen, continue, report."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.errors import UserError

flask = pytest.importorskip("flask", reason="the human study needs Flask (the study / test extra)")

from convlens.study.human import StudyStore, create_app, human_report, make_server, study_order

XSS = "<img src=x onerror=alert(1)>"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _dataset(root: Path, n: int = 12) -> tuple[Path, list[int]]:
    root.mkdir()
    g = torch.Generator().manual_seed(7)
    labels = [i % 5 for i in range(n)]
    rows = []
    for i in range(n):
        img = (torch.rand(3, 8, 8, generator=g) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).resize((48, 40), Image.Resampling.NEAREST).save(root / f"im{i:02d}.png")
        rows.append(f"im{i:02d}.png,n{labels[i]},{labels[i]},class{labels[i]}\n")
    (root / "LABELS.csv").write_text("file,wnid,class_index,name\n" + "".join(rows))
    (root.parent / "secret.txt").write_text("not for the browser")
    return root, labels


def test_store_commits_each_answer_and_replaces_a_repeat(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    store = StudyStore(db)
    store.record("ann", "a.png", [3, 1], False, "stripes", 2.5)
    # another connection (another process) sees it at once
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT participant, file, guesses FROM answers").fetchall() == [("ann", "a.png", "[3, 1]")]
    store.record("ann", "a.png", [], True, "")
    again = StudyStore(db).answers()
    assert len(again) == 1 and again[0].skipped and again[0].guesses == []
    with pytest.raises(UserError):
        store.record("ann", "b.png", [1, 1], False)
    with pytest.raises(UserError):
        store.record("ann", "b.png", [1, 2, 3, 4, 5, 6], False)
    with pytest.raises(UserError):
        store.record("ann", "b.png", [], False)
    with pytest.raises(UserError):
        store.record("  ", "b.png", [1], False)
    assert study_order(20, "ann") == study_order(20, "ann")
    assert study_order(20, "ann") != study_order(20, "bob")
    assert sorted(study_order(20, "bob")) == list(range(20))


@pytest.fixture
def app_and_data(tiny, tmp_path: Path):
    root, labels = _dataset(tmp_path / "photos")
    app = create_app(root, tiny.labels, tmp_path / "study.sqlite")
    app.testing = True
    return app, root, labels, tmp_path / "study.sqlite"


def test_app_serves_only_dataset_files_and_escapes(app_and_data) -> None:
    app, root, _, _ = app_and_data
    c = app.test_client()
    assert c.get("/").status_code == 200
    r = c.get("/image/0")
    assert r.status_code == 200 and r.data == (root / "im00.png").read_bytes()
    for bad in ("/image/12", "/image/-1", "/image/../secret.txt", "/image/%2e%2e%2fsecret.txt", "/secret.txt",
                "/static/../../secret.txt"):
        assert c.get(bad).status_code == 404, bad
    page = c.get("/label", query_string={"who": XSS}).get_data(as_text=True)
    assert XSS not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "</script><img" not in page  # the name inside the script is JSON with < escaped
    c.post("/api/answer", json={"who": XSS, "id": 0, "guesses": [1], "reason": XSS})
    start = c.get("/").get_data(as_text=True)
    assert XSS not in start and "&lt;img" in start


def test_app_refuses_other_machines_foreign_hosts_and_forms(app_and_data) -> None:
    app, _, _, db = app_and_data
    c = app.test_client()
    assert c.get("/", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    assert c.get("/", headers={"Host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    ok = {"who": "ann", "id": 1, "guesses": [2]}
    assert c.post("/api/answer", json=ok, headers={"Origin": "http://evil.example"}).status_code == 403
    assert c.post("/api/answer", data={"who": "ann", "id": "1", "guesses": "2"}).status_code == 415
    assert c.post("/api/answer", json={**ok, "id": 99}).status_code == 400
    assert c.post("/api/answer", json={**ok, "guesses": [7]}).status_code == 400
    assert not StudyStore(db).answers()
    assert c.post("/api/answer", json=ok).status_code == 200
    remote = create_app(Path(db).parent / "photos", ["a"] * 5, db,
                        allow_remote=True)
    assert remote.test_client().get("/", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    with pytest.raises(UserError, match="allow-remote"):
        make_server(app, "0.0.0.0", 0)


def test_progress_resumes_in_each_persons_order(app_and_data) -> None:
    app, _, _, db = app_and_data
    c = app.test_client()
    first = c.get("/api/next?who=ann").get_json()
    assert first["answered"] == 0 and first["image"]["id"] == study_order(12, "ann")[0]
    state = first
    for _ in range(5):
        state = c.post("/api/answer", json={"who": "ann", "id": state["image"]["id"], "guesses": [0]}).get_json()
    # a fresh app on the same file (the server restarted) continues with the sixth photo
    again = create_app(Path(db).parent / "photos", [f"class{i}" for i in range(5)], db)
    state2 = again.test_client().get("/api/next?who=ann").get_json()
    assert state2["answered"] == 5 and state2["image"]["id"] == study_order(12, "ann")[5] == state["image"]["id"]
    bob = c.get("/api/next?who=bob").get_json()
    assert bob["answered"] == 0


def _score_by_hand(model, root: Path, labels: list[int], answers: list[tuple[str, int, list[int], bool]]):
    files = sorted(root.glob("*.png"))
    with torch.no_grad():
        top = model(model.load(files)).topk(5, -1).indices
    h1 = [bool(g) and g[0] == labels[i] for _, i, g, _ in answers]
    h5 = [labels[i] in g for _, i, g, _ in answers]
    n1 = [int(top[i, 0]) == labels[i] for _, i, _, _ in answers]
    n5 = [labels[i] in top[i].tolist() for _, i, _, _ in answers]
    return h1, h5, n1, n5


def test_report_numbers_equal_hand_scored_answers(tiny, tmp_path: Path) -> None:
    root, labels = _dataset(tmp_path / "photos")
    db = tmp_path / "s.sqlite"
    store = StudyStore(db)
    answers = [("ann", 0, [0], False), ("ann", 1, [3, 1], False), ("ann", 2, [], True), ("ann", 3, [4, 0, 3], False),
               ("bob", 0, [2], False), ("bob", 5, [0, 1, 2, 3, 4], False), ("bob", 6, [1], False)]
    for who, i, g, skip in answers:
        store.record(who, f"im{i:02d}.png", g, skip, "looks like it" if i == 3 else "")
    rep = human_report(tiny, root, db)
    h1, h5, n1, n5 = _score_by_hand(tiny, root, labels, answers)
    pooled = rep.pooled
    assert pooled.name == "all" and pooled.answers == 7 and pooled.skipped == 1
    assert (pooled.human_top1.k, pooled.human_top5.k) == (sum(h1), sum(h5))
    assert (pooled.network_top1.k, pooled.network_top5.k) == (sum(n1), sum(n5))
    ann = rep.participants[0]
    assert ann.name == "ann" and ann.answers == 4 and ann.human_top1.k == sum(h1[:4])
    cells = rep.agreement["top1"]
    assert len(cells["both_right"]) == sum(a and b for a, b in zip(h1, n1))
    assert len(cells["only_human"]) == sum(a and not b for a, b in zip(h1, n1))
    assert sum(len(v) for v in cells.values()) == 7
    assert [rep.cases[j].reason for j in rep.reasons] == ["looks like it"]
    for j in rep.network_mistakes_human_right:
        assert rep.cases[j].human_top1 and not rep.cases[j].network_top1
    probs = [rep.cases[j].network_probs[0] for j in rep.network_mistakes_human_right]
    assert probs == sorted(probs, reverse=True)
    with pytest.raises(UserError, match="no participant 'carl'"):
        human_report(tiny, root, db, participants=["carl"])


def test_human_study_cli_report(tiny_module, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from convlens.cli import main

    ts = tmp_path / "tiny.pt"
    torch.jit.trace(tiny_module, torch.rand(1, 3, 224, 224)).save(str(ts))
    root, _ = _dataset(tmp_path / "photos")
    out = tmp_path / "out"
    missing = CliRunner().invoke(main, ["human-study", str(root), "--report", "--model", str(ts), "--out", str(out)])
    assert missing.exit_code != 0 and "no study database" in str(missing.exception)
    store = StudyStore(out / "study.sqlite")
    store.record(XSS, "im00.png", [0], False, XSS)
    store.record(XSS, "im01.png", [], True, "")
    res = CliRunner().invoke(main, ["human-study", str(root), "--report", "--model", str(ts), "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert XSS not in html and "&lt;img src=x" in html
    doc = json.loads((out / "result.json").read_text())
    hs = doc["human_study"]
    assert hs["participants"][-1]["answers"] == 2 and hs["participants"][-1]["skipped"] == 1
    assert len(list((out / "thumbs").glob("*.jpg"))) == 2


# --- the browser ---------------------------------------------------------------------------------------------

def _chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run does this)")
    return path


@pytest.mark.browser
def test_browser_label_ten_close_reopen_continue_report(tiny, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    exe = _chromium()
    root, labels = _dataset(tmp_path / "photos")
    db = tmp_path / "study.sqlite"
    names = sorted(p.name for p in root.glob("*.png"))
    given: list[tuple[str, int, list[int], bool]] = []

    def serve():
        app = create_app(root, tiny.labels, db)
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def until(page, test, what: str) -> None:
        # polled from Python: the app's Content-Security-Policy forbids the eval that page.wait_for_function uses
        for _ in range(400):
            if test():
                return
            page.wait_for_timeout(25)
        raise AssertionError(f"timed out waiting for {what}")

    def label(page, count: int) -> None:
        for _ in range(count):
            until(page, lambda: page.evaluate("() => { const p = document.getElementById('photo'); "
                                              "return p.complete && p.naturalWidth > 0; }"), "the photo")
            i = int(page.get_attribute("#photo", "src").rsplit("/", 1)[1])
            truth = labels[names.index(f"im{i:02d}.png")]
            k = len(given)
            before = page.inner_text("#progress")
            if k % 4 == 3:
                page.click("#skip")
                given.append((XSS, i, [], True))
            else:
                guess = [truth] if k % 4 == 0 else [(truth + 1) % 5, truth] if k % 4 == 1 else [(truth + 2) % 5]
                for gi in guess:
                    page.fill("#search", f"class{gi}")
                    page.press("#search", "Enter")
                assert page.locator("#guesses li").count() == len(guess)
                if k == 2:
                    page.fill("#reason", XSS)
                page.click("#submit")
                given.append((XSS, i, guess, False))
            until(page, lambda b=before: page.inner_text("#progress") != b, "the next photo")

    server = serve()
    url = f"http://127.0.0.1:{server.server_port}/"
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        try:
            ctx = browser.new_context()
            page = ctx.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.fill("#who", XSS)
            page.click("#begin")
            page.wait_for_selector("body[data-ready='1']")
            label(page, 10)
            assert page.inner_text("#progress").startswith("10 / 12")
            page.screenshot(path=str(tmp_path / "label.png"))
            ctx.close()  # the browser window is closed ...
            server.shutdown()
            server.server_close()
            assert len(StudyStore(db).answers()) == 10  # ... and everything is on disk
            server = serve()  # ... the study is started again
            url = f"http://127.0.0.1:{server.server_port}/"
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            assert XSS in page.inner_text("#people")  # shown as text
            page.click("#people a")  # continue
            page.wait_for_selector("body[data-ready='1']")
            assert page.inner_text("#progress").startswith("10 / 12")
            label(page, 2)
            page.wait_for_selector("#finished:not([hidden])")
            page.close()
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
    assert not dialogs and not errors, (dialogs, errors)
    assert len({i for _, i, _, _ in given}) == 12  # every photo once, none repeated after reopening
    rep = human_report(tiny, root, db)
    h1, h5, n1, n5 = _score_by_hand(tiny, root, labels, given)
    p = rep.pooled
    assert p.answers == 12 and p.skipped == 3
    assert (p.human_top1.k, p.human_top5.k, p.network_top1.k, p.network_top5.k) == (sum(h1), sum(h5), sum(n1),
                                                                                    sum(n5))
    assert (p.human_top1.k, p.human_top5.k) == (3, 6)  # by construction: 3 right first guesses, 3 more in top-5
    stored = {a.file: a for a in StudyStore(db).answers()}
    for _, i, g, skip in given:
        a = stored[f"im{i:02d}.png"]
        assert a.guesses == g and a.skipped == skip
    assert [rep.cases[j].reason for j in rep.reasons] == [XSS]
    shots = os.environ.get("CONVLENS_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "label.png", Path(shots) / "human_study_label.png")
    assert np.isfinite(p.human_top1.ci).all()
