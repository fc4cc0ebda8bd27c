"""Riley et al. minimum sample size, against the worked example of the pmsampsize documentation.

Example (pmsampsize help page, after Riley et al. BMJ 2020;368:m441):
``pmsampsize(type = "b", rsquared = 0.288, parameters = 24, prevalence = 0.174)`` gives
criteria 1-3 of 623, 662 and 221 participants, a final minimum of 662 (115 events,
EPP 4.8) with shrinkage 0.905. R's pmsampsize is not packaged for this machine, so the
numbers are quoted from that example rather than re-run.
"""


import pytest

from pipeline.samplesize import riley_binary


def test_pmsampsize_worked_example():
    out = riley_binary(0.288, 24, 0.174)
    assert out["criteria"] == {"shrinkage": 623, "optimism_r2": 662, "intercept": 221}
    assert out["minimum_n"] == 662
    assert out["events_per_parameter"] == pytest.approx(4.8, abs=0.005)
    assert out["shrinkage_at_minimum"] == pytest.approx(0.905, abs=0.0005)


def test_shrinkage_at_criterion_one_size_is_the_target():
    assert riley_binary(0.288, 24, 0.174)["criteria"]["shrinkage"] == 623
    from pipeline.samplesize import expected_shrinkage
    assert expected_shrinkage(623, 24, 0.288) == pytest.approx(0.9, abs=2e-4)


def test_criterion_three_by_hand():
    # (1.96 / 0.05)^2 * 0.5 * 0.5 = 384.1 -> 385
    assert riley_binary(0.1, 5, 0.5)["criteria"]["intercept"] == 385


def test_impossible_r2_is_refused():
    with pytest.raises(ValueError, match="Cox-Snell"):
        riley_binary(0.7, 10, 0.174)
