#!/usr/bin/env Rscript
## make_extra_refs.R -- simulated reference cases for jaxmm, in the format of
## shared/reference/*.json (see shared/reference/README.md).
##
## Usage (from the project root): cd tests/data && Rscript ../r/make_extra_refs.R
## The six public cases in tests/data come from shared/reference (lme4 1.1-31, glmmTMB 1.1.5).
## Writes NAME.csv (data) and NAME.json (lme4 fit, plus a glmmTMB block for GLMMs) for
##   unbalanced_bernoulli_q2, q3_poisson, big_lmm_reml, pairs_binomial_trials, singular_lmm_ml
##
## R calls used per case:
##   lmer(f, data, REML = TRUE/FALSE)                       (gaussian)
##   glmer(f, data, family = binomial/poisson, [control=])  (GLMMs, Laplace, nAGQ = 1)
##   glmmTMB(f, data, family = ...)                         (GLMMs only)
##   fixef(), sqrt(diag(vcov())), VarCorr(), sigma(), logLik(), deviance(), AIC(), BIC(),
##   ranef(fit, condVar = TRUE) and attr(., "postVar") for the conditional variances.
## Every case uses its own set.seed(), so cases are independent of each other.

suppressPackageStartupMessages({
  library(lme4)
  library(glmmTMB)
  library(jsonlite)
})

outdir <- "."
all_warnings <- list()

## Run expr, keep (and print) every warning it raises, return the value.
with_warnings <- function(expr, label) {
  w <- character(0)
  val <- withCallingHandlers(expr, warning = function(cond) {
    w <<- c(w, gsub("\\s*\n\\s*", " ", conditionMessage(cond)))
    invokeRestart("muffleWarning")
  })
  if (length(w)) {
    for (m in w) message(sprintf("WARNING [%s]: %s", label, m))
    all_warnings[[label]] <<- c(all_warnings[[label]], w)
  }
  attr(val, "warnings_seen") <- NULL
  list(value = val, warnings = w)
}

## q x q matrix with attributes stripped (so jsonlite writes [[..],[..]], also for q = 1)
plain_matrix <- function(m) {
  m <- as.matrix(m)
  q <- nrow(m)
  matrix(as.numeric(m), q, q)
}

## lme4 results -> list in the shared/reference JSON layout
lme4_block <- function(fit, group) {
  gaussian <- inherits(fit, "lmerMod")
  re <- ranef(fit, condVar = TRUE)[[group]]
  pv <- attr(re, "postVar")               # q x q x m array (lme4 condVar)
  q <- dim(pv)[1]; m <- dim(pv)[3]
  vc <- VarCorr(fit)[[group]]
  list(
    fixef_names = names(fixef(fit)),
    fixef = unname(fixef(fit)),
    fixef_se = unname(sqrt(diag(as.matrix(vcov(fit))))),
    D = plain_matrix(vc),
    re_names = colnames(vc),
    sigma = if (gaussian) sigma(fit) else NULL,
    loglik = as.numeric(logLik(fit)),      # REML criterion loglik for REML fits, as lme4
    deviance = if (gaussian) NULL else deviance(fit),
    aic = AIC(fit),
    bic = BIC(fit),
    ranef_levels = rownames(re),
    ranef = unname(as.matrix(re)),         # groups x q, row-major nested lists
    cond_var = lapply(seq_len(m), function(i) matrix(pv[, , i], q, q)),
    lme4_version = as.character(packageVersion("lme4"))
  )
}

tmb_block <- function(fit, group) {
  list(
    fixef = unname(fixef(fit)$cond),
    loglik = as.numeric(logLik(fit)),
    D = plain_matrix(VarCorr(fit)$cond[[group]])
  )
}

write_case <- function(name, note, lme4_formula, formula, family, method, response, group,
                       trials, data, fit, tmb = NULL, extra_note = character(0)) {
  write.csv(data, file.path(outdir, paste0(name, ".csv")), row.names = FALSE)
  if (length(extra_note)) note <- paste0(note, "; ", paste(extra_note, collapse = "; "))
  out <- c(
    list(name = name, note = note, lme4_formula = lme4_formula, formula = formula,
         family = family, method = method, response = response, group = group,
         trials = trials, n_obs = nrow(data), n_groups = unname(ngrps(fit)[[group]])),
    lme4_block(fit, group)
  )
  if (!is.null(tmb)) out$glmmTMB <- tmb_block(tmb, group)
  js <- toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null", na = "null")
  writeLines(js, file.path(outdir, paste0(name, ".json")))
  cat(sprintf("%-26s lme4 loglik = %.10f%s  singular = %s\n", name, as.numeric(logLik(fit)),
              if (is.null(tmb)) "" else sprintf("  glmmTMB loglik = %.10f", as.numeric(logLik(tmb))),
              isSingular(fit)))
}

## Draw m correlated q-vectors with covariance D (rows = groups).
draw_re <- function(m, D) matrix(rnorm(m * nrow(D)), m) %*% chol(D)

## ---------------------------------------------------------------------------------
## 1. unbalanced_bernoulli_q2: binomial 0/1, 150 groups of 1..80 rows, y ~ x + (x | g)
## ---------------------------------------------------------------------------------
set.seed(20240101)
m <- 150
sizes <- sample(1:80, m, replace = TRUE)
sd <- c(0.8, 0.4); rho <- 0.3
D <- diag(sd) %*% matrix(c(1, rho, rho, 1), 2) %*% diag(sd)
b <- draw_re(m, D)
labs <- sprintf("g%03d", seq_len(m))
gi <- rep(seq_len(m), sizes)
x <- rnorm(length(gi))
eta <- 0.3 + 0.8 * x + b[gi, 1] + b[gi, 2] * x
dat <- data.frame(g = labs[gi], x = x, y = rbinom(length(gi), 1, plogis(eta)))
dat$g <- factor(dat$g)
## R: glmer(y ~ x + (x | g), family = binomial, control = glmerControl(optimizer = "bobyqa"))
r <- with_warnings(glmer(y ~ x + (x | g), data = dat, family = binomial,
                         control = glmerControl(optimizer = "bobyqa")), "unbalanced_bernoulli_q2/lme4")
## R: glmmTMB(y ~ x + (x | g), family = binomial)
rt <- with_warnings(glmmTMB(y ~ x + (x | g), data = dat, family = binomial), "unbalanced_bernoulli_q2/glmmTMB")
dat$g <- as.character(dat$g)
write_case("unbalanced_bernoulli_q2",
           "simulated: 150 groups of 1..80 Bernoulli rows, beta=(0.3, 0.8), sd=(0.8, 0.4), corr 0.3; glmer with bobyqa",
           "y ~ x + (x | g)", "y ~ x + (x | g)", "binomial", "laplace", "y", "g", NULL,
           dat, r$value, rt$value,
           if (length(r$warnings)) paste("lme4 warned:", r$warnings) else character(0))

## ---------------------------------------------------------------------------------
## 2. q3_poisson: poisson, 120 groups of 10..40 rows, y ~ x1 + x2 + (x1 + x2 | g)
## ---------------------------------------------------------------------------------
set.seed(20240102)
m <- 120
sizes <- sample(10:40, m, replace = TRUE)
sd <- c(0.5, 0.3, 0.2)
R <- matrix(c(1.0, 0.4, -0.3,
              0.4, 1.0, 0.2,
              -0.3, 0.2, 1.0), 3)
D <- diag(sd) %*% R %*% diag(sd)
b <- draw_re(m, D)
gi <- rep(seq_len(m), sizes)
n <- length(gi)
x1 <- rnorm(n); x2 <- rnorm(n)
eta <- 1.0 + 0.5 * x1 - 0.3 * x2 + b[gi, 1] + b[gi, 2] * x1 + b[gi, 3] * x2
dat <- data.frame(g = gi, x1 = x1, x2 = x2, y = rpois(n, exp(eta)))
## R: glmer(y ~ x1 + x2 + (x1 + x2 | g), family = poisson)   (default control)
r <- with_warnings(glmer(y ~ x1 + x2 + (x1 + x2 | g), data = transform(dat, g = factor(g)),
                         family = poisson), "q3_poisson/lme4")
## R: glmmTMB(y ~ x1 + x2 + (x1 + x2 | g), family = poisson)
rt <- with_warnings(glmmTMB(y ~ x1 + x2 + (x1 + x2 | g), data = transform(dat, g = factor(g)),
                            family = poisson), "q3_poisson/glmmTMB")
write_case("q3_poisson",
           "simulated: 120 groups of 10..40 Poisson rows, beta=(1, 0.5, -0.3), sd=(0.5, 0.3, 0.2), corr (0.4, -0.3, 0.2); integer group labels",
           "y ~ x1 + x2 + (x1 + x2 | g)", "y ~ x1 + x2 + (x1 + x2 | g)", "poisson", "laplace",
           "y", "g", NULL, dat, r$value, rt$value,
           if (length(r$warnings)) paste("lme4 warned:", r$warnings) else character(0))

## ---------------------------------------------------------------------------------
## 3. big_lmm_reml: gaussian REML, ~31k rows, 500 groups of 20..104, y ~ x + cat3 + (x | g)
## ---------------------------------------------------------------------------------
set.seed(20240103)
m <- 500
sizes <- sample(20:104, m, replace = TRUE)
sd <- c(1.5, 0.5); rho <- -0.4
D <- diag(sd) %*% matrix(c(1, rho, rho, 1), 2) %*% diag(sd)
b <- draw_re(m, D)
labs <- sprintf("g%03d", seq_len(m))
gi <- rep(seq_len(m), sizes)
n <- length(gi)
x <- rnorm(n)
cat3 <- sample(c("a", "b", "c"), n, replace = TRUE)
eta <- 10 + 1.0 * x + c(a = 0, b = 0.5, c = -1.0)[cat3] + b[gi, 1] + b[gi, 2] * x
dat <- data.frame(g = labs[gi], x = x, cat3 = cat3, y = unname(eta) + rnorm(n, sd = 2))
## R: lmer(y ~ x + cat3 + (x | g))   (REML, default control)
r <- with_warnings(lmer(y ~ x + cat3 + (x | g),
                        data = transform(dat, g = factor(g), cat3 = factor(cat3))), "big_lmm_reml/lme4")
write_case("big_lmm_reml",
           sprintf("simulated: %d rows, 500 groups of 20..104, beta=(10, 1, 0.5, -1), sigma 2, sd=(1.5, 0.5), corr -0.4; cat3 levels a,b,c", n),
           "y ~ x + cat3 + (x | g)", "y ~ x + C(cat3) + (x | g)", "gaussian", "REML",
           "y", "g", NULL, dat, r$value, NULL,
           if (length(r$warnings)) paste("lme4 warned:", r$warnings) else character(0))

## ---------------------------------------------------------------------------------
## 4. pairs_binomial_trials: 1000 groups x 2 rows, y successes of n (1..10) trials
## ---------------------------------------------------------------------------------
set.seed(20240104)
m <- 1000
gi <- rep(seq_len(m), each = 2)
nn <- sample(1:10, 2 * m, replace = TRUE)
x <- rnorm(2 * m)
b <- rnorm(m, sd = 1.0)
eta <- -0.5 + 0.7 * x + b[gi]
dat <- data.frame(g = sprintf("p%04d", gi), x = x, n = nn, y = rbinom(2 * m, nn, plogis(eta)))
## With the default control, glmer stops on a noisy deviance (PIRLS tolerance tolPwrss = 1e-7):
## it warns "failed to converge, max|grad| = 0.10 ... very large eigenvalue", and its
## finite-difference Hessian is garbage, so vcov() gives SEs of ~7e-4 instead of ~0.04.
## A tighter PIRLS tolerance fixes it (default Nelder_Mead/bobyqa optimizers, no warnings,
## loglik matches glmmTMB to 2e-6 and the SEs match glmmTMB's):
## R: glmer(cbind(y, n - y) ~ x + (1 | g), family = binomial, control = glmerControl(tolPwrss = 1e-10))
r0 <- with_warnings(glmer(cbind(y, n - y) ~ x + (1 | g), data = transform(dat, g = factor(g)),
                          family = binomial), "pairs_binomial_trials/lme4-default-control (not stored)")
cat(sprintf("pairs_binomial_trials, default control (not stored): loglik = %.10f, SE = %s\n",
            as.numeric(logLik(r0$value)), paste(signif(sqrt(diag(as.matrix(vcov(r0$value)))), 6), collapse = ", ")))
r <- with_warnings(glmer(cbind(y, n - y) ~ x + (1 | g), data = transform(dat, g = factor(g)),
                         family = binomial, control = glmerControl(tolPwrss = 1e-10)),
                   "pairs_binomial_trials/lme4")
## R: glmmTMB(cbind(y, n - y) ~ x + (1 | g), family = binomial)
rt <- with_warnings(glmmTMB(cbind(y, n - y) ~ x + (1 | g), data = transform(dat, g = factor(g)),
                            family = binomial), "pairs_binomial_trials/glmmTMB")
write_case("pairs_binomial_trials",
           "simulated: 1000 groups of exactly 2 rows, y successes out of n (1..10) trials, beta=(-0.5, 0.7), sd 1; cbind(y, n - y) in R; glmer with tolPwrss=1e-10 (default control warns of non-convergence and gives broken SEs)",
           "cbind(y, n - y) ~ x + (1 | g)", "y ~ x + (1 | g)", "binomial", "laplace",
           "y", "g", "n", dat, r$value, rt$value,
           if (length(r$warnings)) paste("lme4 warned:", r$warnings) else character(0))

## ---------------------------------------------------------------------------------
## 5. singular_lmm_ml: gaussian ML, 30 groups x 8 rows, true slope variance 0
## ---------------------------------------------------------------------------------
## Seed chosen (from 1005, 2005, ..., scanning for isSingular) so that the ML fit lands on the
## boundary: theta[3] = 0, i.e. D has rank 1 (slope-intercept correlation exactly +1).
set.seed(2005)
m <- 30
gi <- rep(seq_len(m), each = 8)
x <- rep(0:7, m)
b0 <- rnorm(m, sd = 1.0)
dat <- data.frame(g = gi, x = x, y = 2 + 0.5 * x + b0[gi] + rnorm(8 * m, sd = 1.0))
## R: lmer(y ~ x + (x | g), REML = FALSE)
r <- with_warnings(lmer(y ~ x + (x | g), data = transform(dat, g = factor(g)), REML = FALSE),
                   "singular_lmm_ml/lme4")
write_case("singular_lmm_ml",
           sprintf("simulated: 30 groups x 8 rows, x = 0..7, beta=(2, 0.5), sigma 1, intercept sd 1, slope sd 0 (true); isSingular = %s",
                   isSingular(r$value)),
           "y ~ x + (x | g)", "y ~ x + (x | g)", "gaussian", "ML",
           "y", "g", NULL, dat, r$value, NULL,
           if (length(r$warnings)) paste("lme4 warned:", r$warnings) else character(0))

cat("\nWarnings seen:\n")
if (length(all_warnings)) print(all_warnings) else cat("  none\n")
sessionInfo()
