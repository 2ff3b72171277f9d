"""Ctrl-C that lands between steps: long loops finish the step they are in, keep it, then stop cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interrupt", "Interrupted", "deferred_interrupt"]


class Interrupt:
    """A flag set by Ctrl-C (SIGINT) while :func:`deferred_interrupt` is active; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` if Ctrl-C was pressed (call it where stopping is safe)."""
        if self.requested:
            raise KeyboardInterrupt


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a long computation, carrying what was finished (``partial``) so the caller can save it."""

    def __init__(self, partial: object, message: str = "interrupted") -> None:
        super().__init__(message)
        self.partial = partial


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Within the block, the first Ctrl-C only sets the returned flag; the loop checks it between steps.

    Outside the main thread (where signal handlers cannot be set) the flag is never set and Ctrl-C behaves
    as usual. The previous handler is restored on exit.
    """
    flag = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        if flag.requested:  # a second Ctrl-C: the user means it
            signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)
            raise KeyboardInterrupt
        flag.requested = True

    try:
        signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
