"""Checkpoints of a sharded scan: every reduced shard on disk, so an interrupted scan resumes with nothing lost and
nothing counted twice.

A sharded scan (:func:`convlens.read.scan.scan` with a ``checkpoint`` folder, or on a Ray cluster) cuts the dataset
into fixed shards of consecutive images. Each shard is reduced by fresh copies of the reducers; the driver writes
the shard's partial reducers to ``part-<shard>.pkl`` (through a temporary file, flushed and renamed, so a part on
disk is always complete) and merges them into the result. A re-run with the same model, dataset, reducers and
shard size finds the parts, merges them instead of reading those images again, and reads only the shards that
have no part. A shard is merged once: from its part, or from its reduction, never both. A killed process
(SIGKILL included) loses at most the shards it was reducing. The folder is removed once the scan has finished.

The parts are pickles written by this process for itself; do not point ``checkpoint`` at a folder others write.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError

__all__ = ["ScanCheckpoint", "model_key", "reducer_config", "scan_key"]

_VERSION = 1


def model_key(model: Any) -> str:
    """A hash of what a network computes: its architecture, weights and preprocessing (not its name)."""
    h = hashlib.blake2b(digest_size=16)
    module = getattr(model, "module", model)
    h.update(repr((type(module).__qualname__, repr(module), repr(getattr(model, "preprocess", None)))).encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        if t.numel():
            h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def reducer_config(reducer: Any) -> str:
    """A reducer's kind and settings (its public attributes), which a checkpoint of its partial state depends on."""
    public = {k: v for k, v in sorted(vars(reducer).items()) if not k.startswith("_")}
    return f"{type(reducer).__module__}.{type(reducer).__qualname__}{public!r}"


def scan_key(model: Any, dataset: Any, reducers: dict[str, Any], shard_size: int) -> str:
    """What a scan's parts depend on: model, dataset (files and ids), every reducer's settings and the shard size."""
    h = hashlib.sha1(json.dumps([_VERSION, model_key(model), dataset.fingerprint(), len(dataset),
                                 hashlib.sha1(np.asarray(dataset.ids, np.int64).tobytes()).hexdigest(),
                                 {k: reducer_config(r) for k, r in sorted(reducers.items())}, shard_size]).encode())
    return h.hexdigest()[:20]


class ScanCheckpoint:
    """The parts of one scan in ``folder/<key>/``: ``save(shard, payload)``, ``done()``, ``load(shard)``, ``remove()``."""

    def __init__(self, folder: str | Path, key: str) -> None:
        self.path = Path(folder).expanduser() / key
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the scan checkpoint folder {self.path}: {exc.strerror or exc}") from None

    def _part(self, shard: int) -> Path:
        return self.path / f"part-{shard:07d}.pkl"

    def done(self) -> list[int]:
        """Shards with a complete part on disk, in order."""
        out = []
        for p in self.path.glob("part-*.pkl"):
            try:
                out.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def save(self, shard: int, payload: dict[str, Any]) -> None:
        """Write one shard's partial result atomically (a temporary file, flushed to disk, then renamed)."""
        tmp = self.path / f".part-{shard:07d}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._part(shard))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write the scan checkpoint in {self.path}: {exc.strerror or exc}") from None

    def load(self, shard: int) -> dict[str, Any] | None:
        """One shard's partial result, or ``None`` when its part is missing or damaged (the shard is read again)."""
        try:
            with open(self._part(shard), "rb") as f:
                payload = pickle.load(f)
        except Exception:  # noqa: BLE001 - a damaged part only costs a re-read of its shard
            return None
        return payload if isinstance(payload, dict) and "reducers" in payload else None

    def remove(self) -> None:
        """Delete the parts (the scan finished: its result is in memory and in the reducers' own caches)."""
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.path.parent.rmdir()  # the parent too when no other scan keeps parts there
        except OSError:
            pass
