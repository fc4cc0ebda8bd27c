"""Error rates: recounts, Wilson intervals, natural frequencies, net benefit, disclosure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import errors
from pipeline.disclosure import scan


def _predictions(n: int = 4000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-1.2, 1, n)))
    return pd.DataFrame({"p": p, "y": (rng.random(n) < p).astype(int), "weight": 1.0,
                         "family": np.arange(n) // 2,
                         "sex": rng.choice(["F", "M"], n), "ethnicity": rng.choice(["A", "B", "D", "C"], n, p=[.7, .2, .095, .005])})


def test_counts_equal_a_direct_recount():
    pred = _predictions()
    table = errors.rules_table(pred["p"].to_numpy(), pred["y"].to_numpy(), [0.2, 0.5], [10], min_count=10)
    p, y = pred["p"], pred["y"] == 1
    for t in (0.2, 0.5):
        row = table[table["rule"] == f"risk >= {t:g}"].iloc[0]
        assert row["tp"] == ((p >= t) & y).sum() and row["fp"] == ((p >= t) & ~y).sum()
        assert row["fn"] == ((p < t) & y).sum() and row["tn"] == ((p < t) & ~y).sum()
        assert row["sensitivity"] == pytest.approx(row["tp"] / (row["tp"] + row["fn"]))
        assert row["ppv"] == pytest.approx(row["tp"] / (row["tp"] + row["fp"]))
    top = table[table["rule"] == "top 10%"].iloc[0]
    assert top["flagged"] == 400 and top["tp"] == y[p.rank(ascending=False, method="first") <= 400].sum()


def test_per_thousand_adds_up_to_1000():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cells = dict(zip(errors.CELLS, rng.integers(0, 5000, 4)))
        if sum(cells.values()) == 0:
            continue
        f = errors.per_thousand(cells)
        assert sum(f[c] for c in errors.CELLS) == 1000
        assert f["flagged"] == f["tp"] + f["fp"] and f["events"] == f["tp"] + f["fn"]
        for c in errors.CELLS:   # largest remainders: each within 1 of the exact share
            assert abs(f[c] - 1000 * cells[c] / sum(cells.values())) < 1


def test_wilson_interval_by_hand():
    """Wilson (1927): for 0 of 10 the interval is [0, z^2 / (n + z^2)] = [0, 0.27753];
    for 5 of 10, 0.5 +- (z / (1 + z^2/n)) sqrt(0.25/n + z^2/(4 n^2)) = [0.23659, 0.76341]."""
    y = np.array([1] * 5 + [0] * 5 + [0] * 10)
    flagged = np.array([True] * 10 + [False] * 10)        # 5 of 10 flagged are events; 0 of 10 unflagged
    out = errors.confusion(y, flagged)
    assert out["ppv_lower"] == pytest.approx(0.236593, abs=1e-6) and out["ppv_upper"] == pytest.approx(0.763407, abs=1e-6)
    assert out["npv"] == 1 and out["false_negative_rate"] == 0
    assert out["sensitivity_upper"] == 1 and out["sensitivity_lower"] == pytest.approx(1 - 0.434482, abs=1e-6)


def test_net_benefit_by_hand():
    """10 referrals, 4 re-referred; at t = 0.25 the model flags 5, 3 of them re-referred:
    NB = 3/10 - 2/10 * (0.25/0.75) = 0.23333; flag all: 4/10 - 6/10 * (1/3) = 0.2."""
    p = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1, 0.1, 0.05, 0.6])
    y = np.array([1, 1, 0, 1, 0, 0, 0, 1, 0, 0])
    # flagged at 0.25: 0.9 (1), 0.8 (1), 0.7 (0), 0.4 (1), 0.3 (0), 0.6 (0) -> TP 3, FP 3
    curve = errors.decision_curve(p, y, np.array([0.25]))
    assert curve["net_benefit_model"].iloc[0] == pytest.approx(3 / 10 - 3 / 10 * (0.25 / 0.75))
    assert curve["net_benefit_flag_all"].iloc[0] == pytest.approx(0.4 - 0.6 / 3)
    assert curve["net_benefit_flag_none"].iloc[0] == 0


def test_small_groups_are_withheld_and_the_scan_agrees(tmp_path):
    """A crafted extract with a group of 20 (ethnicity C): its cells, rates and differences
    are withheld, and the next smallest group's (D) with them, so that C is not the total
    minus the others; the written tables pass the disclosure scan, and a planted small
    count and a planted identifier are both caught."""
    pred = _predictions()
    flags = errors.top_percent_flags(pred["p"].to_numpy(), 20)
    groups = errors.group_rates(pred, flags, min_count=10, replicates=20, seed=1)
    c = groups[(groups["variable"] == "ethnicity") & (groups["level"] == "C")].iloc[0]
    assert np.isnan(c["tp"]) and np.isnan(c["sensitivity"]) and np.isnan(c.get("sensitivity_difference", np.nan))
    d = groups[(groups["variable"] == "ethnicity") & (groups["level"] == "D")].iloc[0]
    assert np.isnan(d["tp"]) and np.isnan(d["sensitivity_difference"]) and not np.isnan(d["n"])
    b = groups[(groups["variable"] == "ethnicity") & (groups["level"] == "B")].iloc[0]
    assert not np.isnan(b["sensitivity_difference"]) and b["reference_level"] == "A"
    assert b["sensitivity_difference_lower"] <= b["sensitivity_difference"] <= b["sensitivity_difference_upper"]
    out = tmp_path / "reports"
    out.mkdir()
    groups.to_csv(out / "by_group.csv", index=False)
    assert scan([out], 10, {"C0001234"}) == []
    pd.DataFrame({"level": ["x"], "n": [7]}).to_csv(out / "planted.csv", index=False)
    (out / "planted.md").write_text("child C0001234 was flagged\n")
    problems = scan([out], 10, {"C0001234"})
    assert any("planted.csv: column n" in p for p in problems) and any("planted.md: identifier" in p for p in problems)


def test_ipcw_cells_are_withheld_by_the_rows_behind_them():
    y = np.array([1] * 8 + [0] * 30)
    flagged = np.array([True] * 8 + [True] * 15 + [False] * 15)
    weight = np.full(len(y), 2.0)                # 8 rows weigh 16: still a small cell
    row = errors.withhold_small(errors.confusion(y, flagged, weight), 10)
    assert np.isnan(row["tp"]) and np.isnan(row["sensitivity"]) and "tp_rows" not in row


def test_headline_statement():
    row = {"events_per_1000": 220, "flagged_per_1000": 200, "tp_per_1000": 90, "fp_per_1000": 110,
           "fn_per_1000": 130, "tn_per_1000": 670}
    text = errors.headline(row, 365, "the top 20%")
    assert text == ("Of 1,000 referrals, 220 are re-referred within a year. Flagging the top 20% flags 200: "
                    "90 of them are re-referred and 110 are not; 130 re-referred children are not flagged.")


def test_a_small_extract_is_withheld_throughout():
    """40 validation referrals from 20 families, threshold 10: every rule's table has a
    small cell, so nothing but the margins >= 10 is published, and the headline says so."""
    pred = _predictions(40, seed=5)
    s = {"thresholds": [0.2, 0.5], "top_percents": [10, 20], "default_top_percent": 20, "bootstrap_replicates": 10,
         "decision_curve": {"from": 0.1, "to": 0.3, "step": 0.1}, "survival_horizon_months": 12}
    tables, metrics = errors.run(pred, None, s, 365, min_count=10, seed=1)
    rules = tables["rules"]
    small = rules[["tp", "fp", "fn", "tn"]].min(axis=1) < 10
    assert rules.loc[small | rules["tp"].isna(), ["tp", "fp", "fn", "tn", "sensitivity", "ppv", "tp_per_1000"]].isna().all().all()
    assert "below the disclosure threshold" in metrics["statement"]
    assert all(v is None for k, v in metrics["at_default_rule"].items() if k != "threshold")
    assert tables["by_group"][["tp", "fp", "fn", "tn"]].isna().all().all()


def test_a_single_withheld_level_takes_the_next_smallest_with_it():
    """Secondary suppression: with LA totals published, one withheld LA would be the
    total minus the others; the next smallest is withheld with it, not the larger ones."""
    from pipeline.disclosure import complementary_suppression

    table = pd.DataFrame({"variable": ["la"] * 4 + ["sex"] * 2, "level": ["a", "b", "c", "d", "F", "M"],
                          "n": [np.nan, 40, 12, 300, 500, 480], "events": [np.nan, 20, 11, 90, 100, 95]})
    out = complementary_suppression(table, ["variable"], "n", ["n", "events"])
    assert out["n"].isna().tolist() == [True, False, True, False, False, False]
    assert np.isnan(out.loc[2, "events"]) and out.loc[1, "events"] == 20
    two = complementary_suppression(out, ["variable"], "n", ["n", "events"])   # two withheld: stable
    pd.testing.assert_frame_equal(two, out)


def test_top_percent_of_a_weighted_population():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    assert errors.top_percent_flags(p, 20).tolist() == [True, True] + [False] * 8
    # the two riskiest rows carry 40% of the weight: top 20% is the first row only
    weight = np.array([4, 4, 1, 1, 1, 1, 1, 1, 3, 3], dtype=float)
    assert errors.top_percent_flags(p, 20, weight).tolist() == [True] + [False] * 9
    assert errors.top_percent_flags(p, 20, np.ones(10)).tolist() == errors.top_percent_flags(p, 20).tolist()


def test_scan_finds_embedded_ids_and_small_json_counts_under_any_key(tmp_path):
    import json

    (tmp_path / "a.md").write_text("see child_C0000001 and C0000002-x\n")
    (tmp_path / "m.json").write_text(json.dumps({"competing": {"age_18": 4}, "horizon_months": 6, "zero": 0}))
    problems = scan([tmp_path], 10, {"C0000001", "C0000002", "5469"})
    assert any("a.md" in p and "C0000001" in p and "C0000002" in p for p in problems)
    assert any("competing.age_18 = 4" in p for p in problems)
    assert not any("horizon_months" in p or "zero" in p for p in problems)


def test_curves_by_group_do_not_give_back_a_stopped_group_at_risk():
    """Group c's curve stops after day 20 (fewer than 10 at risk); from then on a's, b's and
    the overall at-risk counts would give c's, so the group with fewest at risk then (b)
    loses its at-risk counts after day 20; a group never shown counts as stopped first."""
    from pipeline.disclosure import complementary_at_risk

    rows = [("v", "a", t, r) for t, r in ((0, 100), (10, 90), (20, 80), (30, 70), (40, 60))]
    rows += [("v", "b", t, r) for t, r in ((0, 40), (10, 35), (20, 30), (30, 25), (40, 20))]
    rows += [("v", "c", t, r) for t, r in ((0, 15), (10, 12), (20, 10))]
    curves = pd.DataFrame(rows, columns=["variable", "level", "time_days", "at_risk"])
    out = complementary_at_risk(curves, {"v": ["a", "b", "c"]}, overall_end=40)
    b = out[out["level"] == "b"].set_index("time_days")["at_risk"]
    assert b.loc[[0, 10, 20]].tolist() == [40, 35, 30] and b.loc[[30, 40]].isna().all()
    assert out.loc[out["level"] == "a", "at_risk"].notna().all()
    never = complementary_at_risk(curves[curves["level"] != "c"], {"v": ["a", "b", "c"]}, overall_end=40)
    assert never.loc[never["level"] == "b", "at_risk"].isna().all()         # c's n = overall - a - b at time 0
    assert never.loc[never["level"] == "a", "at_risk"].notna().all()


def test_bad_settings_are_one_line_errors():
    from pipeline.cli import InputError

    s = {"thresholds": [0.2], "top_percents": [10], "default_top_percent": 20,
         "decision_curve": {"from": 0.01, "to": 0.5, "step": 0.01}, "survival_horizon_months": 9}
    cox = pd.DataFrame({"risk_6m": [0.1], "risk_12m": [0.2], "risk_24m": [0.3]})
    with pytest.raises(InputError, match="survival_horizon_months is 9; the Cox model's risks are at 6, 12, 24 months"):
        errors.check_settings(s, cox)
    with pytest.raises(InputError, match="thresholds: 1.5 is not a probability"):
        errors.check_settings({**s, "thresholds": [1.5]}, None)
    with pytest.raises(InputError, match="150 is not between 0 and 100"):
        errors.check_settings({**s, "default_top_percent": 150}, None)
    errors.check_settings({**s, "survival_horizon_months": 12}, cox)
