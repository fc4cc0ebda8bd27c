# Reference numbers for tests/test_cox_checks.py (R 4.2.2, survival 3.5-3).
# Run from tests/data:  Rscript ref_schoenfeld.R <path to lifelines/datasets/rossi.csv>
# Writes rossi_zph_r.csv (cox.zph(fit)$y with each event's row and time) and
# rossi_zph_plot_r.csv (the smooth and band plot.cox.zph draws, read off its lines() calls).
library(survival)
args <- commandArgs(trailingOnly = TRUE)
rossi <- read.csv(args[1])
fit <- coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = rossi)  # Efron
z <- cox.zph(fit)                                    # transform = "km"
ord <- order(rossi$week); row <- ord[rossi$arrest[ord] == 1] - 1   # 0-based rows, as cox.zph orders events
stopifnot(all(rossi$week[row + 1] == z$time))
out <- data.frame(row = row, time = z$time, x = z$x, z$y, check.names = FALSE)
write.csv(out, "rossi_zph_r.csv", row.names = FALSE, quote = FALSE)  # 15 significant digits
cat("var diag:", sprintf("%.12g", diag(z$var)), "\n")
# plot.cox.zph's curves: each lines() call records (x, y); per term: smooth, upper, lower
drawn <- list()
trace("lines.default", tracer = quote(drawn[[length(drawn) + 1]] <<- data.frame(x = x, y = y)),
      where = asNamespace("graphics"), print = FALSE)
pdf(NULL)
terms <- c("age", "prio")
for (v in terms) plot(z, var = v)
curves <- do.call(rbind, lapply(seq_along(terms), function(i) data.frame(
  term = terms[i], x = drawn[[3 * i - 2]]$x, smooth = drawn[[3 * i - 2]]$y,
  upper = drawn[[3 * i - 1]]$y, lower = drawn[[3 * i]]$y)))
write.csv(curves, "rossi_zph_plot_r.csv", row.names = FALSE, quote = FALSE)
# stratified: scaled residuals on cox_small.csv with strata (a covariate constant in no stratum)
d <- read.csv("cox_small.csv")
zs <- cox.zph(coxph(Surv(time, status) ~ x1 + x2 + strata(stratum), data = d))
cat("strata y[1:3,]:\n"); print(format(head(data.frame(time = zs$time, strata = zs$strata, zs$y), 3), digits = 12))
cat("strata var:", sprintf("%.12g", zs$var), "\n")
ords <- order(d$stratum, d$time); rows <- ords[d$status[ords] == 1] - 1
stopifnot(all(d$time[rows + 1] == zs$time))
write.csv(data.frame(row = rows, time = zs$time, x = zs$x, zs$y), "cox_small_zph_strata_r.csv", row.names = FALSE,
          quote = FALSE)
