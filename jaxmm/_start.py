"""Where a fit starts: β by weighted least squares on a linearised response, D = I, and the
map that puts the fixed effects on one scale for the optimiser. Statistics of the whole
design, taken one chunk of rows at a time."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _smallmat as sm
from ._params import Params, pack, vec_from_chol
from ._types import Design


def _weighted_gram(X, weights, dtype, as_sums: bool):
    return sm.gram(X.astype(dtype), weights.astype(dtype), as_sums)


def _design_sums(fn, chunked: Design, whole: bool = False):
    """Σ over the chunks (leading axis) of ``fn(chunk)``, a pytree of arrays: a statistic of
    the whole design computed one chunk's rows at a time, so that its temporaries are one
    chunk's. Taken on the whole design at once, the start values and the normalising
    constant of a 10M-row fit held 1.1 GB of temporaries (X·w, a transposed copy of X, the
    log-gamma terms), the largest part of its peak memory.

    ``whole``: on the rows of all chunks at once (a design sharded over devices, whose
    chunks are split between them: each device then sums its own rows)."""
    if whole or chunked.y.shape[0] == 1:
        return fn(jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), chunked))
    return jax.tree.map(lambda a: jnp.sum(a, axis=0), jax.lax.map(fn, chunked))


def weighted_gram(chunked: Design, dtype, whole: bool = False, as_sums: bool = False):
    """Xᵀ diag(w) X (p, p) over every row of the chunks, and the number of rows of positive
    weight. For wide X it is the start's most expensive part (N·p² products): it is taken
    once, for the start values and for the orthonormalising map. ``as_sums``: products as
    sums (``_jit.Kernels``)."""
    return _design_sums(lambda d: (_weighted_gram(d.X, d.weights, dtype, as_sums),
                                   jnp.sum(d.weights > 0).astype(dtype)), chunked, whole)


def initial_theta(chunked: Design, family, structure=None, whole: bool = False, gram=None,
                  as_sums: bool = False) -> jnp.ndarray:
    """β by weighted least squares on a linearised response, D = I, σ from the residuals.

    ``chunked``: the design as stacked chunks (``_engine._chunked``; a leading axis of 1 for
    one chunk). ``structure``: the random-effects block sizes (see ``_params.free_entries``);
    one correlated block by default. ``whole`` as in :func:`_design_sums`. ``gram``: Xᵀ diag(w) X
    when the caller has it (:func:`weighted_gram`). ``as_sums`` as in :func:`weighted_gram`.

    Normal equations rather than a QR/SVD of X: at 10M rows those would hold an N×p factor.
    """
    work = chunked.X.dtype

    def linearised(d):
        return family.initial_eta(d.y, d.trials) - d.offset

    if gram is None:
        gram = weighted_gram(chunked, work, whole, as_sums)[0]
    rhs = _design_sums(lambda d: sm.cross(d.X, d.weights * linearised(d), as_sums), chunked, whole)
    rhs = rhs.astype(gram.dtype)
    # Cholesky, not jnp.linalg.solve: LU's pivoting compiles to loops of small kernels, slow
    # to compile (docs/performance.md); the Gram matrix is positive definite.
    beta = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(gram), True), rhs)

    def residuals(d):  # in β's dtype (a float32 design's rows are upcast)
        acc = beta.dtype
        r = linearised(d).astype(acc) - sm.matvec(d.X.astype(acc), beta)
        weights = d.weights.astype(acc)
        return jnp.sum(weights * r * r), jnp.sum(weights)

    ss, total_weight = _design_sums(residuals, chunked, whole)
    q = chunked.Z.shape[-1]
    resid_sd = jnp.sqrt(ss / total_weight)
    disp = jnp.maximum(resid_sd, 1e-3) if family.n_dispersion else jnp.ones(())
    return pack(Params(beta, jnp.eye(q, dtype=beta.dtype), disp), family.n_dispersion, structure)


def initial_relative_chol(design: Design, structure=None) -> jnp.ndarray:
    """Λ = I (lme4's start): random-effect SDs equal to the residual SD."""
    q = design.Z.shape[1]
    return vec_from_chol(jnp.eye(q, dtype=design.X.dtype), structure)


def _orthonormalising_map(gram, n):
    """A with √w·X·A having orthogonal columns of RMS 1, so the optimiser sees β on one scale,
    and its inverse.

    Without it a covariate such as age² (values in the hundreds) gives a gradient
    thousands of times larger than the others and L-BFGS crawls. From the Cholesky factor
    of the p×p Gram matrix, so no N×p factor is formed; A only preconditions, so the
    squared condition number costs nothing in the estimates. ``gram``, ``n``: from
    :func:`weighted_gram`.
    """
    dtype = gram.dtype
    chol = jnp.linalg.cholesky(gram / n)
    eye = jnp.eye(gram.shape[0], dtype=dtype)
    A = jax.scipy.linalg.solve_triangular(chol.T, eye, lower=False)
    # A singular Gram (aliased columns are dropped upstream, so only in hand-made designs)
    # falls back to no preconditioning rather than NaN.
    ok = jnp.all(jnp.isfinite(A))
    return jnp.where(ok, A, eye), jnp.where(ok, chol.T, eye)
