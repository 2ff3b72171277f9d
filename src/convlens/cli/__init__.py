"""The ``convlens`` command: one thin sub-command per technique (parse, call the library, render, save).

Each area of the toolkit adds its commands in its own module (``cli/read.py``, ``cli/attribute.py``, ...);
this module holds the group, the options every command shares and the error handling: a
:class:`~convlens.errors.UserError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import click

from ..errors import UserError
from .common import main

# importing the area modules registers their commands on ``main``
from . import basics  # noqa: F401  isort: skip

for _area in ("read", "attribute", "synthesize", "style", "adversarial", "show", "correspond", "study"):
    try:
        __import__(f"{__name__}.{_area}")
    except ModuleNotFoundError as _exc:  # an area that has no commands yet
        if _exc.name != f"{__name__}.{_area}":
            raise


def _one_line(exc: click.ClickException) -> str:
    """A click error as one line: ``convlens: error: COMMAND: message``."""
    ctx, names = getattr(exc, "ctx", None), list[str]()
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    where = f"{' '.join(names)}: " if names else ""
    text = " ".join(exc.format_message().split())
    return f"convlens: error: {where}{text}"


def _interrupted() -> str:
    """The Ctrl-C line: which finished files are on disk, or that nothing was written."""
    from ..results import written

    folders = written()
    if not folders:
        return "convlens: interrupted before anything was finished; nothing was written"
    return (f"convlens: interrupted; {sum(folders.values())} finished file(s) are on disk in "
            f"{', '.join(sorted(map(str, folders)))}")


def run(args: list[str] | None = None) -> None:
    """Console entry point (``args`` default to ``sys.argv[1:]``); always ends with ``sys.exit``."""
    try:
        main.main(args=args, standalone_mode=False)
    except UserError as exc:
        click.echo(f"convlens: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo(_interrupted(), err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(_one_line(exc), err=True)
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except KeyboardInterrupt:
        click.echo(_interrupted(), err=True)
        sys.exit(130)
    sys.exit(0)


__all__ = ["main", "run"]
