"""lme4's likelihood criteria (deviance, AIC, BIC): one definition for every result and anova."""
from __future__ import annotations

import math


def criteria(loglik: float, npar: int, n_obs: int) -> dict:
    """{"deviance", "AIC", "BIC"} of a log-likelihood with ``npar`` parameters and ``n_obs`` rows."""
    return {"deviance": -2.0 * loglik, "AIC": -2.0 * loglik + 2.0 * npar,
            "BIC": -2.0 * loglik + math.log(n_obs) * npar}


class Criteria:
    """``deviance``, ``aic`` and ``bic`` of a result with ``loglik``, ``npar`` and ``n_obs``."""

    @property
    def deviance(self) -> float:
        """−2 log-likelihood (not lme4's conditional deviance of glmer fits, which ``glance()``
        gives).

        Examples
        --------
        >>> import jaxmm
        >>> round(jaxmm.fit_example("sleepstudy").deviance, 3)
        1743.628
        """
        return criteria(self.loglik, self.npar, self.n_obs)["deviance"]

    @property
    def aic(self) -> float:
        """Akaike's criterion, −2 loglik + 2 npar (lme4's ``AIC``).

        Examples
        --------
        >>> import jaxmm
        >>> round(jaxmm.fit_example("sleepstudy").aic, 3)
        1755.628
        """
        return criteria(self.loglik, self.npar, self.n_obs)["AIC"]

    @property
    def bic(self) -> float:
        """The Bayesian criterion, −2 loglik + log(n_obs) npar (lme4's ``BIC``).

        Examples
        --------
        >>> import jaxmm
        >>> round(jaxmm.fit_example("sleepstudy").bic, 3)
        1774.786
        """
        return criteria(self.loglik, self.npar, self.n_obs)["BIC"]
