"""Warnings raised while fitting a stage's models, kept for its metrics and report.

A model that did not converge, or whose coefficient may be infinite, still gives a table of
estimates; the warning is what says not to read them. ``FitWarnings.fitting(model)`` records
the warnings of the given categories raised inside it as ``{"model", "message"}`` (each
distinct pair once, in the order raised) and passes every other warning on unchanged, so
nothing is hidden and nothing unrelated (a library's deprecation notice) reaches the metrics.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


class FitWarnings:
    """Warnings of ``categories`` raised while fitting, per model (``records``)."""

    def __init__(self, categories: tuple[type[Warning], ...]):
        self.categories = categories
        self.records: list[dict[str, str]] = []

    @contextmanager
    def fitting(self, model: str) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            for category in self.categories:   # every occurrence, not once per code location
                warnings.simplefilter("always", category)
            yield
        for w in caught:
            if issubclass(w.category, self.categories):
                record = {"model": model, "message": str(w.message)}
                if record not in self.records:
                    self.records.append(record)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
