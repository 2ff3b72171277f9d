"""One cache key for everything convlens keeps on disk: what a cached result depends on, never a name.

A cached result (pooled features, the microscope's scan, a compiled network) depends on the network's weights and
architecture, its preprocessing, the layers read, the code that computed it, and whatever the caller adds (the
dataset's fingerprint, the pooling, ``k``). :func:`cache_key` hashes exactly that, so two ``--weights`` files of one
architecture, or two wrapped networks both called "wrapped", never share an entry.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any

import torch
from torch import nn

__all__ = ["CACHE_FORMAT", "cache_key", "model_fingerprint"]

CACHE_FORMAT = 2
"""Bumped when the layout of any cached result changes (part of every key, with the package version)."""

_memo: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def _state(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(module.state_dict(keep_vars=True).items())


def model_fingerprint(model: Any) -> str:
    """A hash of a network's architecture (``repr``) and every weight and buffer, byte for byte.

    ``model`` is a :class:`~convlens.Model` or an ``nn.Module``. Remembered per module until a tensor of it changes
    (in-place updates bump PyTorch's version counters), so asking again is free.
    """
    module = getattr(model, "module", model)
    state = _state(module)
    stamp = tuple((name, t.data_ptr(), t._version) for name, t in state)
    hit = _memo.get(module)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    digest = hashlib.blake2b(repr(module).encode(), digest_size=16)
    for name, t in state:
        digest.update(name.encode())
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        if t.numel():
            digest.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())  # type: ignore[arg-type]
    value = digest.hexdigest()
    _memo[module] = (stamp, value)
    return value


def cache_key(model: Any, *parts: Any, length: int = 24) -> str:
    """The key of a cached result: the code version, :func:`model_fingerprint`, the preprocessing and ``parts``
    (JSON-able: layers, the dataset fingerprint, options). Hex, ``length`` characters."""
    from .. import __version__

    pre = getattr(model, "preprocess", None)
    doc = json.dumps([__version__, CACHE_FORMAT, model_fingerprint(model), repr(pre), *parts], default=str)
    return hashlib.blake2b(doc.encode(), digest_size=32).hexdigest()[:length]
