"""The one exception the CLI turns into a clear line and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "closest"]


class UserError(ValueError):
    """Bad input from the user: a missing file, an unknown model, layer or class, a weights file that does not fit.

    The CLI prints the message alone (no traceback) and exits with status 2; library callers can catch it
    like any ``ValueError``.
    """


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look most like ``name`` (for "did you mean" answers)."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
    if len(found) < n:
        found += [c for c in choices if name and name in c and c not in found][: n - len(found)]
    return found
