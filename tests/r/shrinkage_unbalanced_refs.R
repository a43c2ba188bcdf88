# Reference for tests/test_shrinkage.py: the mean over subjects of lme4's conditional
# variances (postVar) where the subjects have different numbers of rows.
suppressMessages(library(lme4))
d <- sleepstudy[sleepstudy$Days < 3 + as.integer(sleepstudy$Subject) %% 8, ]
m <- lmer(Reaction ~ Days + (Days | Subject), d)
pv <- attr(ranef(m, condVar = TRUE)$Subject, "postVar")
cat(sprintf("rows %d\n", nrow(d)))
cat(sprintf("mean %.10f %.10f\n", mean(pv[1, 1, ]), mean(pv[2, 2, ])))
cat(sprintf("median %.10f %.10f\n", median(pv[1, 1, ]), median(pv[2, 2, ])))
cat(sprintf("loglik %.10f\n", as.numeric(logLik(m))))
