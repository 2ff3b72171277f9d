"""Faithfulness of saliency maps: deletion and insertion curves (Petsiuk et al., "RISE", 2018).

All curves of all maps of an image are scored in one stream of batched forward passes: the image, the black
image and the blurred image -- the curves' shared end points -- once per image whatever the number of methods,
and every interior step of every curve as one masked copy. Scoring is forward-only, so it runs on the fastest
checked engine (:mod:`convlens.attribute._forward`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.model import Model
from ._common import check_batch
from ._forward import forward_scores
from .occlusion import _filler

__all__ = [
    "Faithfulness",
    "SaliencyEvaluation",
    "deletion_insertion",
    "deletion_insertion_many",
    "evaluate_saliency",
]


@dataclass
class Faithfulness:
    """Deletion / insertion curves ``(N, steps + 1)`` of the target probability, and their areas ``(N,)``.

    ``fractions`` are the shares of pixels removed (deletion) or inserted (insertion) at each point. A faithful
    map makes the probability fall fast under deletion (small area) and rise fast under insertion (large area).
    The areas (trapezoid rule over ``fractions``, in [0, 1]) are computed once, here.
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    engine: str = "torch"
    deletion_auc: torch.Tensor = field(init=False)
    insertion_auc: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.deletion_auc = torch.trapezoid(self.deletion, self.fractions, dim=-1)
        self.insertion_auc = torch.trapezoid(self.insertion, self.fractions, dim=-1)


def _ranks(maps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Rank of every pixel ``(N, H, W)`` in decreasing saliency (0 = most salient), ties broken at random."""
    n, H, W = maps.shape
    out = torch.empty(n, H * W, dtype=torch.int32)
    for i in range(n):
        m = maps[i].detach().flatten().float().cpu()
        noise = torch.rand(H * W, generator=generator) * 1e-6 * (m.abs().max().item() + 1e-12)
        order = torch.argsort(m + noise, descending=True)
        out[i, order] = torch.arange(H * W, dtype=torch.int32)
    return out.view(n, H, W)


def deletion_insertion_many(model: Model, x: torch.Tensor, maps: Mapping[str, torch.Tensor], target: torch.Tensor,
                            *, steps: int = 50, batch_size: int = 64, generator: torch.Generator | None = None,
                            engine: str = "auto", blur: float | None = None) -> dict[str, Faithfulness]:
    """Deletion and insertion curves of several saliency maps of the same images, scored together.

    ``maps`` maps a name to maps ``(N, H, W)`` of the images ``x`` ``(N, 3, H, W)``; ``target`` is one class per
    image. Each map's pixels are taken in decreasing order of saliency (ties broken at random with
    ``generator``, one ranking shared by both curves) in ``steps`` equal groups. Deletion sets them to black,
    starting from the image; insertion copies them from the image into a blurred copy of it (Petsiuk et al.
    2018): a Gaussian of ``blur`` pixels, default the longer side / 28 (8 px at 224) -- the paper's released code
    blurs far less (11 taps over +-5 sigma, about 1.1 px), which leaves the class visible in the canvas and lifts
    every method's insertion area, random included. At each step the softmax probability of ``target`` is recorded. The end points (image, black,
    blurred) are scored once per image for all maps; the ``(N * maps * 2 * (steps - 1))`` interior images run in
    batches of ``batch_size`` on ``engine`` (see :func:`~convlens.attribute._forward.forward_scores`).
    Returns one :class:`Faithfulness` per name.
    """
    x = check_batch(x)
    n, _, H, W = x.shape
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    for name, m in maps.items():
        if m.shape != (n, H, W):
            raise ValueError(f"expected maps of shape {(n, H, W)} for {name!r}, got {tuple(m.shape)}")
    target = torch.as_tensor(target).view(-1).expand(n).cpu()
    names = list(maps)
    total = H * W
    counts = [round(total * k / steps) for k in range(steps + 1)]
    x = x.detach()
    blurred = _filler(x, "blur", blur)
    black = torch.zeros_like(x[:1])
    ranks = {name: _ranks(maps[name], generator).to(x.device) for name in names}
    # jobs: (image, kind, step) with kind in ("x", "black", "blur") for the end points, else (name, curve)
    jobs: list[tuple[int, Any, int]] = []
    for i in range(n):
        jobs += [(i, "x", 0), (i, "black", 0), (i, "blur", 0)]
        for name in names:
            for curve in ("del", "ins"):
                jobs += [(i, (name, curve), k) for k in range(1, steps)]

    def image(job: tuple[int, Any, int]) -> torch.Tensor:
        i, kind, k = job
        if kind == "x":
            return x[i]
        if kind == "black":
            return black[0]
        if kind == "blur":
            return blurred[i]
        name, curve = kind
        chosen = ranks[name][i] < counts[k]
        return torch.where(chosen, black[0], x[i]) if curve == "del" else torch.where(chosen, x[i], blurred[i])

    probs = torch.empty(len(jobs))
    with forward_scores(model, engine=engine, passes=len(jobs), check=x[:2]) as fwd:
        for start in range(0, len(jobs), max(1, batch_size)):
            part = jobs[start:start + batch_size]
            batch = torch.stack([image(j) for j in part])
            p = fwd(batch).float().softmax(-1).cpu()
            idx = torch.tensor([int(target[j[0]]) for j in part])
            probs[start:start + len(part)] = p[torch.arange(len(part)), idx]
        used = fwd.engine
    fractions = torch.tensor(counts, dtype=torch.float32) / total
    out = {name: (torch.empty(n, steps + 1), torch.empty(n, steps + 1)) for name in names}
    ends: dict[tuple[int, str], float] = {}
    for j, (i, kind, k) in enumerate(jobs):
        if isinstance(kind, str):
            ends[(i, kind)] = float(probs[j])
        else:
            name, curve = kind
            out[name][0 if curve == "del" else 1][i, k] = probs[j]
    for name in names:
        dele, ins = out[name]
        for i in range(n):
            dele[i, 0], dele[i, steps] = ends[(i, "x")], ends[(i, "black")]
            ins[i, 0], ins[i, steps] = ends[(i, "blur")], ends[(i, "x")]
    return {name: Faithfulness(fractions, *out[name], engine=used) for name in names}


def deletion_insertion(model: Model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                       steps: int = 50, batch_size: int = 64, generator: torch.Generator | None = None,
                       engine: str = "auto") -> Faithfulness:
    """Deletion and insertion curves of saliency ``maps`` ``(N, H, W)`` (Petsiuk et al. 2018).

    Pixels are taken in decreasing order of saliency (ties broken at random with ``generator``) in ``steps``
    equal groups. Deletion sets them to black, starting from the image; insertion copies them from the image
    into a blurred copy of it. At each step the softmax probability of ``target`` is recorded; the areas under
    the curves (trapezoid rule over the fraction of pixels) lie in [0, 1] and are carried by the result
    (``deletion_auc``, ``insertion_auc``). All step images run batched, on the fastest checked ``engine``.
    """
    return deletion_insertion_many(model, x, {"map": maps}, target, steps=steps, batch_size=batch_size,
                                   generator=generator, engine=engine)["map"]


@dataclass
class SaliencyEvaluation:
    """Faithfulness of several saliency methods over a set of images.

    ``deletion_auc`` / ``insertion_auc`` map each method to its areas per image ``(n_images,)``; ``deletion`` /
    ``insertion`` to the curves ``(n_images, steps + 1)`` over ``fractions``. ``map_seconds`` is each method's
    time to compute its maps per image; ``curve_seconds`` the time per image to score all curves together
    (``engine`` ran them). ``targets`` are the explained classes (the predicted ones).
    """

    files: list[str]
    methods: list[str]
    steps: int
    fractions: torch.Tensor
    targets: torch.Tensor
    deletion: dict[str, torch.Tensor]
    insertion: dict[str, torch.Tensor]
    deletion_auc: dict[str, torch.Tensor]
    insertion_auc: dict[str, torch.Tensor]
    map_seconds: dict[str, float]
    curve_seconds: float
    engine: str

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` of ``evaluate-saliency``: the table, steps, curve time, engine, per-image areas."""
        return {"images": len(self.files), "methods": self.table(), "steps": self.steps,
                "curve_seconds_per_image": self.curve_seconds, "engine": self.engine,
                "per_image": {m: {"deletion_auc": self.deletion_auc[m], "insertion_auc": self.insertion_auc[m]}
                              for m in self.methods}, "files": self.files}

    def table(self) -> dict[str, dict[str, float]]:
        """Per method: mean deletion and insertion AUC and the seconds per image of its maps."""
        return {m: {"deletion_auc": float(self.deletion_auc[m].mean()), "insertion_auc": float(self.insertion_auc[m].mean()),
                    "seconds_per_image": self.map_seconds[m]} for m in self.methods}


def evaluate_saliency(model: Model, images: Sequence[Any], methods: Sequence[str], *, steps: int = 50,
                      options: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int = 64,
                      generator: torch.Generator | None = None, engine: str = "auto", blur: float | None = None,
                      progress: Callable[[Any], Any] | None = None) -> SaliencyEvaluation:
    """Deletion / insertion AUC (Petsiuk et al. 2018) of saliency ``methods`` over ``images`` (paths or PIL
    images), each explaining the model's predicted class.

    ``options`` gives per-method keyword arguments (e.g. ``{"occlusion": {"stride": 16}}``); ``generator``
    drives the random map, SmoothGrad's noise, RISE's masks and the tie-breaking of rankings. All methods' curves
    of an image are scored together (:func:`deletion_insertion_many`, whose ``blur`` is the insertion canvas's
    Gaussian in pixels). ``progress`` wraps the image iterator
    (e.g. ``tqdm``).
    """
    from .methods import RANDOM_METHODS, saliency

    options = options or {}
    methods = list(methods)
    files = list(images)
    if not files:
        raise ValueError("evaluate_saliency needs at least one image")
    it = progress(files) if progress else files
    dele: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    ins: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    aucs: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    secs = {m: 0.0 for m in methods}
    curve_secs = 0.0
    targets, engine_used, fractions = [], "torch", torch.zeros(0)
    for f in it:
        x = model.load(f)
        with torch.no_grad():
            t = model(x).argmax(-1)
        targets.append(int(t[0]))
        maps = {}
        for name in methods:
            opts = dict(options.get(name, {}))
            if name in RANDOM_METHODS and generator is not None:
                opts.setdefault("generator", generator)
            start = time.perf_counter()
            maps[name] = saliency(model, x, name, t, **opts).detach().float()
            secs[name] += time.perf_counter() - start
        start = time.perf_counter()
        res = deletion_insertion_many(model, x, maps, t, steps=steps, batch_size=batch_size, generator=generator,
                                      engine=engine, blur=blur)
        curve_secs += time.perf_counter() - start
        for name, r in res.items():
            dele[name].append(r.deletion[0])
            ins[name].append(r.insertion[0])
            aucs[name].append((float(r.deletion_auc[0]), float(r.insertion_auc[0])))
            engine_used, fractions = r.engine, r.fractions
    n = len(files)
    d = {m: torch.stack(v) for m, v in dele.items()}
    i = {m: torch.stack(v) for m, v in ins.items()}
    return SaliencyEvaluation(
        files=[str(f) for f in files], methods=methods, steps=steps, fractions=fractions,
        targets=torch.tensor(targets), deletion=d, insertion=i,
        deletion_auc={m: torch.tensor([a[0] for a in v]) for m, v in aucs.items()},
        insertion_auc={m: torch.tensor([a[1] for a in v]) for m, v in aucs.items()},
        map_seconds={m: s / n for m, s in secs.items()}, curve_seconds=curve_secs / n, engine=engine_used)
