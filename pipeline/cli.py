"""One kind of user-facing failure, and the wrapper that turns it into one line."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class InputError(Exception):
    """Bad input or configuration: reported as one line, exit status 2, no traceback."""


def stage_entry(main: Callable[[], object]) -> Callable[[], None]:
    """Run a stage's ``main``; an ``InputError`` prints ``error: ...`` and exits 2."""

    @functools.wraps(main)
    def wrapped() -> None:
        try:
            main()
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapped
