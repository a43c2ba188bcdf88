"""Conditional modes of the random effects: Newton with step-halving, all groups at once.

The inner problem is written in lme4's spherical form b = L u, u ~ N(0, I):

    h_i(u) = Σ_j log p(y_ij | η_ij) − ½‖u_i‖²,   η = η_fixed + (Z L) u_group

so its negative Hessian H_i = (ZL)_iᵀ W_i (ZL)_i + I is at least I. The Newton system
is therefore always solvable, even on the boundary where L is singular, and D⁻¹ is
never formed. Group sums are sums within tiles of rows (one fused reduce, see
``_row_sums``), then segment sums over the tiles, sorted by group; the q×q solves are
batched over groups.

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
from ._types import Design
from ._jit import Kernels


class InnerOptions(NamedTuple):
    # 0 means u0 is already the mode: evaluate there without a Newton loop in the program.
    # Derivatives stay exact (they come from the IFT at û), and a Hessian taken at the
    # optimum then compiles and runs without the solver.
    max_iter: int = 100
    # On the largest Newton step |Δu|. The solve stops before taking that step, and the
    # IFT gradient is off by first order in it, which the driver's finite-difference
    # Hessian magnifies: a looser tolerance makes the covariance depend on the summation
    # order (docs/performance.md). Newton converges quadratically, so it costs few passes.
    tol: float = 1e-13
    max_halvings: int = 40
    # How the passes write their sums: the compiled entry point's (_jit.Kernels).
    kernels: Kernels = Kernels()


def _segsum(values, design: Design):
    return jax.ops.segment_sum(values, design.group, num_segments=design.n_groups, indices_are_sorted=True)


@jax.custom_jvp
def _tile_sums(terms):
    """Sums over the last axis of every (T, k) array of ``terms``, as one variadic reduce.

    One reduce with every sum as an output is one loop over the rows: XLA fuses the
    family kernel into it once. Separate sums (or a stacked array) each read the kernel's
    outputs, so XLA materialised them first; that was most of a pass's time.
    """
    zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
    return jax.lax.reduce(tuple(terms), zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)), (terms[0].ndim - 1,))


@_tile_sums.defjvp
def _tile_sums_jvp(primals, tangents):
    # Linear, so the tangents are sums too; written with jnp.sum, which JAX can transpose
    # (a variadic reduce with a user computation has no transpose rule).
    (terms,), (dterms,) = primals, tangents
    return _tile_sums(terms), tuple(jnp.sum(t, axis=-1) for t in dterms)


def _row_sums(terms, design: Design, kernels: Kernels):
    """Per-group sums (m, len(terms)) of per-row terms given as (T, k) tiles (tiled
    design) or (N,) rows."""
    if design.tile_group is None:
        # Stacked into one segment sum: with separate sums XLA recomputes the shared
        # elementwise work (exp, log1p) for each.
        return _segsum(jnp.stack(terms, axis=1), design)
    tiles = _tile_sums(tuple(terms))
    over_tiles = lambda a: jax.ops.segment_sum(a, design.tile_group, num_segments=design.n_groups,
                                               indices_are_sorted=True)
    if kernels.separate_group_sums:  # the kernel is summed into the tiles once, whichever form
        return jnp.stack([over_tiles(t) for t in tiles], axis=1)
    return over_tiles(jnp.stack(tiles, axis=1))


def _rows(design: Design):
    """The shape per-row arrays take in a pass: (T, k) tiles or (N,)."""
    if design.tile_group is None:
        return lambda a: a
    n_tiles = design.tile_group.shape[0]
    return lambda a: a.reshape((n_tiles, -1) + a.shape[1:])


def _at_rows(per_group, design: Design):
    """Per-group values (m, k) broadcast to the pass's row shape: (T, 1, k), one gather
    per tile, or (N, k) per row; column j is ``out[..., j]``."""
    if design.tile_group is None:
        return per_group[design.group]
    return per_group[design.tile_group][:, None, :]


def linear_parts(design: Design, beta, chol):
    """The solver's inputs: the fixed part of η, X β + offset, and Z L, per row, in the
    design's dtype (the parameters are cast to it)."""
    work = design.X.dtype
    return sm.matvec(design.X, beta.astype(work)) + design.offset, sm.matmul(design.Z, chol.astype(work))


def _eta(u, eta_fixed, ZL, design: Design):
    """η in the pass's row shape, and the columns of ZL in it."""
    shape = _rows(design)
    zl = [shape(ZL[:, a]) for a in range(ZL.shape[1])]
    u_rows = _at_rows(u, design)
    return shape(eta_fixed) + sum(zl[a] * u_rows[..., a] for a in range(len(zl))), zl


def lower_pairs(q: int):
    """(a, b), b ≤ a: the order in which passes return the q(q+1)/2 entries of a
    symmetric per-group matrix."""
    return [(a, b) for a in range(q) for b in range(a + 1)]


def symmetric_from_pairs(columns, q: int):
    """(m, q, q) symmetric matrices from (m, q(q+1)/2) entries in :func:`lower_pairs` order."""
    entries = {pair: columns[:, k] for k, pair in enumerate(lower_pairs(q))}
    return jnp.stack([jnp.stack([entries[(max(a, b), min(a, b))] for b in range(q)], axis=-1)
                      for a in range(q)], axis=-2)


def group_logdens(u, eta_fixed, ZL, dispersion, design: Design, family, kernels: Kernels):
    """h_i(u_i) for every group, without the normalising constants: (m,)."""
    shape = _rows(design)
    eta, _ = _eta(u, eta_fixed, ZL, design)
    ll = family.kernel(shape(design.y), eta, shape(design.trials), dispersion) * shape(design.weights)
    return _row_sums([ll], design, kernels)[:, 0] - 0.5 * jnp.sum(u * u, axis=1)


def _evaluate(u, eta_fixed, ZL, dispersion, design: Design, family, kernels: Kernels):
    """h_i, ∇h_i and H_i at u from a single pass over the rows."""
    q = ZL.shape[1]
    shape = _rows(design)
    eta, zl = _eta(u, eta_fixed, ZL, design)
    ll, s, w = family.kernel_and_derivatives(shape(design.y), eta, shape(design.trials), dispersion)
    weights = shape(design.weights)
    ll, s, w = ll * weights, s * weights, w * weights
    terms = [ll] + [s * zl[a] for a in range(q)] + [w * zl[a] * zl[b] for a, b in lower_pairs(q)]
    sums = _row_sums(terms, design, kernels)
    h = sums[:, 0] - 0.5 * jnp.sum(u * u, axis=1)
    g = sums[:, 1:1 + q] - u
    H = symmetric_from_pairs(sums[:, 1 + q:], q)
    return h, g, H + jnp.eye(q, dtype=ZL.dtype)[None]


def _solve(eta_fixed, ZL, dispersion, design, u0, family, options: InnerOptions):
    """Damped Newton from u0, every group on its own. Returns (u, h, g, H) at the last
    accepted point, and the number of passes over the rows.

    One loop with a single evaluation of (h, ∇h, H) per pass, at u + t·Δ for each group's
    step scale t: a group whose trial point does not increase h halves its t for the next
    pass, one that does accepts it and takes its next Newton step. With a single call
    site, XLA compiles the row pass once (a separate step-halving loop and the first
    evaluation were two more copies). The stopping test looks at the next Newton step
    before the data are touched again, so a solve that starts at the mode costs one pass
    over the rows, and the caller gets h and H at û without a further pass.
    """
    args = (eta_fixed, ZL, dispersion, design, family, options.kernels)
    # In float32 a Newton step cannot shrink below ~1e-4 relative, nor h be compared
    # finer than its rounding: the tolerances follow the working precision.
    eps = float(jnp.finfo(eta_fixed.dtype).eps)
    tol = max(options.tol, 1e3 * eps)
    rel_slack = max(1e-12, 10 * eps)
    if options.max_iter == 0:
        h0, g0, H0 = _evaluate(u0, *args)
        return u0, h0, g0, H0, 1

    q = u0.shape[1]
    dtype = u0.dtype

    def body(state):
        u, h, g, H, delta, t, halvings, it = state
        first = it == 0
        trial = u + t[:, None] * delta
        h1, g1, H1 = _evaluate(trial, *args)
        # Accept a step only where h does not decrease; rounding makes h flat to ~1e-12
        # relative near the mode, hence the small allowance.
        ok = first | (h1 >= h - rel_slack * (1.0 + jnp.abs(h)))
        # A group that found no increase in max_halvings halvings stays where it is.
        stuck = ~ok & (halvings + 1 >= options.max_halvings)
        keep = lambda new, old: jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)
        u, h, g, H = keep(trial, u), keep(h1, h), keep(g1, g), keep(H1, H)
        delta = keep(sm.cho_solve(sm.cholesky(H1), g1), jnp.where(stuck[:, None], 0.0, delta))
        t = jnp.where(ok | stuck, 1.0, 0.5 * t)
        halvings = jnp.where(ok | stuck, 0, halvings + 1)
        return u, h, g, H, delta, t, halvings, it + 1

    def more(state):
        _, _, _, _, delta, _, _, it = state
        # A group whose next Newton step is below tol is done, even while it halves: near
        # the mode a float32 h is flat only to its rounding, so a tiny step can be refused
        # and retried forever (seen: 2 of 5000 Poisson groups kept every 100k-row pass
        # running to the iteration cap, 13x the work of the converged solve).
        active = jnp.max(jnp.abs(delta), axis=1) >= tol
        return (it == 0) | (jnp.any(active) & (it < options.max_iter + options.max_halvings))

    # Every per-group state array is derived from u0, so that under shard_map it varies
    # over the devices as u0 does (a fresh constant would be replicated).
    zero_m = jnp.zeros_like(u0[:, 0])
    state = (u0, zero_m - jnp.inf, jnp.zeros_like(u0), jnp.zeros_like(u0)[:, :, None] + jnp.eye(q, dtype=dtype)[None],
             jnp.zeros_like(u0), zero_m, zero_m.astype(jnp.int32), 0)
    u, h, g, H, _, _, _, passes = jax.lax.while_loop(more, body, state)
    return u, h, g, H, passes


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def mode_and_curvature(eta_fixed, ZL, dispersion, design, u0, family, options=InnerOptions()):
    """Spherical conditional modes û (m, q) for the linear predictor η_fixed + (Z L) u,
    with h_i(û_i) (m,) and H_i(û_i) (m, q, q) from the same pass."""
    u, h, _, H, _ = _solve(eta_fixed, ZL, dispersion, design, u0, family, options)
    return u, h, H


@mode_and_curvature.defjvp
def _mode_and_curvature_jvp(family, options, primals, tangents):
    eta_fixed, ZL, dispersion, design, u0 = primals
    u, h, H = mode_and_curvature(eta_fixed, ZL, dispersion, design, u0, family, options)

    def at(uu, e, zl, disp, d):
        return _evaluate(uu, e, zl, disp, d, family, options.kernels)

    # IFT: ∇_u h(û; a) = 0 for all a, so dû = H⁻¹ ∂_a(∇_u h)·da.
    _, (h_a, g_a, H_a) = jax.jvp(lambda *a: at(u, *a), primals[:4], tangents[:4])
    u_dot = sm.cho_solve(sm.cholesky(H), g_a)
    # h and H move with a directly (above) and through û: a second JVP in u alone, so the
    # tangents in a are not propagated twice.
    _, (h_u, _, H_u) = jax.jvp(lambda uu: at(uu, *primals[:4]), (u,), (u_dot,))
    return (u, h, H), (u_dot, h_a + h_u, H_a + H_u)


def conditional_modes(eta_fixed, ZL, dispersion, design, u0, family, options=InnerOptions()):
    """Spherical conditional modes û (m, q); differentiable by the implicit function theorem."""
    return mode_and_curvature(eta_fixed, ZL, dispersion, design, u0, family, options)[0]
