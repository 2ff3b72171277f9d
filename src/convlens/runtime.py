"""Process-level settings that make CPU inference fast: a non-churning allocator and the thread count.

glibc's default malloc hands big activation buffers back to the kernel after every batch and page faults then
eat up to half the time of a CNN forward pass on CPU. :func:`tune_allocator` raises the mmap and trim
thresholds (the same effect as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``) so freed buffers are
reused. The CLI calls it once at start-up; library users call it themselves if they want it -- nothing here runs
at import.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

__all__ = ["tune_allocator", "private_rng", "calm_progress_bars"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Keep freed activation buffers in the process (glibc only). Returns ``True`` if the setting took effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap_threshold, 2**31 - 1)))
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1)))
    except (OSError, AttributeError):
        return False
    _done = bool(ok)
    return _done


def calm_progress_bars(interval: float = 5.0) -> bool:
    """When standard error is not a terminal (a log file, CI), progress bars redraw at most every ``interval``
    seconds instead of ten times a second, so a log gets a readable line now and then, not thousands of carriage
    returns. A bar that asks for its own ``mininterval`` keeps it, and tqdm's own ``TQDM_MININTERVAL``
    environment variable wins over this. Returns ``True`` if the setting took effect."""
    import os

    if sys.stderr is None or sys.stderr.isatty() or "TQDM_MININTERVAL" in os.environ:
        return False
    from functools import partialmethod

    from tqdm import std

    if not getattr(std.tqdm, "_convlens_calm", False):
        std.tqdm.__init__ = partialmethod(std.tqdm.__init__, mininterval=interval)  # type: ignore[method-assign]
        std.tqdm._convlens_calm = True  # type: ignore[attr-defined]
    return True


@contextlib.contextmanager
def private_rng(seed: int) -> Iterator[None]:
    """Run code that draws from torch's global generator (weight init, ``svd_lowrank``) on a private copy seeded
    with ``seed``: the caller's CPU (and, once initialised, CUDA) RNG state is restored on exit, so a library call
    never changes what the caller's next random draw is."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
