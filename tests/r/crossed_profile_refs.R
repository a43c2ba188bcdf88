#!/usr/bin/env Rscript
## crossed_profile_refs.R -- lme4's profile-likelihood intervals (confint(method = "profile"),
## oldNames = FALSE) for ML fits with several random-effect terms, for
## tests/test_crossed_profile.py.
##
## Usage (from the project root): cd tests/data/crossed && Rscript ../../r/crossed_profile_refs.R
## Reads penicillin_crossed_reml.csv, sleepstudy_two_terms_ml.csv and
## cbpp_observation_level.csv (as in shared/reference/crossed); writes crossed_profile.json.
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

ci <- function(fit) {
  out <- confint(fit, method = "profile", oldNames = FALSE)
  list(names = rownames(out), lower = unname(out[, 1]), upper = unname(out[, 2]),
       loglik = as.numeric(logLik(fit)))
}
pen <- read.csv("penicillin_crossed_reml.csv", stringsAsFactors = TRUE)
sleep <- read.csv("sleepstudy_two_terms_ml.csv", stringsAsFactors = TRUE)
sleep$Subject <- factor(sleep$Subject)
cbpp <- read.csv("cbpp_observation_level.csv", stringsAsFactors = TRUE)
cbpp$herd <- factor(cbpp$herd)
cbpp$obs <- factor(cbpp$obs)
cbpp$period <- factor(cbpp$period)
out <- list(
  penicillin = c(list(formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"),
                 ci(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pen, REML = FALSE))),
  sleepstudy = c(list(formula = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"),
                 ci(lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sleep, REML = FALSE))),
  cbpp = c(list(formula = "incidence ~ C(period) + (1 | herd) + (1 | obs)"),
           ci(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs), cbpp, family = binomial))),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "crossed_profile.json")
