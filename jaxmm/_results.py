"""The immutable result of a fit. Computing lives here; rendering lives in ``_render``."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ._criteria import Criteria
from ._tidy import TidyViews
from ._params import Params, n_chol
from ._optimize import Status
from ._quadrature import nodes_of


@dataclasses.dataclass(frozen=True, eq=False)
class FitOptions:
    """What ``fit`` was given besides the formula, data and family, as given: what rebuilds
    the design (refits, ``predict``, ``shrinkage``) and the quadrature's nodes."""

    trials: str | None = None
    offset: object = None     # a column name or one value per row
    weights: object = None    # likewise
    missing: str = "raise"
    nAGQ: int = 1


@dataclasses.dataclass(frozen=True, eq=False)
class MixedModelResult(Criteria, TidyViews):
    """A fitted mixed model.

    ``D`` is the estimated covariance of the random-effects distribution (lme4's VarCorr);
    ``ranef`` are the conditional modes (BLUPs), shrunk towards zero, with posterior
    covariances ``cond_var``. For REML fits ``loglik`` is the REML criterion, as in lme4.
    """

    formula: str
    family: str
    link: str
    method: str
    fixef_names: tuple
    re_names: tuple
    group_name: str
    group_labels: tuple
    beta: np.ndarray
    vcov_array: np.ndarray
    D: np.ndarray
    sigma: float | None
    ranef_array: np.ndarray
    cond_var: np.ndarray
    loglik: float
    n_obs: int
    n_groups: int
    converged: bool
    message: str
    n_iter: int
    max_abs_grad: float  # max |∂ℓ/∂φ| over the natural parameters at the estimate
    params: Params
    n_dispersion: int = 0
    nb_size: float | None = None  # the negative binomial's size k (variance μ + μ²/k; lme4's theta)
    re_blocks: tuple | None = None  # block sizes of L when D is block diagonal ((x || g)); None: one block
    n_dropped: int = 0              # rows dropped for missing values (missing="drop")
    fit_options: FitOptions = FitOptions()
    n_devices: int = 1               # devices the groups were sharded over (fit(devices=...))
    n_eval: int = 0                  # objective evaluations, every phase of the fit (lme4's feval)
    # The fitted design (device arrays, rows sorted by group and padded) and where each input
    # row and group sits in it: what predict, simulate, refits and the bootstrap reuse,
    # as lme4 keeps its model frame. It is the design the fit already held, not a copy.
    design: object = dataclasses.field(default=None, repr=False)
    layout: object = dataclasses.field(default=None, repr=False)
    row_index: pd.Index | None = None    # the fitted table's index of the rows, in input order
    # Laplace fits: covariance of all natural parameters (β, free entries of L, log
    # dispersion), the inverse Hessian of −ℓ; for delta-method standard errors.
    cov_natural: np.ndarray | None = None
    encoders: object = None              # _types.Encoders: the model's columns for new data
    status: Status = Status.CONVERGED    # the optimiser's verdict, or SEPARATED / NONFINITE from the checks after it
    family_spec: object = None           # the _families.Family (distribution and link) that was fitted

    def __post_init__(self):
        # Arrays are frozen too: a result is a record of one fit, not a scratch pad.
        for name in ("beta", "vcov_array", "D", "ranef_array", "cond_var"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @property
    def theta(self):
        # lme4 and glmmTMB report the NB2 size as theta; in jaxmm θ is the packed parameter vector
        raise AttributeError("the negative binomial's dispersion is res.nb_size (lme4's theta)")

    @property
    def fixef(self) -> pd.Series:
        """Fixed effects in model-matrix column order (a fresh Series on each access)."""
        return pd.Series(self.beta, index=list(self.fixef_names), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        names = list(self.fixef_names)
        return pd.DataFrame(self.vcov_array, index=names, columns=names)

    @property
    def ranef(self) -> pd.DataFrame:
        """Conditional modes (BLUPs), one row per group, indexed by the group labels of the data."""
        index = pd.Index(list(self.group_labels), name=self.group_name)
        return pd.DataFrame(self.ranef_array, index=index, columns=list(self.re_names))

    @property
    def nAGQ(self) -> int:
        """Quadrature nodes per random effect: 1 for Laplace (and the exact gaussian fits)."""
        return nodes_of(self.method, self.fit_options.nAGQ)

    @property
    def npar(self) -> int:
        structure = self.D.shape[0] if self.re_blocks is None else self.re_blocks
        return len(self.fixef) + n_chol(structure) + self.n_dispersion

    @property
    def singular(self) -> bool:
        """True when D is on the boundary: a relative Cholesky diagonal below 1e-4 (lme4's rule).

        Relative means L/σ for gaussian models and L itself for the others, whose
        random effects are already on the scale of the linear predictor.
        """
        scale = self.sigma if self.family_spec.exact else 1.0
        rel = np.abs(np.diag(np.asarray(self.params.chol))) / scale
        return bool(np.any(rel < 1e-4))

    @property
    def sd(self) -> pd.Series:
        """Standard deviations of the random effects."""
        return pd.Series(np.sqrt(np.diag(self.D)), index=list(self.re_names))

    @property
    def corr(self) -> pd.DataFrame:
        """Correlation matrix of the random effects implied by D."""
        sd = np.sqrt(np.diag(self.D))
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.D / np.outer(sd, sd)
        return pd.DataFrame(c, index=list(self.re_names), columns=list(self.re_names))

    def linear_predictors(self) -> tuple[np.ndarray, np.ndarray]:
        """(Xβ + offset, Xβ + offset + Z b̂) for the fitted rows, in input order."""
        from ._engine import linear_predictors
        from ._sharding import to_host

        slots = np.zeros((self.design.n_groups, self.ranef_array.shape[1]))
        slots[self.layout.group_slot] = self.ranef_array
        fixed, full = linear_predictors(self.design, np.asarray(self.beta), slots)
        return to_host(fixed)[self.layout.row_slot], to_host(full)[self.layout.row_slot]

    def predict(self, newdata=None, *, type: str = "response", re: str = "conditional", offset=None) -> pd.Series:
        """Predictions for the fitted rows (``newdata=None``) or for a new table.

        type : ``"response"`` (the mean, g⁻¹(η); a probability for binomial) or ``"link"`` (η).
        re : ``"conditional"`` adds each group's BLUP; ``"zero"`` sets b = 0 (lme4's
            ``re.form = NA``); ``"population"`` averages over b ~ N(0, D): the marginal
            mean E_b[g⁻¹(xβ + zb)] (``type="link"`` gives its g). Groups not seen in fitting get b = 0: they are listed in
            the result's ``attrs["new_groups"]`` and a warning says how many rows they hold.
        offset : for new data when the fit's ``offset=`` was an array (one value per new row).
        """
        from ._predict import predict

        return predict(self, newdata, type=type, re=re, offset=offset)

    def confint(self, method: str = "wald", level: float = 0.95, **options) -> pd.DataFrame:
        """Confidence intervals: columns ``lower`` and ``upper``; rows the fixed effects (as
        ``fixef``), then the random-effect SDs and correlations (``sd_<name>``,
        ``cor_<a>_<b>``), then ``sigma`` where the family has one.

        ``"wald"``: estimate ± z·SE for the fixed effects; like lme4, no Wald intervals for
        the variance parameters (NaN). ``"boot"``: percentile intervals of a parametric
        bootstrap (``n=500``, ``seed=0`` by default), as lme4's ``confint(method = "boot")``.
        ``"profile"``: profile-likelihood intervals of every parameter (ML fits), as lme4's
        ``confint(method = "profile")``; an end on a bound (SD 0, correlation ±1) is the bound.
        """
        from ._inference import confint, wald_intervals

        def profile(res, level):
            from ._profile import profile_intervals

            return profile_intervals(res, level)

        return confint(self, method, level, options, wald_intervals, profile)

    def simulate(self, n: int = 1, seed: int = 0) -> pd.DataFrame:
        """``n`` new response vectors from the fitted model (columns ``sim_1`` … ``sim_n``,
        one row per fitted row): b ~ N(0, D) drawn afresh, then y | b (lme4's ``simulate``).

        A seed gives the same draws for the same fit. The draws follow the fit's row layout,
        so a fit of the same data with ``devices=`` or ``bucket=False`` draws other (equally
        valid) responses for the same seed."""
        from ._simulate import simulate

        return simulate(self, n, seed)

    def bootstrap(self, n: int = 500, seed: int = 0) -> pd.DataFrame:
        """Parametric bootstrap: simulate ``n`` datasets and refit each. On the CPU the refits
        run one by one through the program that compiled this fit; on an accelerator all in
        one vmapped, compiled fit (batches of about 2²² values). One row per replicate: the
        fixed effects, then the random-effect SDs and correlations, then ``sigma`` where the
        family has one; ``attrs["converged"]`` flags each refit."""
        from ._simulate import bootstrap

        return bootstrap(self, n, seed)

    def shrinkage(self) -> pd.DataFrame:
        """D (the prior) against the BLUPs (posterior modes), one row per random-effect term:
        ``varcorr_var``, ``blup_var``, ``mean_cond_var``, ``shrinkage`` and, for q > 1, the
        correlations from D and from the BLUPs side by side. See ``_shrinkage.shrinkage_table``."""
        from ._shrinkage import shrinkage_table

        return shrinkage_table(self)

    def marginal_coefs(self) -> pd.DataFrame:
        """Population-averaged (marginal) coefficients, after Hedeker et al. and GLMMadaptive:
        the marginal mean μᵢ = E_b[g⁻¹(xᵢβ + zᵢb)], b ~ N(0, D), of every fitted row, then the
        least-squares regression of g(μ) (less any offset) on X. Standard errors by the delta
        method. For an identity link they are the fixed effects themselves."""
        from ._marginal import marginal_coefs

        return marginal_coefs(self)

    def ranef_cov(self) -> pd.DataFrame:
        """Sample covariance of the BLUPs (q×q, ddof = 1, as R's ``var(ranef(fit))``); it is
        smaller than D because the BLUPs are shrunk towards zero."""
        from ._shrinkage import ranef_cov

        return ranef_cov(self)

    def varcorr(self) -> pd.DataFrame:
        """The random-effects table (lme4's VarCorr): variance, SD and correlations."""
        from ._render import varcorr_frame

        return varcorr_frame(self)

    def to_dict(self) -> dict:
        """Everything a report needs, as plain JSON-ready Python values."""
        from ._render import result_dict

        return result_dict(self)

    def plot_caterpillar(self, path=None):
        """BLUPs ± 1.96 conditional SD, sorted (a matplotlib Figure; ``path`` saves a PNG)."""
        from ._plots import caterpillar

        return caterpillar(self, path=path)

    def plot_shrinkage(self, data, path=None):
        """Each group's unpooled estimate against its BLUP; ``data`` is the fitted table."""
        from ._plots import shrinkage

        return shrinkage(self, data, path=path)

    def summary(self) -> str:
        from ._render import summary_text

        return summary_text(self)

    def _repr_html_(self) -> str:
        from ._render import summary_html

        return summary_html(self)

    def __repr__(self) -> str:
        return self.summary()
