# One lme4 or glmmTMB fit for the jaxmm benchmark harness (called by engines.py).
#
# Usage: Rscript fit_r.R ENGINE FAMILY FORMULA DATA.csv OUT.json
#   ENGINE   lme4 | glmmTMB
#   FAMILY   binomial | poisson | gaussian
#
# Reads the CSV (data.table::fread when installed), makes the group column g a factor,
# then times only the fit with system.time (elapsed seconds). Gaussian models are fitted by
# ML (lmer REML = FALSE; glmmTMB's default) so logLik is comparable across engines; GLMMs use
# the Laplace approximation (glmer's default nAGQ = 1). Writes one JSON object to OUT.json
# and prints it on stdout as a line starting with BENCH_RESULT.
# With ENGINE = versions it prints the R / package versions and BLAS as JSON and exits.

suppressPackageStartupMessages(library(jsonlite))
args <- commandArgs(trailingOnly = TRUE)

pkg_version <- function(p) {
  if (requireNamespace(p, quietly = TRUE)) as.character(packageVersion(p)) else NA_character_
}

if (length(args) >= 1 && args[[1]] == "versions") {
  si <- sessionInfo()
  cat(toJSON(list(
    R = R.version.string,
    lme4 = pkg_version("lme4"), glmmTMB = pkg_version("glmmTMB"), Matrix = pkg_version("Matrix"),
    TMB = pkg_version("TMB"), data.table = pkg_version("data.table"),
    BLAS = if (is.null(si$BLAS)) NA_character_ else si$BLAS,
    LAPACK = if (is.null(si$LAPACK)) NA_character_ else si$LAPACK
  ), auto_unbox = TRUE), "\n")
  quit(status = 0)
}

stopifnot(length(args) == 5)
engine <- args[[1]]; family <- args[[2]]; formula <- as.formula(args[[3]])
path <- args[[4]]; out <- args[[5]]

t_load <- system.time({
  dat <- if (requireNamespace("data.table", quietly = TRUE)) {
    as.data.frame(data.table::fread(path, showProgress = FALSE))
  } else {
    read.csv(path)
  }
  dat$g <- factor(dat$g)
})[["elapsed"]]

if (engine == "lme4") {
  suppressPackageStartupMessages(library(lme4))
} else if (engine == "glmmTMB") {
  suppressPackageStartupMessages(library(glmmTMB))
} else {
  stop("unknown engine ", engine)
}
fam <- switch(family, binomial = binomial(), poisson = poisson(), gaussian = gaussian(),
              stop("unknown family ", family))

warns <- character(0)
keep_warning <- function(w) {
  warns <<- c(warns, conditionMessage(w))
  invokeRestart("muffleWarning")
}

elapsed <- system.time(withCallingHandlers({
  fit <- if (engine == "lme4") {
    if (family == "gaussian") lmer(formula, data = dat, REML = FALSE)
    else glmer(formula, data = dat, family = fam)
  } else {
    glmmTMB(formula, data = dat, family = fam)
  }
}, warning = keep_warning))[["elapsed"]]

if (engine == "lme4") {
  msgs <- fit@optinfo$conv$lme4$messages
  # A singular (boundary) fit is reported separately, not as a convergence failure.
  bad <- grep("boundary \\(singular\\)", msgs, value = TRUE, invert = TRUE)
  converged <- length(bad) == 0 && fit@optinfo$conv$opt == 0 &&
    !any(grepl("converge", warns, ignore.case = TRUE))
  singular <- lme4::isSingular(fit)
  n_iter <- fit@optinfo$feval
  fixef_v <- lme4::fixef(fit)
  message_ <- paste(c(msgs, fit@optinfo$message), collapse = "; ")
} else {
  converged <- fit$fit$convergence == 0 && isTRUE(fit$sdr$pdHess)
  singular <- NA  # glmmTMB has no isSingular; pdHess = FALSE is reported via converged
  n_iter <- fit$fit$iterations
  fixef_v <- glmmTMB::fixef(fit)$cond
  message_ <- fit$fit$message
}

loglik <- as.numeric(logLik(fit))
if (engine == "glmmTMB" && is.na(loglik)) {
  # glmmTMB's logLik() is NA where its Hessian is not positive definite (the fit is then
  # reported as not converged); the objective it stopped at is still its Laplace -loglik.
  loglik <- -fit$fit$objective
  warns <- c(warns, "logLik() is NA (Hessian not positive definite): loglik is -fit$fit$objective")
}

res <- list(
  engine = engine, time_s = unname(elapsed), load_s = unname(t_load),
  loglik = loglik, converged = converged, singular = singular, n_iter = n_iter,
  fixef = as.list(fixef_v), message = message_, warnings = as.list(unique(warns)),
  rows = nrow(dat), groups = nlevels(dat$g)
)
json <- toJSON(res, auto_unbox = TRUE, digits = NA)
writeLines(json, out)
cat("BENCH_RESULT", json, "\n")
