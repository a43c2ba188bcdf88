# glmmTMB and lme4 numbers for tests/test_gamma.py. Run: Rscript tests/r/gamma_refs.R
# Data: tests/data/gamma_log_q2.csv (simulated: shape 2.5, log mean 1 + 0.5 x + b0 + b1 x,
# SD(b0) = 0.5, SD(b1) = 0.3, cor 0.33; 120 groups of 8).
suppressMessages({library(lme4); library(glmmTMB)})
options(digits = 12)
d <- read.csv("tests/data/gamma_log_q2.csv")
for (f in c("y ~ x + (1 | g)", "y ~ x + (x | g)")) {
  t <- glmmTMB(as.formula(f), d, family = Gamma(link = "log"))
  cat("== glmmTMB", f, "\nlogLik", format(as.numeric(logLik(t)), digits = 12), "\n")
  print(fixef(t)$cond, digits = 12)
  print(sqrt(diag(vcov(t)$cond)), digits = 12)
  print(attr(VarCorr(t)$cond$g, "stddev"), digits = 12)
  print(attr(VarCorr(t)$cond$g, "correlation"), digits = 12)
  cat("sigma", format(sigma(t), digits = 12), "\n")
  m <- glmer(as.formula(f), d, family = Gamma(link = "log"))
  cat("== lme4", f, "\nlogLik", format(as.numeric(logLik(m)), digits = 12), "\n")
  print(fixef(m), digits = 12)
  cat("sigma", format(sigma(m), digits = 12), "\n")
}
