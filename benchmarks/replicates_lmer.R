# The lme4 side of benchmarks/replicates.py: lmer (REML) on every replicate, in a loop.
# Usage: Rscript replicates_lmer.R DATA.csv OUT.csv
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
reps <- split(d, d$rep)
ctrl <- lmerControl(calc.derivs = TRUE)
fit_one <- function(x) {
  m <- lmer(y ~ 1 + (1 | subject), x, REML = TRUE)
  vc <- as.data.frame(VarCorr(m))
  c(rep = x$rep[1], intercept = unname(fixef(m)[1]), var_subject = vc$vcov[1], sigma = sigma(m),
    reml = as.numeric(logLik(m)), singular = isSingular(m))
}
elapsed <- system.time(out <- lapply(reps, fit_one))[["elapsed"]]
out <- as.data.frame(do.call(rbind, out))
write.csv(out, args[2], row.names = FALSE)
cat(sprintf("{\"seconds\": %.4f, \"n\": %d, \"lme4\": \"%s\", \"R\": \"%s\"}\n", elapsed, length(reps),
            as.character(packageVersion("lme4")), R.version.string))
