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
are defined (the driver's Hessian is a finite difference of this gradient); code that
needs more goes through ``laplace_loglik``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _smallmat as sm
from ._design import Design
from ._inner import InnerOptions, _at_rows, _row_sums, _rows, _solve, linear_parts, lower_pairs, symmetric_from_pairs
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


def _forward(beta, chol, dispersion, design: Design, u0, family, options: InnerOptions):
    acc = beta.dtype
    work = design.X.dtype
    p, q = design.X.shape[1], design.Z.shape[1]
    disp = dispersion.astype(work)
    eta_fixed, ZL = linear_parts(design, beta, chol)
    u, h, _, H, _ = _solve(eta_fixed, ZL, disp, design, u0.astype(work), family, options)
    cholH = sm.cholesky(H)
    value = jnp.sum(h.astype(acc)) - 0.5 * jnp.sum(sm.logdet_from_cholesky(cholH).astype(acc))
    Hinv = sm.cho_inverse(cholH)

    shape = _rows(design)
    with_disp = family.n_dispersion > 0

    def row_terms(per_group, eta_fixed, ZL, design):
        # Per-group values (û, Hᵢ⁻¹, then vᵢ in the second pass) gathered in one gather per
        # tile (per row without tiles): a gather per column would be a kernel each.
        at = _at_rows(per_group, design)
        col = lambda j: at[..., j]
        zl = [shape(ZL[:, a]) for a in range(q)]
        eta = shape(eta_fixed) + sum(zl[a] * col(a) for a in range(q))
        weights = shape(design.weights)
        s, w, dw, by_disp = _kernel_derivatives(family, shape(design.y), eta, shape(design.trials), disp, with_disp)
        s, w, dw = s * weights, w * weights, dw * weights
        lev = sum(zl[a] * col(q + q * a + b) * zl[b] for a in range(q) for b in range(q))  # ζⱼᵀ Hᵢ⁻¹ ζⱼ
        by_disp = None if by_disp is None else tuple(t * weights for t in by_disp)
        return zl, s, w, 0.5 * dw * lev, lev, by_disp, col

    u_Hinv = jnp.concatenate([u, Hinv.reshape(-1, q * q)], axis=1)
    zl, _, _, half_dw_lev, _, _, _ = row_terms(u_Hinv, eta_fixed, ZL, design)
    c = _row_sums([half_dw_lev * zl[a] for a in range(q)], design)              # (m, q)
    v = sm.matvec(Hinv, c)
    # The second pass recomputes the row terms rather than reading them back: behind the
    # barrier XLA cannot merge the two computations, so each pass is one fused loop over
    # the rows (shared, they were five materialised arrays of N values).
    zl, s, w, half_dw_lev, lev, by_disp, col = row_terms(
        *jax.lax.optimization_barrier((jnp.concatenate([u_Hinv, v], axis=1), eta_fixed, ZL, design)))
    zeta_v = sum(zl[a] * col(q + q * q + a) for a in range(q))
    r = s - half_dw_lev + w * zeta_v

    z = [shape(design.Z[:, a]) for a in range(q)]
    # Σⱼ rⱼ xⱼ: in the fused pass for a few columns; for many, one product Xᵀr (a reduce
    # with an output per column grows the program with p, and XLA caps its outputs at 1000)
    wide = p > sm.UNROLL_MAX
    x = [] if wide else [shape(design.X[:, k]) for k in range(p)]
    terms = ([r * x[k] for k in range(len(x))] + [r * z[a] for a in range(q)] + [s * z[a] for a in range(q)]
             + [w * z[a] * z[b] for a, b in lower_pairs(q)])
    if with_disp:
        k_d, s_d, w_d = by_disp
        terms.append(k_d - 0.5 * w_d * lev - s_d * zeta_v)
    sums = _row_sums(terms, design).astype(acc)
    g_beta = sm.cross(design.X, r.reshape(-1)).astype(acc) if wide else jnp.sum(sums[:, :p], axis=0)
    sums = sums[:, len(x):]
    R, S = sums[:, :q], sums[:, q:2 * q]
    P = symmetric_from_pairs(sums[:, 2 * q:2 * q + q * (q + 1) // 2], q)
    u_acc, v_acc, Hinv_acc = u.astype(acc), v.astype(acc), Hinv.astype(acc)
    g_chol = jnp.sum(R[:, :, None] * u_acc[:, None, :] - S[:, :, None] * v_acc[:, None, :]
                     - sm.matmul(sm.matmul(P, chol), Hinv_acc), axis=0)
    g_disp = jnp.sum(sums[:, -1]) if with_disp else jnp.zeros_like(dispersion)
    return (value, u), (g_beta, g_chol, g_disp.astype(dispersion.dtype))


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
