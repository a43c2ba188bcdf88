#!/usr/bin/env Rscript
## tidy_refs.R -- broom.mixed's tidy/glance/augment and lme4's coef, fitted and residuals for
## tests/test_tidy.py.
##
## Usage (from the project root): cd tests/data && Rscript ../r/tidy_refs.R && mv tidy_refs.json r_outputs/
## Reads sleepstudy_reml.csv (lmer, REML) and cbpp_binomial.csv (glmer, binomial with trials);
## writes tidy_refs.json. Also lme4's hatvalues and cooks.distance of sleepstudy and of a
## weighted, unbalanced LMM on it (weights 1 + (Days %% 3) / 2, rows with Days 9 dropped for
## every third subject). broom.mixed 0.2.9 (Debian's r-cran-broom.mixed), lme4 1.1-31.
suppressPackageStartupMessages({
  library(lme4)
  library(broom.mixed)
  library(jsonlite)
})

cols <- function(frame) lapply(as.list(as.data.frame(frame)), function(v) if (is.factor(v)) as.character(v) else v)
both <- function(m) {
  aug <- augment(m)
  list(
    fixed = cols(tidy(m, effects = "fixed", conf.int = TRUE)),
    ran_pars = cols(tidy(m, effects = "ran_pars")),
    ran_vals = cols(tidy(m, effects = "ran_vals")),
    ran_coefs = cols(tidy(m, effects = "ran_coefs")),
    glance = cols(glance(m)),
    augment = list(.fitted = aug$.fitted, .resid = aug$.resid, .fixed = aug$.fixed, .mu = aug$.mu,
                   .hat = aug$.hat, .cooksd = aug$.cooksd),
    fitted = unname(fitted(m)),
    response = unname(residuals(m, type = "response")),
    pearson = unname(residuals(m, type = "pearson")),
    deviance = unname(residuals(m, type = "deviance")))
}
s <- read.csv("sleepstudy_reml.csv")
s$Subject <- factor(s$Subject)
cb <- read.csv("cbpp_binomial.csv")
cb$herd <- factor(cb$herd)
cb$period <- factor(cb$period)
w <- s
w$w <- 1 + (w$Days %% 3) / 2
w <- w[!(w$Days == 9 & as.integer(w$Subject) %% 3 == 0), ]
mw <- lmer(Reaction ~ Days + (Days | Subject), w, weights = w)
out <- list(
  sleepstudy = both(lmer(Reaction ~ Days + (Days | Subject), s)),
  weighted = list(hat = unname(hatvalues(mw)), cooksd = unname(cooks.distance(mw)), logLik = as.numeric(logLik(mw))),
  cbpp = both(suppressWarnings(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cb,
                                     family = binomial))),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  broom.mixed = as.character(packageVersion("broom.mixed"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"), "tidy_refs.json")
