# Reference numbers for tests/test_frailty.py (R 4.2.2, survival 3.5-3).
# Run from tests/data: Rscript reference_frailty.R
library(survival)
kidney <- read.csv("frailty_kidney.csv")
rats <- read.csv("frailty_rats.csv")
retinopathy <- read.csv("frailty_retinopathy.csv")
show <- function(label, f) {
  h <- f$history[[1]]
  theta <- if (is.null(h$history)) h$theta else h$history[nrow(h$history), 1]
  cat(label, "\n  coef", sprintf("%.12g", coef(f)), "\n  se", sprintf("%.12g", sqrt(diag(f$var))),
      "\n  se2", sprintf("%.12g", sqrt(diag(f$var2))), "\n  theta", sprintf("%.12g", theta),
      "\n  I-loglik", sprintf("%.12g", h$c.loglik), "\n  df", sprintf("%.12g", f$df),
      "\n  iter", f$iter, "\n")
  if (!is.null(h$history)) cat("  history theta", sprintf("%.12g", h$history[, 1]),
                               "\n  history I-loglik", sprintf("%.12g", h$history[, 3]), "\n")
  cat("  frail[1:4]", sprintf("%.12g", f$frail[1:4]), "\n")
}
show("kidney", coxph(Surv(time, status) ~ age + sex + frailty(id, distribution="gamma"), data=kidney))
show("rats", coxph(Surv(time, status) ~ rx + frailty(litter, distribution="gamma"), data=rats))
show("retinopathy strata", coxph(Surv(futime, status) ~ age + risk + strata(trt) + frailty(id, distribution="gamma"),
                                 data=retinopathy))
show("rats breslow strata", coxph(Surv(time, status) ~ rx + strata(sex) + frailty(litter, distribution="gamma"),
                                  data=rats, ties="breslow"))
show("kidney dense", coxph(Surv(time, status) ~ age + sex + frailty(disease, distribution="gamma"), data=kidney))
show("kidney theta 0.5", coxph(Surv(time, status) ~ age + sex + frailty(id, distribution="gamma", theta=0.5),
                               data=kidney))
show("kidney eps 1e-10", coxph(Surv(time, status) ~ age + sex + frailty(id, distribution="gamma", eps=1e-10),
                               data=kidney))
cat("kidney cox loglik", sprintf("%.12g", coxph(Surv(time, status) ~ age + sex, data=kidney)$loglik[2]), "\n")
