"""pipeline.concordance: Harrell's C counted with a Fenwick tree, lifelines' number to the bit."""

import numpy as np
import pytest
from lifelines.utils import concordance_index as lifelines_concordance_index

from pipeline.concordance import concordance_counts, concordance_index


def test_hand_worked_pairs():
    # rows (time, event, score): A (1, 1, 1), B (2, 0, 3), C (3, 1, 2), D (3, 0, 2)
    # admissible: A-B, A-C, A-D (A's event first: scores 1 < 3, 1 < 2, 1 < 2: correct);
    # C-D (same time, C the event, D censored: scores 2 = 2, tied); B is censored: never first.
    # C = (3 + 1/2) / 4 = 0.875
    time, event, score = [1, 2, 3, 3], [1, 0, 1, 0], [1, 3, 2, 2]
    assert concordance_counts(time, score, event) == (3, 1, 4)
    assert concordance_index(time, score, event) == 0.875


def test_two_events_at_one_time_are_not_a_pair():
    # (1, 1, 5), (1, 1, 6): tied times, both events: not admissible; no pairs at all
    assert concordance_counts([1, 1], [5, 6], [1, 1]) == (0, 0, 0)
    with pytest.raises(ZeroDivisionError):
        concordance_index([1, 1], [5, 6], [1, 1])


def test_equals_lifelines_to_the_bit_on_random_tables():
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(2, 150))
        time = rng.integers(0, int(rng.integers(1, 25)), n).astype(float)
        score = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n)
        event = rng.random(n) < rng.random()
        if concordance_counts(time, score, event)[2] == 0:
            continue
        assert concordance_index(time, score, event) == lifelines_concordance_index(time, score, event)
