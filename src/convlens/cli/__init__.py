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
from . import basics  # noqa: E402,F401  isort: skip

for _area in ("read", "attribute", "synthesize", "style", "adversarial", "show", "study"):
    try:
        __import__(f"{__name__}.{_area}")
    except ModuleNotFoundError as _exc:  # an area that has no commands yet
        if _exc.name != f"{__name__}.{_area}":
            raise


def run() -> None:
    """Console entry point."""
    try:
        main.main(standalone_mode=False)
    except UserError as exc:
        click.echo(f"convlens: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("convlens: interrupted; what was finished is on disk", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("convlens: interrupted; what was finished is on disk", err=True)
        sys.exit(130)


__all__ = ["main", "run"]
