# The lme4 side of benchmarks/bootstrap.py: bootMer on sleepstudy (ML), timed in R.
# Usage: Rscript bootstrap_bootmer.R NSIM SEED OUT.csv
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
nsim <- as.integer(args[1]); seed <- as.integer(args[2])
m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
stat <- function(x) c(intercept = unname(fixef(x)[1]), days = unname(fixef(x)[2]), sigma = sigma(x))
elapsed <- system.time(b <- bootMer(m, stat, nsim = nsim, seed = seed))[["elapsed"]]
write.csv(as.data.frame(b$t), args[3], row.names = FALSE)
cat(sprintf("{\"seconds\": %.4f, \"lme4\": \"%s\"}\n", elapsed, as.character(packageVersion("lme4"))))
