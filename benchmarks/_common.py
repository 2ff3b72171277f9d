"""What the benchmark scripts share: where the shared photos are, the model as the plain ``nn.Module`` the peers
take, and a median timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import convlens

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


class PixelNet(nn.Module):
    """A convlens model as an ``nn.Module`` on [0, 1] pixels (what torchattacks, ART and pytorch-grad-cam take)."""

    def __init__(self, model: convlens.Model) -> None:
        super().__init__()
        self.model = model
        self.net = model.module  # registered, so the peers find its layers and parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
