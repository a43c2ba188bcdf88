"""The Laplace log-likelihood with its gradient written out, for the fit driver.

``_laplace.laplace_loglik`` is differentiated by JAX through the implicit-function rule
of the inner solver. Reverse mode then transposes that rule: several passes over the
rows, each materialising per-row cotangents. Here the same gradient is assembled from
two passes that XLA fuses into one loop each (see ``_inner._row_sums``). With
ζⱼ = Lᵀzⱼ (row j of ZL), sⱼ = ∂ℓⱼ/∂η, Wⱼ = −∂²ℓⱼ/∂η², W′ⱼ = ∂Wⱼ/∂η (prior weights
included), Hᵢ = I + Σⱼ Wⱼ ζⱼζⱼᵀ at the mode ûᵢ and levⱼ = ζⱼᵀHᵢ⁻¹ζⱼ:

    ℓ(θ) = Σᵢ hᵢ(ûᵢ) − ½ log|Hᵢ|.

Since ∇ᵤhᵢ(ûᵢ) = 0, û moves only the log-determinant: d(½ log|Hᵢ|)/dûᵢ = cᵢ =
Σⱼ ½ W′ⱼ levⱼ ζⱼ (pass 1), and the implicit function theorem gives the adjoint vᵢ = Hᵢ⁻¹cᵢ.
Then with rⱼ = sⱼ − ½W′ⱼ levⱼ + Wⱼ ζⱼ·vᵢ (pass 2):

    ∂ℓ/∂β = Σⱼ rⱼ xⱼ
    ∂ℓ/∂L = Σᵢ [ (Σⱼ rⱼ zⱼ) ûᵢᵀ − (Σⱼ sⱼ zⱼ) vᵢᵀ − (Σⱼ Wⱼ zⱼzⱼᵀ) L Hᵢ⁻¹ ]
    ∂ℓ/∂σ = Σⱼ [ ∂σℓⱼ − ½ ∂σWⱼ levⱼ − ∂σsⱼ ζⱼ·vᵢ ]   (families with a dispersion σ)

The tests compare it with JAX's derivative of ``laplace_loglik``. Only first derivatives
are defined (the driver's Hessian is a finite difference of this gradient), except the
fixed-effect block Xᵀ(∂r/∂η)X of many columns, which :func:`beta_hessian` builds from
the same two passes; code that needs more goes through ``laplace_loglik``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _smallmat as sm
from ._types import Design
from ._jit import Kernels
from ._inner import (InnerOptions, _at_rows, _row_sums, _rows, _solve, linear_parts, lower_pairs, mode_and_curvature,
                     symmetric_from_pairs)
from ._params import Params


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.integer):
        return np.zeros(x.shape, jax.dtypes.float0)
    return jnp.zeros_like(x)


def _kernel_derivatives(family, y, eta, trials, dispersion, with_dispersion: bool):
    """(s, W, W′) and, for a family with a dispersion, their derivatives in it (ℓ, s, W)."""
    def derivs(e, d):
        _, s, w = family.kernel_and_derivatives(y, e, trials, d)
        return s, w

    (s, w), (_, dw) = jax.jvp(lambda e: derivs(e, dispersion), (eta,), (jnp.ones_like(eta),))
    if not with_dispersion:
        return s, w, dw, None
    by_disp = jax.jvp(lambda d: family.kernel_and_derivatives(y, eta, trials, d), (dispersion,),
                      (jnp.ones_like(dispersion),))[1]
    return s, w, dw, by_disp


def _row_terms(per_group, eta_fixed, ZL, disp, design: Design, family):
    """Per-row terms of a pass at the per-group values ``per_group`` (û, Hᵢ⁻¹ and, in the
    second pass, vᵢ), gathered in one gather per tile (per row without tiles): a gather
    per column would be a kernel each."""
    q = ZL.shape[1]
    shape = _rows(design)
    at = _at_rows(per_group, design)
    col = lambda j: at[..., j]
    zl = [shape(ZL[:, a]) for a in range(q)]
    eta = shape(eta_fixed) + sum(zl[a] * col(a) for a in range(q))
    weights = shape(design.weights)
    with_disp = family.n_dispersion > 0
    s, w, dw, by_disp = _kernel_derivatives(family, shape(design.y), eta, shape(design.trials), disp, with_disp)
    s, w, dw = s * weights, w * weights, dw * weights
    lev = sum(zl[a] * col(q + q * a + b) * zl[b] for a in range(q) for b in range(q))  # ζⱼᵀ Hᵢ⁻¹ ζⱼ
    by_disp = None if by_disp is None else tuple(t * weights for t in by_disp)
    return zl, s, w, 0.5 * dw * lev, lev, by_disp, col


def _adjoint(u, Hinv, eta_fixed, ZL, disp, design: Design, family, kernels: Kernels):
    """Pass 1: the adjoint vᵢ = Hᵢ⁻¹cᵢ. Returns the per-group values of pass 2, (û, Hᵢ⁻¹, vᵢ)
    as (m, q + q² + q)."""
    q = ZL.shape[1]
    u_Hinv = jnp.concatenate([u, Hinv.reshape(-1, q * q)], axis=1)
    zl, _, _, half_dw_lev, _, _, _ = _row_terms(u_Hinv, eta_fixed, ZL, disp, design, family)
    c = _row_sums([half_dw_lev * zl[a] for a in range(q)], design, kernels)     # (m, q)
    return jnp.concatenate([u_Hinv, sm.matvec(Hinv, c)], axis=1)


def _second_pass(per_group, eta_fixed, ZL, disp, design: Design, family):
    """Pass 2's row terms (zl, s, w, lev, by_disp, ζⱼ·vᵢ, r) at the per-group values of
    :func:`_adjoint`, with rⱼ = ∂ℓ/∂η_fixed,ⱼ."""
    q = ZL.shape[1]
    zl, s, w, half_dw_lev, lev, by_disp, col = _row_terms(per_group, eta_fixed, ZL, disp, design, family)
    zeta_v = sum(zl[a] * col(q + q * q + a) for a in range(q))
    return zl, s, w, lev, by_disp, zeta_v, s - half_dw_lev + w * zeta_v


def _forward(beta, chol, dispersion, design: Design, u0, family, options: InnerOptions):
    acc = beta.dtype
    p, q = design.X.shape[1], design.Z.shape[1]
    disp = dispersion.astype(design.X.dtype)
    eta_fixed, ZL = linear_parts(design, beta, chol)
    u, h, _, H, _ = _solve(eta_fixed, ZL, disp, design, u0.astype(design.X.dtype), family, options)
    cholH = sm.cholesky(H)
    value = jnp.sum(h.astype(acc)) - 0.5 * jnp.sum(sm.logdet_from_cholesky(cholH).astype(acc))
    Hinv = sm.cho_inverse(cholH)
    per_group = _adjoint(u, Hinv, eta_fixed, ZL, disp, design, family, options.kernels)
    v = per_group[:, q + q * q:]
    # The second pass recomputes the row terms rather than reading them back: behind the
    # barrier XLA cannot merge the two computations, so each pass is one fused loop over
    # the rows (shared, they were five materialised arrays of N values).
    zl, s, w, lev, by_disp, zeta_v, r = _second_pass(
        *jax.lax.optimization_barrier((per_group, eta_fixed, ZL, disp, design)), family)

    shape = _rows(design)
    z = [shape(design.Z[:, a]) for a in range(q)]
    # Σⱼ rⱼ xⱼ: in the fused pass for a few columns; for many, one product Xᵀr (a reduce
    # with an output per column grows the program with p, and XLA caps its outputs at 1000)
    wide = p > sm.UNROLL_MAX
    x = [] if wide else [shape(design.X[:, k]) for k in range(p)]
    terms = ([r * x[k] for k in range(len(x))] + [r * z[a] for a in range(q)] + [s * z[a] for a in range(q)]
             + [w * z[a] * z[b] for a, b in lower_pairs(q)])
    if by_disp is not None:
        k_d, s_d, w_d = by_disp
        terms.append(k_d - 0.5 * w_d * lev - s_d * zeta_v)
    sums = _row_sums(terms, design, options.kernels).astype(acc)
    g_beta = (sm.cross(design.X, r.reshape(-1), options.kernels.products_as_sums).astype(acc) if wide
              else jnp.sum(sums[:, :p], axis=0))
    sums = sums[:, len(x):]
    R, S = sums[:, :q], sums[:, q:2 * q]
    P = symmetric_from_pairs(sums[:, 2 * q:2 * q + q * (q + 1) // 2], q)
    u_acc, v_acc, Hinv_acc = u.astype(acc), v.astype(acc), Hinv.astype(acc)
    g_chol = jnp.sum(R[:, :, None] * u_acc[:, None, :] - S[:, :, None] * v_acc[:, None, :]
                     - sm.matmul(sm.matmul(P, chol), Hinv_acc), axis=0)
    g_disp = jnp.sum(sums[:, -1]) if by_disp is not None else jnp.zeros_like(dispersion)
    return (value, u), (g_beta, g_chol, g_disp.astype(dispersion.dtype))


def beta_hessian(params: Params, design: Design, u, family, options: InnerOptions):
    """∂²ℓ/∂β² (p, p) at the modes ``u`` (solved at ``params``; ``options.max_iter`` = 0
    evaluates there), exactly.

    ℓ depends on β through η_fixed = Xβ alone, so with r = ∂ℓ/∂η_fixed it is Xᵀ J X,
    J = ∂r/∂η_fixed. Row j's rⱼ = ρ(η_fixed,ⱼ, Gᵢ) depends on its own η and on its group's
    values Gᵢ = (ûᵢ, Hᵢ⁻¹, vᵢ), which depend on the group's rows. So J = diag(a) plus,
    within each group, Σ_c U_c V_cᵀ over the components c of G, with aⱼ = ∂ρⱼ/∂η_fixed,ⱼ
    (forward mode, G held), U_c = ∂ρ/∂G_c (forward mode) and V_c = ∂G_c/∂η_fixed (reverse
    mode; through the modes by the implicit function theorem), and

        Xᵀ J X = Xᵀ diag(a) X + Σ_c S_cᵀ T_c,   S_c = Σ_{j∈i} U_c,ⱼ xⱼ, T_c likewise with V_c,

    per-group sums (m, p). One weighted Gram matrix and 2·dim G passes over X, where p
    gradients (differences) each read X twice and solve the modes again.
    """
    work = design.X.dtype
    acc = params.beta.dtype
    disp = params.dispersion.astype(work)
    eta_fixed, ZL = linear_parts(design, params.beta, params.chol)

    def group_values(e):
        uu, _, H = mode_and_curvature(e, ZL, disp, design, u.astype(work), family, options)
        return _adjoint(uu, sm.cho_inverse(sm.cholesky(H)), e, ZL, disp, design, family, options.kernels)

    def residual(e, G):
        return _second_pass(G, e, ZL, disp, design, family)[-1].reshape(-1)

    G, pullback = jax.vjp(group_values, eta_fixed)
    a = jax.jvp(lambda e: residual(e, G), (eta_fixed,), (jnp.ones_like(eta_fixed),))[1]
    # every component c at once (vmapped): one traced pass each way, not dim G of them
    along = jnp.broadcast_to(jnp.eye(G.shape[1], dtype=G.dtype)[:, None, :], (G.shape[1],) + G.shape)
    U = jax.vmap(lambda t: jax.jvp(lambda GG: residual(eta_fixed, GG), (G,), (t,))[1])(along)   # (dim G, N)
    V = jax.vmap(lambda t: pullback(t)[0])(along)                                              # (dim G, N)
    X = design.X
    per_group = lambda t: jax.ops.segment_sum(X * t[:, None], design.group, num_segments=design.n_groups,
                                              indices_are_sorted=True).astype(acc)               # (m, p)
    # one component at a time: all at once, the products X·U_c were dim G copies of X
    as_sums = options.kernels.products_as_sums
    low_rank = lambda H, uv: (H + sm.cross(per_group(uv[0]), per_group(uv[1]), as_sums), None)
    H = jax.lax.scan(low_rank, sm.gram(X.astype(acc), a.astype(acc), as_sums), (U, V))[0]
    return 0.5 * (H + H.T)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _loglik_kernel_part(beta, chol, dispersion, design, u0, family, options):
    return _forward(beta, chol, dispersion, design, u0, family, options)[0]


def _fwd(beta, chol, dispersion, design, u0, family, options):
    out, grads = _forward(beta, chol, dispersion, design, u0, family, options)
    return out, (grads, design, u0, dispersion)


def _bwd(family, options, res, cotangents):
    (g_beta, g_chol, g_disp), design, u0, dispersion = res
    ct_value = cotangents[0]  # the modes are returned without a gradient
    # Zeros shaped (and, under shard_map, typed) like their inputs: a family without a
    # dispersion gets a replicated constant, which must not receive a per-device cotangent.
    ct_disp = ct_value * g_disp if family.n_dispersion else jnp.zeros_like(dispersion)
    return (ct_value * g_beta, ct_value * g_chol, ct_disp,
            jax.tree_util.tree_map(_zero_cotangent, design), _zero_cotangent(u0))


_loglik_kernel_part.defvjp(_fwd, _bwd)


def laplace_loglik_for_fit(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions(),
                           log_normalizer=None):
    """``_laplace.laplace_loglik`` with the gradient above (first derivatives in the
    parameters only; the design and u0 get none). Returns (value, û)."""
    value, u = _loglik_kernel_part(params.beta, params.chol, params.dispersion, design, u0, family, options)
    if log_normalizer is None:
        acc = params.beta.dtype
        log_normalizer = jnp.sum(design.weights.astype(acc)
                                 * family.normalizer(design.y.astype(acc), design.trials.astype(acc), params.dispersion))
    return value + log_normalizer, jax.lax.stop_gradient(u)
