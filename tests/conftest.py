"""Shared fixtures: tiny random CNNs for unit tests, the embedded model for behaviour, the shared photos."""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

import convlens

# pytest -n 2 runs two worker processes on a 2-core machine: one intra-op thread each, or they fight for the cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
# compiled networks (convlens.core.engine) are cached here, not in the user's ~/.cache
os.environ["CONVLENS_CACHE"] = tempfile.mkdtemp(prefix="convlens-test-cache-")
atexit.register(shutil.rmtree, os.environ["CONVLENS_CACHE"], ignore_errors=True)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE = SHARED / "imagenet-sample"


class TinyCNN(nn.Module):
    """A small conv net with the awkward parts: in-place ReLU, ReLU6, a reused ReLU, a functional relu."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.shared = nn.ReLU()
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        y = self.shared(self.conv3(x))
        x = self.shared(self.conv4(y) + x)  # the same ReLU module used twice
        x = torch.nn.functional.relu(x - 0.1)  # a functional activation
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def tiny_module() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny(tiny_module: nn.Module) -> convlens.Model:
    return convlens.Model.wrap(tiny_module, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=32,
                               labels=[f"class{i}" for i in range(5)], name="tiny")


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning threads make tiny nets up to 25x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def lite0() -> convlens.Model:
    """The embedded pretrained EfficientNet-Lite0 (loaded once per test process)."""
    return convlens.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"shared photos not found at {SAMPLE} (../shared beside the checkout)")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_labels(sample_dir: Path) -> dict[str, int]:
    with open(sample_dir / "LABELS.csv") as f:
        return {row["file"]: int(row["class_index"]) for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def chelsea():
    return convlens.demo_images(["chelsea"])["chelsea"]
