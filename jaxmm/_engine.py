"""Whole fits as single jitted functions of (starting values, design).

Each returns a dict of arrays only; turning them into labelled pandas objects is the
job of ``_fit.py``. Family and options are static (hashable), the design is a pytree
argument, so a second dataset of the same shape reuses the compiled fit.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._design import Design
from ._inner import InnerOptions
from ._laplace import laplace_loglik, modes_and_cond_var
from ._lmm import lmm_solution, lmm_stats, profiled_loglik
from ._optimize import OptOptions, Status, minimize
from ._params import Params, chol_from_vec, n_chol, pack, unpack, vec_from_chol


def initial_theta(design: Design, family) -> jnp.ndarray:
    """β by weighted least squares on a linearised response, D = I, σ from the residuals."""
    eta0 = family.initial_eta(design.y, design.trials) - design.offset
    sw = jnp.sqrt(design.weights)
    beta, *_ = jnp.linalg.lstsq(design.X * sw[:, None], eta0 * sw)
    q = design.Z.shape[1]
    resid_sd = jnp.sqrt(jnp.sum(design.weights * (eta0 - design.X @ beta) ** 2) / jnp.sum(design.weights))
    disp = jnp.maximum(resid_sd, 1e-3) if family.n_dispersion else jnp.ones(())
    return pack(Params(beta, jnp.eye(q, dtype=beta.dtype), disp), family.n_dispersion)


def initial_relative_chol(design: Design) -> jnp.ndarray:
    """Λ = I (lme4's start): random-effect SDs equal to the residual SD."""
    q = design.Z.shape[1]
    return vec_from_chol(jnp.eye(q, dtype=design.X.dtype))


def _natural_objective(phi, u, design, family, inner, p, q):
    """−ℓ over (β, tril L with a raw diagonal, log dispersion): smooth on the boundary L_kk = 0."""
    rows, cols = np.tril_indices(q)
    chol = jnp.zeros((q, q), phi.dtype).at[rows, cols].set(phi[p:p + n_chol(q)])
    disp = jnp.exp(phi[p + n_chol(q)]) if family.n_dispersion else jnp.ones((), phi.dtype)
    return -laplace_loglik(Params(phi[:p], chol, disp), design, u, family, inner)[0]


def _orthonormalising_map(X, weights, dtype):
    """A with √w·X·A having orthogonal columns of RMS 1, so the optimiser sees β on one scale.

    Without it a covariate such as age² (values in the hundreds) gives a gradient
    thousands of times larger than the others and L-BFGS crawls.
    """
    _, R = jnp.linalg.qr((X * jnp.sqrt(weights)[:, None]).astype(dtype))
    n = jnp.sum(weights > 0)
    return jax.scipy.linalg.solve_triangular(R, jnp.eye(R.shape[0], dtype=X.dtype), lower=False) * jnp.sqrt(n)


def _final_check(status, grad, hess, value, work_dtype=None):
    """Converged when the Hessian is positive definite and the Newton decrement says the
    remaining gain in log-likelihood is negligible, whatever rule stopped the loop.

    Negligible is 1e-8 + 1e-13·|ℓ| in float64. With float32 rows the log-likelihood itself
    is only known to about eps32·|ℓ|, so the allowance grows to eps32/10·|ℓ| (6e-3 for a
    million Bernoulli rows), still below what float32 can resolve.
    """
    eps = float(jnp.finfo(work_dtype or value.dtype).eps)
    rel = max(1e-13, eps / 10)
    chol = jnp.linalg.cholesky(hess)
    pd = jnp.all(jnp.isfinite(chol))
    step = jax.scipy.linalg.cho_solve((chol, True), grad)
    decrement = 0.5 * grad @ step
    ok = pd & (decrement <= 1e-8 + rel * jnp.abs(value)) & (status != Status.NONFINITE)
    status = jnp.where(ok, Status.CONVERGED,
                       jnp.where(pd | (status == Status.NONFINITE), jnp.where(status == Status.CONVERGED, Status.STALLED, status),
                                 Status.NOT_PD))
    return status, decrement


def _grad_and_hessian(f, x):
    """Gradient and exact Hessian, the latter as forward-over-reverse products one column
    at a time; the gradient is the primal output of those products.

    lax.map rather than jax.hessian: vmapping second-order tangents through the
    conditional-mode solver stalls XLA:CPU from about 200k rows (seen with jax 0.10.2),
    while the sequential map is also lighter on memory.
    """
    grad = jax.grad(f)
    grads, cols = jax.lax.map(lambda e: jax.jvp(grad, (x,), (e,)), jnp.eye(x.shape[0], dtype=x.dtype))
    return grads[0], 0.5 * (cols + cols.T)


def _natural_phi(params: Params, n_dispersion: int):
    q = params.chol.shape[0]
    rows, cols = np.tril_indices(q)
    return jnp.concatenate([params.beta, params.chol[rows, cols]]
                           + ([jnp.log(params.dispersion)[None]] if n_dispersion else []))


@functools.partial(jax.jit, static_argnames=("family", "inner", "opt"))
def fit_glmm(theta0, design: Design, family, inner=InnerOptions(), opt=OptOptions()):
    p, q = design.X.shape[1], design.Z.shape[1]
    nd = family.n_dispersion
    # θ, the optimiser and sums over groups run in `acc` (float64 unless x64 is off); rows
    # and groups in the design's dtype, which may be float32 for speed.
    acc, work = theta0.dtype, design.X.dtype
    A = _orthonormalising_map(design.X, design.weights, acc).astype(work).astype(acc)
    scaled = design._replace(X=design.X @ A.astype(work))

    # Without a dispersion the normalising constants (log-gamma terms) depend on the data
    # alone: sum them once rather than in every objective evaluation.
    log_norm = None if nd else jnp.sum(design.weights.astype(acc) * family.normalizer(
        design.y.astype(acc), design.trials.astype(acc), jnp.ones((), acc)))

    def objective(theta, u, d):
        ll, u_new = laplace_loglik(unpack(theta, p, q, nd), d, u, family, inner, log_norm)
        return -ll, u_new

    theta0 = theta0.at[:p].set(jnp.linalg.solve(A, theta0[:p]))
    u0 = jnp.zeros((design.n_groups, q), design.X.dtype)
    res = minimize(objective, theta0, u0, scaled, opt)
    params = unpack(res.x, p, q, nd)
    params = params._replace(beta=A @ params.beta)
    ranef, cond_var, u = modes_and_cond_var(params, design, res.warm, family, inner)

    # vcov: the β block of the inverse Hessian of −ℓ over all parameters. The block is
    # invariant to how θ is parameterised at an optimum; the raw Cholesky scale keeps the
    # Hessian non-singular when a variance sits at zero, where the log scale would not.
    phi = _natural_phi(params, nd)
    args = (u, design, family, inner, p, q)
    natural = lambda v: _natural_objective(v, *args)
    grad, hess = _grad_and_hessian(natural, phi)
    status, decrement = _final_check(res.status, grad, hess, res.value, work)
    cov = jnp.linalg.inv(hess)
    return dict(
        theta=res.x, loglik=-res.value, grad=grad, n_iter=res.n_iter, status=status,
        decrement=decrement, beta=params.beta, chol=params.chol, dispersion=params.dispersion,
        vcov=cov[:p, :p], ranef=ranef, cond_var=cond_var,
    )


@functools.partial(jax.jit, static_argnames=("reml", "opt"))
def fit_lmm(theta0, design: Design, reml: bool, opt=OptOptions()):
    q = design.Z.shape[1]
    stats = lmm_stats(design, theta0.dtype)

    def objective(theta, warm, s):
        return -profiled_loglik(chol_from_vec(theta, q), s, reml), warm

    res = minimize(objective, theta0, jnp.zeros(()), stats, opt)
    lam = chol_from_vec(res.x, q)
    sol = lmm_solution(lam, stats, reml)

    rows, cols = np.tril_indices(q)

    def natural(v):
        return -profiled_loglik(jnp.zeros((q, q), v.dtype).at[rows, cols].set(v), stats, reml)

    phi = lam[rows, cols]
    grad, hess = _grad_and_hessian(natural, phi)
    status, decrement = _final_check(res.status, grad, hess, res.value)
    return dict(
        theta=res.x, loglik=-res.value, grad=grad, n_iter=res.n_iter, status=status, decrement=decrement,
        beta=sol.beta, chol=sol.chol, dispersion=sol.sigma,
        vcov=sol.vcov, ranef=sol.ranef, cond_var=sol.cond_var,
    )
