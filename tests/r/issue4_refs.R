# lme4 numbers for tests/test_formula_features.py (issue 4). Run: Rscript tests/r/issue4_refs.R
suppressMessages(library(lme4))
options(digits = 12)
show <- function(label, m) {
  cat("==", label, "\n")
  cat("logLik", format(as.numeric(logLik(m)), digits = 12), "\n")
  print(fixef(m), digits = 12)
  print(sqrt(diag(as.matrix(vcov(m)))), digits = 12)
  print(as.data.frame(VarCorr(m))[, c("grp", "var1", "var2", "vcov", "sdcor")], digits = 12)
}
show("sleepstudy (Days || Subject) REML", lmer(Reaction ~ Days + (Days || Subject), sleepstudy))
show("sleepstudy (Days || Subject) ML", lmer(Reaction ~ Days + (Days || Subject), sleepstudy, REML = FALSE))
show("cbpp poisson offset(log(size))",
     glmer(incidence ~ period + offset(log(size)) + (1 | herd), family = poisson, data = cbpp))
suppressMessages(library(glmmTMB))
m <- glmmTMB(incidence ~ period + offset(log(size)) + (1 | herd), family = poisson, data = cbpp)
cat("== glmmTMB cbpp poisson offset(log(size))\nlogLik", format(as.numeric(logLik(m)), digits = 12), "\n")
print(fixef(m)$cond, digits = 12)
print(sqrt(diag(vcov(m)$cond)), digits = 12)
print(attr(VarCorr(m)$cond$herd, "stddev"), digits = 12)
w <- rep(c(1, 2, 0.5), 60)
show("sleepstudy weights=rep(c(1,2,0.5),60) REML",
     lmer(Reaction ~ Days + (Days | Subject), sleepstudy, weights = w))
show("sleepstudy weights=rep(c(1,2,0.5),60) ML",
     lmer(Reaction ~ Days + (Days | Subject), sleepstudy, weights = w, REML = FALSE))
