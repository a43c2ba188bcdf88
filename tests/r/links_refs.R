# glmmTMB and lme4 numbers for tests/test_links.py (issue 9). Run: Rscript tests/r/links_refs.R
# Data: tests/data/links_binomial.csv (simulated: 150 groups x 12 rows, 1-5 trials each,
# eta = -0.3 + 0.6 x + b0 + b1 x, SD(b0) = 0.6, SD(b1) = 0.4, cor 0.25; probit for yp,
# cloglog with eta - 0.4 for yc).
suppressMessages({library(lme4); library(glmmTMB)})
options(digits = 12)
d <- read.csv("tests/data/links_binomial.csv")
for (link in c("probit", "cloglog")) {
  resp <- if (link == "probit") "cbind(yp, size - yp)" else "cbind(yc, size - yc)"
  f <- as.formula(paste(resp, "~ x + (x | g)"))
  t <- glmmTMB(f, d, family = binomial(link = link))
  cat("== glmmTMB", link, "\nlogLik", format(as.numeric(logLik(t)), digits = 12), "\n")
  print(fixef(t)$cond, digits = 12)
  print(sqrt(diag(vcov(t)$cond)), digits = 12)
  print(attr(VarCorr(t)$cond$g, "stddev"), digits = 12)
  print(attr(VarCorr(t)$cond$g, "correlation")[1, 2], digits = 12)
  m <- glmer(f, d, family = binomial(link = link))
  cat("== lme4", link, "\nlogLik", format(as.numeric(logLik(m)), digits = 12), "\n")
  print(fixef(m), digits = 12)
}
