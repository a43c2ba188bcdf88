# lme4 numbers for tests/test_shrinkage.py (issue 8). Run: Rscript tests/r/issue8_refs.R
suppressMessages(library(lme4))
options(digits = 12)
show <- function(label, m, g) {
  cat("==", label, "\n")
  re <- ranef(m)[[g]]
  cat("var(ranef)\n"); print(var(re), digits = 12)
  cat("cor(ranef)\n"); print(cor(re), digits = 12)
  cat("VarCorr\n"); print(as.data.frame(VarCorr(m))[, c("var1", "var2", "vcov", "sdcor")], digits = 12)
  cv <- attr(ranef(m, condVar = TRUE)[[g]], "postVar")
  cat("mean condVar diag\n"); print(apply(cv, c(1, 2), mean), digits = 12)
}
show("sleepstudy REML", lmer(Reaction ~ Days + (Days | Subject), sleepstudy), "Subject")
d <- read.csv("tests/data/seedlike_bernoulli_q2.csv")
show("seedlike glmer", glmer(y ~ x + (x | subject), d, binomial), "subject")
