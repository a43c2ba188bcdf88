#!/usr/bin/env Rscript
## crossed_methods_refs.R -- lme4's predictions, Wald intervals and likelihood-ratio tests for
## fits with several random-effect terms, for tests/test_crossed_methods.py.
##
## Usage (from the project root): cd tests/data/crossed && Rscript ../../r/crossed_methods_refs.R
## Reads penicillin_crossed_reml.csv and verbagg_crossed_binomial.csv (lme4's Penicillin and
## VerbAgg, as in shared/reference/crossed); writes crossed_methods.json.
## R calls: lmer, glmer, predict(fit, newdata, re.form = NULL / NA / ~(1 | g),
## allow.new.levels = TRUE, type = "response"), fitted(), confint(method = "Wald"),
## anova(m1, m2) (lmer fits refitted by ML, lme4's default).
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

pen <- read.csv("penicillin_crossed_reml.csv", stringsAsFactors = TRUE)
p1 <- lmer(diameter ~ 1 + (1 | plate), pen)
p2 <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pen)
# new rows: seen levels of both factors, then a plate the fit never saw
pnew <- data.frame(plate = c("a", "b", "zz", "c"), sample = c("B", "F", "A", "C"))
pa <- anova(p1, p2)

vb <- read.csv("verbagg_crossed_binomial.csv", stringsAsFactors = TRUE)
vb$id <- factor(vb$id)
ctrl <- glmerControl(optimizer = "bobyqa")
v1 <- glmer(r2n ~ Anger + Gender + btype + situ + (1 | id), vb, family = binomial, control = ctrl)
v2 <- glmer(r2n ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), vb, family = binomial, control = ctrl)
vnew <- vb[c(1, 500, 3000, 7000), c("Anger", "Gender", "btype", "situ", "id", "item")]
vnew$id <- as.character(vnew$id)
vnew$id[4] <- "9999"
va <- anova(v1, v2)

lrt <- function(a) list(npar = a$npar, AIC = a$AIC, BIC = a$BIC, loglik = a$logLik, deviance = a$deviance,
                        chisq = a$Chisq[2], df = a$Df[2], p = a[["Pr(>Chisq)"]][2])
out <- list(
  penicillin = list(
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", newdata = pnew,
    fitted = unname(fitted(p2)),
    conditional = unname(predict(p2, newdata = pnew, allow.new.levels = TRUE)),
    zero = unname(predict(p2, newdata = pnew, re.form = NA)),
    plate_only = unname(predict(p2, newdata = pnew, re.form = ~(1 | plate), allow.new.levels = TRUE)),
    wald = unname(confint(p2, method = "Wald")["(Intercept)", ]),
    anova = lrt(pa)),
  verbagg = list(
    formula = "r2n ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", newdata = vnew,
    loglik = as.numeric(logLik(v2)),
    conditional = unname(predict(v2, newdata = vnew, type = "response", allow.new.levels = TRUE)),
    zero = unname(predict(v2, newdata = vnew, type = "response", re.form = NA)),
    item_only = unname(predict(v2, newdata = vnew, type = "link", re.form = ~(1 | item))),
    anova = lrt(va)),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "crossed_methods.json")
