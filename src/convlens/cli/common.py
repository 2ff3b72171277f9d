"""What every command shares: the group, model / output / seed / device options, and loading helpers."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from ..models import DEFAULT_MODEL, Model, load_model, resolve_device
from ..results import out_dir, write_result
from ..runtime import tune_allocator

__all__ = ["main", "model_options", "Run", "parse_range", "parse_fraction"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="convlens")
def main() -> None:
    """convlens: see what a convolutional network has learned and why it decides what it decides."""
    tune_allocator()


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
            click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda | mps."),
            click.option("--out", type=click.Path(file_okay=False), default=None,
                         help=f"Output folder [default: convlens-out/{command}/]."),
            click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
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


def parse_fraction(text: str) -> float:
    """``"8/255"`` or ``"0.03"`` -> a float."""
    from ..errors import UserError

    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"cannot read {text!r} as a number such as 8/255 or 0.03") from None


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
        click.option("--gpus-per-worker", type=float, default=None,
                     help="GPUs each Ray worker reserves (its model runs on CUDA) [default: 0]."),
        click.option("--workers", type=int, default=None,
                     help="Ray workers, one model each [default: one per CPU of the cluster]."),
        click.option("--cluster", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Run the scan on Ray: alone, a runtime on this machine; 'auto' or host:port joins a "
                          "running cluster (pip install 'convlens[ray]'). Give it after DATASET or as --cluster=ADDR."),
    ]
    for opt in opts:
        wrapper = opt(wrapper)
    return wrapper
