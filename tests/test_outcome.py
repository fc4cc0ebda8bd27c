"""The outcome at a horizon: one definition of observed risk with competing ends."""

import numpy as np
import pandas as pd

from pipeline.nonparametric import aalen_johansen, step_read
from pipeline.outcome import binary_outcome, censoring_survival_before


def _rows():
    # time, what ended follow-up; H = 4.5
    return pd.DataFrame({"time_days": [1.0, 2, 2, 3, 4, 5],
                         "event_type": ["re_referral", "extract_date", "re_referral", "entered_care", "extract_date",
                                        "re_referral"]}).assign(event=lambda d: (d["event_type"] == "re_referral") * 1)


def test_ipcw_share_equals_aalen_johansen_by_hand():
    """Aalen-Johansen by hand: t=1: n 6, 1 event: S 5/6, F 1/6; t=2: n 5 (the row censored at
    2 leaves after the event), 1 event: F += 5/6 * 1/5 -> 1/3, S 4/6; t=3: n 3, a competing
    end: F stays 1/3. So F(4.5) = 1/3.
    Censoring KM, events first at ties: at 2 the risk set is #{T > 2} + 1 = 4: G(2) = 3/4;
    at 4 it is #{T > 4} + 1 = 2: G(4) = 3/8. Weights: events at 1 and 2: 1/G(t-) = 1;
    competing end at 3: 4/3; the row followed past H: 1/G(4.5-) = 8/3; rows censored
    before H: 0. Weighted share re-referred = (1 + 1) / 6 = 1/3, weights sum to 6 = n.
    (The risk set that keeps the failures at u, #{T >= u}, gives G(2) = 4/5 and weights
    summing to 5.75: not Aalen-Johansen.)"""
    rows = _rows()
    known, _ = binary_outcome(rows, 4.5, "ipcw")
    np.testing.assert_allclose(known["weight"].to_numpy(), [1, 1, 4 / 3, 8 / 3], rtol=1e-15)
    assert known["y"].tolist() == [1, 1, 0, 0]
    assert (known["y"] * known["weight"]).sum() / len(rows) == 1 / 3
    g = censoring_survival_before(np.array([2.0, 2.5, 4.0, 4.5]), rows["time_days"].to_numpy(),
                                  (rows["event_type"] == "extract_date").to_numpy())
    np.testing.assert_allclose(g, [1, 3 / 4, 3 / 4, 3 / 8])


def test_ipcw_share_equals_aalen_johansen_with_many_ties():
    rng = np.random.default_rng(1)
    n = 3000
    t, c, comp = (np.ceil(rng.exponential(400, n)), np.ceil(rng.uniform(0, 900, n)),
                  np.ceil(rng.exponential(1500, n)))
    time = np.minimum.reduce([t, c, comp])
    kind = np.where(time == t, "re_referral", np.where(time == comp, "entered_care", "extract_date"))
    df = pd.DataFrame({"time_days": time, "event": (kind == "re_referral") * 1, "event_type": kind})
    code = np.where(kind == "re_referral", 1, np.where(kind == "entered_care", 2, 0))
    aj = aalen_johansen(time, code, 1)
    for horizon in (30, 182.625, 365, 365.25, 730.5):
        known, _ = binary_outcome(df, horizon, "ipcw")
        share = (known["y"] * known["weight"]).sum() / n
        np.testing.assert_allclose(share, step_read(aj["time"], aj["cif"], horizon, 0.0)[0], rtol=1e-12)
        np.testing.assert_allclose(known["weight"].sum(), n, rtol=1e-12)


def test_report_reconciles_the_within_a_year_figures():
    """Each figure the stages give is listed with its definition; a figure a route lacks is left out."""
    from pipeline.report import outcome_figures
    from pipeline.settings import Labels

    table = outcome_figures({"dfe_rereferral_within_12_months": {"share": 0.2264}},
                            {"cumulative_rereport": {"12_months": 0.3001}, "cumulative_incidence": {"12_months": 0.2926}},
                            {"horizon_days": 365, "at_default_rule": {"events_per_1000": 255, "events_per_1000_lower": 241,
                                                                      "events_per_1000_upper": 266}},
                            {"cox": {"12_months": {"mean_observed": 0.264}}}, Labels())
    assert table["value"].tolist() == ["22.6%", "30.0%", "29.3%", "26.4%", "25.5% (95% CI 24.1%-26.6%)"]
    assert "censored" in table["what it counts"].iloc[1] and "not re-referred" in table["what it counts"].iloc[2]
    prepared = outcome_figures({}, {"cumulative_rereport": {"12_months": 0.3}}, {}, {}, Labels())
    assert prepared["figure"].tolist() == ["1 - Kaplan-Meier at 12 months (all index episodes)"]
