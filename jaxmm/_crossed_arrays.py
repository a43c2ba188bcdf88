"""The array-level API for several random-effect terms: a :class:`CrossedDesign` from arrays,
and the marginal log-likelihood and conditional modes at given parameters, pure JAX
functions of (params, design) as :mod:`._arrays` offers for one term.

``params`` are (β, (L_1, …, L_K), dispersion): one lower Cholesky factor of D_k per term, in
the order the terms were given to :func:`crossed_design`. The gaussian family is exact (ML or
REML) from the blocked statistics, built here in JAX from the rows so that they stay
differentiable in ``y`` and ``offset``; the other families are the Laplace approximation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._crossed_effects import effects, spherical_modes
from ._crossed_engine import effects_at_modes
from ._crossed_laplace import CrossedRows, _gram, crossed_rows, laplace_loglik, modes, widened
from ._crossed_lmm import CrossedStats, Factor, Terms, _gls, plan_terms, reduce
from ._grouping import unique_inverse
from .errors import ArgumentError, DataError

_LOG_2PI = float(np.log(2.0 * np.pi))


@jax.tree_util.register_pytree_node_class
class CrossedDesign:
    """Rows with several random-effect terms, in input order (nothing sorted or padded).

    ``rows`` (``_crossed_laplace.CrossedRows``, the terms in the engine's order: the factor
    with the most levels first) and ``weights`` are arrays; ``terms``, ``order`` (the
    given term of each engine term) and ``weighted`` are static."""

    def __init__(self, rows: CrossedRows, weights, terms: Terms, order: tuple, weighted: bool):
        self.rows, self.weights, self.terms, self.order, self.weighted = rows, weights, terms, order, weighted

    def tree_flatten(self):
        return (self.rows, self.weights), (self.terms, self.order, self.weighted)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def _replace(self, **fields):
        """A copy with some fields of ``rows`` (``y``, ``offset``, …) or ``weights`` replaced,
        as for a one-term :class:`Design`: ``design._replace(offset=eta)``."""
        weights = fields.pop("weights", self.weights)
        return CrossedDesign(self.rows._replace(**fields), weights, self.terms, self.order, self.weighted)

    @property
    def y(self):
        return self.rows.y

    @property
    def offset(self):
        return self.rows.offset


def _matrix(name: str, a, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[0] != n:
        raise ArgumentError(f"{name} must be an (n, k) matrix with n = {n} rows, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has values that are not finite")
    return a


def _vector(name: str, a, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.shape != (n,):
        raise ArgumentError(f"{name} must have shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has values that are not finite")
    return a


def crossed_design(X, Zs, y, groups, *, trials=None, offset=None, weights=None, dtype: str = "float64"):
    """A :class:`CrossedDesign` from arrays: ``Zs`` one (n, q_k) matrix and ``groups`` one
    (n,) array of codes or labels per term (:func:`._arrays.design` with lists)."""
    if dtype not in ("float64", "float32"):
        raise ArgumentError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if not isinstance(groups, (list, tuple)) or len(groups) != len(Zs):
        raise ArgumentError(f"Z is a list of {len(Zs)} term matrices: groups must be a list of as many grouping "
                            "arrays, one per term")
    if len(Zs) < 2:
        raise ArgumentError("a list Z needs at least two terms; pass one term's Z as a matrix")
    y = _vector("y", y, np.shape(y)[0] if np.ndim(y) else -1)
    n = y.shape[0]
    X = _matrix("X", X, n)
    Zs = [_matrix(f"Z[{k}]", Z, n) for k, Z in enumerate(Zs)]
    codes, levels = [], []
    for k, g in enumerate(groups):
        g = np.asarray(g)
        if g.shape != (n,):
            raise ArgumentError(f"groups[{k}] must have shape ({n},), got {g.shape}")
        if pd.isna(g).any():
            rows = np.flatnonzero(pd.isna(g))
            raise DataError(f"groups[{k}] has {rows.size} missing value(s) (first rows: {rows[:5].tolist()})")
        labels, code = unique_inverse(g)
        codes.append(np.asarray(code))
        levels.append(len(labels))
    order, terms = plan_terms([Z.shape[1] for Z in Zs], levels, codes, [f"term {k}" for k in range(len(Zs))])
    rows = crossed_rows(y, X, [Zs[k] for k in order], [codes[k] for k in order], terms,
                        offset=None if offset is None else _vector("offset", offset, n),
                        trials=None if trials is None else _vector("trials", trials, n), dtype=dtype)
    w = np.ones(n) if weights is None else _vector("weights", weights, n)
    if np.any(w < 0):
        raise DataError("weights must not be negative")
    return CrossedDesign(rows, jnp.asarray(w), terms, tuple(order), weights is not None)


def fitted_design(res) -> CrossedDesign:
    """The design of a several-term fit's rows (``CrossedResult``), its terms in the fit's order."""
    rows, terms = res.rows, res.terms
    data = crossed_rows(rows.y, rows.X, [t.Z for t in terms], [t.codes for t in terms], rows.terms,
                        offset=rows.offset, trials=rows.trials, dtype=rows.dtype)
    w = np.ones(rows.y.shape[0]) if rows.weights is None else rows.weights
    if res.job is not None:  # a process's share: every process's rows, split over the job's mesh
        data, w = res.job.design(data, w, [t.codes for t in terms], rows.terms)
    return CrossedDesign(data, jnp.asarray(w), rows.terms, tuple(range(len(terms))), rows.weights is not None)


def _params(params, design: CrossedDesign, fam):
    """(β, the factors L_k in the engine's order, dispersion), checked against the design."""
    beta, chols, dispersion = params
    beta = jnp.asarray(beta)
    dtype = beta.dtype if jnp.issubdtype(beta.dtype, jnp.floating) else jnp.result_type(float)
    p = design.rows.X.shape[1]
    if beta.shape != (p,):
        raise ArgumentError(f"params.beta has shape {beta.shape}; the design has p = {p} fixed-effect columns")
    if not isinstance(chols, (list, tuple)) or len(chols) != len(design.order):
        raise ArgumentError(f"params.chol must be a list of {len(design.order)} Cholesky factors, one per term")
    given_q = {k: q for k, q in zip(design.order, design.terms.q)}
    out = []
    for k in design.order:
        L = jnp.tril(jnp.asarray(chols[k], dtype))
        if L.shape != (given_q[k], given_q[k]):
            raise ArgumentError(f"params.chol[{k}] has shape {L.shape}; term {k} has q = {given_q[k]} effects")
        out.append(L)
    if fam.name != "gaussian" and design.weighted:
        raise ArgumentError(f"prior weights apply only to the gaussian family, not {fam.name!r}")
    disp = jnp.asarray(dispersion, dtype) if fam.n_dispersion else jnp.ones((), dtype)
    return beta.astype(dtype), tuple(out), disp


def lmm_stats(design: CrossedDesign):
    """The blocked statistics of the gaussian model (weighted sums of the rows, y less the
    offset), in JAX: ``crossed_stats`` computes the same on the host for ``fit``."""
    rows, w, terms = widened(design.rows, design.weights.dtype), design.weights, design.terms
    m1, r = terms.m[0], terms.rest
    yt = rows.y - rows.offset
    Z1w = rows.Z1 * w[:, None]
    wv = rows.rv * w[:, None]
    Xw = rows.X * w[:, None]
    return _gram(w, rows, terms)._replace(
        Z1tX=jax.ops.segment_sum(Z1w[:, :, None] * rows.X[:, None, :], rows.g1, m1),
        Z1ty=jax.ops.segment_sum(Z1w * yt[:, None], rows.g1, m1),
        Z2tX=jnp.zeros((r + 1, rows.X.shape[1]), yt.dtype).at[rows.rc].add(wv[:, :, None] * rows.X[:, None, :])[:r],
        Z2ty=jnp.zeros((r + 1,), yt.dtype).at[rows.rc].add(wv * yt[:, None])[:r],
        XtX=Xw.T @ rows.X, Xty=Xw.T @ yt, yty=jnp.sum(w * yt * yt), n=jnp.sum(w > 0).astype(yt.dtype),
        half_log_w=0.5 * jnp.sum(jnp.log(jnp.where(w > 0, w, 1.0))))


def exact_loglik(beta, chols, sigma, stats: CrossedStats, terms: Terms, reml: bool):
    """The gaussian log-likelihood at (β, L_k, σ): ℓ = −½[n log 2πσ² + log|A| + r(β)/σ²], r(β)
    the penalised residual sum at β; REML integrates β out: (n − p) log 2πσ², + log|XᵀRX|,
    r at β̂ (lme4's criteria)."""
    red = reduce(tuple(L / sigma for L in chols), stats, terms)
    _, pwrss_hat, logdet_X, _ = _gls(red.XtRX, red.XtRy, red.ytRy)
    sigma2 = sigma * sigma
    if reml:
        dof = stats.n - beta.shape[0]
        value = dof * (_LOG_2PI + jnp.log(sigma2)) + red.logdet_A + logdet_X + pwrss_hat / sigma2
    else:
        pwrss = red.ytRy - 2.0 * beta @ red.XtRy + beta @ red.XtRX @ beta
        value = stats.n * (_LOG_2PI + jnp.log(sigma2)) + red.logdet_A + pwrss / sigma2
    return -0.5 * value + stats.half_log_w


@functools.partial(jax.jit, static_argnames=("fam", "reml"))
def crossed_loglik(params, design: CrossedDesign, fam, reml: bool):
    beta, chols, disp = _params(params, design, fam)
    if fam.exact:
        return exact_loglik(beta, chols, disp, lmm_stats(design), design.terms, reml)
    terms = design.terms
    u1 = jnp.zeros((terms.m[0], terms.q[0]), beta.dtype)
    u2 = jnp.zeros((terms.rest,), beta.dtype)
    return laplace_loglik(beta, chols, disp, design.rows, terms, fam, u1, u2)[0]


@functools.partial(jax.jit, static_argnames=("fam",))
def crossed_modes(params, design: CrossedDesign, fam):
    """(BLUPs b_k (m_k, q_k), conditional covariances (m_k, q_k, q_k)), tuples in the given
    order of the terms."""
    beta, chols, disp = _params(params, design, fam)
    terms = design.terms
    if fam.exact:
        stats = lmm_stats(design)
        lams = tuple(L / disp for L in chols)
        red = reduce(lams, stats, terms)
        u1, u2 = spherical_modes(red, stats, beta)
        b, cond, _ = effects(Factor(red.C1, red.Cc, red.C2), stats, lams, terms, u1, u2)
        cond = tuple(disp * disp * v for v in cond)
    else:
        rows = design.rows
        u1, u2, _ = modes(beta, chols, disp, jnp.zeros((terms.m[0], terms.q[0]), beta.dtype),
                          jnp.zeros((terms.rest,), beta.dtype), rows, terms, fam)
        b, cond, _ = effects_at_modes(beta, chols, disp, u1, u2, rows, terms, fam)
    position = {k: i for i, k in enumerate(design.order)}
    given = sorted(position)
    return tuple(b[position[k]] for k in given), tuple(cond[position[k]] for k in given)
