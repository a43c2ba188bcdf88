"""The result of a fit with several random-effect terms:
immutable, with lme4's views of it
(``VarCorr``, ``ranef`` and ``condVar`` per grouping factor) and a summary in lme4's layout.

Terms on one factor, as ``(1 | g) + (0 + x | g)``, are one factor in ``ranef``, ``cond_var``
and ``D`` (their effects side by side; ``D``'s cross block is zero, as the model has it,
while ``cond_var`` keeps the conditional covariances between them), and two rows of
``varcorr()`` under the same group.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ._criteria import Criteria
from ._tidy import TidyViews
from ._optimize import Status
from ._params import same_block
from ._results import FitOptions


@dataclasses.dataclass(frozen=True, eq=False)
class FactorTerm:
    """One term: its factor's label, effect names, level labels, the structure of its
    covariance (q, or the block sizes of ``||``), and its rows' level codes and effects;
    for new data, the factor's columns, its levels as the data held them, and the term's
    formula and model columns (``_types.Encoders``)."""

    label: str
    names: tuple
    levels: tuple
    structure: object
    codes: np.ndarray
    Z: np.ndarray
    columns: tuple = ()
    values: np.ndarray | None = None
    spec: object = None
    encoders: object = None


@dataclasses.dataclass(frozen=True, eq=False)
class FittedRows:
    """The fitted rows on the host, in input order (after dropped rows), as lme4 keeps its
    model frame: what predictions, simulations and refits use. ``terms`` is the static
    shape of the blocked factorisation (``_crossed_lmm.Terms``); ``dtype`` the precision the
    rows are fitted in (``fit``'s ``dtype``)."""

    X: np.ndarray
    y: np.ndarray
    offset: np.ndarray | None
    trials: np.ndarray | None
    weights: np.ndarray | None
    index: pd.Index
    terms: object
    dtype: str = "float64"


@dataclasses.dataclass(frozen=True, eq=False)
class CrossedResult(Criteria, TidyViews):
    """A fitted mixed model with several random-effect terms, as ``fit`` returns it (immutable).

    Terms on one factor, as ``(1 | g) + (0 + x | g)``, are one factor in ``ranef``,
    ``cond_var`` and ``D`` (their effects side by side; ``D``'s cross block is zero, as the
    model has it, while ``cond_var`` keeps the conditional covariances between them).

    Attributes
    ----------
    formula, method, family, link : str
        The model as fitted.
    fixef : pandas.Series
        The fixed effects.
    vcov : pandas.DataFrame
        Their covariance (conditional on the variance parameters for an LMM).
    sigma : float or None
        The residual SD (gaussian), the gamma's coefficient of variation, the negative
        binomial's size; None without a dispersion.
    loglik : float
        The maximised log-likelihood (the REML criterion for REML fits).
    n_obs, n_dropped : int
        Rows fitted, and rows dropped for missing values.
    terms : tuple
        Each term's factor label, effect names, levels and rows, the factor with the most
        levels first.
    chols : tuple of numpy.ndarray
        The Cholesky factor of each term's covariance D_k.
    ranefs, cond_vars : tuple of numpy.ndarray
        Each term's BLUPs (m_k, q_k) and their conditional covariances (m_k, q_k, q_k).
    shared, cross_vars : tuple
        The pairs of terms on one factor and their conditional cross covariances.
    status : Status
        The optimiser's verdict.
    n_iter, n_eval : int
        Optimiser iterations and objective evaluations.
    max_abs_grad : float
        The largest absolute gradient at the estimate.
    npar : int
        Estimated parameters (lme4's ``df`` of ``logLik``).
    family_spec : object
        The fitted family.
    fit_options : FitOptions
        What ``fit`` was given besides formula, data and family.
    rows : object
        The fitted rows, kept for predictions and refits.
    cov_natural : numpy.ndarray or None
        Laplace fits: the covariance of all natural parameters.
    n_devices : int
        Devices the fit was split over.
    job : object or None
        Where ``rows`` are this process's share of a ``jax.distributed`` job's rows (a fit of a
        dataset whose processes each read their own): how refits, simulations and
        Satterthwaite's degrees of freedom reach the other processes' rows.

    Examples
    --------
    >>> import jaxmm
    >>> data = jaxmm.load_example("grouseticks")
    >>> g = jaxmm.fit("TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD) + (1 | LOCATION)", data, family="poisson")
    >>> g.n_levels
    {'BROOD': 118, 'LOCATION': 63}
    >>> g.fixef.round(3)
    (Intercept)    0.467
    YEAR96         1.166
    YEAR97        -0.978
    cHEIGHT       -0.024
    dtype: float64
    """
    formula: str
    method: str
    fixef: pd.Series
    vcov: pd.DataFrame
    sigma: float | None  # the residual SD (gaussian), gamma's CV, NB's size; None without a dispersion
    loglik: float
    n_obs: int
    n_dropped: int
    terms: tuple       # FactorTerm, the factor with the most levels first
    chols: tuple       # Cholesky factor of each term's D_k
    ranefs: tuple      # (m_k, q_k) per term
    cond_vars: tuple   # (m_k, q_k, q_k) per term
    shared: tuple      # pairs of terms on one factor
    cross_vars: tuple  # (m, q_a, q_b) per pair in ``shared``
    status: Status
    n_iter: int
    n_eval: int
    max_abs_grad: float
    npar: int          # lme4's df of logLik
    family: str = "gaussian"
    link: str = "identity"
    family_spec: object = None  # the _families.Family that was fitted
    fit_options: FitOptions = FitOptions()
    rows: FittedRows | None = dataclasses.field(default=None, repr=False)
    # Laplace fits: the covariance of φ = (β, the factors' free entries, log dispersion)
    cov_natural: np.ndarray | None = dataclasses.field(default=None, repr=False)
    n_devices: int = 1  # devices the fit was split over (fit(devices=...))
    job: object = dataclasses.field(default=None, repr=False)  # _process_crossed.Job of a process's share

    @property
    def converged(self) -> bool:
        """True when the Hessian is positive definite and the Newton decrement is below 1e-8.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("grouseticks_terms").converged
        True
        """
        return self.status == Status.CONVERGED

    @property
    def message(self) -> str:
        """Why the optimiser stopped, in words.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("grouseticks_terms").message
        'converged: Newton decrement below tolerance at a positive-definite Hessian'
        """
        return self.status.message

    @property
    def singular(self) -> bool:
        """True when some term's D_k is on the boundary: a relative Cholesky diagonal below 1e-4
        (lme4's rule; relative to σ for gaussian fits).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("grouseticks_terms").singular
        False
        """
        scale = self.sigma if self.family == "gaussian" else 1.0
        return any(bool(np.any(np.abs(np.diag(c)) / scale < 1e-4)) for c in self.chols)

    def _factors(self) -> dict:
        """{factor label: indices of its terms}, in the terms' order."""
        out: dict = {}
        for k, term in enumerate(self.terms):
            out.setdefault(term.label, []).append(k)
        return out

    @property
    def n_levels(self) -> dict:
        """The number of levels of every grouping factor.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("grouseticks_terms").n_levels
        {'BROOD': 118, 'LOCATION': 63}
        """
        return {label: len(self.terms[ks[0]].levels) for label, ks in self._factors().items()}

    @property
    def D(self) -> dict:
        """Each grouping factor's prior covariance of its effects (lme4's VarCorr), a DataFrame
        labelled by the effects; terms on one factor are independent, so their cross block is
        zero.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.D["BROOD"].round(3)
                     (Intercept)
        (Intercept)        0.592
        """
        out = {}
        for label, ks in self._factors().items():
            blocks = [c @ c.T for c in (self.chols[k] for k in ks)]
            size = sum(b.shape[0] for b in blocks)
            D, at = np.zeros((size, size)), 0
            for b in blocks:
                D[at:at + b.shape[0], at:at + b.shape[0]] = b
                at += b.shape[0]
            names = [n for k in ks for n in self.terms[k].names]
            out[label] = pd.DataFrame(D, index=names, columns=names)
        return out

    @property
    def ranef(self) -> dict:
        """Each grouping factor's BLUPs: a DataFrame with one row per level, one column per effect.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.ranef["BROOD"].head(2).round(3)
             (Intercept)
        501       -0.647
        502       -0.506
        """
        return {label: pd.DataFrame(np.hstack([self.ranefs[k] for k in ks]), index=list(self.terms[ks[0]].levels),
                                    columns=[n for k in ks for n in self.terms[k].names])
                for label, ks in self._factors().items()}

    @property
    def cond_var(self) -> dict:
        """Each grouping factor's conditional covariances of its effects, (levels, q, q), rows as in
        ``ranef`` (lme4's ``condVar``).

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.cond_var["LOCATION"].shape
        (63, 1, 1)
        """
        cross = dict(zip(self.shared, self.cross_vars))
        out = {}
        for label, ks in self._factors().items():
            sizes = [self.ranefs[k].shape[1] for k in ks]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            V = np.zeros((self.ranefs[ks[0]].shape[0], starts[-1], starts[-1]))
            for i, a in enumerate(ks):
                V[:, starts[i]:starts[i + 1], starts[i]:starts[i + 1]] = self.cond_vars[a]
                for j, b in enumerate(ks[i + 1:], start=i + 1):
                    block = cross[(a, b)]
                    V[:, starts[i]:starts[i + 1], starts[j]:starts[j + 1]] = block
                    V[:, starts[j]:starts[j + 1], starts[i]:starts[i + 1]] = np.swapaxes(block, 1, 2)
            out[label] = V
        return out

    def varcorr(self) -> pd.DataFrame:
        """lme4's ``VarCorr`` table.

        Returns
        -------
        pandas.DataFrame
            One row per term and effect (``group``, ``name``, ``variance``, ``std_dev``, and
            ``corr``: the correlations with the effects above it in its term), then ``Residual``
            for gaussian fits.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.varcorr()[["group", "variance", "std_dev"]].round(3)
              group  variance  std_dev
        0     BROOD     0.592    0.770
        1  LOCATION     0.330    0.574
        """
        rows = []
        for term, chol in zip(self.terms, self.chols):
            D = chol @ chol.T
            sd = np.sqrt(np.diag(D))
            for k, name in enumerate(term.names):
                corr = tuple(float(D[k, j] / (sd[k] * sd[j])) if sd[k] * sd[j] > 0 else math.nan
                             for j in range(k) if same_block(term.structure, k, j))
                rows.append({"group": term.label, "name": name, "variance": float(D[k, k]), "std_dev": float(sd[k]),
                             "corr": corr})
        if self.family == "gaussian":
            rows.append({"group": "Residual", "name": "", "variance": self.sigma ** 2, "std_dev": self.sigma,
                         "corr": ()})
        return pd.DataFrame(rows)

    def linear_predictors(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted rows' linear predictors without and with the random effects.

        Returns
        -------
        tuple of numpy.ndarray
            (Xβ + offset, Xβ + offset + Σ_k Z_k b̂_k), each (n_obs,), in input order.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> fixed, full = g.linear_predictors()
        >>> fixed[:2].round(3), full[:2].round(3)
        (array([0.402, 0.402]), array([-0.605, -0.605]))
        """
        from ._crossed_predict import linear_predictors

        return linear_predictors(self)

    def predict(self, newdata=None, *, type: str = "response", re="conditional", offset=None) -> pd.Series:
        """Predictions for the fitted rows or for a new table (lme4's ``predict``).

        Parameters
        ----------
        newdata : table, optional
            New rows with the formula's columns; None predicts the fitted rows.
        type : {"response", "link"}
            The mean g⁻¹(η) or the linear predictor η.
        re : {"conditional", "zero", "population"} or list of str
            ``"conditional"`` adds every term's BLUPs; a list of grouping factors (keys of
            ``ranef``) adds only theirs (lme4's ``re.form = ~(1 | g)``); ``"zero"`` sets b = 0
            (``re.form = NA``); ``"population"`` averages over b: the marginal mean
            E_b[g⁻¹(xβ + Σ_k z_k b_k)]. Levels not seen in fitting get b = 0: they are listed as
            (factor, level) in the result's ``attrs["new_groups"]``, with a warning.
        offset : array, optional
            For new data when the fit's ``offset=`` was an array (one value per new row).

        Returns
        -------
        pandas.Series
            One prediction per row.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.predict(re=["LOCATION"]).head(2).round(3)
        0    1.043
        1    1.043
        Name: fit, dtype: float64
        """
        from ._crossed_predict import predict

        return predict(self, newdata, type=type, re=re, offset=offset)

    def confint(self, method: str = "wald", level: float = 0.95, **options) -> pd.DataFrame:
        """Confidence intervals of every parameter.

        ``"wald"``: estimate ± z·SE for the fixed effects, NaN for the variance parameters (as
        lme4). ``"boot"``: percentile intervals of a parametric bootstrap (``n=500``, ``seed=0`` by
        default). ``"profile"``: profile-likelihood intervals of every parameter (ML fits), as
        lme4's ``confint(method = "profile")``; an end on a bound is the bound.

        Parameters
        ----------
        method : {"wald", "profile", "boot"}
            How the intervals are found.
        level : float
            The coverage.
        **options
            ``n`` and ``seed`` for ``"boot"``.

        Returns
        -------
        pandas.DataFrame
            Columns ``lower`` and ``upper``; rows the fixed effects, then each term's SDs and
            correlations (``sd_<name>|<group>``, ``cor_<a>_<b>|<group>``, as lme4's
            ``confint(oldNames = FALSE)``), then the dispersion where the family has one.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.confint().round(3).iloc[[3, 4]]
                              lower  upper
        cHEIGHT              -0.030 -0.017
        sd_(Intercept)|BROOD    NaN    NaN
        """
        from ._inference import confint

        return confint(self, method, level, options, _wald_intervals, _profile_intervals)

    def simulate(self, n: int = 1, seed: int = 0) -> pd.DataFrame:
        """New responses for the fitted rows: every term's b_k ~ N(0, D_k) drawn afresh, then y | b
        (lme4's ``simulate``).

        Parameters
        ----------
        n : int
            How many response vectors.
        seed : int
            The random seed.

        Returns
        -------
        pandas.DataFrame
            Columns ``sim_1`` … ``sim_n``, one row per fitted row.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.simulate(2, seed=1).shape
        (403, 2)
        """
        from ._crossed_refit import simulate

        return simulate(self, n, seed)

    def bootstrap(self, n: int = 500, seed: int = 0) -> pd.DataFrame:
        """Parametric bootstrap: simulate ``n`` datasets and refit each, one after another through
        the program that compiled this fit.

        Parameters
        ----------
        n : int
            Replicates.
        seed : int
            The random seed of the simulations.

        Returns
        -------
        pandas.DataFrame
            One row per replicate: the fixed effects, then the rows of ``confint`` for the
            variance parameters; ``attrs["converged"]`` flags each refit.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.bootstrap(5, seed=1).shape
        (5, 6)
        """
        from ._crossed_refit import bootstrap

        return bootstrap(self, n, seed)

    def shrinkage(self) -> pd.DataFrame:
        """D (the prior) against the BLUPs (posterior modes), one row per grouping factor and
        effect.

        Returns
        -------
        pandas.DataFrame
            Indexed by (group, term): ``varcorr_var``, ``blup_var``, ``mean_cond_var``,
            ``shrinkage`` and, where a factor has several effects, the correlations from D and
            from the BLUPs (as ``MixedModelResult.shrinkage``).

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.shrinkage()[["varcorr_var", "blup_var"]].round(3)
                              varcorr_var  blup_var
        group    term
        BROOD    (Intercept)        0.592     0.302
        LOCATION (Intercept)        0.330     0.121
        """
        from ._shrinkage import factor_shrinkage

        return factor_shrinkage(self)

    def marginal_coefs(self) -> pd.DataFrame:
        """Population-averaged (marginal) coefficients, as ``MixedModelResult.marginal_coefs``.

        The marginal mean of every fitted row averages over all the terms' effects (a row's
        variance is Σ_k z_k D_k z_kᵀ, the terms being independent); then the least-squares
        regression of g(μ) (less any offset) on X, standard errors by the delta method. For an
        identity link they are the fixed effects themselves.

        Returns
        -------
        pandas.DataFrame
            ``estimate``, ``std_error``, ``z`` and ``p`` per fixed effect.

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> g.marginal_coefs()["estimate"].round(3)
        (Intercept)    0.928
        YEAR96         1.166
        YEAR97        -0.978
        cHEIGHT       -0.024
        Name: estimate, dtype: float64
        """
        from ._marginal import terms_marginal_coefs

        return terms_marginal_coefs(self)

    def ranef_cov(self) -> dict:
        """Each factor's sample covariance of its BLUPs (ddof = 1, as R's ``var(ranef(fit)$g)``);
        smaller than ``D[factor]`` because the BLUPs are shrunk towards zero.

        Returns
        -------
        dict of str to pandas.DataFrame

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> round(float(g.ranef_cov()["BROOD"].iloc[0, 0]), 3)
        0.302
        """
        from ._shrinkage import factor_ranef_cov

        return factor_ranef_cov(self)

    def to_dict(self) -> dict:
        """Everything a report needs, as plain JSON-ready Python values (the CLI's ``--json``).

        Returns
        -------
        dict

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> round(g.to_dict()["loglik"], 3)
        -987.938
        """
        from ._crossed_render import result_dict

        return result_dict(self)

    def plot_caterpillar(self, path=None):
        """The BLUPs ± 1.96 conditional SD, sorted, one panel per factor and effect (matplotlib).

        Parameters
        ----------
        path : str or path, optional
            Where to save the figure as a PNG.

        Returns
        -------
        matplotlib.figure.Figure

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> len(g.plot_caterpillar().axes)
        2
        """
        from ._plots import factor_caterpillar

        return factor_caterpillar(self, path=path)

    def summary(self) -> str:
        """The fit in lme4's ``summary`` layout, with the number of levels of every factor.

        Returns
        -------
        str

        Examples
        --------
        >>> import jaxmm
        >>> g = jaxmm.fit_example("grouseticks_terms")
        >>> print(g.summary())  # doctest: +ELLIPSIS
        Generalized linear mixed model fit by maximum likelihood (Laplace approximation)
        ...
        Number of obs: 403, groups:  BROOD, 118; LOCATION, 63
        ...
        """
        from ._crossed_render import summary_text

        return summary_text(self)

    def _repr_html_(self) -> str:
        from ._crossed_render import summary_html

        return summary_html(self)

    def __repr__(self) -> str:
        return self.summary()


def _wald_intervals(res: CrossedResult, level: float) -> pd.DataFrame:
    from ._crossed_refit import parameter_names
    from ._inference import normal_quantile

    z = normal_quantile(0.5 + level / 2.0)
    se = np.sqrt(np.diag(res.vcov.to_numpy()))
    extra = parameter_names(res)[0]
    nan = [math.nan] * len(extra)
    return pd.DataFrame({"lower": list(res.fixef.to_numpy() - z * se) + nan,
                         "upper": list(res.fixef.to_numpy() + z * se) + nan}, index=list(res.fixef.index) + extra)


def _profile_intervals(res: CrossedResult, level: float) -> pd.DataFrame:
    from ._crossed_profile import crossed_profile_intervals

    return crossed_profile_intervals(res, level)
