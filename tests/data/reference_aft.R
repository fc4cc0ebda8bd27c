# Reference numbers for tests/test_aft.py (R 4.2.2, survival 3.5-3).
# rossi.csv is lifelines.datasets.load_rossi() written with to_csv(index=False) (432 rows):
#   python -c "from lifelines.datasets import load_rossi; load_rossi().to_csv('rossi.csv', index=False)"
library(survival)
options(digits = 15)
d <- read.csv("rossi.csv")
f <- Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio
show <- function(label, fit) {
  cat(label, "\n")
  cat("coef", sprintf("%.15g", coef(fit)), "\n")
  cat("log_scale", sprintf("%.15g", log(fit$scale)), "\n")
  cat("loglik", sprintf("%.15g", fit$loglik), "\n")
  cat("se", sprintf("%.15g", sqrt(diag(vcov(fit)))), "\n")
  if (!is.null(fit$naive.var)) cat("naive_se", sprintf("%.15g", sqrt(diag(fit$naive.var))), "\n")
  cat("iter", fit$iter, "\n")
}
new <- data.frame(fin = 1, age = 25, race = 1, wexp = 0, mar = 0, paro = 1, prio = 3)
for (dist in c("weibull", "lognormal", "loglogistic")) {
  fit <- survreg(f, data = d, dist = dist)
  show(dist, fit)
  # S(t | new) at t = 10, 30, 52 weeks
  lp <- predict(fit, newdata = new, type = "lp")
  cat("surv", sprintf("%.15g", 1 - psurvreg(c(10, 30, 52), mean = lp, scale = fit$scale, distribution = dist)), "\n")
  # cluster-robust: consecutive rows in threes as clusters
  d$grp <- (seq_len(nrow(d)) - 1) %/% 3
  show(paste(dist, "cluster"), survreg(f, data = d, dist = dist, cluster = grp))
}
# a categorical covariate, reference level the commonest ("1-2": 213 of 432)
d$prio_band <- relevel(cut(d$prio, c(-Inf, 0, 2, Inf), labels = c("0", "1-2", "3+")), ref = "1-2")
show("loglogistic categorical", survreg(Surv(week, arrest) ~ fin + age + prio_band, data = d, dist = "loglogistic"))
