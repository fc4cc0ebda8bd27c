# Reference values for tests/test_lowess.py (R 4.2.2). Inputs: the arrays of
# tests/test_lowess.py::r_inputs written with %.17g to /tmp/rl/lowess_in.csv (x, y: 6000 rows)
# and /tmp/rl/lowess_ties.csv (300 rows). Run: Rscript tests/data/ref_lowess.R
d <- read.csv("/tmp/rl/lowess_in.csv")
f <- lowess(d$x, d$y, iter = 0)          # f = 2/3, delta = 0.01 * diff(range(x))
o <- order(d$x)
fit <- numeric(nrow(d)); fit[o] <- f$y
idx <- c(1, 2, 10, 100, 1000, 2500, 4000, 5999, 6000)
cat(sprintf("%d %.15g\n", idx, fit[idx]), sep="")
cat(sprintf("sum %.15g\n", sum(fit)))
t <- read.csv("/tmp/rl/lowess_ties.csv")
g <- lowess(t$x, t$y, iter = 0, delta = 0)
cat(sprintf("ties %.15g\n", g$y[c(1, 50, 150, 300)]), sep="")
cat(sprintf("tiessum %.15g\n", sum(g$y)))
