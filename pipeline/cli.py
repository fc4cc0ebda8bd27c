"""One kind of user-facing failure, and the wrapper that turns it into one line (and runs
each stage with one BLAS thread)."""

from __future__ import annotations

import functools
import sys
from typing import Callable

from threadpoolctl import threadpool_limits


class InputError(Exception):
    """Bad input or configuration: reported as one line, exit status 2, no traceback."""


def stage_entry(main: Callable[[], object]) -> Callable[[], None]:
    """Run a stage's ``main``; an ``InputError`` prints ``error: ...`` and exits 2.

    With one BLAS / OpenMP thread: the stages' products are thin (a million rows by ~20
    columns), and on 2 shared cores a second thread costs far more than it gives (measured
    at 1M children, load ~3: the logistic fit 0.8 s with one thread, 3.5-6.3 s with two; the
    survival stage 67 s against 97 s). Parallel work goes to worker processes instead."""

    @functools.wraps(main)
    def wrapped() -> None:
        try:
            with threadpool_limits(limits=1):
                main()
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapped
