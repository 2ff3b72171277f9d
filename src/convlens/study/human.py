"""People against the network: the labelling study of Karpathy ("What I learned from competing against a ConvNet
on ImageNet", 2014; Russakovsky et al., IJCV 2015, section 6.4) as a local web app and its report.

:func:`create_app` builds a Flask app that shows one photo of a dataset at a time, in an order of its own for each
participant, with a type-ahead search over the model's class names, up to five guesses, "skip / not sure" and a
free-text reason. Every answer is written to SQLite the moment it is given (:class:`StudyStore`), so a closed
browser loses nothing and the study resumes where it stopped; several people take part under their own names.
:func:`serve` runs it on 127.0.0.1.

Security: photos are served by their position in the dataset, never by a path from the request, so no file outside
the dataset can be reached; every user string reaches the page through autoescaped templates or ``textContent``;
requests from another machine, with a foreign ``Host`` header (DNS rebinding) or a cross-site ``Origin`` are
refused unless ``allow_remote``; answers are only accepted as JSON (which a cross-site form cannot send).

:func:`human_report` compares the answers with the network's predictions on the same photos: top-1 / top-5 of each
person and of the network with Wilson intervals, the agreement table, the network's most confident mistakes that the
person got right and the reverse, and the reasons people gave.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..models.model import Model
from ..read.dataset import Dataset, load_dataset
from .slicing import resolve_labels, wilson

__all__ = ["StudyStore", "Answer", "study_order", "create_app", "serve", "make_server", "Accuracy",
           "ParticipantSummary", "Case", "HumanStudyReport", "human_report", "MAX_GUESSES"]

MAX_GUESSES = 5
_MAX_NAME = 64
_MAX_REASON = 2000
_LOCAL = {"127.0.0.1", "::1", "localhost"}


@dataclass
class Answer:
    """One person's answer for one photo: class indices guessed (best first, at most five), or ``skipped``."""

    participant: str
    file: str
    guesses: list[int]
    skipped: bool
    reason: str
    seconds: float | None
    created: str


class StudyStore:
    """The study's SQLite file: participants and their answers, each committed as it is given.

    One answer per (participant, photo); answering a photo again replaces the earlier answer. Safe to use from
    the server's threads (one connection per call, WAL journal).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS participants (name TEXT PRIMARY KEY, created TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS answers (participant TEXT NOT NULL, file TEXT NOT NULL, "
                       "guesses TEXT NOT NULL, skipped INTEGER NOT NULL, reason TEXT NOT NULL, seconds REAL, "
                       "created TEXT NOT NULL, PRIMARY KEY (participant, file))")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA synchronous=FULL")
        return db

    @staticmethod
    def check_name(name: str) -> str:
        """A participant name, stripped; 1-64 printable characters."""
        name = (name or "").strip()
        if not name or len(name) > _MAX_NAME or not name.isprintable():
            raise UserError(f"a participant name is 1-{_MAX_NAME} printable characters")
        return name

    def add_participant(self, name: str) -> str:
        name = self.check_name(name)
        with self._lock, self._connect() as db:
            db.execute("INSERT OR IGNORE INTO participants VALUES (?, ?)", (name, time.strftime("%Y-%m-%dT%H:%M:%S")))
        return name

    def participants(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM participants ORDER BY created, name")]

    def answered(self, name: str) -> set[str]:
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT file FROM answers WHERE participant = ?", (name,))}

    def record(self, name: str, file: str, guesses: Sequence[int], skipped: bool, reason: str = "",
               seconds: float | None = None) -> Answer:
        """Store one answer (committed before returning)."""
        name = self.check_name(name)
        guesses = [int(g) for g in guesses]
        if len(guesses) > MAX_GUESSES or len(set(guesses)) != len(guesses):
            raise UserError(f"up to {MAX_GUESSES} different guesses, got {guesses}")
        if not skipped and not guesses:
            raise UserError("give at least one guess, or skip")
        reason = (reason or "")[:_MAX_REASON]
        created = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self._lock, self._connect() as db:
            db.execute("INSERT OR IGNORE INTO participants VALUES (?, ?)", (name, created))
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (name, file, json.dumps([] if skipped else guesses), int(bool(skipped)), reason,
                        None if seconds is None or not math.isfinite(seconds) else float(seconds), created))
        return Answer(name, file, [] if skipped else guesses, bool(skipped), reason, seconds, created)

    def answers(self, participants: Sequence[str] | None = None) -> list[Answer]:
        with self._connect() as db:
            rows = list(db.execute("SELECT participant, file, guesses, skipped, reason, seconds, created FROM answers "
                                   "ORDER BY participant, created, rowid"))
        out = [Answer(p, f, json.loads(g), bool(s), r, sec, c) for p, f, g, s, r, sec, c in rows]
        if participants is not None:
            keep = set(participants)
            out = [a for a in out if a.participant in keep]
        return out


def study_order(n: int, participant: str, seed: int = 0) -> list[int]:
    """The order in which ``participant`` sees the ``n`` photos: a permutation seeded by the name and ``seed``
    (each person a different order, the same one every time they come back)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{participant}".encode()).digest()[:8], "little")
    return np.random.default_rng(h).permutation(n).tolist()


# --- the web app ------------------------------------------------------------------------------------------------

def _hostname(host: str) -> str:
    """``"127.0.0.1:8765"`` -> ``"127.0.0.1"``, ``"[::1]:8765"`` -> ``"::1"``, lower case."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0].lower()
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).lower()


def create_app(dataset: str | os.PathLike | Dataset, class_names: Sequence[str], db_path: str | os.PathLike, *,
               labels: str | os.PathLike | None = None, seed: int = 0, allow_remote: bool = False,
               limit: int | None = None) -> Any:
    """The labelling app (a :class:`flask.Flask`) over the photos of ``dataset``, guesses among ``class_names``
    (their indices are what is stored), answers in the SQLite file ``db_path``.

    ``limit`` keeps the first ``limit`` photos (evenly spread). Unless ``allow_remote``, the app answers only
    requests from this machine that name it as ``127.0.0.1``/``localhost``/``::1``.
    """
    try:
        from flask import Flask, abort, jsonify, request, send_file
    except ImportError:
        raise UserError("the human study needs Flask: pip install 'convlens[study]'") from None
    from markupsafe import Markup

    from ..show.html import environment

    ds = load_dataset(dataset, labels=labels, limit=limit)
    names = ds.names()
    files = [Path(f).resolve() for f in ds.files]
    root = ds.root.resolve() if ds.root is not None else None
    classes = [str(c) for c in class_names]
    if not classes:
        raise UserError("the model has no class names to choose from")
    store = StudyStore(db_path)
    index_of = {n: i for i, n in enumerate(names)}
    app = Flask("convlens.study")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    env = environment()

    def page(template: str, **ctx: Any) -> Any:
        return app.response_class(env.get_template(template).render(**ctx), mimetype="text/html")

    @app.before_request
    def guard() -> Any:
        if allow_remote:
            return None
        host = _hostname(request.host or "")
        if request.remote_addr not in _LOCAL or host not in _LOCAL:
            abort(403)
        origin = request.headers.get("Origin")
        if origin is not None and origin != request.host_url.rstrip("/"):
            abort(403)
        return None

    @app.after_request
    def headers(resp: Any) -> Any:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
                                                   "script-src 'unsafe-inline'; frame-ancestors 'none'")
        resp.headers["Cache-Control"] = "no-store" if request.path.startswith("/api/") else "private, max-age=3600"
        return resp

    def participant() -> str:
        try:
            return store.check_name(request.args.get("who", ""))
        except UserError:
            abort(400)

    def progress(who: str) -> dict[str, Any]:
        done = store.answered(who) & set(names)
        nxt = next((i for i in study_order(len(names), who, seed) if names[i] not in done), None)
        return {"who": who, "answered": len(done), "total": len(names), "done": nxt is None,
                "image": None if nxt is None else {"id": nxt, "url": f"/image/{nxt}", "file": names[nxt]}}

    @app.get("/")
    def start() -> Any:
        people = [(p, len(store.answered(p) & set(names))) for p in store.participants()]
        return page("study_start.html", people=people, total=len(names))

    @app.get("/label")
    def label() -> Any:
        who = participant()
        store.add_participant(who)
        return page("study_label.html", who=who, who_json=Markup(json.dumps(who).replace("<", "\\u003c")),
                    total=len(names), max_guesses=MAX_GUESSES)

    @app.get("/api/classes")
    def api_classes() -> Any:
        return jsonify(classes)

    @app.get("/api/next")
    def api_next() -> Any:
        return jsonify(progress(participant()))

    @app.post("/api/answer")
    def api_answer() -> Any:
        if not request.is_json:
            abort(415)
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            abort(400)
        try:
            who = store.check_name(str(data.get("who", "")))
            i = int(data.get("id", -1))
            guesses = [int(g) for g in data.get("guesses", [])]
            skipped = bool(data.get("skipped", False))
            seconds = data.get("seconds")
            seconds = float(seconds) if isinstance(seconds, (int, float)) else None
            if not 0 <= i < len(names) or any(not 0 <= g < len(classes) for g in guesses):
                raise UserError("photo or class out of range")
            store.record(who, names[i], guesses, skipped, str(data.get("reason", "")), seconds)
        except (UserError, TypeError, ValueError) as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify(progress(who))

    @app.get("/image/<int:i>")
    def image(i: int) -> Any:
        if not 0 <= i < len(files):
            abort(404)
        path = files[i]
        if root is not None and root not in path.parents:  # a symlink out of the dataset
            abort(404)
        return send_file(path, max_age=3600)

    app.config["CONVLENS_FILES"] = names
    app.config["CONVLENS_INDEX"] = index_of
    return app


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8765, *, allow_remote: bool = False) -> Any:
    """A threaded WSGI server (Werkzeug's) for ``app`` on ``host:port`` (``port=0``: any free port; the bound one is
    ``server.server_port``). A non-loopback ``host`` needs ``allow_remote``."""
    from werkzeug.serving import make_server as _make

    if host not in ("127.0.0.1", "localhost", "::1") and not allow_remote:
        raise UserError(f"refusing to listen on {host}: the study is local; pass --allow-remote to open it to others")
    try:
        return _make(host, port, app, threaded=True)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(app: Any, host: str = "127.0.0.1", port: int = 8765, *, allow_remote: bool = False) -> None:
    """Run the app until interrupted (Ctrl-C); every answer is already on disk when it stops."""
    server = make_server(app, host, port, allow_remote=allow_remote)
    try:
        server.serve_forever()
    finally:
        server.server_close()


# --- the report -------------------------------------------------------------------------------------------------

@dataclass
class Accuracy:
    """``k`` of ``n`` right, the share and its 95% Wilson interval."""

    k: int
    n: int
    value: float
    ci: tuple[float, float]

    @classmethod
    def of(cls, hits: Sequence[bool] | np.ndarray) -> Accuracy:
        h = np.asarray(hits, bool)
        n, k = int(h.size), int(h.sum())
        return cls(k, n, k / n if n else math.nan, wilson(k, n))


@dataclass
class ParticipantSummary:
    """One person (or ``"all"``: every answer pooled) against the network on the photos that person labelled;
    a skipped photo counts as wrong for the person."""

    name: str
    answers: int
    skipped: int
    human_top1: Accuracy
    human_top5: Accuracy
    network_top1: Accuracy
    network_top5: Accuracy
    median_seconds: float | None


@dataclass
class Case:
    """One answer with both sides: the true class, the person's guesses, the network's top-5 and probabilities."""

    participant: str
    file: str
    truth: int
    truth_label: str
    guesses: list[int]
    guess_labels: list[str]
    skipped: bool
    reason: str
    network: list[int]
    network_labels: list[str]
    network_probs: list[float]
    network_truth_prob: float
    human_top1: bool
    human_top5: bool
    network_top1: bool
    network_top5: bool


@dataclass
class HumanStudyReport:
    """What :func:`human_report` found.

    Attributes:
        participants: per person, then ``"all"`` pooled (last).
        agreement: for ``"top1"`` and ``"top5"``, the answers in each cell ``both_right``, ``only_human``,
            ``only_network``, ``both_wrong`` (each a list of indices into ``cases``).
        network_mistakes_human_right: the network's top-1 mistakes the person got right (top-1), most confident
            first (by the network's probability of its wrong class); ``human_mistakes_network_right`` the reverse,
            by the network's probability of the true class.
        reasons: indices into ``cases`` of the answers that came with a reason.
    """

    model: str
    dataset: str
    cases: list[Case]
    participants: list[ParticipantSummary]
    agreement: dict[str, dict[str, list[int]]]
    network_mistakes_human_right: list[int]
    human_mistakes_network_right: list[int]
    reasons: list[int]
    unknown_files: list[str] = field(default_factory=list)

    @property
    def pooled(self) -> ParticipantSummary:
        return self.participants[-1]


def _summary(name: str, cases: list[Case], seconds: list[float]) -> ParticipantSummary:
    return ParticipantSummary(name, len(cases), sum(c.skipped for c in cases), Accuracy.of([c.human_top1 for c in cases]),
                              Accuracy.of([c.human_top5 for c in cases]), Accuracy.of([c.network_top1 for c in cases]),
                              Accuracy.of([c.network_top5 for c in cases]),
                              float(np.median(seconds)) if seconds else None)


def human_report(model: Model, dataset: str | os.PathLike | Dataset, db_path: str | os.PathLike, *,
                 labels: str | os.PathLike | None = None, participants: Sequence[str] | None = None,
                 batch_size: int = 32) -> HumanStudyReport:
    """Compare people's answers in ``db_path`` with ``model`` on the same photos (Karpathy 2014).

    Both sides are scored on every answer: top-1 (the first guess / the network's best class is the true class) and
    top-5 (the true class is among the person's up-to-five guesses / the network's five best). Skips count as wrong
    for the person. The network runs once per photo that anyone answered. Answers for files no longer in the
    dataset are left out and listed in ``unknown_files``.
    """
    if not Path(db_path).is_file():
        raise UserError(f"no study database at {db_path}: run `convlens human-study DATASET` first")
    ds = load_dataset(dataset, labels=labels)
    truth, _ = resolve_labels(model, ds)
    names = ds.names()
    pos = {n: i for i, n in enumerate(names)}
    store = StudyStore(db_path)
    if participants is not None:
        known = set(store.participants())
        for p in participants:
            if p not in known:
                raise UserError(f"no participant {p!r} in {db_path}; there are: {', '.join(sorted(known)) or 'none'}")
    answers = store.answers(participants)
    unknown = sorted({a.file for a in answers if a.file not in pos or truth[pos[a.file]] < 0})
    answers = [a for a in answers if a.file in pos and truth[pos[a.file]] >= 0]
    if not answers:
        raise UserError(f"no answers in {db_path} for photos of this dataset")
    needed = sorted({pos[a.file] for a in answers})
    top: dict[int, tuple[list[int], list[float], float]] = {}
    for start in range(0, len(needed), batch_size):
        idx = needed[start:start + batch_size]
        x = model.load([ds.files[i] for i in idx])
        with torch.no_grad():
            probs = model(x).float().softmax(-1).cpu()
        pk, ck = probs.topk(min(5, probs.shape[-1]), -1)
        for row, i in enumerate(idx):
            top[i] = (ck[row].tolist(), pk[row].tolist(), float(probs[row, int(truth[i])]))
    cases: list[Case] = []
    for a in answers:
        i = pos[a.file]
        y = int(truth[i])
        net, pr, ptrue = top[i]
        cases.append(Case(a.participant, a.file, y, model.label(y), list(a.guesses),
                          [model.label(g) if 0 <= g < model.num_classes else str(g) for g in a.guesses], a.skipped,
                          a.reason, net, [model.label(c) for c in net], pr, ptrue,
                          bool(a.guesses) and a.guesses[0] == y, y in a.guesses, net[0] == y, y in net))
    people = sorted({c.participant for c in cases}, key=lambda p: [c.participant for c in cases].index(p))
    secs: dict[str, list[float]] = {}
    for a in answers:
        if a.seconds is not None:
            secs.setdefault(a.participant, []).append(a.seconds)
    summaries = [_summary(p, [c for c in cases if c.participant == p], secs.get(p, [])) for p in people]
    summaries.append(_summary("all", cases, [s for v in secs.values() for s in v]))
    agreement: dict[str, dict[str, list[int]]] = {}
    for k in ("top1", "top5"):
        cells: dict[str, list[int]] = {"both_right": [], "only_human": [], "only_network": [], "both_wrong": []}
        for j, c in enumerate(cases):
            h, n = getattr(c, f"human_{k}"), getattr(c, f"network_{k}")
            cells["both_right" if h and n else "only_human" if h else "only_network" if n else "both_wrong"].append(j)
        agreement[k] = cells
    net_wrong = sorted((j for j, c in enumerate(cases) if c.human_top1 and not c.network_top1),
                       key=lambda j: -cases[j].network_probs[0])
    hum_wrong = sorted((j for j, c in enumerate(cases) if not c.human_top1 and c.network_top1),
                       key=lambda j: -cases[j].network_truth_prob)
    reasons = [j for j, c in enumerate(cases) if c.reason.strip()]
    return HumanStudyReport(getattr(model, "name", str(model)), str(ds.root or dataset), cases, summaries, agreement,
                            net_wrong, hum_wrong, reasons, unknown)
