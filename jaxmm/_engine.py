"""Whole fits as single jitted functions of (starting values, design).

Each returns a dict of arrays only; turning them into labelled pandas objects is the
job of ``_fit.py``. Family and options are static (hashable), the design is a pytree
argument, so a second dataset of the same shape reuses the compiled fit.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _smallmat as sm
from ._types import AUTODIFF_CHUNK_ROWS, CHUNK_ROWS, Design
from ._driver import optimise_and_check
from ._verdict import ESCAPE_FLOOR, restart_chol
from ._gradient import beta_hessian, laplace_loglik_for_fit
from ._inner import InnerOptions
from ._jit import Kernels, compiled
from ._laplace import modes_and_cond_var
from ._lmm import lmm_solution, lmm_stats, profiled_loglik
from ._optimize import OptOptions
from ._quadrature import marginal_loglik
from ._params import chol_from_natural, layout_masks, n_chol, params_from_natural, vec_from_chol
from ._start import _design_sums, _orthonormalising_map, initial_relative_chol, initial_theta, weighted_gram


def _symmetric_inverse(H):
    """H⁻¹ of a symmetric matrix through its eigendecomposition: exact also where H is
    indefinite (a fit stopped short), and without LU's pivoting loops in the program."""
    lam, vecs = jnp.linalg.eigh(H)
    return sm.matmul(vecs / lam[None, :], vecs.T)


def _chunked(design: Design, chunks: int) -> Design:
    """The design as ``chunks`` stacked chunks of rows (leading axis) with chunk-local group codes.

    The layout (``_layout.plan_layout``) puts every group inside one chunk, so the Laplace
    likelihood is a sum of independent chunk terms.
    """
    slots = design.n_groups // chunks
    split = lambda a: a.reshape((chunks, -1) + a.shape[1:])
    offsets = (jnp.arange(chunks, dtype=design.group.dtype) * slots)[:, None]
    tiles = None if design.tile_group is None else split(design.tile_group) - offsets
    return Design(X=split(design.X), Z=split(design.Z), y=split(design.y), trials=split(design.trials),
                  offset=split(design.offset), weights=split(design.weights),
                  group=split(design.group) - offsets, counts=design.counts.reshape(chunks, slots), tile_group=tiles)


# The mesh axis that a sharded fit splits its chunks (and so its groups) over.
GROUP_AXIS = "groups"


def _over_chunks(fn, consts, chunked, mesh=None):
    """``fn(consts, chunk)`` for every chunk (leading axis of ``chunked``), stacked.

    One chunk at a time (``lax.map``), so temporaries are one chunk's. With a ``mesh``
    the chunks are split over its devices (``shard_map``): each device maps over its own
    chunks, the outputs stay sharded by chunk, and sums over chunks taken afterwards
    become all-reduces. ``consts`` are replicated.
    """
    def local(c, xs):
        return jax.lax.map(lambda x: fn(c, x), xs)

    if mesh is None:
        return local(consts, chunked)

    def local_varying(c, xs):
        # Derivatives taken inside the body with respect to a replicated input would be
        # summed over the devices (the transpose of a broadcast is a psum), and summed
        # again over chunks outside. Marked as varying, each device's are its own chunks'.
        c = jax.tree_util.tree_map(lambda a: jax.lax.pcast(a, GROUP_AXIS, to="varying"), c)
        return local(c, xs)

    spec = jax.sharding.PartitionSpec
    return jax.shard_map(local_varying, mesh=mesh, in_specs=(spec(), spec(GROUP_AXIS)), out_specs=spec(GROUP_AXIS))(
        consts, chunked)


def _fit_glmm(theta0, design: Design, family, opt=OptOptions(), chunks: int = 1, blocks=None, mesh=None,
              nagq: int = 1, exact_beta: bool = False, kernels: Kernels = Kernels()):
    """Laplace fit. With ``chunks`` > 1 every pass over the rows runs chunk by chunk
    (``lax.map``), each chunk differentiated on its own and the derivatives summed, so the
    reverse-mode temporaries are those of one chunk.

    ``theta0=None`` starts from :func:`initial_theta`, computed inside the compiled program
    (run eagerly, its dozen small operations would each be compiled on their own).
    ``blocks`` (a tuple of sizes) makes L block diagonal, e.g. ``(1, 1)`` for ``(x || g)``;
    None is one correlated block. ``mesh`` (a one-axis ``jax.sharding.Mesh``) splits the
    chunks over its devices; ``chunks`` must then be a multiple of its size. ``nagq`` > 1
    integrates the random effects by adaptive Gauss–Hermite quadrature with that many
    nodes per dimension (``_quadrature``) instead of Laplace.
    ``exact_beta``: the Hessian's fixed-effect block is exact (``_gradient.beta_hessian``)
    rather than p difference gradients; Laplace without a mesh only (:func:`exact_beta_hessian`).
    ``kernels``: how the passes write their sums (``_jit.Kernels``; :class:`_jit.compiled`
    fills it in for the backend).
    """
    inner = InnerOptions(kernels=kernels)
    q = design.Z.shape[1]
    structure = q if blocks is None else tuple(blocks)
    chunked = _chunked(design, chunks)
    # A sharded design's statistics are taken on all its rows at once (see _design_sums).
    whole = mesh is not None
    # θ, the optimiser and sums over groups run in `acc` (float64 unless x64 is off); rows
    # and groups in the design's dtype, which may be float32 for speed.
    acc, work = jnp.result_type(float) if theta0 is None else theta0.dtype, design.X.dtype
    gram, n_rows = weighted_gram(chunked, acc, whole, kernels.products_as_sums)
    if theta0 is None:
        theta0 = initial_theta(chunked, family, structure, whole, gram, kernels.products_as_sums).astype(acc)
    p = design.X.shape[1]
    nd = family.n_dispersion
    nc = n_chol(structure)
    A, A_inv = _orthonormalising_map(gram, n_rows)

    # Without a dispersion the normalising constants (log-gamma terms) depend on the data
    # alone: sum them once rather than in every objective evaluation.
    log_norm = jnp.zeros((), acc) if nd else _design_sums(lambda b: jnp.sum(b.weights.astype(acc) * family.normalizer(
        b.y.astype(acc), b.trials.astype(acc), jnp.ones((), acc))), chunked, whole)
    chunk_norm = None if nd else 0.0

    def params_of(phi, A):
        # φ, with β in the orthonormalised coordinates
        natural = params_from_natural(phi, p, structure, nd)
        return natural._replace(beta=sm.matvec(A, natural.beta))

    def chunk_objective(phi, A, u_b, d_b):
        if nagq == 1:  # Laplace, with its gradient written out (_gradient)
            ll, u_new = laplace_loglik_for_fit(params_of(phi, A), d_b, u_b, family, inner, chunk_norm)
        else:
            ll, u_new = marginal_loglik(params_of(phi, A), d_b, u_b, family, inner, nagq, chunk_norm)
        return -ll, u_new

    def evaluate(phi, u, chunked):
        def one(consts, args):
            (v, u_new), g = jax.value_and_grad(chunk_objective, has_aux=True)(*consts, *args)
            return v, u_new, g

        v, u_new, g = _over_chunks(one, (phi, A), (u, chunked), mesh)
        return (jnp.sum(v) - log_norm, u_new), jnp.sum(g, axis=0)

    def fixed_effect_hessian(phi, u, chunked):
        # in φ's coordinates β = A φ[:p]: Aᵀ (∂²/∂β²) A, summed over the chunks
        per_chunk = jax.lax.map(lambda args: beta_hessian(params_of(phi, A), args[1], args[0], family,
                                                          inner._replace(max_iter=0)), (u, chunked))
        return -sm.matmul(sm.matmul(A.T, jnp.sum(per_chunk, axis=0)), A)

    def restart_theta(phi):
        chol = restart_chol(chol_from_natural(phi[p:p + nc], structure), ESCAPE_FLOOR)
        return jnp.concatenate([phi[:p], vec_from_chol(chol, structure), phi[p + nc:]])

    theta0 = theta0.at[:p].set(sm.matvec(A_inv, theta0[:p]))
    u0 = jnp.zeros(chunked.counts.shape + (q,), work)
    diag_mask, face_mask = layout_masks(p, structure, nd)
    best = optimise_and_check(evaluate, theta0, u0, chunked, diag_mask, restart_theta, opt, work, face_mask=face_mask,
                              exact_block=(p, fixed_effect_hessian) if exact_beta else None)

    # Back from the orthonormalised β: with φ = M φ_s, M = diag(A, I), the gradient is
    # M⁻ᵀ g_s and the covariance of the natural parameters M H_s⁻¹ Mᵀ.
    params = params_of(best["phi"], A)
    k = theta0.shape[0]
    M = jnp.eye(k, dtype=acc).at[:p, :p].set(A)
    M_inv = jnp.eye(k, dtype=acc).at[:p, :p].set(A_inv)
    grad = sm.matvec(M_inv.T, best["grad"])
    hess = sm.matmul(sm.matmul(M_inv.T, best["hess"]), M_inv)
    cov = sm.matmul(sm.matmul(M, _symmetric_inverse(best["hess"])), M.T)

    # best["warm"] holds the modes at φ, solved to the inner tolerance: evaluate there
    # (max_iter=0) instead of compiling and running the solver again.
    at_mode = inner._replace(max_iter=0)
    ranef, cond_var, _ = _over_chunks(lambda prm, args: modes_and_cond_var(prm, args[1], args[0], family, at_mode),
                                      params, (best["warm"], chunked), mesh)
    return dict(
        theta=best["theta"], loglik=-best["value"], grad=grad, n_iter=best["n_iter"], n_eval=best["n_eval"],
        status=best["status"],
        decrement=best["decrement"], hess=hess, beta=params.beta, chol=params.chol, dispersion=params.dispersion,
        vcov=cov[:p, :p], ranef=ranef.reshape((-1, q)), cond_var=cond_var.reshape((-1, q, q)),
    )


def _sharded_lmm_stats(design: Design, chunks: int, mesh, dtype, kernels: Kernels):
    """The per-group statistics computed chunk by chunk on the devices that hold the
    chunk's rows; per-group arrays stay sharded by group, totals are summed over chunks."""
    per_chunk = _over_chunks(lambda _, d: lmm_stats(d, dtype, kernels), (), _chunked(design, chunks), mesh)
    groups = lambda a: a.reshape((-1,) + a.shape[2:])
    total = lambda a: jnp.sum(a, axis=0)
    return per_chunk._replace(ZtZ=groups(per_chunk.ZtZ), ZtX=groups(per_chunk.ZtX), Zty=groups(per_chunk.Zty),
                              XtX=total(per_chunk.XtX), Xty=total(per_chunk.Xty), yty=total(per_chunk.yty),
                              n=total(per_chunk.n), half_log_w=total(per_chunk.half_log_w))


def _fit_lmm(theta0, design: Design, reml: bool, opt=OptOptions(), blocks=None, chunks: int = 1, mesh=None,
             kernels: Kernels = Kernels()):
    """Exact REML/ML fit; ``theta0=None`` starts from Λ = I. ``blocks``, ``chunks``, ``mesh``
    and ``kernels`` as in :func:`fit_glmm` (the rows are only read once, for the statistics)."""
    q = design.Z.shape[1]
    structure = q if blocks is None else tuple(blocks)
    if theta0 is None:
        theta0 = initial_relative_chol(design, structure).astype(jnp.result_type(float))
    if mesh is None:
        stats = lmm_stats(design, theta0.dtype, kernels)
    else:
        stats = _sharded_lmm_stats(design, chunks, mesh, theta0.dtype, kernels)
    lam_of = lambda phi: chol_from_natural(phi, structure)
    diag_mask, face_mask = layout_masks(0, structure, 0)

    def evaluate(phi, warm, s):
        value, grad = jax.value_and_grad(lambda v: -profiled_loglik(lam_of(v), s, reml, kernels))(phi)
        return (value, warm), grad

    restart_theta = lambda phi: vec_from_chol(restart_chol(lam_of(phi), ESCAPE_FLOOR), structure)
    best = optimise_and_check(evaluate, theta0, jnp.zeros(()), stats, diag_mask, restart_theta, opt,
                              face_mask=face_mask)
    sol = lmm_solution(lam_of(best["phi"]), stats, reml, kernels)
    return dict(
        theta=best["theta"], loglik=-best["value"], grad=best["grad"], n_iter=best["n_iter"], n_eval=best["n_eval"],
        status=best["status"],
        decrement=best["decrement"], beta=sol.beta, chol=sol.chol, dispersion=sol.sigma,
        vcov=sol.vcov, ranef=sol.ranef, cond_var=sol.cond_var,
    )


# Fits of fewer rows than this are compiled with XLA:CPU's elemental emitters (see _jit),
# whose programs compile faster and run slower. The compile saving pays for the slower
# passes up to a few million Laplace rows, so the fused emitters take over at CHUNK_ROWS
# (several chunks); AGHQ does several times the work per row, so there at
# AUTODIFF_CHUNK_ROWS (docs/performance.md). GPUs take neither option.
ELEMENTAL_MAX_ROWS = CHUNK_ROWS
ELEMENTAL_MAX_ROWS_AGHQ = AUTODIFF_CHUNK_ROWS


def elemental_rows(rows: int, nagq: int = 1) -> bool:
    """Whether a program over ``rows`` rows in all compiles with the elemental emitters.

    Vmapped fits (by=, profile intervals, the bootstrap's refits on accelerators) count
    the rows of all replicates: below the limit the compile saving outweighs the slower
    passes there too (docs/performance.md).
    """
    return rows < (ELEMENTAL_MAX_ROWS if nagq == 1 else ELEMENTAL_MAX_ROWS_AGHQ)


# Programs over at most this many rows in all (times the quadrature nodes per group) are
# compiled at LLVM's optimisation level 0 (_jit.QUICK_COMPILER_OPTIONS): about 0.5 s less
# compile, and a warm fit of 2,000 rows about 0.02 s slower, so a shape refitted fewer than
# about 25 times in one process comes out ahead (docs/performance.md).
QUICK_MAX_ROWS = 2048


def quick_rows(rows: int, nodes: int = 1) -> bool:
    """Whether a program over ``rows`` rows in all (``nodes`` quadrature nodes per group
    and row) compiles at the quick optimisation level."""
    return rows * nodes <= QUICK_MAX_ROWS


def _elemental_fit(theta0, design: Design, family, opt=None, chunks=1, blocks=None, mesh=None,
                   nagq: int = 1, exact_beta: bool = False, kernels=None) -> bool:
    return elemental_rows(design.X.shape[0], nagq)


def _quick_fit(theta0, design: Design, family, opt=None, chunks=1, blocks=None, mesh=None,
               nagq: int = 1, exact_beta: bool = False, kernels=None) -> bool:
    return quick_rows(design.X.shape[0], nagq ** design.Z.shape[-1])


def _quick_lmm(theta0, design: Design, *_, **__) -> bool:
    return quick_rows(design.X.shape[0])


def _elemental_batch(designs: Design, family, opt=None, blocks=None, nagq: int = 1, kernels=None) -> bool:
    return elemental_rows(designs.X.shape[0] * designs.X.shape[1], nagq)


def _quick_batch(designs: Design, family, opt=None, blocks=None, nagq: int = 1, kernels=None) -> bool:
    return quick_rows(designs.X.shape[0] * designs.X.shape[1], nagq ** designs.Z.shape[-1])


def _quick_lmm_batch(designs: Design, *_, **__) -> bool:
    return quick_rows(designs.X.shape[0] * designs.X.shape[1])


fit_glmm = compiled(_fit_glmm, static_argnames=("family", "opt", "chunks", "blocks", "mesh", "nagq", "exact_beta"),
                    elemental=_elemental_fit, quick=_quick_fit)

# From this many fixed-effect columns on, a Laplace fit's Hessian takes its fixed-effect block
# exactly (_gradient.beta_hessian) instead of by p difference gradients; below, the block's
# program costs more compile than the differences cost time (benchmarks/results/wide.md).
EXACT_BETA_MIN_COLUMNS = 128


def exact_beta_hessian(design: Design, nagq: int, mesh) -> bool:
    """Whether a Laplace fit's Hessian takes its fixed-effect block exactly."""
    return design.X.shape[1] > EXACT_BETA_MIN_COLUMNS and nagq == 1 and mesh is None
fit_lmm = compiled(_fit_lmm, static_argnames=("reml", "opt", "blocks", "chunks", "mesh"), elemental=True,
                   quick=_quick_lmm)


def _one_call(design: Design, family, reml: bool, chunks: int, blocks, nagq, opt, mesh):
    """(program, args, kwargs) of one fit: one place, so that a prefetched compile and the
    call match (jax's cache keys include how the arguments are passed)."""
    if family.exact:
        return fit_lmm, (None, design, reml), dict(opt=opt, blocks=blocks, chunks=chunks, mesh=mesh)
    return fit_glmm, (None, design, family), dict(opt=opt, chunks=chunks, blocks=blocks, mesh=mesh, nagq=nagq,
                                                  exact_beta=exact_beta_hessian(design, nagq, mesh))


def fit_one(design: Design, family, reml: bool, chunks: int, blocks, nagq: int = 1, opt=OptOptions(), mesh=None):
    """One model fitted by its family's compiled program, called as ``jaxmm.fit`` calls it:
    another design of the same shape (a bootstrap replicate on the CPU) then runs the
    program the fit compiled."""
    program, args, kwargs = _one_call(design, family, reml, chunks, blocks, nagq, opt, mesh)
    return program(*args, **kwargs)


def prefetch_one(design: Design, family, reml: bool, chunks: int, blocks, nagq: int = 1, opt=OptOptions()):
    """Start compiling the program that :func:`fit_one` will run for a design of this
    shape (``design``: ``jax.ShapeDtypeStruct`` leaves) on a background thread
    (``_jit.compiled.prefetch``). Returns the event set once the program is lowered."""
    program, args, kwargs = _one_call(design, family, reml, chunks, blocks, nagq, opt, None)
    return program.prefetch(*args, **kwargs)


# Many fits in one program: the single fits vmapped over a leading replicate axis of the
# design. Replicates are padded to a common shape with weight-0 rows and empty group
# slots, which change no estimate; each replicate keeps its own optimiser state and
# status, and the loops run until the last replicate stops.
@compiled(static_argnames=("family", "opt", "blocks", "nagq"), elemental=_elemental_batch, quick=_quick_batch)
def fit_glmm_batch(designs: Design, family, opt=OptOptions(), blocks=None, nagq: int = 1, kernels: Kernels = Kernels()):
    return jax.vmap(lambda d: _fit_glmm(None, d, family, opt, 1, blocks, nagq=nagq, kernels=kernels))(designs)


@compiled(static_argnames=("reml", "opt", "blocks"), elemental=True, quick=_quick_lmm_batch)
def fit_lmm_batch(designs: Design, reml: bool, opt=OptOptions(), blocks=None, kernels: Kernels = Kernels()):
    return jax.vmap(lambda d: _fit_lmm(None, d, reml, opt, blocks, kernels=kernels))(designs)


@jax.jit
def linear_predictors(design: Design, beta, ranef):
    """Xβ + offset and Xβ + offset + Z b̂ for every design row; ``ranef`` by group slot."""
    acc = beta.dtype
    fixed = design.X.astype(acc) @ beta + design.offset.astype(acc)
    return fixed, fixed + jnp.sum(design.Z.astype(acc) * ranef[design.group], axis=1)
