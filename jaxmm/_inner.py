"""Conditional modes of the random effects: Newton with step-halving, all groups at once.

The inner problem is written in lme4's spherical form b = L u, u ~ N(0, I):

    h_i(u) = Σ_j log p(y_ij | η_ij) − ½‖u_i‖²,   η = η_fixed + (Z L) u_group

so its negative Hessian H_i = (ZL)_iᵀ W_i (ZL)_i + I is at least I. The Newton system
is therefore always solvable, even on the boundary where L is singular, and D⁻¹ is
never formed. Group sums are segment sums over rows sorted by group; the q×q solves
are batched over groups.

``mode_and_curvature`` carries a custom JVP from the implicit function theorem:
at the mode ∇_u h(û; a) = 0, so dû = H⁻¹ ∂_a(∇_u h)·da for every input a. The rule
calls ``mode_and_curvature`` itself, so derivatives of any order are exact and the
Newton iterations are never differentiated.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _smallmat as sm
from ._design import Design


class InnerOptions(NamedTuple):
    # 0 means u0 is already the mode: evaluate there without a Newton loop in the program.
    # Derivatives stay exact (they come from the IFT at û), and a Hessian taken at the
    # optimum then compiles and runs without the solver.
    max_iter: int = 100
    tol: float = 1e-10  # on the largest Newton step |Δu|
    max_halvings: int = 40


def _segsum(values, design: Design):
    return jax.ops.segment_sum(values, design.group, num_segments=design.n_groups, indices_are_sorted=True)


def linear_predictor(u, eta_fixed, ZL, design: Design):
    return eta_fixed + jnp.sum(ZL * u[design.group], axis=1)


def group_logdens(u, eta_fixed, ZL, dispersion, design: Design, family):
    """h_i(u_i) for every group, without the normalising constants: (m,)."""
    eta = linear_predictor(u, eta_fixed, ZL, design)
    ll = family.kernel(design.y, eta, design.trials, dispersion) * design.weights
    return _segsum(ll, design) - 0.5 * jnp.sum(u * u, axis=1)


def _evaluate(u, eta_fixed, ZL, dispersion, design: Design, family):
    """h_i, ∇h_i and H_i at u from a single pass over the rows.

    All per-row terms go through one segment sum of a stacked (N, k) array: with
    separate sums XLA recomputes the shared elementwise work (exp, log1p) for each.
    """
    q = ZL.shape[1]
    eta = linear_predictor(u, eta_fixed, ZL, design)
    ll, s, w = family.kernel_and_derivatives(design.y, eta, design.trials, dispersion)
    ll, s, w = ll * design.weights, s * design.weights, w * design.weights
    pairs = [(a, b) for a in range(q) for b in range(a + 1)]
    terms = [ll] + [s * ZL[:, a] for a in range(q)] + [w * ZL[:, a] * ZL[:, b] for a, b in pairs]
    sums = _segsum(jnp.stack(terms, axis=1), design)
    h = sums[:, 0] - 0.5 * jnp.sum(u * u, axis=1)
    g = sums[:, 1:1 + q] - u
    entries = {pair: sums[:, 1 + q + k] for k, pair in enumerate(pairs)}
    H = jnp.stack([jnp.stack([entries[(max(a, b), min(a, b))] for b in range(q)], axis=-1)
                   for a in range(q)], axis=-2)
    return h, g, H + jnp.eye(q, dtype=ZL.dtype)[None]


def _solve(eta_fixed, ZL, dispersion, design, u0, family, options: InnerOptions):
    """Newton iterations from u0. Returns (u, h, g, H) at the last accepted point.

    The stopping test looks at the next Newton step before the data are touched again,
    so a solve that starts at the mode costs one pass over the rows, and the caller gets
    h and H at û without a further pass.
    """
    args = (eta_fixed, ZL, dispersion, design, family)
    # In float32 a Newton step cannot shrink below ~1e-4 relative, nor h be compared
    # finer than its rounding: the tolerances follow the working precision.
    eps = float(jnp.finfo(eta_fixed.dtype).eps)
    tol = max(options.tol, 1e3 * eps)
    rel_slack = max(1e-12, 10 * eps)

    def step_of(g, H):
        return sm.cho_solve(sm.cholesky(H), g)

    def newton_step(state):
        u, h0, g0, H0, delta, it = state
        # The trial point is evaluated in full: when it is accepted, as it nearly always
        # is, its gradient and Hessian give the next Newton step without another pass.
        trial = u + delta
        h1, g1, H1 = _evaluate(trial, *args)
        # Accept a step only where h does not decrease; rounding makes h flat to ~1e-12
        # relative near the mode, hence the small allowance.
        slack = rel_slack * (1.0 + jnp.abs(h0))
        ok = h1 >= h0 - slack

        def halve(_):
            def body(c):
                t, acc, k = c
                t = jnp.where(acc, t, 0.5 * t)
                h_try = group_logdens(u + t[:, None] * delta, *args)
                return t, acc | (h_try >= h0 - slack), k + 1

            t, acc, _ = jax.lax.while_loop(
                lambda c: (~jnp.all(c[1])) & (c[2] < options.max_halvings),
                body, (jnp.ones_like(h0), ok, 0))
            u_new = u + jnp.where(acc, t, 0.0)[:, None] * delta
            return (u_new, *_evaluate(u_new, *args))

        u1, h1, g1, H1 = jax.lax.cond(jnp.all(ok), lambda _: (trial, h1, g1, H1), halve, None)
        return u1, h1, g1, H1, step_of(g1, H1), it + 1

    h0, g0, H0 = _evaluate(u0, *args)
    if options.max_iter == 0:
        return u0, h0, g0, H0
    state = (u0, h0, g0, H0, step_of(g0, H0), 0)
    u, h, g, H, _, _ = jax.lax.while_loop(
        lambda s: (jnp.max(jnp.abs(s[4])) >= tol) & (s[5] < options.max_iter), newton_step, state)
    return u, h, g, H


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def mode_and_curvature(eta_fixed, ZL, dispersion, design, u0, family, options=InnerOptions()):
    """Spherical conditional modes û (m, q) for the linear predictor η_fixed + (Z L) u,
    with h_i(û_i) (m,) and H_i(û_i) (m, q, q) from the same pass."""
    u, h, _, H = _solve(eta_fixed, ZL, dispersion, design, u0, family, options)
    return u, h, H


@mode_and_curvature.defjvp
def _mode_and_curvature_jvp(family, options, primals, tangents):
    eta_fixed, ZL, dispersion, design, u0 = primals
    u, h, H = mode_and_curvature(eta_fixed, ZL, dispersion, design, u0, family, options)

    def at(uu, e, zl, disp, d):
        return _evaluate(uu, e, zl, disp, d, family)

    # IFT: ∇_u h(û; a) = 0 for all a, so dû = H⁻¹ ∂_a(∇_u h)·da.
    _, (_, g_dot, _) = jax.jvp(lambda *a: at(u, *a), primals[:4], tangents[:4])
    u_dot = sm.cho_solve(sm.cholesky(H), g_dot)
    # h and H move with a directly and through û.
    _, (h_dot, _, H_dot) = jax.jvp(at, (u, *primals[:4]), (u_dot, *tangents[:4]))
    return (u, h, H), (u_dot, h_dot, H_dot)


def conditional_modes(eta_fixed, ZL, dispersion, design, u0, family, options=InnerOptions()):
    """Spherical conditional modes û (m, q); differentiable by the implicit function theorem."""
    return mode_and_curvature(eta_fixed, ZL, dispersion, design, u0, family, options)[0]
