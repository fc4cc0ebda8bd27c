# Reference values for tests/test_splines.py (R 4.2.2, rms 6.5.0).
# Run: Rscript tests/data/ref_rcs.R
suppressMessages(library(rms))
d <- read.csv("tests/data/rcs_small.csv")
f <- lrm(y ~ rcs(age, 4) + z, data = d)
cat("knots", sprintf("%.12g", attr(rcs(d$age, 4), "parms")), "\n")
cat("coef", sprintf("%.12g", coef(f)), "\n")
cat("se", sprintf("%.12g", sqrt(diag(vcov(f)))), "\n")
g <- lrm(y ~ rcs(age, 3) + z, data = d)
cat("knots3", sprintf("%.12g", attr(rcs(d$age, 3), "parms")), "\n")
cat("coef3", sprintf("%.12g", coef(g)), "\n")
