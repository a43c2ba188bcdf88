"""The verdict on a fit and the steps it leads to: the convergence check (a positive-definite
Hessian and a negligible Newton decrement), the Newton step, the restart point past a saddle,
and the finite-difference steps of the Hessian (``_driver`` explains their choice)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _smallmat as sm
from ._optimize import Status

# Saddle escape: the step along the most negative curvature (largest entry of the
# direction, on the natural scale), the floor of a restarted log-diagonal, and the
# number of restarts.
#
# The floor reopens every diagonal the attempt drove to zero, not only the one the step
# moves. In log coordinates a diagonal restarted at 1e-3 hardly moves: its gradient is
# L_kk·∂f/∂L_kk ≈ L_kk²·∂²f/∂L_kk², a millionth of the others'. Seen with a floor of
# 1e-3: a sleepstudy bootstrap replicate went from one boundary saddle to the next, with
# a zero diagonal each time, and stopped after its two restarts at −858.8366 where lme4
# reaches −858.7975 (tests/data/boot_replicate_lmm.csv). Reopened at 0.1 it converges in
# one restart; a diagonal whose optimum is zero goes back there.
ESCAPE_STEP, ESCAPE_FLOOR, MAX_ESCAPES = 0.1, 0.1, 2


def no_worse(f_new, f_old):
    return f_new <= f_old + 1e-12 * (1.0 + jnp.abs(f_old))


def decrement_tolerance(work_dtype):
    """(absolute, relative) allowance on the Newton decrement for a converged fit: see
    :func:`final_check`."""
    return 1e-8, max(1e-13, float(jnp.finfo(work_dtype).eps))


def final_check(status, grad, hess, value, work_dtype=None):
    """Converged when the Hessian is positive definite and the Newton decrement says the
    remaining gain in log-likelihood is negligible, whatever rule stopped the loop.

    Negligible is 1e-8 + 1e-13·|ℓ| in float64. With float32 rows the log-likelihood itself
    is only known to about eps32·|ℓ| (its rounding), so a gain below that cannot be
    resolved and the allowance becomes eps32·|ℓ| (0.06 for a million Bernoulli rows).
    """
    abs_tol, rel_tol = decrement_tolerance(work_dtype or value.dtype)
    chol = jnp.linalg.cholesky(hess)
    pd = jnp.all(jnp.isfinite(chol))
    step = jax.scipy.linalg.cho_solve((chol, True), grad)
    # products of these k-vectors as sums, not dots: a dot is a cuBLAS call on a GPU (_smallmat.matmul)
    decrement = 0.5 * jnp.sum(grad * step)
    ok = pd & (decrement <= abs_tol + rel_tol * jnp.abs(value)) & (status != Status.NONFINITE)
    status = jnp.where(ok, Status.CONVERGED,
                       jnp.where(pd | (status == Status.NONFINITE),
                                 jnp.where(status == Status.CONVERGED, Status.STALLED, status),
                                 Status.NOT_PD))
    return status.astype(jnp.int32), decrement


def newton_step(grad, hess, fixed):
    """The Newton step −H⁻¹g with the coordinates in ``fixed`` held where they are (a
    diagonal at exactly 0 stays a boundary estimate), and the decrement ½ gᵀH⁻¹g over the
    free coordinates. NaN where the free block of H is not positive definite."""
    free = ~fixed
    h = jnp.where(free[:, None] & free[None, :], hess, jnp.diag(jnp.ones_like(grad)))
    g = jnp.where(free, grad, 0.0)
    step = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(h), True), g)
    return -step, 0.5 * jnp.sum(g * step)


def restart_step(grad, hess):
    """Where to restart a fit that stopped short, in natural coordinates.

    At a saddle (negative curvature) a step of ESCAPE_STEP along the most negative
    curvature, signed downhill; otherwise (stalled where the Hessian is positive definite,
    e.g. after a projection onto the boundary left a gradient) the Newton step.
    """
    lam, vecs = jnp.linalg.eigh(hess)
    v = vecs[:, 0] / jnp.max(jnp.abs(vecs[:, 0]))
    v = jnp.where(jnp.sum(grad * v) > 0, -v, v)
    newton = -sm.matvec(vecs, sm.matvec(vecs.T, grad) / jnp.where(lam > 0, lam, 1.0))
    newton = jnp.where(jnp.all(jnp.isfinite(newton)), newton, ESCAPE_STEP * v)
    return jnp.where(lam[0] < 0, ESCAPE_STEP * v, newton)


def restart_chol(chol, floor):
    """L with every column's sign set so its diagonal is positive, and the diagonal at least
    ``floor``: a valid start for the log-diagonal packing (D = L Lᵀ ignores column signs)."""
    sign = jnp.where(jnp.diagonal(chol) < 0, -1.0, 1.0).astype(chol.dtype)
    chol = chol * sign[None, :]
    return chol + jnp.diag(jnp.maximum(jnp.diagonal(chol), floor) - jnp.diagonal(chol))


def central_differences(work_dtype) -> bool:
    """Whether the Hessian is taken by central (float32) or forward (float64) differences of
    the gradient; see the module docstring."""
    return float(jnp.finfo(work_dtype).eps) > 1e-10


def difference_steps(phi, work_dtype):
    """The finite-difference steps h (k,) at φ; see the module docstring."""
    rel = float(np.cbrt(jnp.finfo(work_dtype).eps)) if central_differences(work_dtype) else 1e-6
    return rel * (1.0 + jnp.abs(phi))
