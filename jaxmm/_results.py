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
    """What ``fit`` was given besides the formula, data and family, as given: what rebuilds the
    design (refits, ``predict``, ``shrinkage``) and the quadrature's nodes.

    Attributes
    ----------
    trials : str or None
        The column of binomial trial counts.
    offset : str, array or None
        The offset column's name or its values, one per row.
    weights : str, array or None
        The prior weights' column name or values.
    missing : str
        ``"raise"`` or ``"drop"``.
    nAGQ : int
        Quadrature nodes per random effect (1: Laplace).

    Examples
    --------
    >>> import jaxmm
    >>> jaxmm.fit_example("cbpp").fit_options
    FitOptions(trials='size', offset=None, weights=None, missing='raise', nAGQ=1)
    """

    trials: str | None = None
    offset: object = None     # a column name or one value per row
    weights: object = None    # likewise
    missing: str = "raise"
    nAGQ: int = 1


@dataclasses.dataclass(frozen=True, eq=False)
class MixedModelResult(Criteria, TidyViews):
    """A fitted mixed model with one random-effect term, as ``fit`` returns it (immutable).

    ``D`` is the estimated covariance of the random-effects distribution (lme4's VarCorr);
    ``ranef`` are the conditional modes (BLUPs), shrunk towards zero, with posterior
    covariances ``cond_var``. For REML fits ``loglik`` is the REML criterion, as in lme4.

    Attributes
    ----------
    formula, family, link, method : str
        The model as fitted (``method``: ``"REML"``, ``"ML"``, ``"laplace"`` or ``"AGHQ"``).
    fixef_names, re_names : tuple of str
        The fixed effects' and the random effects' names, in model-matrix order.
    group_name : str
        The grouping factor's name.
    group_labels : tuple
        Its levels, in the order of ``ranef``'s rows.
    beta : numpy.ndarray
        β̂ (p,), as ``fixef`` without labels.
    vcov_array : numpy.ndarray
        vcov (p, p), as ``vcov`` without labels.
    D_array : numpy.ndarray
        The random effects' covariance (q, q), as ``D`` without labels.
    sigma : float or None
        The residual SD (gaussian), the gamma's coefficient of variation, else None.
    ranef_array : numpy.ndarray
        The BLUPs (groups, q), as ``ranef`` without labels.
    cond_var : numpy.ndarray
        The BLUPs' conditional covariances (groups, q, q), lme4's ``condVar``.
    loglik : float
        The maximised log-likelihood (the REML criterion for REML fits).
    n_obs, n_groups : int
        Rows and groups fitted.
    converged : bool
        True when the Hessian is positive definite and the Newton decrement is below 1e-8.
    message : str
        Why the optimiser stopped.
    n_iter, n_eval : int
        Optimiser iterations and objective evaluations.
    max_abs_grad : float
        The largest absolute gradient of the log-likelihood at the estimate (natural parameters).
    params : Params
        (β, L, dispersion): the estimate as ``marginal_loglik`` takes it.
    n_dispersion : int
        1 when the family has a dispersion parameter, else 0.
    nb_size : float or None
        The negative binomial's size k (variance μ + μ²/k; lme4's theta).
    re_blocks : tuple or None
        Block sizes of L when D is block diagonal (``(x || g)``); None for one block.
    n_dropped : int
        Rows dropped for missing values (``missing="drop"``).
    fit_options : FitOptions
        What ``fit`` was given besides formula, data and family.
    n_devices : int
        Devices the groups were split over.
    design, layout : object
        The fitted design (device arrays) and where each input row and group sits in it: what
        predictions, simulations and refits reuse, as lme4 keeps its model frame.
    row_index : pandas.Index or None
        The fitted table's index of the rows, in input order.
    cov_natural : numpy.ndarray or None
        Laplace fits: covariance of all natural parameters (inverse Hessian of −loglik).
    encoders : object
        The model's column encodings, for new data.
    status : Status
        The optimiser's verdict.
    family_spec : object
        The fitted family (distribution and link).

    Examples
    --------
    >>> import jaxmm
    >>> res = jaxmm.fit("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"))
    >>> res.fixef.round(3)
    (Intercept)    251.405
    Days            10.467
    Name: estimate, dtype: float64
    >>> res.D.round(2)
                 (Intercept)   Days
    (Intercept)       612.09   9.60
    Days                9.60  35.07
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
    D_array: np.ndarray
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
        for name in ("beta", "vcov_array", "D_array", "ranef_array", "cond_var"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @property
    def theta(self):
        # lme4 and glmmTMB report the NB2 size as theta; in jaxmm θ is the packed parameter vector
        """Not an attribute: the negative binomial's size is ``nb_size`` (lme4's and glmmTMB's
        theta); raises ``AttributeError`` saying so.
        """
        raise AttributeError("the negative binomial's dispersion is res.nb_size (lme4's theta)")

    @property
    def fixef(self) -> pd.Series:
        """The fixed effects, in model-matrix column order (a new Series on each access).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").fixef.round(3)
        (Intercept)    251.405
        Days            10.467
        Name: estimate, dtype: float64
        """
        return pd.Series(self.beta, index=list(self.fixef_names), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        """The fixed effects' covariance, labelled: σ²(XᵀV⁻¹X)⁻¹ for an LMM (conditional on the
        variance parameters, as lme4), the β block of the inverse Hessian for a GLMM.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").vcov.round(3)
                     (Intercept)   Days
        (Intercept)       46.575 -1.451
        Days              -1.451  2.389
        """
        names = list(self.fixef_names)
        return pd.DataFrame(self.vcov_array, index=names, columns=names)

    @property
    def D(self) -> pd.DataFrame:
        """The random effects' covariance (lme4's ``VarCorr``), labelled by the random effects;
        ``D_array`` is the same (q, q) array without labels.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").D.round(2)
                     (Intercept)   Days
        (Intercept)       612.09   9.60
        Days                9.60  35.07
        """
        names = list(self.re_names)
        return pd.DataFrame(self.D_array, index=names, columns=names)

    @property
    def ranef(self) -> pd.DataFrame:
        """The conditional modes (BLUPs), one row per group, indexed by the data's group labels.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").ranef.head(3).round(3)
                 (Intercept)   Days
        Subject
        308            2.259  9.199
        309          -40.399 -8.620
        310          -38.960 -5.449
        """
        index = pd.Index(list(self.group_labels), name=self.group_name)
        return pd.DataFrame(self.ranef_array, index=index, columns=list(self.re_names))

    @property
    def nAGQ(self) -> int:
        """Quadrature nodes per random effect: 1 for Laplace (and the exact gaussian fits).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("cbpp").nAGQ
        1
        """
        return nodes_of(self.method, self.fit_options.nAGQ)

    @property
    def npar(self) -> int:
        """The number of estimated parameters: fixed effects, the free entries of D's Cholesky
        factor and the dispersion (as lme4's ``df`` of ``logLik``).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").npar
        6
        """
        structure = self.D_array.shape[0] if self.re_blocks is None else self.re_blocks
        return len(self.fixef) + n_chol(structure) + self.n_dispersion

    @property
    def singular(self) -> bool:
        """True when D is on the boundary: a relative Cholesky diagonal below 1e-4 (lme4's rule).

        Relative means L/σ for gaussian models and L itself for the others, whose random
        effects are already on the scale of the linear predictor.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").singular
        False
        """
        scale = self.sigma if self.family_spec.exact else 1.0
        rel = np.abs(np.diag(np.asarray(self.params.chol))) / scale
        return bool(np.any(rel < 1e-4))

    @property
    def sd(self) -> pd.Series:
        """The random effects' standard deviations, √diag(D).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").sd.round(3)
        (Intercept)    24.740
        Days            5.922
        dtype: float64
        """
        return pd.Series(np.sqrt(np.diag(self.D_array)), index=list(self.re_names))

    @property
    def corr(self) -> pd.DataFrame:
        """The random effects' correlation matrix implied by D.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").corr.round(3)
                     (Intercept)   Days
        (Intercept)        1.000  0.066
        Days               0.066  1.000
        """
        sd = np.sqrt(np.diag(self.D_array))
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.D_array / np.outer(sd, sd)
        return pd.DataFrame(c, index=list(self.re_names), columns=list(self.re_names))

    def linear_predictors(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted rows' linear predictors without and with the random effects.

        Returns
        -------
        tuple of numpy.ndarray
            (Xβ + offset, Xβ + offset + Zb̂), each (n_obs,), in input order.

        Examples
        --------
        >>> import jaxmm
        >>> fixed, full = jaxmm.fit_example("sleepstudy").linear_predictors()
        >>> fixed[:2].round(3), full[:2].round(3)
        (array([251.405, 261.872]), array([253.664, 273.33 ]))
        """
        from ._engine import linear_predictors
        from ._sharding import to_host

        slots = np.zeros((self.design.n_groups, self.ranef_array.shape[1]))
        slots[self.layout.group_slot] = self.ranef_array
        fixed, full = linear_predictors(self.design, np.asarray(self.beta), slots)
        return to_host(fixed)[self.layout.row_slot], to_host(full)[self.layout.row_slot]

    def predict(self, newdata=None, *, type: str = "response", re: str = "conditional", offset=None) -> pd.Series:
        """Predictions for the fitted rows or for a new table (lme4's ``predict``).

        Parameters
        ----------
        newdata : table, optional
            New rows with the formula's columns; None predicts the fitted rows.
        type : {"response", "link"}
            The mean g⁻¹(η) (a probability for binomial) or the linear predictor η.
        re : {"conditional", "zero", "population"}
            ``"conditional"`` adds each group's BLUP; ``"zero"`` sets b = 0 (lme4's
            ``re.form = NA``); ``"population"`` averages over b ~ N(0, D): the marginal mean
            E_b[g⁻¹(xβ + zb)] (``type="link"`` gives its g). Groups not seen in fitting get b = 0:
            they are listed in the result's ``attrs["new_groups"]`` and a warning says how many
            rows they hold.
        offset : array, optional
            For new data when the fit's ``offset=`` was an array (one value per new row).

        Returns
        -------
        pandas.Series
            One prediction per row, indexed as the rows.

        Examples
        --------
        >>> import jaxmm
        >>> res = jaxmm.fit_example("cbpp")
        >>> res.predict(re="population").head(3).round(4)
        0    0.2161
        1    0.0970
        2    0.0861
        Name: fit, dtype: float64
        """
        from ._predict import predict

        return predict(self, newdata, type=type, re=re, offset=offset)

    def confint(self, method: str = "wald", level: float = 0.95, **options) -> pd.DataFrame:
        """Confidence intervals of every parameter.

        ``"wald"``: estimate ± z·SE for the fixed effects; like lme4, no Wald intervals for the
        variance parameters (NaN). ``"boot"``: percentile intervals of a parametric bootstrap
        (``n=500``, ``seed=0`` by default), as lme4's ``confint(method = "boot")``.
        ``"profile"``: profile-likelihood intervals of every parameter (ML fits), as lme4's
        ``confint(method = "profile")``; an end on a bound (SD 0, correlation ±1) is the bound.

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
            Columns ``lower`` and ``upper``; rows the fixed effects (as ``fixef``), then the
            random-effect SDs and correlations (``sd_<name>``, ``cor_<a>_<b>``), then ``sigma``
            where the family has one.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").confint().round(3).head(2)
                       lower    upper
        (Intercept)  238.029  264.781
        Days           7.438   13.497
        """
        from ._inference import confint, wald_intervals

        def profile(res, level):
            from ._profile import profile_intervals

            return profile_intervals(res, level)

        return confint(self, method, level, options, wald_intervals, profile)

    def simulate(self, n: int = 1, seed: int = 0) -> pd.DataFrame:
        """New responses from the fitted model: b ~ N(0, D) drawn afresh, then y | b (lme4's
        ``simulate``).

        A seed gives the same draws for the same fit. The draws follow the fit's row layout, so
        a fit of the same data with ``devices=`` or ``bucket=False`` draws other (equally valid)
        responses for the same seed.

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
        >>> jaxmm.fit_example("sleepstudy").simulate(2, seed=1).shape
        (180, 2)
        """
        from ._simulate import simulate

        return simulate(self, n, seed)

    def bootstrap(self, n: int = 500, seed: int = 0) -> pd.DataFrame:
        """Parametric bootstrap: simulate ``n`` datasets and refit each (lme4's ``bootMer``).

        On the CPU the refits run one by one through the program that compiled this fit; on an
        accelerator all in one vmapped, compiled fit (batches of about 2²² values).

        Parameters
        ----------
        n : int
            Replicates.
        seed : int
            The random seed of the simulations.

        Returns
        -------
        pandas.DataFrame
            One row per replicate: the fixed effects, then the random-effect SDs and
            correlations, then ``sigma`` where the family has one; ``attrs["converged"]`` flags
            each refit.

        Examples
        --------
        >>> import jaxmm
        >>> boot = jaxmm.fit_example("sleepstudy").bootstrap(20, seed=1)
        >>> boot.shape, bool(boot.attrs["converged"].all())
        ((20, 6), True)
        """
        from ._simulate import bootstrap

        return bootstrap(self, n, seed)

    def shrinkage(self) -> pd.DataFrame:
        """D (the prior) against the BLUPs (posterior modes), one row per random effect.

        Returns
        -------
        pandas.DataFrame
            ``varcorr_var`` (D's diagonal), ``blup_var`` (the BLUPs' sample variance),
            ``mean_cond_var``, ``shrinkage`` and, for q > 1, the correlations from D and from the
            BLUPs side by side. For a gaussian model D ≈ blup_var + mean_cond_var.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").shrinkage()[["varcorr_var", "blup_var"]].round(1)
                     varcorr_var  blup_var
        term
        (Intercept)        612.1     466.4
        Days                35.1      29.8
        """
        from ._shrinkage import shrinkage_table

        return shrinkage_table(self)

    def marginal_coefs(self) -> pd.DataFrame:
        """Population-averaged (marginal) coefficients, after Hedeker et al. and GLMMadaptive.

        The marginal mean μᵢ = E_b[g⁻¹(xᵢβ + zᵢb)], b ~ N(0, D), of every fitted row, then the
        least-squares regression of g(μ) (less any offset) on X; standard errors by the delta
        method. For an identity link they are the fixed effects themselves.

        Returns
        -------
        pandas.DataFrame
            ``estimate``, ``std_error``, ``z`` and ``p`` per fixed effect.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("cbpp").marginal_coefs()["estimate"].round(3)
        (Intercept)   -1.289
        period2       -0.942
        period3       -1.073
        period4       -1.512
        Name: estimate, dtype: float64
        """
        from ._marginal import marginal_coefs

        return marginal_coefs(self)

    def ranef_cov(self) -> pd.DataFrame:
        """The BLUPs' sample covariance (ddof = 1, R's ``var(ranef(fit))``), smaller than D because
        the BLUPs are shrunk towards zero.

        Returns
        -------
        pandas.DataFrame
            q × q, labelled by the random effects.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").ranef_cov().round(1)
                     (Intercept)  Days
        (Intercept)        466.4  31.0
        Days                31.0  29.8
        """
        from ._shrinkage import ranef_cov

        return ranef_cov(self)

    def varcorr(self) -> pd.DataFrame:
        """The random-effects table, as lme4's ``VarCorr``.

        Returns
        -------
        pandas.DataFrame
            One row per random effect (``group``, ``name``, ``variance``, ``std_dev`` and the
            correlations with the effects above it), then ``Residual`` for gaussian fits.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").varcorr()[["group", "name", "std_dev"]].round(3)
              group         name  std_dev
        0   Subject  (Intercept)   24.740
        1   Subject         Days    5.922
        2  Residual                25.592
        """
        from ._render import varcorr_frame

        return varcorr_frame(self)

    def to_dict(self) -> dict:
        """Everything a report needs, as plain JSON-ready Python values (the CLI's ``--json``).

        Returns
        -------
        dict
            Estimates, standard errors, variance components, criteria and convergence.

        Examples
        --------
        >>> import json, jaxmm
        >>> out = jaxmm.fit_example("sleepstudy").to_dict()
        >>> round(out["loglik"], 3), len(json.dumps(out)) > 0
        (-871.814, True)
        """
        from ._render import result_dict

        return result_dict(self)

    def plot_caterpillar(self, path=None):
        """The BLUPs ± 1.96 conditional SD, sorted, one panel per random effect (matplotlib).

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
        >>> fig = jaxmm.fit_example("sleepstudy").plot_caterpillar()
        >>> len(fig.axes)
        2
        """
        from ._plots import caterpillar

        return caterpillar(self, path=path)

    def plot_shrinkage(self, data, path=None):
        """Each group's unpooled estimate (its own regression) against its BLUP, with arrows.

        Parameters
        ----------
        data : table
            The fitted table.
        path : str or path, optional
            Where to save the figure as a PNG.

        Returns
        -------
        matplotlib.figure.Figure

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> fig = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data).plot_shrinkage(data)
        >>> fig is not None
        True
        """
        from ._plots import shrinkage

        return shrinkage(self, data, path=path)

    def summary(self) -> str:
        """The fit in lme4's ``summary`` layout: the model, criteria, scaled residuals, random
        effects, fixed effects (with lmerTest's Satterthwaite df for gaussian fits) and their
        correlations.

        Returns
        -------
        str

        Examples
        --------
        >>> import jaxmm
        >>> print(jaxmm.fit_example("sleepstudy").summary())  # doctest: +ELLIPSIS
        Linear mixed model fit by REML...
        """
        from ._render import summary_text

        return summary_text(self)

    def _repr_html_(self) -> str:
        from ._render import summary_html

        return summary_html(self)

    def __repr__(self) -> str:
        return self.summary()
