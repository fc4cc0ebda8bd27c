# Reference values for tests/test_time_dependent.py: riskRegression::Score's time-dependent
# AUC and Brier score (IPCW, cens.model = "km", se.fit = TRUE, summary = "ipa").
# R 4.2.2, riskRegression 2022.11.28, prodlim 2019.11.13, survival 3.5.3, carData 3.0.5.
# Run from the repository root:  Rscript tests/data/ref_time_dependent.R
# Writes tests/data/td_{rossi,lung,pbc}.csv (times, statuses and the predicted risks, to 17
# significant digits, so Python scores exactly the risks Score scored) and prints Score's tables.
suppressMessages({library(riskRegression); library(prodlim); library(survival)})
options(digits = 15, width = 200)
score <- function(risks, formula, data, times, ...) {
  x <- Score(list(model = risks), formula = formula, data = data, times = times,
             metrics = c("auc", "brier"), summary = "ipa", se.fit = TRUE, cens.model = "km", ...)
  print(as.data.frame(x$AUC$score)); print(as.data.frame(x$Brier$score))
}
put <- function(d, file) write.csv(lapply(d, sprintf, fmt = "%.17g"), file, row.names = FALSE, quote = FALSE)

cat("== hand-made survival case, horizon 5\n")
hand <- data.frame(time = c(1, 2, 3, 3, 4, 5, 5, 6, 7, 8, 8, 9), status = c(1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0),
                   risk = c(0.6, 0.3, 0.5, 0.4, 0.4, 0.7, 0.45, 0.2, 0.4, 0.1, 0.55, 0.25))
score(matrix(hand$risk, ncol = 1), Hist(time, status) ~ 1, hand, 5)
cat("-- the same, conservative = TRUE (censoring weights taken as known)\n")
score(matrix(hand$risk, ncol = 1), Hist(time, status) ~ 1, hand, 5, conservative = TRUE)

cat("== hand-made competing risks case (rows 4 and 10 a competing end), horizon 5\n")
handcr <- transform(hand, event = c(1, 0, 1, 2, 1, 1, 0, 0, 1, 2, 1, 0))
score(matrix(handcr$risk, ncol = 1), Hist(time, event) ~ 1, handcr, 5, cause = 1)

cat("== Rossi (carData), Cox model of arrest, horizons 20 and 40 weeks\n")
rossi <- carData::Rossi
fit <- coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = rossi)
r <- 1 - t(summary(survfit(fit, newdata = rossi), times = c(20, 40))$surv)
score(r, Hist(week, arrest) ~ 1, rossi, c(20, 40))
put(data.frame(week = rossi$week, arrest = rossi$arrest, risk_20 = r[, 1], risk_40 = r[, 2]), "tests/data/td_rossi.csv")

cat("== lung (survival), Cox model of death, horizons 180 and 365 days\n")
lung <- na.omit(survival::lung[, c("time", "status", "age", "sex", "ph.ecog")])
lung$status <- lung$status - 1
fit <- coxph(Surv(time, status) ~ age + sex + ph.ecog, data = lung)
r <- 1 - t(summary(survfit(fit, newdata = lung), times = c(180, 365))$surv)
score(r, Hist(time, status) ~ 1, lung, c(180, 365))
put(data.frame(time = lung$time, status = lung$status, risk_180 = r[, 1], risk_365 = r[, 2]), "tests/data/td_lung.csv")

cat("== pbc (survival): death (1) with transplant (2) competing, cause-specific Cox, horizons 1000 and 2000 days\n")
pbc <- na.omit(survival::pbc[, c("time", "status", "age", "bili", "albumin")])
pbc$event <- c(0, 2, 1)[pbc$status + 1]            # survival::pbc status: 0 censored, 1 transplant, 2 dead
pbc$status <- NULL                                 # (Score would ignore it, with a warning)
fit <- CSC(Hist(time, event) ~ age + log(bili) + albumin, data = pbc)
r <- predictRisk(fit, newdata = pbc, times = c(1000, 2000), cause = 1)
score(r, Hist(time, event) ~ 1, pbc, c(1000, 2000), cause = 1)
put(data.frame(time = pbc$time, event = pbc$event, risk_1000 = r[, 1], risk_2000 = r[, 2]), "tests/data/td_pbc.csv")
