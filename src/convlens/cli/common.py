"""What every command shares: the group, model / output / seed / device options, loading helpers, and the one
parameter-validation layer.

Numbers are checked where click parses them, once, for every command: options declare one of the types below
(:data:`COUNT` at least 1, :data:`NATURAL` at least 0, :func:`at_least`, :data:`POSITIVE` / :data:`NONNEGATIVE`
/ :data:`FINITE` floats, :data:`FRACTION` for ``8/255``), and the group upgrades any plain float option to
:data:`FINITE`, so ``nan`` and ``inf`` never reach a technique. A bad value is one line and exit status 2.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from ..models import DEFAULT_MODEL, Model, load_model, resolve_device
from ..results import out_dir, write_result
from ..runtime import calm_progress_bars, tune_allocator

__all__ = ["main", "model_options", "Run", "parse_range", "parse_fraction", "COUNT", "NATURAL", "POSITIVE",
           "NONNEGATIVE", "FINITE", "FRACTION", "POSITIVE_FRACTION", "at_least", "FiniteFloat", "Fraction", "CheckedGroup"]


def _read_number(text: str) -> float:
    """``"8/255"`` or ``"0.03"`` -> a float (ValueError / ZeroDivisionError when it is neither)."""
    if "/" in text:
        a, b = text.split("/", 1)
        return float(a) / float(b)
    return float(text)


class FiniteFloat(click.ParamType):
    """A float that is finite (``nan`` and ``inf`` refused), optionally within ``[min, max]``."""

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, *, min_open: bool = False) -> None:
        self.min, self.max, self.min_open = min, max, min_open

    def _range(self) -> str:
        low = "" if self.min is None else f"{'>' if self.min_open else '>='}{self.min:g}"
        high = "" if self.max is None else f"<={self.max:g}"
        return " and ".join(p for p in (low, high) if p)

    def check(self, v: float, value: Any, param: Any, ctx: Any) -> float:
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low_bad = self.min is not None and (v <= self.min if self.min_open else v < self.min)
        if low_bad or (self.max is not None and v > self.max):
            self.fail(f"{value!r} is not in the range {self._range()}", param, ctx)
        return v

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        return self.check(v, value, param, ctx)

    def __repr__(self) -> str:
        return f"FiniteFloat({self._range() or 'any'})"


class Fraction(FiniteFloat):
    """A finite number written as a decimal (``0.03``) or a fraction (``8/255``)."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return self.check(float(value), value, param, ctx)
        try:
            v = _read_number(str(value))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number such as 8/255 or 0.03", param, ctx)
        return self.check(v, value, param, ctx)


def at_least(n: int) -> click.IntRange:
    """An integer option that must be ``>= n``."""
    return click.IntRange(min=n)


COUNT = click.IntRange(min=1)          # how many of something: steps, samples, images, pixels of a side
NATURAL = click.IntRange(min=0)        # an index or a count where 0 means "none"
FINITE = FiniteFloat()                 # any finite float
POSITIVE = FiniteFloat(0.0, min_open=True)
NONNEGATIVE = FiniteFloat(0.0)
FRACTION = Fraction(0.0)               # 8/255 or 0.03, at least 0
POSITIVE_FRACTION = Fraction(0.0, min_open=True)  # eps, step sizes: 8/255 or 0.03, above 0


def _checked(cmd: click.Command) -> click.Command:
    """Give every plain float option of ``cmd`` (and its sub-commands) the finite check."""
    for p in cmd.params:
        if p.type is click.FLOAT or type(p.type) is click.types.FloatParamType:
            p.type = FINITE
    for sub in getattr(cmd, "commands", {}).values():
        _checked(sub)
    return cmd


class CheckedGroup(click.Group):
    """The command group: every command added to it gets its float options checked for ``nan`` / ``inf``."""

    group_class = type  # sub-groups are CheckedGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(_checked(cmd), name)


def _image_limit(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        from ..images import set_max_image_pixels

        set_max_image_pixels(value)
    return value


@click.group(cls=CheckedGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="convlens")
@click.option("--max-image-pixels", type=NATURAL, default=None, callback=_image_limit, expose_value=False,
              is_eager=True, help="Largest image (width x height) any command decodes [default: 89478485, "
                                  "Pillow's decompression-bomb limit]; 0: no limit.")
def main() -> None:
    """convlens: see what a convolutional network has learned and why it decides what it decides."""
    tune_allocator()
    calm_progress_bars()


class Run:
    """One command invocation: its model, output folder, seed, timer and the ``result.json`` it writes."""

    def __init__(self, command: str, *, model: str, weights: str | None, device: str, out: str | None,
                 seed: int, params: dict[str, Any]) -> None:
        self.command = command
        self.model_spec = model
        self.weights = weights
        self.device = resolve_device(device)
        self.out = out_dir(out, command)
        self.seed = seed
        self.params = params
        self.started = time.perf_counter()
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = load_model(self.model_spec, weights=self.weights, device=self.device)
        return self._model

    def generator(self) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed)

    def save(self, data: dict[str, Any], **extra: Any) -> Path:
        path = write_result(self.out, self.command, data, model=self.model_spec, weights=self.weights,
                            seed=self.seed, device=str(self.device), parameters=self.params,
                            seconds=round(time.perf_counter() - self.started, 3), **extra)
        click.echo(f"wrote {self.out}/ (result.json)", err=True)
        return path


def model_options(command: str, *, model_arg: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--model --weights --device --out --seed`` and hand the function a :class:`Run` as ``run``."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*, model: str, weights: str | None, device: str, out: str | None, seed: int,
                    **kwargs: Any) -> Any:
            torch.manual_seed(seed)
            run = Run(command, model=model, weights=weights, device=device, out=out, seed=seed, params=kwargs)
            return fn(run=run, **kwargs)

        opts = [
            click.option("--weights", type=click.Path(dir_okay=False), default=None,
                         help="Local state dict for the model's architecture (works offline)."),
            click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu) | cpu | cuda | mps."),
            click.option("--out", type=click.Path(file_okay=False), default=None,
                         help=f"Output folder [default: convlens-out/{command}/]."),
            click.option("--seed", type=NATURAL, default=0, show_default=True, help="Random seed."),
        ]
        if model_arg:
            opts.append(click.argument("model", default=DEFAULT_MODEL, required=False))
        else:
            opts.append(click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                                     help="efficientnet_lite0|1|2, torchvision:NAME, timm:NAME or a TorchScript file."))
        for opt in opts:
            wrapper = opt(wrapper)
        return wrapper
    return deco


def parse_range(text: str, limit: int | None = None) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``; checked against ``limit`` (exclusive) when given."""
    from ..errors import UserError

    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise UserError(f"cannot read {text!r} as a list of indices such as 0-3,7") from None
    if limit is not None:
        bad = [i for i in out if not 0 <= i < limit]
        if bad:
            raise UserError(f"index {bad[0]} out of range: valid are 0-{limit - 1}")
    return out


def parse_fraction(text: str | float) -> float:
    """``"8/255"`` or ``"0.03"`` (or a number already parsed by :data:`FRACTION`) -> a finite float >= 0."""
    from ..errors import UserError

    if isinstance(text, (int, float)):
        v = float(text)
    else:
        try:
            v = _read_number(text)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"cannot read {text!r} as a number such as 8/255 or 0.03") from None
    if not math.isfinite(v) or v < 0:
        raise UserError(f"{text!r} must be a finite number >= 0")
    return v


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--cluster [ADDRESS] --workers N --gpus-per-worker G``: the command's scans (and the microscope's feature
    visualisations) then run on Ray actors (:mod:`convlens.read.distributed`). Put it under :func:`model_options`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, cluster: str | None, workers: int | None, gpus_per_worker: float | None,
                **kwargs: Any) -> Any:
        from ..errors import UserError

        if cluster is None:
            if workers is not None or gpus_per_worker is not None:
                raise UserError("--workers and --gpus-per-worker go with --cluster [ADDRESS]")
            return fn(*args, **kwargs)
        from ..read.distributed import Cluster, on_cluster, require_ray

        require_ray()  # before the model is loaded: one line saying what to install
        spec = Cluster(None if cluster == "local" else cluster, workers=workers,
                       gpus_per_worker=gpus_per_worker or 0.0)
        with on_cluster(spec):
            return fn(*args, **kwargs)

    opts = [
        click.option("--gpus-per-worker", type=NONNEGATIVE, default=None,
                     help="GPUs each Ray worker reserves (its model runs on CUDA) [default: 0]."),
        click.option("--workers", type=COUNT, default=None,
                     help="Ray workers, one model each [default: one per CPU of the cluster]."),
        click.option("--cluster", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Run the scan on Ray: alone, a runtime on this machine; 'auto' or host:port joins a "
                          "running cluster (pip install 'convlens[ray]'). Give it after DATASET or as --cluster=ADDR."),
    ]
    for opt in opts:
        wrapper = opt(wrapper)
    return wrapper
