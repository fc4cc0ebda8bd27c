"""pipeline.aft.AFTRegression against R's ``survreg``, numbers pinned to 1e-6 relative.

R 4.2.2, survival 3.5-3: ``tests/data/reference_aft.R`` on Rossi et al.'s recidivism data
(``lifelines.datasets.load_rossi()`` written to rossi.csv, 432 rows, time in weeks):

    f <- Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio
    fit <- survreg(f, data = d, dist = dist)        # dist: weibull, lognormal, loglogistic
    coef(fit); log(fit$scale); fit$loglik; sqrt(diag(vcov(fit)))
    1 - psurvreg(c(10, 30, 52), mean = predict(fit, newdata = new, type = "lp"),
                 scale = fit$scale, distribution = dist)
    #   new <- data.frame(fin = 1, age = 25, race = 1, wexp = 0, mar = 0, paro = 1, prio = 3)
    d$grp <- (seq_len(nrow(d)) - 1) %/% 3           # clusters: consecutive rows in threes
    survreg(f, data = d, dist = dist, cluster = grp)   # sqrt(diag(vcov(.))): robust SEs
    d$prio_band <- relevel(cut(d$prio, c(-Inf, 0, 2, Inf), labels = c("0", "1-2", "3+")), ref = "1-2")
    survreg(Surv(week, arrest) ~ fin + age + prio_band, data = d, dist = "loglogistic")

R's own convergence (rel.tolerance = 1e-9) is within 1.5e-9 relative of a 1e-14 fit on
these data, so 1e-6 leaves room for nothing but a wrong formula. R is not needed to run
the tests. SEs are in R's order: intercept, covariates, Log(scale).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from pipeline import survival
from pipeline.aft import AFTConvergenceWarning, AFTRegression
from pipeline.nonparametric import DAYS_PER_MONTH

ROSSI = load_rossi()
COVARIATES = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
RTOL = 1e-6

R_SURVREG = {
    "weibull": {
        "coef": [3.99013479653442, 0.272163359667722, 0.0407137983113049, -0.224802443112172, 0.106556586919981,
                 0.311273264851074, 0.0588272526045759, -0.0658169047843135],
        "log_scale": -0.33910824091584, "loglik": (-696.624396947785, -679.916563937091),
        "se": [0.419095188862418, 0.1379619167428, 0.01600355106377, 0.220158883434498, 0.151540966933512,
               0.273302246404238, 0.139638239614414, 0.0209405752641762, 0.0890266906477169],
        "robust_se": [0.466846645906972, 0.144933403345528, 0.0180616654850422, 0.20205779687507,
                      0.157305825354497, 0.273875627424584, 0.149676240166624, 0.0211037470704543,
                      0.0843388621042506],
        "surv": [0.974831526819802, 0.887669979885777, 0.772681902969905],
    },
    "lognormal": {
        "coef": [4.26766570382238, 0.34284767924343, 0.0272018415027574, -0.363159958944066, 0.2681320619534,
                 0.460353374743936, 0.0558793761605433, -0.0655175101376406],
        "log_scale": 0.25817853661588, "loglik": (-697.910424777669, -683.234625278392),
        "se": [0.461689501664522, 0.164086332142694, 0.015755963367229, 0.264691777832065, 0.178889171786872,
               0.295148181301003, 0.169111228006212, 0.0270906586226547, 0.076435880083966],
        "robust_se": [0.56347873933449, 0.173537626952183, 0.0199625713335588, 0.226415036252134,
                      0.180789148684896, 0.28133286179835, 0.176013875580877, 0.0241601208186035,
                      0.0875890182998574],
        "surv": [0.97250106385423, 0.857749290481439, 0.740657780413228],
    },
    "loglogistic": {
        "coef": [3.91830414401341, 0.288876139231243, 0.036365589043757, -0.27914925907851, 0.178423814546441,
                 0.347303977061302, 0.050798169854017, -0.0691822442944038],
        "log_scale": -0.435200728161005, "loglik": (-696.674468693216, -679.938411052732),
        "se": [0.427434137493535, 0.14558522613661, 0.015571924591468, 0.2296536521207, 0.157185203133545,
               0.269668605385595, 0.14957417133847, 0.0227418436367842, 0.0864163384964746],
        "robust_se": [0.460727658403541, 0.151492426697006, 0.0173549574649742, 0.201007861397229,
                      0.159884686571046, 0.258617502498155, 0.156943287436881, 0.020793284994309,
                      0.0867699552588326],
        "surv": [0.975263021090495, 0.878334477973611, 0.755244161058414],
    },
}
PROFILE = {"fin": 1, "age": 25, "race": 1, "wexp": 0, "mar": 0, "paro": 1, "prio": 3}
WEEKS = [10, 30, 52]


def fit_rossi(dist: str, **kwargs) -> AFTRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("error", AFTConvergenceWarning)   # a converged fit warns nothing
        return AFTRegression(dist).fit(ROSSI[COVARIATES], ROSSI["week"], ROSSI["arrest"], **kwargs)


@pytest.mark.parametrize("dist", list(R_SURVREG))
def test_rossi_equals_r_survreg(dist):
    r = R_SURVREG[dist]
    m = fit_rossi(dist)
    assert m.converged_ and m.names_ == ["(Intercept)", *COVARIATES]
    np.testing.assert_allclose(m.coef_, r["coef"], rtol=RTOL)
    np.testing.assert_allclose(m.log_scale_, r["log_scale"], rtol=RTOL)
    np.testing.assert_allclose([m.loglik_null_, m.loglik_], r["loglik"], rtol=RTOL)
    np.testing.assert_allclose(m.se_, r["se"], rtol=RTOL)
    assert m.robust_se_ is None
    # 7 covariates + intercept + scale: AIC = -2 loglik + 2 * 9 (R: AIC(fit))
    assert m.n_parameters_ == 9 and m.aic_ == pytest.approx(-2 * r["loglik"][1] + 18, rel=RTOL)
    surv = m.predict_survival(pd.DataFrame([PROFILE]), WEEKS)
    np.testing.assert_allclose(surv[0], r["surv"], rtol=RTOL)


@pytest.mark.parametrize("dist", list(R_SURVREG))
def test_cluster_robust_se_equals_r_survreg_cluster(dist):
    r = R_SURVREG[dist]
    m = fit_rossi(dist, cluster=np.arange(len(ROSSI)) // 3)
    assert m.n_clusters_ == 144
    np.testing.assert_allclose(m.robust_se_, r["robust_se"], rtol=RTOL)
    np.testing.assert_allclose(m.se_, r["se"], rtol=RTOL)          # R's fit$naive.var
    np.testing.assert_allclose(m.coef_, r["coef"], rtol=RTOL)      # clustering changes no estimate
    table = m.summary()
    np.testing.assert_allclose(table["se"], r["robust_se"], rtol=RTOL)
    np.testing.assert_allclose(table["model_se"], r["se"], rtol=RTOL)
    assert table.index[-1] == "Log(scale)" and np.isnan(table["time_ratio"].iloc[-1])


def test_categorical_covariate_equals_r_survreg():
    # prio banded 0 / 1-2 / 3+ (38, 213, 181 rows); reference the commonest, "1-2", so the
    # design has prio_band0 and prio_band3+ as R's treatment contrasts after relevel().
    band = pd.cut(ROSSI["prio"], [-np.inf, 0, 2, np.inf], labels=["0", "1-2", "3+"]).astype(str)
    assert band.value_counts().to_dict() == {"1-2": 213, "3+": 181, "0": 38}
    X = ROSSI[["fin", "age"]].assign(**{"prio_band[0]": (band == "0").astype(float),
                                        "prio_band[3+]": (band == "3+").astype(float)})
    m = AFTRegression("loglogistic").fit(X, ROSSI["week"], ROSSI["arrest"])
    np.testing.assert_allclose(m.coef_, [3.70678124663048, 0.243507982433264, 0.0449257762030676,
                                         -0.302784060827477, -0.508671485728218], rtol=RTOL)
    np.testing.assert_allclose(m.log_scale_, -0.418098072975476, rtol=RTOL)
    np.testing.assert_allclose([m.loglik_null_, m.loglik_], [-696.674468693216, -682.714038089429], rtol=RTOL)
    np.testing.assert_allclose(m.se_, [0.370249470066703, 0.146677068461512, 0.0151383879651493,
                                       0.271282474579169, 0.156612418687714, 0.086731040685368], rtol=RTOL)


def test_survival_stage_tables_carry_r_values():
    """The stage's parametric() with this fitter: R's log-likelihoods, AIC = -2 loglik + 2 * 9
    ordered smallest first, and 1 - S(t | profile) from R's psurvreg at 10, 30, 52 weeks."""
    df = pd.DataFrame({"time_days": ROSSI["week"], "event": ROSSI["arrest"]})
    months = [w / DAYS_PER_MONTH for w in WEEKS]   # the function reads horizons in months of days
    table, preds = survival.parametric(df, ROSSI[COVARIATES], list(R_SURVREG), months, {"p": PROFILE})
    assert list(table.columns) == ["model", "loglik", "aic", "parameters", "delta_aic"]
    # AIC: weibull 1377.83 < loglogistic 1377.88 < lognormal 1384.47
    assert table["model"].tolist() == ["weibull", "loglogistic", "lognormal"]
    for _, row in table.iterrows():
        r = R_SURVREG[row["model"]]
        assert row["loglik"] == pytest.approx(r["loglik"][1], rel=RTOL) and row["parameters"] == 9
        assert row["aic"] == pytest.approx(-2 * r["loglik"][1] + 18, rel=RTOL)
    assert list(preds.columns) == ["model", "profile", "horizon_months", "cumulative_rereport"]
    for dist, r in R_SURVREG.items():
        got = preds[preds["model"] == dist]["cumulative_rereport"].to_numpy()
        np.testing.assert_allclose(got, 1 - np.array(r["surv"]), rtol=RTOL)


def test_intercept_only_fit_is_the_null_fit():
    m = AFTRegression("weibull").fit(np.empty((len(ROSSI), 0)), ROSSI["week"], ROSSI["arrest"])
    assert m.loglik_ == pytest.approx(R_SURVREG["weibull"]["loglik"][0], rel=RTOL) and m.n_parameters_ == 2


def test_non_convergence_warns_with_its_own_class():
    with pytest.warns(AFTConvergenceWarning, match="did not converge in 1 Newton iterations"):
        m = AFTRegression("loglogistic", max_iter=1).fit(ROSSI[COVARIATES], ROSSI["week"], ROSSI["arrest"])
    assert not m.converged_ and m.n_iter_ == 1


@pytest.mark.parametrize("change, message", [
    ({"week": 0}, "positive"),
    ({"arrest": 0}, "no events"),
    ({"arrest": 2}, "0 or 1"),
    ({"age": 30}, "covariate age is constant"),
])
def test_bad_input_is_a_value_error(change, message):
    d = ROSSI.assign(**change)
    with pytest.raises(ValueError, match=message):
        AFTRegression("weibull").fit(d[COVARIATES], d["week"], d["arrest"])


def test_collinear_covariates_are_a_value_error():
    X = ROSSI[COVARIATES].assign(fin_copy=ROSSI["fin"])
    with pytest.raises(ValueError, match="singular"):
        AFTRegression("lognormal").fit(X, ROSSI["week"], ROSSI["arrest"])


def test_recovers_simulated_weibull_truth():
    """log T = 2 + 0.5 x1 - 0.3 x2 + 0.8 W, W extreme value, censored at exp(3): 20,000 rows;
    each estimate within 4 SEs of the truth (a check of the model, not of R)."""
    rng = np.random.default_rng(3)
    n = 20_000
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n)]).astype(float)
    w = np.log(rng.exponential(size=n))           # log of Exp(1): standard minimum extreme value
    t = np.exp(2 + X @ [0.5, -0.3] + 0.8 * w)
    c = np.exp(3.0)
    m = AFTRegression("weibull").fit(X, np.minimum(t, c), (t <= c).astype(int))
    truth = np.array([2, 0.5, -0.3, np.log(0.8)])
    assert np.all(np.abs(np.append(m.coef_, m.log_scale_) - truth) < 4 * m.se_)


def test_stage_keeps_a_non_convergence_warning_in_its_metrics_log(monkeypatch):
    from functools import partial

    from pipeline.fit_warnings import FitWarnings

    monkeypatch.setattr(survival, "AFT", {"loglogistic": partial(AFTRegression, "loglogistic", max_iter=1)})
    log = FitWarnings(survival.FIT_WARNINGS)
    df = pd.DataFrame({"time_days": ROSSI["week"], "event": ROSSI["arrest"]})
    survival.parametric(df, ROSSI[COVARIATES], ["loglogistic"], [1.0], {}, log)
    assert [r["model"] for r in log.records] == ["loglogistic_aft"]
    assert "did not converge in 1 Newton iterations" in log.records[0]["message"]
