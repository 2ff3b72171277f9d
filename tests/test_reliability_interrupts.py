"""Interrupted scans resume to the uninterrupted result: ``embed`` and ``microscope`` on 40 shared photos with a tiny
slowed-down model and 8-image shards, stopped mid-scan by SIGINT or SIGKILL, then re-run on the same cache.

The 300-photo version on the embedded model is ``python benchmarks/interrupt_resume.py --n 300``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import interrupt_resume as ir

SHARD = 8


@pytest.mark.slow
@pytest.mark.parametrize("command,signals", [("embed", ("SIGINT", "SIGKILL")), ("microscope", ("SIGKILL",))])
def test_interrupted_scan_resumes_to_the_uninterrupted_result(command, signals, tmp_path) -> None:
    if len(list(ir.PHOTOS.glob("*.JPEG"))) < 40:
        pytest.skip(f"shared photos not found at {ir.PHOTOS}")
    rows = ir.experiment(40, True, tmp_path, 0.5, commands=(command,), signals=signals)
    for row in rows:
        assert row["interrupted_rc"] == (130 if row["signal"] == "SIGINT" else -9), row
        assert 0 < row["done_at_signal"] < 40, row  # really stopped mid-way
        assert 0 < row["network"] < 40, row  # the re-run kept what was finished ...
        assert row["redone"] <= SHARD, row  # ... losing at most the shard it was in
        if command == "embed":
            assert row["max_feature_diff"] == 0.0 and row["points_equal"], row
            if row["signal"] == "SIGINT":
                assert row["redone"] == 0, row  # Ctrl-C flushes every finished row
        else:
            assert row["ids_counts_equal"] and row["max_value_diff"] == 0.0 and row["summary_equal"], row
