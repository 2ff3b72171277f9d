"""Results on disk: every command writes its pictures and one ``result.json`` beside them."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["write_result", "to_jsonable", "out_dir"]


def to_jsonable(value: Any) -> Any:
    """Turn tensors, arrays, dataclasses and paths into plain JSON values (NaN/inf become ``null``)."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def out_dir(out: str | Path | None, command: str) -> Path:
    """The output folder (default ``convlens-out/<command>/``), created."""
    path = Path(out) if out else Path("convlens-out") / command
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_result(directory: str | Path, command: str, data: dict[str, Any], **meta: Any) -> Path:
    """Write ``result.json``: the command, its parameters (``meta``) and the numbers it found (``data``)."""
    path = Path(directory) / "result.json"
    doc = {"command": command, **to_jsonable(meta), **to_jsonable(data),
           "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__, "python": platform.python_version()}
    path.write_text(json.dumps(doc, indent=2))
    return path
