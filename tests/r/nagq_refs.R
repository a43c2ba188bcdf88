# Reference numbers for tests/test_quadrature.py (lme4 1.1.31, R 4.2.2).
# Run: Rscript tests/r/nagq_refs.R
suppressMessages(library(lme4))
data(cbpp)
m25 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial, nAGQ = 25)
# lme4's logLik for nAGQ > 1 is measured from the saturated model: add the saturated
# binomial log-likelihood back to get the integral itself (what jaxmm reports).
sat <- sum(dbinom(cbpp$incidence, cbpp$size, cbpp$incidence / cbpp$size, log = TRUE))
cat(sprintf("logLik %.10f  saturated %.10f  integral %.10f\n", logLik(m25), sat, logLik(m25) + sat))
print(fixef(m25), digits = 12)
print(sqrt(diag(as.matrix(vcov(m25)))), digits = 10)
print(as.data.frame(VarCorr(m25))$vcov, digits = 12)
# Output:
# logLik -50.0050152701  saturated -41.9783537689  integral -91.9833690390
#     (Intercept)         period2         period3         period4
# -1.399223727829 -0.991408883813 -1.127809594158 -1.579480950705
#  (Intercept)      period2      period3      period4
# 0.2335113780 0.3067682008 0.3267671626 0.4275957098
# [1] 0.419282039703
# Profile intervals of the nAGQ = 25 fit (test_profile_intervals_use_the_quadrature)
print(confint(m25, method = "profile", oldNames = FALSE), digits = 10)
# Output:
#                             2.5 %        97.5 %
# sd_(Intercept)|herd  0.3488017427  1.1112974661
# (Intercept)         -1.9046840551 -0.9462133523
# period2             -1.6160836604 -0.4066108208
# period3             -1.8004081737 -0.5104498570
# period4             -2.5001919179 -0.7995920246
