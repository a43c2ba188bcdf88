"""Profile-likelihood confidence intervals (lme4's ``confint(method = "profile")``).

For a parameter ψ with estimate ψ̂, the profile log-likelihood ℓ_p(v) is the maximum of ℓ
over all other parameters with ψ = v, and the signed root ζ(v) = sign(v − ψ̂)·√(2(ℓ̂ − ℓ_p(v)))
is close to a standard normal quantile. The interval at level 1 − α is where ζ = ±z_{α/2}.

Every constrained fit is the Laplace likelihood (exact for gaussian ML) maximised by the
package's L-BFGS over the natural parameters (β, raw entries of L, log dispersion), with
the profiled one held: a fixed effect or the dispersion directly; a random-effect SD
through its row of L, whose direction stays free and whose norm is the SD
(D_kk = Σ_j L_kj²). All parameters and both ends are solved at once: each secant step on
ζ(v) = ±z is one vmapped, compiled batch of constrained fits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._engine import elemental_rows, quick_rows
from ._jit import Kernels, compiled
from ._gc import with_frozen_heap
from ._inner import InnerOptions
from ._laplace import laplace_loglik, modes_and_cond_var
from ._optimize import OptOptions, minimize
from ._quadrature import marginal_loglik
from ._params import Params, chol_from_natural, n_chol, natural_from_params, params_from_natural
from .errors import ArgumentError

FIXED, SD, DISPERSION, COR = 0, 1, 2, 3
_SECANT_STEPS = 8


def _safe_norm(x):
    """(‖x‖, ‖x‖ > 0) with a finite gradient at 0 (sqrt's derivative there is infinite,
    and inf·0 = NaN would reach the gradient through an unselected branch)."""
    sq = jnp.sum(x * x)
    ok = sq > 1e-30
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), 0.0), ok


def constrain_chol(L, kind, index, value):
    """L with one variance parameter held at ``value``: for ``kind`` SD the norm of row
    ``index`` (its direction stays free), for COR the cosine between rows i and j
    (``index`` = i·d + j); L as it is for any other kind."""
    d = L.shape[0]
    k = jnp.clip(index, 0, d - 1)
    row = L[k]
    norm, nonzero = _safe_norm(row)
    # the row's direction is free; a zero row (SD estimated as 0) points along the diagonal
    unit = jnp.where(nonzero, row / jnp.where(nonzero, norm, 1.0), jnp.zeros(d, L.dtype).at[k].set(1.0))
    L = jnp.where(kind == SD, L.at[k].set(value * unit), L)
    if d > 1:
        # cor(i, j) (i < j, index = i·d + j) is the cosine between rows i and j of L: row j
        # keeps its norm and the free part of its direction, at angle arccos(value) to row i.
        # Other kinds evaluate this branch at the harmless pair (0, 1) and value 0, so that
        # no NaN enters their gradients through the unselected branch.
        is_cor = kind == COR
        i = jnp.where(is_cor, jnp.clip(index // d, 0, d - 1), 0)
        j = jnp.where(is_cor, jnp.clip(index % d, 0, d - 1), 1)
        c = jnp.where(is_cor, jnp.clip(value, -1.0, 1.0), 0.0)
        n_i, ok_i = _safe_norm(L[i])
        e_i = jnp.where(ok_i, L[i] / jnp.where(ok_i, n_i, 1.0), jnp.zeros(d, L.dtype).at[i].set(1.0))
        r_j = L[j]
        perp = r_j - jnp.dot(r_j, e_i) * e_i
        n_p, ok_p = _safe_norm(perp)
        fallback = jnp.zeros(d, L.dtype).at[j].set(1.0)
        fallback = fallback - jnp.dot(fallback, e_i) * e_i
        n_f, ok_f = _safe_norm(fallback)
        w = jnp.where(ok_p, perp / jnp.where(ok_p, n_p, 1.0), fallback / jnp.where(ok_f, n_f, 1.0))
        n_j, _ = _safe_norm(r_j)
        row_j = n_j * (c * e_i + jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0)) * w)
        L = jnp.where(is_cor, L.at[j].set(row_j), L)
    return L


def held_beta_and_dispersion(phi, kind, index, value, p: int, nd: int):
    """(β with β_index held at ``value`` for kind FIXED, the dispersion held for kind
    DISPERSION) from φ = (β, …, log dispersion)."""
    beta = phi[:p]
    beta = jnp.where(kind == FIXED, beta.at[jnp.clip(index, 0, p - 1)].set(value), beta)
    if not nd:
        return beta, jnp.ones((), phi.dtype)
    return beta, jnp.exp(jnp.where(kind == DISPERSION, jnp.log(value), phi[-1]))


def _constrained(psi, kind, index, value, phi_hat, scale, p, structure, nd):
    """Params from the scaled free vector ψ with one parameter held at ``value``."""
    phi = phi_hat + scale * psi
    beta, disp = held_beta_and_dispersion(phi, kind, index, value, p, nd)
    L = constrain_chol(chol_from_natural(phi[p:p + n_chol(structure)], structure), kind, index, value)
    return Params(beta, L, disp)


def _natural_objective(phi, u, design, family, inner, p, q):
    """−ℓ over (β, free entries of L with a raw diagonal, log dispersion): smooth on the
    boundary L_kk = 0. ``q`` as in ``_params.free_entries``."""
    return -laplace_loglik(params_from_natural(phi, p, q, family.n_dispersion), design, u, family, inner)[0]


def _grad_and_hessian(f, x):
    """Gradient and exact Hessian, the latter as forward-over-reverse products one column
    at a time; the gradient is the primal output of those products.

    lax.map rather than jax.hessian: one column's tangents in memory at a time, and no
    slower (docs/performance.md).
    """
    grad = jax.grad(f)
    grads, cols = jax.lax.map(lambda e: jax.jvp(grad, (x,), (e,)), jnp.eye(x.shape[0], dtype=x.dtype))
    return grads[0], 0.5 * (cols + cols.T)


def _variance_targets(phi, p: int, structure, pairs):
    """The random-effect SDs (one per effect) and the correlations of ``pairs`` (i, j) at the
    natural parameters φ."""
    L = chol_from_natural(phi[p:p + n_chol(structure)], structure)
    sds = jnp.sqrt(jnp.sum(L * L, axis=1) + 1e-300)
    cors = [jnp.dot(L[i], L[j]) / (sds[i] * sds[j]) for i, j in pairs]
    return jnp.concatenate([sds, jnp.stack(cors)]) if cors else sds


def _start_elemental(design, params, family, structure, pairs, exact, kernels=None) -> bool:
    return elemental_rows(design.X.shape[0])


def _start_quick(design, params, family, structure, pairs, exact, kernels=None) -> bool:
    return quick_rows(design.X.shape[0])


@compiled(static_argnames=("family", "structure", "pairs", "exact"), elemental=_start_elemental, quick=_start_quick)
def profile_start(design, params, family, structure, pairs, exact: bool, kernels: Kernels = Kernels()):
    """What the secant iterations start from, in one program: the spherical modes û at the
    estimate, the SDs and correlations of ``pairs`` with their gradients in φ (for the
    delta method's first step), and, for an exact (gaussian) fit, which keeps no covariance
    of φ, the Hessian of −ℓ in φ at the estimate."""
    nd = family.n_dispersion
    p = params.beta.shape[0]
    phi = natural_from_params(params, nd, structure)
    u0 = jnp.zeros((design.n_groups, params.chol.shape[0]), phi.dtype)
    _, _, u_hat = modes_and_cond_var(params, design, u0, family, InnerOptions(kernels=kernels))
    targets = lambda v: _variance_targets(v, p, structure, pairs)
    values, jac = targets(phi), jax.jacrev(targets)(phi)
    hess = None
    if exact:
        at_mode = InnerOptions(max_iter=0, kernels=kernels)
        hess = _grad_and_hessian(lambda v: _natural_objective(v, u_hat, design, family, at_mode, p, structure), phi)[1]
    return u_hat, values, jac, hess


def _elemental_profile(design, u_hat, phi_hat, scale, kinds, indices, values, family, structure, nd, nagq=1,
                       kernels=None):
    return elemental_rows(values.shape[0] * design.X.shape[0], nagq)


def _quick_profile(design, u_hat, phi_hat, scale, kinds, indices, values, family, structure, nd, nagq=1,
                   kernels=None) -> bool:
    return quick_rows(values.shape[0] * design.X.shape[0], nagq ** design.Z.shape[-1])


@compiled(static_argnames=("family", "structure", "nd", "nagq"), elemental=_elemental_profile, quick=_quick_profile)
def profile_logliks(design, u_hat, phi_hat, scale, kinds, indices, values, family, structure, nd, nagq=1,
                    kernels: Kernels = Kernels()):
    """ℓ_p at each (kind, index, value): one constrained fit per entry, vmapped."""
    p = design.X.shape[1]
    inner = InnerOptions(kernels=kernels)
    opt = OptOptions(gtol=1e-10)

    def objective(psi, u, args):
        kind, index, value = args
        params = _constrained(psi, kind, index, value, phi_hat, scale, p, structure, nd)
        ll, u_new = marginal_loglik(params, design, u, family, inner, nagq)
        return -ll, u_new

    def one(kind, index, value):
        res = minimize(objective, jnp.zeros_like(phi_hat), u_hat, (kind, index, value), opt)
        return -res.value

    return jax.vmap(one)(kinds, indices, values)


def solve_ends(targets, z: float, loglik_hat: float, logliks) -> tuple[np.ndarray, np.ndarray]:
    """The interval ends of every target (kind, index, estimate, standard error): where the
    signed root ζ(v) = ±z, by secant iterations on all parameters and both ends at once,
    from (ψ̂, 0) with a Wald first step. ``logliks(kinds, indices, values)`` gives ℓ_p at each
    entry. An end driven onto its bound (SD 0, correlation ±1) is the bound; one not solved
    to 1e-3 in ζ is NaN."""
    kinds = np.array([t[0] for t in targets for _ in (0, 1)], np.int32)
    indices = np.array([t[1] for t in targets for _ in (0, 1)], np.int32)
    est = np.array([t[2] for t in targets for _ in (0, 1)])
    side = np.tile([-1.0, 1.0], len(targets))
    positive = (kinds == SD) | (kinds == DISPERSION)
    bounded = kinds == COR  # in [-1, 1]
    goal = side * z

    def zeta(values):
        drop = np.maximum(2.0 * (loglik_hat - np.asarray(logliks(kinds, indices, values))), 0.0)
        return np.sign(values - est) * np.sqrt(drop)

    se = np.array([t[3] for t in targets for _ in (0, 1)])
    v_prev, z_prev = est.copy(), np.zeros_like(est)
    v = est + goal * se
    v = np.where(positive & (v <= 0), est / 2.0, v)
    v = np.where(bounded & (np.abs(v) >= 1), (est + side) / 2.0, v)
    for _ in range(_SECANT_STEPS):
        zv = zeta(v)
        slope = (zv - z_prev) / np.where(v != v_prev, v - v_prev, 1.0)
        slope = np.where(np.abs(slope) > 1e-12, slope, goal / np.where(se > 0, se, 1.0))
        v_new = v + (goal - zv) / slope
        # an SD's lower end cannot pass 0; a variance at 0 that still fits within the interval ends there
        v_new = np.where(positive & (v_new <= 0), v / 2.0, v_new)
        # a correlation's end cannot pass ±1: halve the way there instead
        v_new = np.where(bounded & (np.abs(v_new) >= 1), (v + side) / 2.0, v_new)
        v_prev, z_prev, v = v, zv, v_new
    final = zeta(v)
    # an end that the steps drove onto the parameter's bound (SD 0, correlation ±1) is the
    # bound itself: the likelihood there is still within the interval
    at_bound = (positive & (side < 0) & (v < 1e-6 * np.maximum(est, 1.0))) | (bounded & (np.abs(v) > 1 - 1e-6))
    # an end still short of ζ = ±z on the way to its bound, halving towards it: if ζ at the
    # bound is within ±z, the bound is the end
    bound = np.where(positive, 0.0, side)
    towards = ~at_bound & (np.abs(final - goal) > 1e-3) & ((positive & (side < 0)) | bounded)
    if towards.any():
        at_bound |= towards & (np.abs(zeta(np.where(towards, bound, v))) <= z)
    v = np.where(at_bound, bound, v)
    unsolved = ~at_bound & (np.abs(final - goal) > 1e-3)
    v = np.where(unsolved, np.nan, v)
    return v[0::2], v[1::2]


@with_frozen_heap
def profile_intervals(res, level: float) -> pd.DataFrame:
    from ._inference import normal_quantile, variance_parameters

    if res.method == "REML":
        raise ArgumentError("profile intervals are computed on the ML likelihood; refit with method='ML'")
    if res.n_devices > 1:  # its design is laid out in one chunk per device
        raise ArgumentError(f"profile intervals are not available for a fit split over devices (devices= gave "
                            f"{res.n_devices}): refit without devices=, or use confint(method='wald') or method='boot'")
    if res.layout.chunks != 1:
        raise ArgumentError("profile intervals are available for designs of up to 2^19 rows")
    if res.family_spec.exact and res.fit_options.weights is not None:
        raise ArgumentError("profile intervals are not available for gaussian fits with prior weights")
    family = res.family_spec
    structure = res.D_array.shape[0] if res.re_blocks is None else tuple(res.re_blocks)
    nd = res.n_dispersion
    p, d = len(res.beta), res.D_array.shape[0]
    design = res.design
    params = Params(jnp.asarray(res.params.beta), jnp.asarray(res.params.chol), jnp.asarray(res.params.dispersion))
    phi_hat = natural_from_params(params, nd, structure)
    # the correlations profiled: every pair of a correlated block whose SDs are not 0
    sd_hat = np.sqrt(np.diag(res.D_array))
    same_block = ~np.isclose(res.D_array, 0.0) | (res.re_blocks is None)
    pairs = tuple((i, j) for j in range(d) for i in range(j) if res.re_blocks is None or same_block[i, j])
    # the modes at the estimate, the variance parameters' gradients and (gaussian fits) the
    # curvature, which scale the free parameters and give the first secant step (a Wald step)
    u_hat, values, jac, hess = profile_start(design, params, family, structure, pairs,
                                             exact=res.cov_natural is None)
    if res.cov_natural is not None:  # kept by Laplace and AGHQ fits
        cov = np.asarray(res.cov_natural)
    else:  # gaussian fits: Laplace is exact there
        cov = np.linalg.pinv(np.asarray(hess))
    scale = jnp.asarray(np.sqrt(np.maximum(np.diag(cov), 1e-12)))
    loglik_hat = res.loglik

    # the profiled parameters: fixed effects, SDs, correlations (of correlated blocks), sigma;
    # standard errors by the delta method give the first secant step
    jac = np.asarray(jac)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, cov, jac), 1e-12))
    values = np.asarray(values)
    targets = [(FIXED, j, float(res.beta[j]), float(np.sqrt(max(cov[j, j], 1e-24)))) for j in range(p)]
    for k in range(d):
        targets.append((SD, k, float(sd_hat[k]), float(se[k]) if sd_hat[k] > 0 else 0.1))
    for n_pair, (i, j) in enumerate(pairs):
        rho = float(values[d + n_pair]) if sd_hat[i] > 0 and sd_hat[j] > 0 else np.nan
        targets.append((COR, i * d + j, rho, float(se[d + n_pair]) if np.isfinite(rho) else 0.1))
    if nd:
        disp = float(res.params.dispersion)
        targets.append((DISPERSION, 0, disp, float(np.sqrt(max(cov[-1, -1], 1e-24))) * disp))
    targets = [t for t in targets if np.isfinite(t[2])]

    lower, upper = solve_ends(targets, normal_quantile(0.5 + level / 2.0), loglik_hat,
                              lambda kinds, indices, values: profile_logliks(
                                  design, u_hat, phi_hat, scale, jnp.asarray(kinds), jnp.asarray(indices),
                                  jnp.asarray(values), family, structure, nd, res.nAGQ))

    re_names = list(res.re_names)
    dispersion = family.dispersion_name
    label = {FIXED: lambda k: res.fixef_names[k], SD: lambda k: f"sd_{re_names[k]}",
             COR: lambda k: f"cor_{re_names[k // d]}_{re_names[k % d]}", DISPERSION: lambda k: dispersion}
    names = [label[kind](index) for kind, index, *_ in targets]
    frame = pd.DataFrame({"lower": lower, "upper": upper}, index=names)
    # rows in confint's order: fixed effects, SDs and correlations, sigma
    order = list(res.fixef_names) + variance_parameters(res.D_array, res.re_names)[0] + ([dispersion] if nd else [])
    return frame.reindex(order)
