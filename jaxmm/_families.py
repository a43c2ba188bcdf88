"""Response families and link functions.

A family is a small frozen (hashable) object, so it can be a static argument of a
jitted fit. It only has to provide the per-observation log density in terms of
the linear predictor η, with every normalising constant included: the
derivatives the inner Newton solver needs are taken by autodiff, which gives the
observed (not expected) information for any link.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, log_ndtr, ndtr, ndtri

from .errors import ArgumentError

_LOG_2PI = 1.8378770664093453
_LOG_2 = 0.6931471805599453
_SQRT2_M1 = 0.41421356237309503


def log1p_unit(e):
    """log(1 + e) for 0 ≤ e ≤ 1, as a polynomial that XLA vectorises.

    XLA:CPU evaluates float64 ``log`` and ``log1p`` one element at a time, and the log1p of
    the softplus was half of a Bernoulli pass over the rows (docs/performance.md). Here 1 + e is
    reduced to [1, √2] (or [√2, 2], written 2·[1/√2, 1]) and log r = 2 atanh(s), with
    s = (r − 1)/(r + 1) formed from e without cancellation, |s| ≤ 0.172, summed to s²¹.
    The truncation is below 2e-17 relative; measured against ``np.log1p`` on [0, 1] the
    error is at most 1.7e-16 absolute and 4.8e-16 relative (two ulps).
    """
    hi = e > _SQRT2_M1
    # t = 2s, divided through by 2 (exact), so that a tiny e gives t = e, not e/2 rounded
    t = jnp.where(hi, e - 1.0, e) / jnp.where(hi, 0.5 * e + 1.5, 0.5 * e + 1.0)
    s2 = 0.25 * t * t
    acc = jnp.full_like(t, 1.0 / 21.0)
    for k in range(9, -1, -1):
        acc = acc * s2 + 1.0 / (2 * k + 1)
    return jnp.where(hi, _LOG_2, 0.0) + t * acc


@jax.custom_jvp
def softplus(x):
    """log(1 + eˣ), stable in both tails, with :func:`log1p_unit` (see there why)."""
    return jnp.maximum(x, 0.0) + log1p_unit(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), jax.nn.sigmoid(x) * dx


@dataclasses.dataclass(frozen=True)
class Family:
    """Base class. Subclasses set ``name`` and implement ``kernel`` and ``normalizer``.

    log p(y | η) = kernel(y, η) + normalizer(y). Only the kernel depends on η, so the
    inner Newton iterations never evaluate the normalizer (log-gamma functions, the
    costliest part of a pass over the rows).
    """

    link: str
    name: str = dataclasses.field(default="", init=False)
    # Number of free dispersion parameters (0 or 1), estimated on the log scale.
    n_dispersion: int = dataclasses.field(default=0, init=False)
    # What the dispersion is reported as: "sigma" (gaussian SD, gamma CV) or "nb_size" (NB2's
    # size, which lme4 and glmmTMB call theta; jaxmm keeps θ for the packed parameters).
    dispersion_name: str = dataclasses.field(default="sigma", init=False)
    # A closed-form marginal likelihood (the exact LMM: REML or ML, t statistics) rather
    # than Laplace or quadrature.
    exact: bool = dataclasses.field(default=False, init=False)

    def kernel(self, y, eta, trials, dispersion):
        """The part of the log density that depends on η."""
        raise NotImplementedError

    def normalizer(self, y, trials, dispersion):
        """The rest of the log density: constants in η, with every normalising constant."""
        raise NotImplementedError

    def logpdf(self, y, eta, trials, dispersion):
        """Log density of each observation given its linear predictor."""
        return self.kernel(y, eta, trials, dispersion) + self.normalizer(y, trials, dispersion)

    def inverse_link(self, eta):
        raise NotImplementedError

    def link_function(self, mu):
        """g(μ): the linear predictor of a mean."""
        raise NotImplementedError

    def kernel_and_derivatives(self, y, eta, trials, dispersion):
        """Return (kernel, dℓ/dη, −d²ℓ/dη²) elementwise.

        The kernel is elementwise in η, so its Jacobian is diagonal and a JVP with a
        vector of ones yields the derivative of every observation at once.
        """
        ones = jnp.ones_like(eta)

        def with_first(e):
            return jax.jvp(lambda t: self.kernel(y, t, trials, dispersion), (e,), (ones,))

        (value, first), (_, second) = jax.jvp(with_first, (eta,), (ones,))
        return value, first, -second

    def check_response(self, y, trials):
        """Return a message describing the first problem with y, or None."""
        return None

    def sample(self, key, eta, trials, dispersion, weights):
        """Draw responses given the linear predictor (``weights``: the gaussian's prior weights)."""
        raise NotImplementedError

    def initial_eta(self, y, trials):
        """A linear predictor near the data, used to start β by least squares."""
        return y


@dataclasses.dataclass(frozen=True)
class Gaussian(Family):
    link: str = "identity"
    name: str = dataclasses.field(default="gaussian", init=False)
    n_dispersion: int = dataclasses.field(default=1, init=False)
    exact: bool = dataclasses.field(default=True, init=False)

    # dispersion is the residual standard deviation σ.
    def kernel(self, y, eta, trials, dispersion):
        r = (y - eta) / dispersion
        return -0.5 * r * r

    def kernel_and_derivatives(self, y, eta, trials, dispersion):
        prec = 1.0 / (dispersion * dispersion)
        r = y - eta
        return -0.5 * prec * r * r, prec * r, jnp.broadcast_to(prec, eta.shape)

    def normalizer(self, y, trials, dispersion):
        return jnp.broadcast_to(-0.5 * _LOG_2PI - jnp.log(dispersion), y.shape)

    def sample(self, key, eta, trials, dispersion, weights):
        # row variance σ²/w; rows of weight 0 take no part in a fit, so any finite value does
        scale = dispersion / jnp.sqrt(jnp.where(weights > 0, weights, 1.0))
        return eta + scale * jax.random.normal(key, eta.shape, eta.dtype)

    def inverse_link(self, eta):
        return eta

    def link_function(self, mu):
        return mu


@dataclasses.dataclass(frozen=True)
class Binomial(Family):
    link: str = "logit"
    name: str = dataclasses.field(default="binomial", init=False)

    def _log_mu_and_log_1m_mu(self, eta):
        """(log μ, log(1 − μ)) in forms that stay finite far into both tails."""
        if self.link == "probit":  # μ = Φ(η)
            return log_ndtr(eta), log_ndtr(-eta)
        # cloglog: μ = 1 − exp(−e^η)
        e = jnp.exp(eta)
        return jnp.log(-jnp.expm1(-e)), -e

    def kernel(self, y, eta, trials, dispersion):
        if self.link == "logit":
            # y η − n log(1 + e^η) is the stable logit form of y log μ + (n − y) log(1 − μ).
            return y * eta - trials * softplus(eta)
        log_mu, log_1m_mu = self._log_mu_and_log_1m_mu(eta)
        # 0·log μ is 0 even where log μ underflows to −inf (y = 0 far in the lower tail)
        return jnp.where(y > 0, y * log_mu, 0.0) + jnp.where(trials - y > 0, (trials - y) * log_1m_mu, 0.0)

    def kernel_and_derivatives(self, y, eta, trials, dispersion):
        if self.link != "logit":
            return super().kernel_and_derivatives(y, eta, trials, dispersion)
        # Canonical link: one exp per row serves the kernel and both derivatives.
        e = jnp.exp(-jnp.abs(eta))
        sp = jnp.maximum(eta, 0.0) + log1p_unit(e)
        mu = jnp.where(eta >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return y * eta - trials * sp, y - trials * mu, trials * mu * (1.0 - mu)

    def normalizer(self, y, trials, dispersion):
        return gammaln(trials + 1.0) - gammaln(y + 1.0) - gammaln(trials - y + 1.0)

    def sample(self, key, eta, trials, dispersion, weights):
        return jax.random.binomial(key, trials, self.inverse_link(eta)).astype(eta.dtype)

    def inverse_link(self, eta):
        if self.link == "probit":
            return ndtr(eta)
        if self.link == "cloglog":
            return -jnp.expm1(-jnp.exp(eta))
        return jax.nn.sigmoid(eta)

    def link_function(self, mu):
        if self.link == "probit":
            return ndtri(mu)
        if self.link == "cloglog":
            return jnp.log(-jnp.log1p(-mu))
        return jnp.log(mu) - jnp.log1p(-mu)

    def initial_eta(self, y, trials):
        return self.link_function((y + 0.5) / (trials + 1.0))

    def check_response(self, y, trials):
        import numpy as np

        def rows(bad):
            at = np.flatnonzero(bad)
            return f"{at.size} row(s) (first rows: {at[:5].tolist()})"

        with_trials = np.ndim(trials) > 0
        if with_trials:
            if np.any(trials < 0):
                return f"binomial trials must be non-negative: {rows(trials < 0)}"
            if np.any(trials != np.round(trials)):
                return f"binomial trials must be whole numbers: {rows(trials != np.round(trials))}"
            if not np.any(trials > 0):
                return "every row has zero binomial trials: there is nothing to fit"
        if np.any(y < 0):
            return f"binomial response must be non-negative: {rows(y < 0)}"
        if y.dtype.kind not in "iub" and np.any(y != np.round(y)):
            return f"binomial response must hold whole numbers of successes: {rows(y != np.round(y))}"
        if np.any(y > trials):
            if with_trials:
                return f"binomial response exceeds the number of trials in {rows(y > trials)}"
            return "binomial response exceeds the number of trials (0/1 expected without trials=)"
        return None


@dataclasses.dataclass(frozen=True)
class Poisson(Family):
    link: str = "log"
    name: str = dataclasses.field(default="poisson", init=False)

    def kernel(self, y, eta, trials, dispersion):
        return y * eta - jnp.exp(eta)

    def kernel_and_derivatives(self, y, eta, trials, dispersion):
        mu = jnp.exp(eta)
        return y * eta - mu, y - mu, mu

    def normalizer(self, y, trials, dispersion):
        return -gammaln(y + 1.0)

    def sample(self, key, eta, trials, dispersion, weights):
        return jax.random.poisson(key, jnp.exp(eta), eta.shape).astype(eta.dtype)

    def inverse_link(self, eta):
        return jnp.exp(eta)

    def link_function(self, mu):
        return jnp.log(mu)

    def initial_eta(self, y, trials):
        return jnp.log(y + 0.5)

    def check_response(self, y, trials):
        import numpy as np

        if np.any(y < 0) or (y.dtype.kind not in "iub" and np.any(y != np.round(y))):
            return "poisson response must hold non-negative whole numbers"
        return None


@dataclasses.dataclass(frozen=True)
class Gamma(Family):
    """Gamma with mean μ = g⁻¹(η) and shape ν. The dispersion parameter is σ = 1/√ν, the
    coefficient of variation: what lme4's ``sigma()`` and glmmTMB's ``sigma()`` report.

    log p(y) = ν log(ν y / μ) − ν y / μ − log y − log Γ(ν).
    """

    link: str = "log"
    name: str = dataclasses.field(default="gamma", init=False)
    n_dispersion: int = dataclasses.field(default=1, init=False)

    @staticmethod
    def _shape(dispersion):
        return 1.0 / (dispersion * dispersion)

    def kernel(self, y, eta, trials, dispersion):
        return -self._shape(dispersion) * (eta + y * jnp.exp(-eta))

    def kernel_and_derivatives(self, y, eta, trials, dispersion):
        nu = self._shape(dispersion)
        ratio = y * jnp.exp(-eta)  # y / μ
        return -nu * (eta + ratio), nu * (ratio - 1.0), nu * ratio

    def normalizer(self, y, trials, dispersion):
        nu = self._shape(dispersion)
        return nu * jnp.log(nu) + (nu - 1.0) * jnp.log(y) - gammaln(nu)

    def inverse_link(self, eta):
        return jnp.exp(eta)

    def link_function(self, mu):
        return jnp.log(mu)

    def sample(self, key, eta, trials, dispersion, weights):
        nu = self._shape(dispersion)
        return jax.random.gamma(key, nu, eta.shape, eta.dtype) * jnp.exp(eta) / nu

    def initial_eta(self, y, trials):
        # On the log scale the residual SD is about σ (Var log y = ψ'(ν) ≈ 1/ν), which is
        # how the dispersion is started.
        return jnp.log(y)

    def check_response(self, y, trials):
        import numpy as np

        if np.any(y <= 0):
            return "gamma response must be positive (a zero or negative value is outside its support)"
        return None


@dataclasses.dataclass(frozen=True)
class NegativeBinomial(Family):
    """NB2: mean μ = g⁻¹(η), variance μ + μ²/θ, with θ (glmmTMB's ``nbinom2`` dispersion,
    lme4's ``glmer.nb`` theta) estimated jointly.

    log p(y) = log Γ(y + θ) − log Γ(θ) − log y! + θ log θ + y log μ − (y + θ) log(θ + μ).
    """

    link: str = "log"
    name: str = dataclasses.field(default="negative_binomial", init=False)
    n_dispersion: int = dataclasses.field(default=1, init=False)
    dispersion_name: str = dataclasses.field(default="nb_size", init=False)

    def kernel(self, y, eta, trials, dispersion):
        # log(θ + e^η) = log θ + softplus(η − log θ), without overflow for large η, and with
        # the vectorised softplus (a logaddexp is a scalar log1p per row on XLA:CPU)
        log_theta = jnp.log(dispersion)
        return y * eta - (y + dispersion) * (log_theta + softplus(eta - log_theta))

    def normalizer(self, y, trials, dispersion):
        return gammaln(y + dispersion) - gammaln(dispersion) - gammaln(y + 1.0) + dispersion * jnp.log(dispersion)

    def inverse_link(self, eta):
        return jnp.exp(eta)

    def link_function(self, mu):
        return jnp.log(mu)

    def sample(self, key, eta, trials, dispersion, weights):
        # the gamma–Poisson mixture: λ ~ Gamma(θ, μ/θ), y ~ Poisson(λ)
        k1, k2 = jax.random.split(key)
        lam = jax.random.gamma(k1, dispersion, eta.shape, eta.dtype) * jnp.exp(eta) / dispersion
        return jax.random.poisson(k2, lam, eta.shape).astype(eta.dtype)

    def initial_eta(self, y, trials):
        return jnp.log(y + 0.5)

    def check_response(self, y, trials):
        import numpy as np

        if np.any(y < 0) or (y.dtype.kind not in "iub" and np.any(y != np.round(y))):
            return "negative_binomial response must hold non-negative whole numbers"
        return None


# name -> (class, allowed links, default link). A new family is one row here.
FAMILIES: dict[str, tuple[type[Family], tuple[str, ...], str]] = {
    "gaussian": (Gaussian, ("identity",), "identity"),
    "binomial": (Binomial, ("logit", "probit", "cloglog"), "logit"),
    "poisson": (Poisson, ("log",), "log"),
    "gamma": (Gamma, ("log",), "log"),
    "negative_binomial": (NegativeBinomial, ("log",), "log"),
}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """Look a family up by name (case-insensitive) and validate its link."""
    if isinstance(family, Family):
        if link is not None and link != family.link:
            raise ArgumentError(f"link={link!r} conflicts with the family object's link {family.link!r}")
        return family
    if not isinstance(family, str) or family.lower() not in FAMILIES:
        raise ArgumentError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    cls, links, default = FAMILIES[family.lower()]
    link = default if link is None else link
    if link not in links:
        raise ArgumentError(f"unknown link {link!r} for family {family!r}; choose one of {list(links)}")
    return cls(link=link)
