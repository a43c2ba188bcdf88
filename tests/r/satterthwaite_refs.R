#!/usr/bin/env Rscript
## satterthwaite_refs.R -- lmerTest's Satterthwaite degrees of freedom, t statistics and
## p-values (summary(fit)$coefficients) for tests/test_satterthwaite.py.
##
## Usage (from the project root): cd tests/data && Rscript ../r/satterthwaite_refs.R && mv satterthwaite_refs.json r_outputs/
## Fits (lmerTest 3.1-3 over lme4 1.1-31): sleepstudy REML and ML, the simulated big LMM (31k
## rows, 20 to 104 per group, REML), Penicillin's crossed factors (REML); and lmerTest's anova
## (F tests of the fixed-effect terms, type III) of sleepstudy, of the big LMM, and of its first
## 4,000 rows with a numeric-by-factor and a factor-by-factor interaction (band: x cut at
## -0.5 and 0.5); writes satterthwaite_refs.json.
suppressPackageStartupMessages({
  library(lmerTest)
  library(jsonlite)
})

coefs <- function(fit) {
  s <- summary(fit)$coefficients
  list(names = rownames(s), estimate = unname(s[, "Estimate"]), std_error = unname(s[, "Std. Error"]),
       df = unname(s[, "df"]), t = unname(s[, "t value"]), p = unname(s[, "Pr(>|t|)"]))
}
sleep <- read.csv("sleepstudy_reml.csv")
sleep$Subject <- factor(sleep$Subject)
big <- read.csv("big_lmm_reml.csv")
pen <- read.csv("crossed/penicillin_crossed_reml.csv")
# lmerTest's anova (type III, Satterthwaite): F, numerator and denominator df and p per term
ftests <- function(fit) {
  a <- anova(fit)
  list(terms = rownames(a), F = unname(a[, "F value"]), num_df = unname(a[, "NumDF"]),
       den_df = unname(a[, "DenDF"]), p = unname(a[, "Pr(>F)"]))
}
head4k <- big[1:4000, ]
head4k$band <- ifelse(head4k$x < -0.5, "a_lo", ifelse(head4k$x < 0.5, "b_mid", "c_hi"))
big_x <- lmer(y ~ x * cat3 + (x | g), head4k)
big_f <- lmer(y ~ cat3 * band + (1 | g), head4k)
out <- list(
  sleepstudy_reml = c(list(formula = "Reaction ~ Days + (Days | Subject)", method = "REML"),
                      coefs(lmer(Reaction ~ Days + (Days | Subject), sleep))),
  sleepstudy_ml = c(list(formula = "Reaction ~ Days + (Days | Subject)", method = "ML"),
                    coefs(lmer(Reaction ~ Days + (Days | Subject), sleep, REML = FALSE))),
  big = c(list(formula = "y ~ x + C(cat3) + (x | g)", method = "REML"),
          coefs(lmer(y ~ x + cat3 + (x | g), big))),
  anova_big = c(list(formula = "y ~ x + C(cat3) + (x | g)"), ftests(lmer(y ~ x + cat3 + (x | g), big))),
  anova_interaction = c(list(formula = "y ~ x * C(cat3) + (x | g)"), ftests(big_x)),
  anova_factorial = c(list(formula = "y ~ C(cat3) * C(band) + (1 | g)"), ftests(big_f)),
  anova_sleepstudy = c(list(formula = "Reaction ~ Days + (Days | Subject)"),
                       ftests(lmer(Reaction ~ Days + (Days | Subject), sleep))),
  penicillin = c(list(formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", method = "REML"),
                 coefs(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pen))),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  lmerTest = as.character(packageVersion("lmerTest"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "satterthwaite_refs.json")
