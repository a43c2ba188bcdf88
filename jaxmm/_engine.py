"""Whole fits as single jitted functions of (starting values, design).

Each returns a dict of arrays only; turning them into labelled pandas objects is the
job of ``_fit.py``. Family and options are static (hashable), the design is a pytree
argument, so a second dataset of the same shape reuses the compiled fit.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._design import Design
from ._inner import InnerOptions
from ._laplace import laplace_loglik, modes_and_cond_var
from ._lmm import lmm_solution, lmm_stats, profiled_loglik
from ._optimize import OptOptions, Status, minimize
from ._params import Params, chol_from_vec, free_entries, n_chol, pack, re_dim, unpack, vec_from_chol


def _weighted_gram(X, weights, dtype):
    Xa = X.astype(dtype)
    return Xa.T @ (Xa * weights.astype(dtype)[:, None])


def initial_theta(design: Design, family, structure=None) -> jnp.ndarray:
    """β by weighted least squares on a linearised response, D = I, σ from the residuals.

    ``structure``: the random-effects block sizes (see ``_params.free_entries``); one
    correlated block by default.

    Normal equations rather than a QR/SVD of X: at 10M rows those would hold an N×p factor.
    """
    eta0 = family.initial_eta(design.y, design.trials) - design.offset
    w = design.weights
    gram = _weighted_gram(design.X, w, design.X.dtype)
    beta = jnp.linalg.solve(gram, design.X.T @ (w * eta0))
    q = design.Z.shape[1]
    resid_sd = jnp.sqrt(jnp.sum(w * (eta0 - design.X @ beta) ** 2) / jnp.sum(w))
    disp = jnp.maximum(resid_sd, 1e-3) if family.n_dispersion else jnp.ones(())
    return pack(Params(beta, jnp.eye(q, dtype=beta.dtype), disp), family.n_dispersion, structure)


def initial_relative_chol(design: Design, structure=None) -> jnp.ndarray:
    """Λ = I (lme4's start): random-effect SDs equal to the residual SD."""
    q = design.Z.shape[1]
    return vec_from_chol(jnp.eye(q, dtype=design.X.dtype), structure)


def _natural_objective(phi, u, design, family, inner, p, q):
    """−ℓ over (β, free entries of L with a raw diagonal, log dispersion): smooth on the
    boundary L_kk = 0. ``q`` as in ``_params.free_entries``."""
    rows, cols = free_entries(q)
    d = re_dim(q)
    chol = jnp.zeros((d, d), phi.dtype).at[rows, cols].set(phi[p:p + n_chol(q)])
    disp = jnp.exp(phi[p + n_chol(q)]) if family.n_dispersion else jnp.ones((), phi.dtype)
    return -laplace_loglik(Params(phi[:p], chol, disp), design, u, family, inner)[0]


def _orthonormalising_map(X, weights, dtype):
    """A with √w·X·A having orthogonal columns of RMS 1, so the optimiser sees β on one scale.

    Without it a covariate such as age² (values in the hundreds) gives a gradient
    thousands of times larger than the others and L-BFGS crawls. From the Cholesky factor
    of the p×p Gram matrix, so no N×p factor is formed; A only preconditions, so the
    squared condition number costs nothing in the estimates.
    """
    n = jnp.sum(weights > 0).astype(dtype)
    chol = jnp.linalg.cholesky(_weighted_gram(X, weights, dtype) / n)
    eye = jnp.eye(X.shape[1], dtype=dtype)
    A = jax.scipy.linalg.solve_triangular(chol.T, eye, lower=False)
    # A singular Gram (aliased columns are dropped upstream, so only in hand-made designs)
    # falls back to no preconditioning rather than NaN.
    return jnp.where(jnp.all(jnp.isfinite(A)), A, eye)


def _final_check(status, grad, hess, value, work_dtype=None):
    """Converged when the Hessian is positive definite and the Newton decrement says the
    remaining gain in log-likelihood is negligible, whatever rule stopped the loop.

    Negligible is 1e-8 + 1e-13·|ℓ| in float64. With float32 rows the log-likelihood itself
    is only known to about eps32·|ℓ| (its rounding), so a gain below that cannot be
    resolved and the allowance becomes eps32·|ℓ| (0.06 for a million Bernoulli rows).
    """
    eps = float(jnp.finfo(work_dtype or value.dtype).eps)
    rel = max(1e-13, eps)
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


def _grad_and_difference_hessian(f, x):
    """Gradient and a central-difference Hessian of the gradient, for objectives with no
    inner problem (the profiled LMM), where it only judges convergence.

    All gradients come from one call site inside ``lax.map``: XLA then compiles the
    gradient once, where forward-over-reverse compiles a second-order program (measured
    for the q = 2 LMM: 0.5 s against 1.25 s of compile). Steps of 1e-4·(1 + |x|) leave a
    truncation error of about 1e-8 relative, ample for a positive-definiteness and
    Newton-decrement test.
    """
    k = x.shape[0]
    h = 1e-4 * (1.0 + jnp.abs(x))
    steps = jnp.concatenate([jnp.zeros((1, k), x.dtype), jnp.diag(h), -jnp.diag(h)])
    grads = jax.lax.map(lambda e: jax.grad(f)(x + e), steps)
    hess = (grads[1:1 + k] - grads[1 + k:]) / (2.0 * h[:, None])
    return grads[0], 0.5 * (hess + hess.T)


def _natural_phi(params: Params, n_dispersion: int, structure=None):
    rows, cols = free_entries(params.chol.shape[0] if structure is None else structure)
    return jnp.concatenate([params.beta, params.chol[rows, cols]]
                           + ([jnp.log(params.dispersion)[None]] if n_dispersion else []))


# LLVM's expensive passes buy nothing for these programs (segment sums and small unrolled
# solves): measured on a 2-core CPU, without them a Laplace fit compiles 15-20 % faster
# (3.6 -> 3.0 s) and also runs about 10 % faster at 100k and 1M rows. The option is
# ignored by the GPU backend's device code.
_COMPILER_OPTIONS = {"xla_llvm_disable_expensive_passes": True}


def _blocks(design: Design, chunks: int) -> Design:
    """The design as ``chunks`` stacked blocks (leading axis) with block-local group codes.

    The layout (``_design.plan_layout``) puts every group inside one block, so the Laplace
    likelihood is a sum of independent block terms.
    """
    rows, slots = design.y.shape[0] // chunks, design.n_groups // chunks
    split = lambda a: a.reshape((chunks, rows) + a.shape[1:])
    offsets = (jnp.arange(chunks, dtype=design.group.dtype) * slots)[:, None]
    return Design(X=split(design.X), Z=split(design.Z), y=split(design.y), trials=split(design.trials),
                  offset=split(design.offset), weights=split(design.weights),
                  group=split(design.group) - offsets, counts=design.counts.reshape(chunks, slots))


# The mesh axis that a sharded fit splits its blocks (and so its groups) over.
GROUP_AXIS = "groups"


def _over_blocks(fn, consts, blocks, mesh=None):
    """``fn(consts, block)`` for every block (leading axis of ``blocks``), stacked.

    One block at a time (``lax.map``), so temporaries are one block's. With a ``mesh``
    the blocks are split over its devices (``shard_map``): each device maps over its own
    blocks, the outputs stay sharded by block, and sums over blocks taken afterwards
    become all-reduces. ``consts`` are replicated.
    """
    def local(c, xs):
        return jax.lax.map(lambda x: fn(c, x), xs)

    if mesh is None:
        return local(consts, blocks)

    def local_varying(c, xs):
        # Derivatives taken inside the body with respect to a replicated input would be
        # summed over the devices (the transpose of a broadcast is a psum), and summed
        # again over blocks outside. Marked as varying, each device's are its own blocks'.
        c = jax.tree_util.tree_map(lambda a: jax.lax.pcast(a, GROUP_AXIS, to="varying"), c)
        return local(c, xs)

    spec = jax.sharding.PartitionSpec
    return jax.shard_map(local_varying, mesh=mesh, in_specs=(spec(), spec(GROUP_AXIS)), out_specs=spec(GROUP_AXIS))(
        consts, blocks)


# A Cholesky diagonal below this (on the linear-predictor scale, or relative to σ in the
# LMM) is a candidate for exactly zero once the optimiser stops; the log-likelihood decides.
_BOUNDARY_CANDIDATE = 1e-2


def _project_to_boundary(chol):
    small = jnp.abs(jnp.diagonal(chol)) < _BOUNDARY_CANDIDATE
    return chol * (1.0 - jnp.diag(small.astype(chol.dtype))), jnp.any(small)


def _no_worse(f_new, f_old):
    return f_new <= f_old + 1e-12 * (1.0 + jnp.abs(f_old))


# Saddle escape: the step along the most negative curvature (largest entry of the
# direction, on the raw Cholesky / β scale), and the floor of a restarted log-diagonal.
_ESCAPE_STEP, _ESCAPE_FLOOR, _MAX_ESCAPES = 0.1, 1e-3, 2


def _finish_on_boundary(params, warm, value, blocks, family, inner, log_norm, mesh=None):
    """Set small Cholesky diagonals to exactly 0 when the log-likelihood is no worse there.

    On the boundary the objective is flat in the log-diagonal (O(L_kk²)), so L-BFGS only
    creeps towards −∞ and stops a little short, sometimes where the Hessian is numerically
    singular (a false "not converged"). The modes are re-solved at the projected point,
    starting from the optimiser's, and an interior optimum, which loses by the projection,
    is kept.
    """
    chol, any_small = _project_to_boundary(params.chol)
    projected = params._replace(chol=chol)

    def evaluate(_):
        def one(prm, args):
            u_b, d_b = args
            return laplace_loglik(prm, d_b, u_b, family, inner, None if family.n_dispersion else 0.0)

        ll, u = _over_blocks(one, projected, (warm, blocks), mesh)
        return -(jnp.sum(ll) + log_norm), u

    f_proj, u_proj = jax.lax.cond(any_small, evaluate, lambda _: (jnp.asarray(jnp.inf, value.dtype), warm), None)
    use = any_small & _no_worse(f_proj, value)
    pick = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(use, x, y), a, b)
    return pick(projected, params), pick(u_proj, warm), jnp.where(use, f_proj, value)


def _restart_step(grad, hess):
    """Where to restart a fit that stopped short, in natural coordinates.

    At a saddle (negative curvature) a step of _ESCAPE_STEP along the most negative
    curvature, signed downhill; otherwise (stalled where the Hessian is positive definite,
    e.g. after a projection onto the boundary left a gradient) the Newton step.
    """
    lam, vecs = jnp.linalg.eigh(hess)
    v = vecs[:, 0] / jnp.max(jnp.abs(vecs[:, 0]))
    v = jnp.where(grad @ v > 0, -v, v)
    newton = -vecs @ ((vecs.T @ grad) / jnp.where(lam > 0, lam, 1.0))
    newton = jnp.where(jnp.all(jnp.isfinite(newton)), newton, _ESCAPE_STEP * v)
    return jnp.where(lam[0] < 0, _ESCAPE_STEP * v, newton)


def _restart_chol(chol, floor):
    """L with every column's sign set so its diagonal is positive, and the diagonal at least
    ``floor``: a valid start for the log-diagonal packing (D = L Lᵀ ignores column signs)."""
    sign = jnp.where(jnp.diagonal(chol) < 0, -1.0, 1.0).astype(chol.dtype)
    chol = chol * sign[None, :]
    return chol + jnp.diag(jnp.maximum(jnp.diagonal(chol), floor) - jnp.diagonal(chol))


def _best_of_attempts(attempt, escape, theta0, warm0, blank):
    """Run ``attempt`` from the start values and, while the best result so far stopped short
    (NOT_PD: a saddle, e.g. all variances shrunk to 0 together; or STALLED), again from
    ``escape(best)``, at most _MAX_ESCAPES times, keeping the best. One attempt is compiled once
    (it is the body of one loop); ``blank`` has the attempt's output shapes."""
    def body(carry):
        k, theta_s, warm_s, best, n_iter = carry
        out = attempt(theta_s, warm_s)
        better = (k == 0) | (out["loglik"] > best["loglik"])
        best = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), out, best)
        theta_n, warm_n = escape(best)
        return k + 1, theta_n, warm_n, best, n_iter + out["n_iter"]

    def more(carry):
        k, _, _, best, _ = carry
        short = (best["status"] == Status.NOT_PD) | (best["status"] == Status.STALLED)
        return (k == 0) | ((k <= _MAX_ESCAPES) & short)

    carry = (0, theta0, warm0, blank, jnp.zeros((), jnp.int32))
    _, _, _, best, n_iter = jax.lax.while_loop(more, body, carry)
    best["n_iter"] = n_iter
    return best


def _fit_glmm(theta0, design: Design, family, inner=InnerOptions(), opt=OptOptions(), chunks: int = 1,
              blocks=None, mesh=None):
    """Laplace fit. With ``chunks`` > 1 every pass over the rows runs block by block
    (``lax.map``), each block differentiated on its own and the derivatives summed, so the
    reverse-mode and Hessian temporaries are those of one block.

    ``theta0=None`` starts from :func:`initial_theta`, computed inside the compiled program
    (run eagerly, its dozen small operations would each be compiled on their own).
    ``blocks`` (a tuple of sizes) makes L block diagonal, e.g. ``(1, 1)`` for ``(x || g)``;
    None is one correlated block. ``mesh`` (a one-axis ``jax.sharding.Mesh``) splits the
    blocks over its devices; ``chunks`` must then be a multiple of its size.
    """
    q = design.Z.shape[1]
    structure = q if blocks is None else tuple(blocks)
    if theta0 is None:
        theta0 = initial_theta(design, family, structure).astype(jnp.result_type(float))
    p = design.X.shape[1]
    nd = family.n_dispersion
    # θ, the optimiser and sums over groups run in `acc` (float64 unless x64 is off); rows
    # and groups in the design's dtype, which may be float32 for speed.
    acc, work = theta0.dtype, design.X.dtype
    A = _orthonormalising_map(design.X, design.weights, acc)
    blocks = _blocks(design, chunks)

    # Without a dispersion the normalising constants (log-gamma terms) depend on the data
    # alone: sum them once rather than in every objective evaluation.
    log_norm = jnp.zeros((), acc) if nd else jnp.sum(design.weights.astype(acc) * family.normalizer(
        design.y.astype(acc), design.trials.astype(acc), jnp.ones((), acc)))
    block_norm = None if nd else 0.0

    def block_objective(theta, A, u_b, d_b):
        params = unpack(theta, p, structure, nd)
        params = params._replace(beta=A @ params.beta)
        ll, u_new = laplace_loglik(params, d_b, u_b, family, inner, block_norm)
        return -ll, u_new

    def value_and_grad(theta, u, blks):
        def one(consts, args):
            (v, u_new), g = jax.value_and_grad(block_objective, has_aux=True)(*consts, *args)
            return v, u_new, g

        v, u_new, g = _over_blocks(one, (theta, A), (u, blks), mesh)
        return (jnp.sum(v) - log_norm, u_new), jnp.sum(g, axis=0)

    # res.warm holds the modes at res.x, solved to the inner tolerance: everything after the
    # optimiser evaluates there (max_iter=0) instead of compiling and running the solver again.
    at_mode = inner._replace(max_iter=0)

    def attempt(theta_start, u_start):
        res = minimize(None, theta_start, u_start, blocks, opt, value_and_grad=value_and_grad)
        params = unpack(res.x, p, structure, nd)
        params = params._replace(beta=A @ params.beta)
        params, warm, value = _finish_on_boundary(params, res.warm, res.value, blocks, family, inner, log_norm,
                                                  mesh)

        def per_block(params, args):
            u_b, d_b = args
            ranef, cond_var, u = modes_and_cond_var(params, d_b, u_b, family, at_mode)
            # vcov: the β block of the inverse Hessian of −ℓ over all parameters. The block is
            # invariant to how θ is parameterised at an optimum; the raw Cholesky scale keeps
            # the Hessian non-singular when a variance sits at zero, where the log scale would not.
            natural = lambda v: _natural_objective(v, u, d_b, family, at_mode, p, structure)
            grad, hess = _grad_and_hessian(natural, _natural_phi(params, nd, structure))
            return ranef, cond_var, grad, hess

        ranef, cond_var, grad, hess = _over_blocks(per_block, params, (warm, blocks), mesh)
        grad, hess = jnp.sum(grad, axis=0), jnp.sum(hess, axis=0)
        status, decrement = _final_check(res.status, grad, hess, value, work)
        return dict(
            theta=res.x, loglik=-value, grad=grad, n_iter=res.n_iter, status=status, decrement=decrement,
            hess=hess, beta=params.beta, chol=params.chol, dispersion=params.dispersion,
            ranef=ranef, cond_var=cond_var, warm=warm,
        )

    def escape(out):
        # From D = I the variances can all shrink towards 0 together, where every direction
        # of L has zero gradient (f is even in each column of L) and the optimiser stops at
        # a saddle: L ≈ 0 with negative curvature towards a rank-deficient D that fits better
        # (seen on Bernoulli data with a (x | g) term that lme4 fits as singular).
        params = Params(out["beta"], out["chol"], out["dispersion"])
        phi = _natural_phi(params, nd, structure) + _restart_step(out["grad"], out["hess"])
        rows, cols = free_entries(structure)
        d = re_dim(structure)
        chol = jnp.zeros((d, d), acc).at[rows, cols].set(phi[p:p + n_chol(structure)])
        disp = jnp.exp(phi[-1]) if nd else jnp.ones((), acc)
        theta = pack(Params(jnp.linalg.solve(A, phi[:p]), _restart_chol(chol, _ESCAPE_FLOOR), disp), nd, structure)
        return theta, out["warm"]

    theta0 = theta0.at[:p].set(jnp.linalg.solve(A, theta0[:p]))
    u0 = jnp.zeros(blocks.counts.shape + (q,), work)
    # The placeholder "best" has the attempt's shapes, built by hand: an eval_shape would
    # trace the whole attempt a second time, 0.25 s of every cold fit.
    k, m, d = p + n_chol(structure) + nd, blocks.counts.shape, re_dim(structure)
    zero = lambda *shape: jnp.zeros(shape, acc)
    blank = dict(theta=jnp.zeros_like(theta0), loglik=jnp.asarray(-jnp.inf, acc), grad=zero(k),
                 n_iter=jnp.zeros((), jnp.int32), status=jnp.zeros((), jnp.int32), decrement=zero(),
                 hess=zero(k, k), beta=zero(p), chol=zero(d, d), dispersion=zero(), ranef=zero(*m, q),
                 cond_var=zero(*m, q, q), warm=jnp.zeros_like(u0))
    out = _best_of_attempts(attempt, escape, theta0, u0, blank)
    cov = jnp.linalg.inv(out["hess"])
    out.pop("warm")
    out.update(vcov=cov[:p, :p], ranef=out["ranef"].reshape((-1, q)),
               cond_var=out["cond_var"].reshape((-1, q, q)))
    return out


def _sharded_lmm_stats(design: Design, chunks: int, mesh, dtype):
    """The per-group statistics computed block by block on the devices that hold the
    block's rows; per-group arrays stay sharded by group, totals are summed over blocks."""
    per_block = _over_blocks(lambda _, d: lmm_stats(d, dtype), (), _blocks(design, chunks), mesh)
    groups = lambda a: a.reshape((-1,) + a.shape[2:])
    total = lambda a: jnp.sum(a, axis=0)
    return per_block._replace(ZtZ=groups(per_block.ZtZ), ZtX=groups(per_block.ZtX), Zty=groups(per_block.Zty),
                              XtX=total(per_block.XtX), Xty=total(per_block.Xty), yty=total(per_block.yty),
                              n=total(per_block.n), half_log_w=total(per_block.half_log_w))


def _fit_lmm(theta0, design: Design, reml: bool, opt=OptOptions(), blocks=None, chunks: int = 1, mesh=None):
    """Exact REML/ML fit; ``theta0=None`` starts from Λ = I. ``blocks``, ``chunks`` and
    ``mesh`` as in :func:`fit_glmm` (the rows are only read once, for the statistics)."""
    q = design.Z.shape[1]
    structure = q if blocks is None else tuple(blocks)
    if theta0 is None:
        theta0 = initial_relative_chol(design, structure).astype(jnp.result_type(float))
    if mesh is None:
        stats = lmm_stats(design, theta0.dtype)
    else:
        stats = _sharded_lmm_stats(design, chunks, mesh, theta0.dtype)

    def objective(theta, warm, s):
        return -profiled_loglik(chol_from_vec(theta, structure), s, reml), warm

    rows, cols = free_entries(structure)

    def natural(v):
        return -profiled_loglik(jnp.zeros((q, q), v.dtype).at[rows, cols].set(v), stats, reml)

    def attempt(theta_start, warm):
        res = minimize(objective, theta_start, warm, stats, opt)
        lam = chol_from_vec(res.x, structure)
        # On the boundary the log-diagonal only creeps towards −∞ (the objective is flat
        # there, O(L_kk²)), and L-BFGS stalls a little short (e.g. at L = 3e-4 with 3e-8 of
        # log-likelihood left). A small relative diagonal is set to exactly 0 when that is
        # no worse, and the fit is judged there; an interior optimum loses by it and is kept.
        projected, any_small = _project_to_boundary(lam)
        f_proj = -profiled_loglik(projected, stats, reml)
        use = any_small & _no_worse(f_proj, res.value)
        lam = jnp.where(use, projected, lam)
        value = jnp.where(use, f_proj, res.value)
        grad, hess = _grad_and_difference_hessian(natural, lam[rows, cols])
        status, decrement = _final_check(res.status, grad, hess, value)
        return dict(theta=res.x, lam=lam, loglik=-value, grad=grad, hess=hess, n_iter=res.n_iter, status=status,
                    decrement=decrement)

    def escape(out):
        # As in the Laplace fit: a correlation driven to ±1 (a diagonal of Λ to 0) can stop
        # where the curvature along Λ is negative, or a projection onto the boundary can
        # leave a gradient (seen in sleepstudy bootstrap refits); restart from beyond it.
        phi = out["lam"][rows, cols] + _restart_step(out["grad"], out["hess"])
        lam = jnp.zeros((q, q), phi.dtype).at[rows, cols].set(phi)
        return vec_from_chol(_restart_chol(lam, _ESCAPE_FLOOR), structure), jnp.zeros(())

    k = n_chol(structure)
    acc = theta0.dtype
    blank = dict(theta=jnp.zeros_like(theta0), lam=jnp.zeros((q, q), acc), loglik=jnp.asarray(-jnp.inf, acc),
                 grad=jnp.zeros(k, acc), hess=jnp.zeros((k, k), acc), n_iter=jnp.zeros((), jnp.int32),
                 status=jnp.zeros((), jnp.int32), decrement=jnp.zeros((), acc))
    out = _best_of_attempts(attempt, escape, theta0, jnp.zeros(()), blank)
    sol = lmm_solution(out["lam"], stats, reml)
    return dict(
        theta=out["theta"], loglik=out["loglik"], grad=out["grad"], n_iter=out["n_iter"], status=out["status"],
        decrement=out["decrement"], beta=sol.beta, chol=sol.chol, dispersion=sol.sigma,
        vcov=sol.vcov, ranef=sol.ranef, cond_var=sol.cond_var,
    )


fit_glmm = jax.jit(_fit_glmm, static_argnames=("family", "inner", "opt", "chunks", "blocks", "mesh"),
                   compiler_options=_COMPILER_OPTIONS)
fit_lmm = jax.jit(_fit_lmm, static_argnames=("reml", "opt", "blocks", "chunks", "mesh"),
                  compiler_options=_COMPILER_OPTIONS)


# Many fits in one program: the single fits vmapped over a leading replicate axis of the
# design. Replicates are padded to a common shape with weight-0 rows and empty group
# slots, which change no estimate; each replicate keeps its own optimiser state and
# status, and the loops run until the last replicate stops.
@functools.partial(jax.jit, static_argnames=("family", "inner", "opt", "blocks"), compiler_options=_COMPILER_OPTIONS)
def fit_glmm_batch(designs: Design, family, inner=InnerOptions(), opt=OptOptions(), blocks=None):
    return jax.vmap(lambda d: _fit_glmm(None, d, family, inner, opt, 1, blocks))(designs)


@functools.partial(jax.jit, static_argnames=("reml", "opt", "blocks"), compiler_options=_COMPILER_OPTIONS)
def fit_lmm_batch(designs: Design, reml: bool, opt=OptOptions(), blocks=None):
    return jax.vmap(lambda d: _fit_lmm(None, d, reml, opt, blocks))(designs)


@jax.jit
def linear_predictors(design: Design, beta, ranef):
    """Xβ + offset and Xβ + offset + Z b̂ for every design row; ``ranef`` by group slot."""
    acc = beta.dtype
    fixed = design.X.astype(acc) @ beta + design.offset.astype(acc)
    return fixed, fixed + jnp.sum(design.Z.astype(acc) * ranef[design.group], axis=1)
