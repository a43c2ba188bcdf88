"""The array-level API: no formulas, no pandas, pure JAX functions of (params, design).

``fit()`` is a formula front end over these pieces: it builds its ``Design`` with the
same ``_place_rows.make_design`` and maximises the same ``_quadrature.marginal_loglik``. Here
they are exposed for code that embeds the mixed-model likelihood in its own ``jit``,
``grad`` and ``vmap``, e.g. a neural network that supplies the fixed part of the linear
predictor through ``design.offset`` while the random effects are integrated out.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._place_rows import make_design
from ._types import Design
from ._families import get_family
from ._inner import InnerOptions
from ._jit import kernels_for
from ._laplace import modes_and_cond_var
from ._lmm import lmm_loglik, lmm_modes, lmm_reml_loglik, lmm_stats
from ._params import Params
from ._quadrature import check_dimension, check_nodes, marginal_loglik as _marginal_loglik
from .errors import ArgumentError

__all__ = ["design", "row_order", "marginal_loglik", "conditional_modes"]


def _kernels():
    # These functions run inside the caller's own jit, compiled with XLA's default options
    # on the default backend: the kernels chosen for that (_jit.kernels_for).
    return kernels_for(jax.default_backend())


def design(X, Z, y, groups, *, trials=None, offset=None, weights=None, dtype: str = "float64") -> Design:
    """The fit's data as a ``Design`` pytree, from arrays (no formula, no pandas).

    The rows are stored sorted by group (a stable sort, so rows keep their order within a
    group): design row k is input row ``row_order(groups)[k]``. Replace the offset with
    ``design._replace(offset=eta[row_order(groups)])``, which is differentiable in ``eta``.
    Group slots follow the sorted unique labels (``np.unique(groups)``). Nothing is padded.

    Several random-effect terms: ``Z`` a list of (n, q_k) matrices and ``groups`` a list of as
    many (n,) arrays, one per term (crossed or nested factors, or two terms on one factor).
    The result is a ``CrossedDesign``, its rows in input order (``row_order`` is the
    identity); its params are (β, [L_1, …, L_K], dispersion), one Cholesky factor per term in
    the given order.

    Parameters
    ----------
    X : array_like
        (n, p) fixed-effects columns.
    Z : array_like or list of array_like
        (n, q) random-effects columns, or one (n, q_k) matrix per term.
    y : array_like
        (n,) response (successes for a binomial with ``trials``).
    groups : array_like or list of array_like
        (n,) integer codes or labels of the grouping factor, or one per term.
    trials : array_like, optional
        (n,) binomial trials.
    offset : array_like, optional
        (n,) a known part of the linear predictor.
    weights : array_like, optional
        (n,) prior weights.
    dtype : {"float64", "float32"}
        The precision of the stored rows (several terms: sums over rows stay float64).

    Returns
    -------
    Design or CrossedDesign

    Examples
    --------
    >>> import jaxmm, numpy as np
    >>> data = jaxmm.load_example("sleepstudy")
    >>> X = np.column_stack([np.ones(len(data)), data["Days"]])
    >>> d = jaxmm.design(X, X, data["Reaction"].to_numpy(), data["Subject"].to_numpy())
    >>> d.X.shape, d.n_groups
    ((180, 2), 18)
    """
    if _several(Z):
        from ._crossed_arrays import crossed_design

        return crossed_design(X, list(Z), y, groups, trials=trials, offset=offset, weights=weights, dtype=dtype)
    if dtype not in ("float64", "float32"):
        raise ArgumentError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    n = np.shape(y)[0] if np.ndim(y) else 0
    out, _, _ = make_design(X, Z, y, groups, trials=trials, offset=offset, weights=weights,
                            dtype=jnp.dtype(dtype), chunk_rows=max(n, 1), tile=1)
    return out


def _several(Z) -> bool:
    """Whether ``Z`` is a list of term matrices (several terms) rather than one matrix."""
    return isinstance(Z, (list, tuple)) and len(Z) > 0 and all(np.ndim(z) == 2 for z in Z)


def row_order(groups) -> np.ndarray:
    """The input row of each design row of ``design``.

    Parameters
    ----------
    groups : array_like or list of array_like
        The grouping labels given to ``design``.

    Returns
    -------
    numpy.ndarray
        The stable sort by group (for a list of grouping arrays, several terms, the identity:
        the rows keep their order).

    Examples
    --------
    >>> import jaxmm
    >>> jaxmm.row_order([2, 1, 2, 0])
    array([3, 1, 0, 2])
    """
    if isinstance(groups, (list, tuple)) and len(groups) > 0 and all(np.ndim(g) == 1 for g in groups):
        return np.arange(np.shape(groups[0])[0])
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    return np.argsort(codes.ravel(), kind="stable")


def _family_and_nodes(family, link, method, nAGQ):
    fam = get_family(family, link)
    allowed = ("ML", "REML", "laplace", "AGHQ") if fam.exact else ("laplace", "AGHQ")
    if method not in allowed:
        raise ArgumentError(f"method must be one of {list(allowed)} for family {fam.name!r}, got {method!r}")
    nAGQ = check_nodes(nAGQ)
    if method == "AGHQ" and nAGQ == 1:
        raise ArgumentError("method='AGHQ' needs nAGQ=k with k > 1 (nAGQ=1 is the Laplace approximation)")
    if method == "laplace" and nAGQ > 1:
        method = "AGHQ"
    return fam, nAGQ if method == "AGHQ" else 1


def _as_params(params, fam) -> Params:
    beta, chol, dispersion = params
    beta = jnp.asarray(beta)
    dtype = beta.dtype if jnp.issubdtype(beta.dtype, jnp.floating) else jnp.result_type(float)
    # Only the lower triangle of L enters: entries above the diagonal get zero gradient.
    chol = jnp.tril(jnp.asarray(chol, dtype))
    if fam.n_dispersion:
        dispersion = jnp.asarray(dispersion, dtype)
    else:
        dispersion = jnp.ones((), dtype)
    return Params(beta.astype(dtype), chol, dispersion)


def _check_shapes(params: Params, design: Design):
    p, q = design.X.shape[-1], design.Z.shape[-1]
    if params.beta.shape != (p,):
        raise ArgumentError(f"params.beta has shape {params.beta.shape}; the design has p = {p} fixed-effect columns")
    if params.chol.shape != (q, q):
        raise ArgumentError(f"params.chol has shape {params.chol.shape}; the design has q = {q} random effects, "
                            f"so L must be ({q}, {q})")


def marginal_loglik(params, design: Design, *, family="gaussian", link=None, method: str = "laplace",
                    nAGQ: int = 1, u0=None):
    """The marginal log-likelihood log p(y) at ``params``, a pure JAX function.

    Jittable, vmappable (over params or designs), and differentiable in ``params`` and in
    every float field of ``design`` (e.g. ``design.offset``), exactly: the conditional modes
    enter through the implicit function theorem. It equals ``res.loglik`` at ``res.params``
    and ``res.design`` of a fit.

    Parameters
    ----------
    params : Params or tuple
        (β (p,), the lower Cholesky factor L (q, q) of D = L Lᵀ, the dispersion): σ for
        gaussian, the size for negative binomial, the CV for gamma; ignored by families
        without one. L's diagonal may be 0 or negative (D ignores column signs). Several
        terms: a list of factors, one per term.
    design : Design
        From ``design`` or a fit's ``res.design``.
    family : str
        As for ``fit``.
    link : str, optional
        The link (the family's canonical one by default).
    method : {"laplace", "AGHQ", "ML", "REML"}
        ``"laplace"`` (with ``nAGQ`` > 1, adaptive Gauss–Hermite quadrature, q ≤ 3);
        gaussian models are exact: ``"ML"`` (the same as ``"laplace"``) or ``"REML"`` (the
        restricted likelihood, in which β does not enter).
    nAGQ : int
        Quadrature nodes per random effect.
    u0 : array_like, optional
        (m, q) spherical modes to start the inner Newton solver from (zeros by default).

    Returns
    -------
    jax.Array
        The scalar log-likelihood.

    Examples
    --------
    >>> import jax, jaxmm
    >>> res = jaxmm.fit_example("sleepstudy")
    >>> round(float(jaxmm.marginal_loglik(res.params, res.design, method="REML")), 4)
    -871.8141
    >>> grad = jax.grad(jaxmm.marginal_loglik)(res.params, res.design, method="REML")
    >>> grad.chol.shape
    (2, 2)
    """
    fam, nagq = _family_and_nodes(family, link, method, nAGQ)
    if _is_crossed(design):
        if nagq > 1:
            raise ArgumentError("nAGQ > 1 (adaptive quadrature) integrates one random-effect term; this design has "
                                f"{len(design.order)}")
        if u0 is not None:
            raise ArgumentError("u0 (starting modes) is taken for one random-effect term only")
        from ._crossed_arrays import crossed_loglik

        return crossed_loglik(params, design, fam=fam, reml=method == "REML")
    if nagq > 1:
        check_dimension(design.Z.shape[-1])
    return _loglik(params, design, u0, fam=fam, nagq=nagq, reml=method == "REML", kernels=_kernels())


# The array API's computations are jitted: called outside a jit they are one compiled program
# rather than every operation compiled on its own; inside a caller's jit they are inlined.
@functools.partial(jax.jit, static_argnames=("fam", "nagq", "reml", "kernels"))
def _loglik(params, design: Design, u0, fam, nagq: int, reml: bool, kernels):
    params = _as_params(params, fam)
    _check_shapes(params, design)
    if fam.exact:
        # Exact, from the per-group statistics (quadrature of a gaussian integrand is exact
        # anyway); also right for prior weights, which scale the row variance.
        stats = lmm_stats(design, params.beta.dtype, kernels)
        return (lmm_reml_loglik if reml else lmm_loglik)(params, stats, kernels)
    if u0 is None:
        u0 = jnp.zeros(design.counts.shape + (design.Z.shape[-1],), design.X.dtype)
    return _marginal_loglik(params, design, u0, fam, InnerOptions(kernels=kernels), nagq)[0]


def conditional_modes(params, design: Design, *, family="gaussian", link=None, u0=None):
    """The BLUPs and their conditional covariances at ``params``, a pure JAX function.

    Pure and differentiable like ``marginal_loglik``.

    Parameters
    ----------
    params : Params or tuple
        (β, L, dispersion), as for ``marginal_loglik``.
    design : Design
        From ``design`` or a fit's ``res.design``.
    family : str
        As for ``fit``.
    link : str, optional
        The link.
    u0 : array_like, optional
        Starting spherical modes (one term only).

    Returns
    -------
    tuple of jax.Array
        b̂ (m, q), the conditional modes, and their conditional covariances (m, q, q) (the
        inverse curvature at the mode, L H⁻¹ Lᵀ), one row per group slot of ``design``; for
        several terms, two tuples of those arrays, one per term in the given order.

    Examples
    --------
    >>> import jaxmm
    >>> res = jaxmm.fit_example("sleepstudy")
    >>> b, cond_var = jaxmm.conditional_modes(res.params, res.design)
    >>> b[:2].round(3)
    Array([[  2.259,   9.199],
           [-40.399,  -8.62 ]], dtype=float64)
    """
    if _is_crossed(design):
        if u0 is not None:
            raise ArgumentError("u0 (starting modes) is taken for one random-effect term only")
        from ._crossed_arrays import crossed_modes

        return crossed_modes(params, design, fam=get_family(family, link))
    return _modes(params, design, u0, fam=get_family(family, link), kernels=_kernels())


def _is_crossed(design) -> bool:
    from ._crossed_arrays import CrossedDesign  # imported on use: one-term code never loads it

    return isinstance(design, CrossedDesign)


@functools.partial(jax.jit, static_argnames=("fam", "kernels"))
def _modes(params, design: Design, u0, fam, kernels):
    params = _as_params(params, fam)
    _check_shapes(params, design)
    if fam.exact:
        return lmm_modes(params, lmm_stats(design, params.beta.dtype, kernels), kernels)
    if u0 is None:
        u0 = jnp.zeros(design.counts.shape + (design.Z.shape[-1],), design.X.dtype)
    b, cond_var, _ = modes_and_cond_var(params, design, u0, fam, InnerOptions(kernels=kernels))
    return b, cond_var
