"""Time-dependent AUC and Brier score with IPCW against R's riskRegression::Score.

Reference: R 4.2.2, riskRegression 2022.11.28, prodlim 2019.11.13, survival 3.5.3,
carData 3.0.5; ``tests/data/ref_time_dependent.R`` writes ``tests/data/td_{rossi,lung,pbc}.csv``
(times, statuses and the risks Score scored, to 17 digits) and prints Score's tables, pinned
here. Every call is

    Score(list(model = risks), formula = Hist(time, status) ~ 1, data = d, times = ...,
          metrics = c("auc", "brier"), summary = "ipa", se.fit = TRUE, cens.model = "km")

with ``risks`` a matrix (one column per horizon) of the predicted risks, so only Score's
metric is compared, and ``cause = 1`` for competing risks. R is not needed to run this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.time_dependent import ipcw_auc, ipcw_brier, null_risk

DATA = Path(__file__).parent / "data"

# Hand-made: 12 rows, horizon t = 5. Tied times with an event and a censoring (3; 5 at the
# horizon itself; 8), a tied risk between a case and a control (0.4), censoring before
# (rows 2, 4, 7) and after (8, 10, 12) the horizon.
HAND = pd.DataFrame({"time": [1, 2, 3, 3, 4, 5, 5, 6, 7, 8, 8, 9],
                     "status": [1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0],
                     "risk": [0.6, 0.3, 0.5, 0.4, 0.4, 0.7, 0.45, 0.2, 0.4, 0.1, 0.55, 0.25]})


def test_hand_made_survival_case_by_hand_and_as_score():
    """Censoring survival G (reverse Kaplan-Meier; an event leaves before a censoring at the
    same time, so the censoring risk set at u is Y(u) - d(u), as prodlim's reverse=TRUE):
        u = 2: Y 11, d 0, c 1 -> G = 10/11;  u = 3: Y 10, d 1, c 1 -> G = 10/11 * 8/9 = 80/99;
        u = 5: Y 7, d 1, c 1 -> G = 80/99 * 5/6 = 200/297.
    Cases (event by 5), weight 1/G(T-): t1 -> 1, t3 -> 1/G(2) = 1.1, t4 -> 1/G(3) = 1.2375,
    t5 -> 1/G(4) = 1.2375. Controls (T > 5: risks 0.2, 0.4, 0.1, 0.55, 0.25), each 1/G(5) =
    1.485 (cancels in the AUC). Censored by 5 (rows 2, 4, 7): weight 0.
    AUC: controls below each case (ties 1/2): 0.6 -> 5, 0.5 -> 4, 0.4 -> 3 + 1/2, 0.7 -> 5:
        (1*5 + 1.1*4 + 1.2375*3.5 + 1.2375*5) / (5 * (1 + 1.1 + 1.2375 + 1.2375))
        = 19.91875 / 22.875 = 0.870765027322404.
    Brier, over all 12 rows: (0.4^2 + 1.1*0.5^2 + 1.2375*(0.6^2 + 0.3^2)
        + 1.485*(0.2^2 + 0.4^2 + 0.1^2 + 0.55^2 + 0.25^2)) / 12 = 1.84575 / 12 = 0.1538125.
    Null model: Kaplan-Meier S(5) = 11/12 * 9/10 * 7/8 * 6/7 = 0.61875, risk 0.38125;
        Brier (4.575 * 0.61875^2 + 5 * 1.485 * 0.38125^2) / 12 = 2.83078125 / 12 = 0.2358984375;
        IPA = 1 - 0.1538125 / 0.2358984375 = 0.347971518463322.
    """
    auc = ipcw_auc(HAND["risk"], HAND["time"], HAND["status"], 5)
    assert auc["auc"] == pytest.approx(19.91875 / 22.875, abs=1e-12)
    assert (auc["cases"], auc["controls"], auc["censored_before_horizon"]) == (4, 5, 3)
    brier = ipcw_brier(HAND["risk"], HAND["time"], HAND["status"], 5)
    assert brier["brier"] == pytest.approx(1.84575 / 12, abs=1e-12)
    assert brier["null_risk"] == pytest.approx(0.38125, abs=1e-12)
    assert brier["null_brier"] == pytest.approx(2.83078125 / 12, abs=1e-12)
    assert brier["ipa"] == pytest.approx(1 - 1.84575 / 2.83078125, abs=1e-12)
    # Score(list(model = matrix(hand$risk, ncol = 1)), Hist(time, status) ~ 1, hand, times = 5, ...)
    #   AUC 0.870765027322404 se 0.115666575862072 lower 0.644062704417673 upper 1
    #   Null model Brier 0.2358984375 se 0.0362772433778975; model Brier 0.1538125 se 0.0410699541069534
    #   lower 0.0733168691036586 upper 0.234308130896341 IPA 0.347971518463322
    assert auc["se"] == pytest.approx(0.115666575862072, abs=1e-9)
    assert (auc["lower"], auc["upper"]) == pytest.approx((0.644062704417673, 1.0), abs=1e-9)
    assert brier["se"] == pytest.approx(0.0410699541069534, abs=1e-9)
    assert brier["null_se"] == pytest.approx(0.0362772433778975, abs=1e-9)
    assert (brier["lower"], brier["upper"]) == pytest.approx((0.0733168691036586, 0.234308130896341), abs=1e-9)
    assert brier["ipa"] == pytest.approx(0.347971518463322, abs=1e-9)


def test_conservative_standard_errors_leave_out_the_censoring_term():
    # The same Score call with conservative = TRUE: AUC se 0.115725059772925;
    # Brier se 0.0475783955588914, null model 0.0506052075987143.
    auc = ipcw_auc(HAND["risk"], HAND["time"], HAND["status"], 5, conservative=True)
    brier = ipcw_brier(HAND["risk"], HAND["time"], HAND["status"], 5, conservative=True)
    assert auc["se"] == pytest.approx(0.115725059772925, abs=1e-9)
    assert brier["se"] == pytest.approx(0.0475783955588914, abs=1e-9)
    assert brier["null_se"] == pytest.approx(0.0506052075987143, abs=1e-9)


def test_hand_made_competing_risks_case_by_hand_and_as_score():
    """Rows 4 (t3) and 10 (t8) end in a competing event instead of censoring. Censored now:
    rows 2, 7, 8, 12. G: u = 2: 10/11; u = 3: no censoring; u = 5: Y 7, d 1, c 1 ->
    10/11 * 5/6 = 25/33. Cases: t1 -> 1, t3, t4, t5 -> 1/G(T-) = 1.1 each. Controls: row 4,
    a competing end by 5 (risk 0.4), 1/G(3-) = 1.1; T > 5 (0.2, 0.4, 0.1, 0.55, 0.25; row
    10's competing end is after the horizon) 1/G(5) = 1.32 each: total control weight 7.7.
    AUC: control weight below each case (ties 1/2): 0.6 -> 7.7; 0.5 -> 1.1 + 4*1.32 = 6.38;
        0.4 -> 3*1.32 + (1.1 + 1.32)/2 = 5.17; 0.7 -> 7.7:
        (7.7 + 1.1*(6.38 + 5.17 + 7.7)) / ((1 + 3*1.1) * 7.7) = 28.875 / 33.11 = 75/86.
    Brier: (0.16 + 1.1*(0.25 + 0.36 + 0.09) + 1.1*0.4^2 + 1.32*0.575) / 12 = 1.865 / 12.
    Null model: Aalen-Johansen F(5) = 1/12 + (11/12)/10 + (11/15)/8 + (77/120)/7 = 43/120;
        Brier (4.3*(77/120)^2 + (1.1 + 6.6)*(43/120)^2) / 12 = 0.229930555555556.
    """
    status = np.array([1, 0, 1, 2, 1, 1, 0, 0, 1, 2, 1, 0])
    args = (HAND["risk"], HAND["time"], status == 1, 5)
    auc = ipcw_auc(*args, competing=status == 2)
    brier = ipcw_brier(*args, competing=status == 2)
    assert auc["auc"] == pytest.approx(75 / 86, abs=1e-12)
    assert brier["brier"] == pytest.approx(1.865 / 12, abs=1e-12)
    assert brier["null_risk"] == pytest.approx(43 / 120, abs=1e-12)
    assert brier["null_brier"] == pytest.approx((4.3 * (77 / 120) ** 2 + 7.7 * (43 / 120) ** 2) / 12, abs=1e-12)
    # Score(list(model = matrix(handcr$risk, ncol = 1)), Hist(time, event) ~ 1, handcr, times = 5, cause = 1, ...)
    #   AUC 0.872093023255814 se 0.106903212156822; Null model Brier 0.229930555555556 se 0.0419216954725326
    #   model Brier 0.155416666666667 se 0.0369344028077041 IPA 0.324071277559649
    assert auc["se"] == pytest.approx(0.106903212156822, abs=1e-9)
    assert brier["se"] == pytest.approx(0.0369344028077041, abs=1e-9)
    assert brier["null_se"] == pytest.approx(0.0419216954725326, abs=1e-9)
    assert brier["ipa"] == pytest.approx(0.324071277559649, abs=1e-9)
    # Treating the competing ends as censored is a different (wrong) estimand: not the same number.
    assert ipcw_auc(*args)["auc"] != pytest.approx(auc["auc"], abs=1e-3)


# Score's tables for the three data sets (ref_time_dependent.R):
#   horizon: (AUC, se, Brier, se, null Brier, null se, IPA)
ROSSI = {  # Rossi et al. (carData::Rossi, 432 rows): coxph(Surv(week, arrest) ~ fin + age + race +
           # wexp + mar + paro + prio); risks 1 - S(t | x) from survfit; no censoring before week 52
    20: (0.644419642857143, 0.0491714565874004, 0.0805294754398012, 0.0107984229182654,
         0.0840192043895748, 0.0113765233868918, 0.0415348963981215),
    40: (0.666146804543143, 0.0329991366750246, 0.1469465216556781, 0.0110102074696843,
         0.1580450531550069, 0.0116136668278272, 0.0702238461614078)}
LUNG = {   # survival::lung (complete cases, 227 rows; censoring throughout): coxph(Surv(time, status) ~
           # age + sex + ph.ecog)
    180: (0.698024965769445, 0.0384943433773372, 0.178685540264156, 0.01271439925443412,
          0.199442558768036, 0.01341731747965102, 0.104075171478431),
    365: (0.647397660015363, 0.0418661137365086, 0.225596309312808, 0.01187988469845173,
          0.242086910302026, 0.00642727274644575, 0.068118515654746)}
PBC = {    # survival::pbc (418 rows): death (1) with liver transplant (2) competing; cause-specific Cox
           # CSC(Hist(time, event) ~ age + log(bili) + albumin), predictRisk(..., cause = 1); Score(..., cause = 1)
    1000: (0.868415216441745, 0.0228644092713383, 0.102814199418389, 0.01009985178793126,
           0.149128379518435, 0.01203467956635318, 0.310565837633342),
    2000: (0.897116462012651, 0.0197270834687642, 0.115731503188417, 0.01035501228217043,
           0.210788911791368, 0.00936215418686685, 0.450960194229931)}


def _pinned(d: pd.DataFrame, time: str, event, competing, reference: dict) -> None:
    for horizon, (auc, auc_se, brier, brier_se, null, null_se, ipa) in reference.items():
        a = ipcw_auc(d[f"risk_{horizon}"], d[time], event, horizon, competing)
        b = ipcw_brier(d[f"risk_{horizon}"], d[time], event, horizon, competing)
        got = (a["auc"], a["se"], b["brier"], b["se"], b["null_brier"], b["null_se"], b["ipa"])
        np.testing.assert_allclose(got, (auc, auc_se, brier, brier_se, null, null_se, ipa), rtol=0, atol=1e-9,
                                   err_msg=f"horizon {horizon}")


def test_rossi_cox_risks_match_score():
    d = pd.read_csv(DATA / "td_rossi.csv")
    _pinned(d, "week", d["arrest"], None, ROSSI)
    # lower/upper of AUC(40): 0.601469685139180, 0.730823923947106
    a = ipcw_auc(d["risk_40"], d["week"], d["arrest"], 40)
    assert (a["lower"], a["upper"]) == pytest.approx((0.601469685139180, 0.730823923947106), abs=1e-9)


def test_lung_cox_risks_match_score():
    d = pd.read_csv(DATA / "td_lung.csv")
    _pinned(d, "time", d["status"], None, LUNG)


def test_pbc_competing_risks_match_score():
    d = pd.read_csv(DATA / "td_pbc.csv")
    _pinned(d, "time", d["event"] == 1, d["event"] == 2, PBC)


def test_without_censoring_the_measures_are_the_plain_ones():
    """Everyone followed past the horizon or with the event before it: every weight is 1, so
    AUC(t) is the ordinary AUC (Mann-Whitney, ties 1/2) and the Brier score the mean squared error."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    risk = np.round(rng.random(400), 2)                     # tied risks
    time = np.where(rng.random(400) < risk, rng.integers(1, 10, 400), 20).astype(float)
    event = time < 20
    y = time <= 10
    assert ipcw_auc(risk, time, event, 10)["auc"] == pytest.approx(roc_auc_score(y, risk), abs=1e-12)
    b = ipcw_brier(risk, time, event, 10)
    assert b["brier"] == pytest.approx(np.mean((y - risk) ** 2), abs=1e-12)
    assert b["null_risk"] == pytest.approx(y.mean(), abs=1e-12)


def test_row_order_does_not_matter():
    d = pd.read_csv(DATA / "td_pbc.csv")
    shuffled = d.sample(frac=1, random_state=3)
    for frame in (d, shuffled):
        a = ipcw_auc(frame["risk_1000"], frame["time"], frame["event"] == 1, 1000, frame["event"] == 2)
        assert a["auc"] == pytest.approx(PBC[1000][0], abs=1e-9) and a["se"] == pytest.approx(PBC[1000][1], abs=1e-9)


def test_no_case_or_no_control_gives_nan_not_an_error():
    a = ipcw_auc([0.1, 0.2, 0.3], [5.0, 6.0, 7.0], [0, 0, 0], 4)       # nobody has the event by 4
    assert np.isnan(a["auc"]) and np.isnan(a["se"]) and a["cases"] == 0
    a = ipcw_auc([0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [1, 1, 1], 4)       # nobody is event-free at 4
    assert np.isnan(a["auc"]) and a["controls"] == 0
    # Past the last follow-up time Score computes nothing ("No evaluation time before end of
    # followup"): NaN here too (and no division by G = 0).
    assert np.isnan(ipcw_brier([0.2, 0.5], [1.0, 2.0], [1, 0], 3)["brier"])
    assert np.isnan(ipcw_auc([0.2, 0.5, 0.3], [1.0, 2.0, 2.5], [1, 0, 0], 3, [False, False, True])["auc"])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        ipcw_auc([0.1, 0.2], [1.0, 2.0, 3.0], [1, 0, 0], 2)
    with pytest.raises(ValueError, match="finite"):
        ipcw_auc([0.1, np.nan], [1.0, 2.0], [1, 0], 2)
    with pytest.raises(ValueError, match="both an event"):
        ipcw_auc([0.1, 0.2], [1.0, 2.0], [1, 0], 2, competing=[True, False])
    with pytest.raises(ValueError, match="between 0 and 1"):
        ipcw_brier([0.1, 1.2], [1.0, 2.0], [1, 0], 2)


def test_null_risk_is_kaplan_meier_or_aalen_johansen():
    # Hand case: 1 - S(5) = 0.38125; with rows 4 and 10 competing, F(5) = 43/120 (worked above).
    assert null_risk(HAND["time"], HAND["status"], 5) == pytest.approx(0.38125, abs=1e-12)
    status = np.array([1, 0, 1, 2, 1, 1, 0, 0, 1, 2, 1, 0])
    assert null_risk(HAND["time"], status == 1, 5, status == 2) == pytest.approx(43 / 120, abs=1e-12)
    assert null_risk(HAND["time"], HAND["status"], 0.5) == 0.0


def test_calibration_stage_reports_them_per_horizon():
    """cox_calibration adds AUC(t) with its interval, Brier(t), the null Brier and IPA to each
    horizon's row, entering care or turning 18 counting as a competing end (a known "no")."""
    from pipeline.calibration import TABLES, cox_calibration
    from pipeline.nonparametric import DAYS_PER_MONTH

    rng = np.random.default_rng(5)
    n = 600
    x = rng.normal(size=n)
    event_time = rng.exponential(400 / np.exp(0.8 * x))
    end_time, end_kind = rng.exponential(1500, n), rng.choice(["entered_care", "age_18", "extract_date"], n)
    time = np.ceil(np.minimum(event_time, end_time))
    risks = pd.DataFrame({f"risk_{m}m": 1 - np.exp(-m * DAYS_PER_MONTH * np.exp(0.8 * x) / 400) for m in (6, 12, 24)})
    risks["time_days"], risks["event"] = time, (event_time <= end_time).astype(np.int8)
    risks["event_type"] = np.where(risks["event"] == 1, "re_referral", end_kind)
    risks["family"] = np.arange(n)
    tables, metrics = cox_calibration(risks, [6, 12, 24], min_count=10)
    table = tables["cox_calibration"]
    assert list(table.columns) == TABLES["cox_calibration"]
    row = table.set_index("horizon_months").loc[12]
    competing = risks["event_type"].isin(["entered_care", "age_18"])
    a = ipcw_auc(risks["risk_12m"], time, risks["event"], 12 * DAYS_PER_MONTH, competing)
    b = ipcw_brier(risks["risk_12m"], time, risks["event"], 12 * DAYS_PER_MONTH, competing)
    assert (row["auc"], row["auc_lower"], row["auc_upper"]) == pytest.approx((a["auc"], a["lower"], a["upper"]))
    assert (row["brier"], row["null_brier"], row["ipa"]) == pytest.approx((b["brier"], b["null_brier"], b["ipa"]))
    assert 0.6 < row["auc"] < 0.8 and 0 < row["ipa"] < 0.3      # a real, modest signal
    assert metrics["12_months"]["ipa"] == pytest.approx(round(b["ipa"], 4))
