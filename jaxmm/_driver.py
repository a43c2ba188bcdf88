"""Optimise, finish on the boundary, judge, restart: one loop around one evaluation site.

A fit is more than an L-BFGS run. Once the optimiser stops, small Cholesky diagonals are
tried at exactly 0, the Hessian at the chosen point decides whether the fit converged,
and a fit that stopped at a saddle or stalled is restarted from beyond it. Each of these
needs the objective and its gradient. Called from separate places, each call would be a
separate copy of the objective (with its inner Newton solver and adjoint) in the compiled
program, and XLA compiles every copy: for a Laplace fit the forward-over-reverse Hessian
alone took longer to compile than the whole optimiser (docs/performance.md).

Here a single ``lax.while_loop`` evaluates the objective once per pass, at a point that a
small state machine chooses:

    OPT       L-BFGS trial points (``_optimize.lbfgs_update``)
    BOUNDARY  the optimum with small Cholesky diagonals set to 0
    CENTER    the optimum itself, when the boundary point was worse
    FD        +h (and −h in float32) along every coordinate around the chosen point: the
              Hessian as differences of the gradient

    POLISH    one Newton step from a converged attempt that is still measurably short
              of the optimum (see POLISH_ABOVE)

after which the best attempt so far is kept and, while it stopped short, the loop goes
back to OPT from a restart point. The objective works in natural coordinates φ (the raw
Cholesky entries, smooth through L_kk = 0); the optimiser in θ, where the diagonal is on
the log scale so that every θ is a valid model.

With many fixed effects the Hessian's fixed-effect block is exact instead
(``_gradient.beta_hessian``, the ``exact_block`` argument) and FD runs along the other
coordinates only.

The Hessian is only used to judge convergence, for restarts and for the covariance of the
estimates, where a relative error of about 1e-6 is immaterial. In float64 it takes forward
differences, k gradients, with the step 1e-6·(1 + |φ|): central differences (2k) were a
third of a fit's evaluations. Forward differences divide the gradient's noise by a small
step, so the inner solver's tolerance is tight (_inner.InnerOptions.tol). They take fewer
passes over the rows than central differences, with the same standard errors to 1e-7
relative (docs/performance.md). In float32 the gradient's rounding would make forward
differences 0.15-0.65 % off (grouseticks, a 100k Poisson), so there they stay central,
with the step eps^(1/3)·(1 + |φ|).
"""
from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _smallmat as sm
from ._optimize import LbfgsState, OptOptions, Status, lbfgs_start, lbfgs_trial, lbfgs_update
from ._verdict import (MAX_ESCAPES, central_differences, decrement_tolerance, difference_steps, final_check,
                       newton_step, no_worse, restart_step)

# A Cholesky diagonal below this (on the linear-predictor scale, or relative to σ in the
# LMM) is a candidate for exactly zero once the optimiser stops; the log-likelihood decides.
BOUNDARY_CANDIDATE = 1e-2

# The optimiser stops when its quasi-Newton decrement is this share of the final check's
# allowance: a larger share saves iterations but moves the variance estimates (docs/performance.md).
DECREMENT_SHARE = 0.01

_LOG_CANDIDATE = float(np.log(BOUNDARY_CANDIDATE))

# A converged attempt whose Newton decrement δ is above this takes one Newton step with
# its finite-difference Hessian (the POLISH phase), kept when the decrement falls.
# δ = ½‖Δ‖²_H, so the estimates are then within √(2δ) = 4.5e-4 standard errors of the
# optimum (in the Hessian's norm) instead of √(2·allowance). In float64 the allowance
# (final_check) is below this except for very large |ℓ|; in float32 it is eps32·|ℓ|,
# which let estimates stop up to √(2·eps32·|ℓ|) standard errors away: 1.6 % for
# grouseticks (|ℓ| = 1134), about 1 standard error at 10M Bernoulli rows. The line
# search cannot go further there (the value's rounding hides the decrease), but the
# gradients carry more digits: on grouseticks in float32 the step brought β from 1.1 %
# of a standard error off the float64 fit to 1e-4. Where the float32 gradient's own
# rounding is the floor (|ℓ| ≥ 1.9e5 in benchmarks/results/float32.md: about 2e-3
# standard errors) the step does not lower the decrement and is refused.
POLISH_ABOVE = 1e-7

class Phase(enum.IntEnum):
    """The loop's phases (see the module docstring)."""
    OPT = 0
    BOUNDARY = 1
    CENTER = 2
    FD = 3
    POLISH = 4
    DONE = 5


class Attempt(NamedTuple):
    """A point judged by the verdict: where the optimiser stopped (θ), the point judged (φ,
    possibly on the boundary), its value, gradient, Hessian and modes, and the verdict."""
    theta: jnp.ndarray
    phi: jnp.ndarray
    value: jnp.ndarray
    grad: jnp.ndarray
    hess: jnp.ndarray
    warm: object
    status: jnp.ndarray
    decrement: jnp.ndarray


class Center(NamedTuple):
    """The point the differences are taken around."""
    phi: jnp.ndarray
    value: jnp.ndarray
    grad: jnp.ndarray
    warm: object


class Carry(NamedTuple):
    """The loop's state."""
    phase: jnp.ndarray       # a Phase
    lb: LbfgsState
    warm: object             # the modes at the optimiser's last accepted point
    center: Center
    fd: jnp.ndarray          # the difference gradients, row by row
    j: jnp.ndarray           # the next difference
    attempt: jnp.ndarray     # restarts so far
    best: Attempt
    n_iter: jnp.ndarray
    n_eval: jnp.ndarray
    early: jnp.ndarray       # the optimiser stopped early for a boundary candidate
    no_early: jnp.ndarray    # early stops and held diagonals are off for the rest of the fit
    frozen: jnp.ndarray      # scalar blocks held at 0


def anchored(carry, args, dtype):
    """``carry`` plus a zero taken from every array of ``args`` (summed as ``dtype``).

    Under vmap (by= and the bootstrap) the data are batched but θ₀ and the counters are
    not. JAX's while-loop batching then traces the body once per carry that turns out to
    be batched, until none changes, and the nested loops inside do the same. The zero (the
    bootstrap batches y alone, by= every array) makes every carry batched from the start,
    so the body is batched once and traced sooner (docs/performance.md). Without vmap it
    adds 0.
    """
    anchor = sum(jnp.sum(jnp.ravel(leaf)[:0]).astype(dtype) for leaf in jax.tree.leaves(args))
    return jax.tree.map(lambda a: a + anchor.astype(a.dtype), carry)


def optimise_and_check(evaluate, theta0, warm0, args, diag_mask, restart_theta, options: OptOptions = OptOptions(),
                       work_dtype=None, face_mask=None, exact_block=None):
    """Minimise ``evaluate(φ, warm, args) -> ((value, new_warm), ∇_φ value)`` and judge the result.

    ``theta0``: the optimiser's start, φ = θ with exp() applied where ``diag_mask`` (a
    static boolean array) is set. ``restart_theta(φ) -> θ`` turns a restart point in
    natural coordinates into a valid θ (e.g. with :func:`restart_chol`). Returns a dict
    for the best attempt: ``theta`` (where the optimiser stopped), ``phi`` (the point
    judged, possibly on the boundary), ``value``, ``grad`` and ``hess`` (natural
    coordinates), ``warm`` (at ``phi``), ``status``, ``decrement``, ``n_iter``
    (accepted optimiser steps over all attempts) and ``n_eval`` (evaluations of the
    objective, every phase included: what a fit's run time is made of).

    ``face_mask`` (static, optional) marks the diagonals that are a block of their own
    (``_params.scalar_blocks``): the objective is even in them, so once one is below
    BOUNDARY_CANDIDATE and still pushed down it is held at exactly 0 (see the body).

    ``exact_block`` (optional): ``(n, fn)`` with ``fn(φ, warm, args)`` the exact Hessian
    (n, n) of the objective in φ[:n] at a point and its modes (``_gradient.beta_hessian``
    for the fixed effects). The differences then run along the other k − n coordinates
    only; their gradients give the rest of the Hessian's rows, and by symmetry its columns.
    For p fixed effects that is a few gradients instead of p + a few.
    """
    mask = jnp.asarray(np.asarray(diag_mask, bool))
    face = jnp.asarray(np.zeros_like(np.asarray(diag_mask, bool)) if face_mask is None else np.asarray(face_mask, bool))
    # L-BFGS stops once its own decrement is a hundredth of what the final check allows:
    # the last iterations of a fit otherwise polish digits the verdict does not need, and a
    # looser share moves estimates by more than the verdict's digits (docs/performance.md).
    abs_tol, rel_tol = decrement_tolerance(work_dtype or theta0.dtype)
    options = options._replace(dtol_abs=DECREMENT_SHARE * abs_tol, dtol_rel=DECREMENT_SHARE * rel_tol)
    k = theta0.shape[0]
    dtype = theta0.dtype
    work_dtype = work_dtype or dtype
    to_phi = lambda th: jnp.where(mask, jnp.exp(th), th)
    dphi_dtheta = lambda th: jnp.where(mask, jnp.exp(th), 1.0)

    def project(phi):
        small = mask & (jnp.abs(phi) < BOUNDARY_CANDIDATE)
        return jnp.where(small, 0.0, phi), jnp.any(small)

    n_exact, exact_hessian = exact_block if exact_block is not None else (0, None)
    n_diff = k - n_exact  # the coordinates n_exact, …, k − 1 are differenced

    def fd_point(center_phi, j):
        h = difference_steps(center_phi, work_dtype)
        e = (jnp.arange(k, dtype=j.dtype) == n_exact + j % n_diff).astype(dtype)
        return center_phi + jnp.where(j < n_diff, 1.0, -1.0) * h * e

    # the gradients at the difference points: +h_j e_j, then −h_j e_j (central)
    n_fd = 2 * n_diff if central_differences(work_dtype) else n_diff

    zero = jnp.zeros((), dtype)
    best0 = Attempt(theta=theta0, phi=theta0, value=jnp.asarray(jnp.inf, dtype), grad=jnp.zeros(k, dtype),
                    hess=jnp.zeros((k, k), dtype), warm=warm0, status=jnp.zeros((), jnp.int32), decrement=zero)
    center0 = Center(phi=theta0, value=zero, grad=jnp.zeros(k, dtype), warm=warm0)
    carry0 = Carry(phase=jnp.asarray(Phase.OPT, jnp.int32), lb=lbfgs_start(theta0, warm0, options), warm=warm0,
                   center=center0, fd=jnp.zeros((n_fd, k), dtype), j=jnp.zeros((), jnp.int32),
                   attempt=jnp.zeros((), jnp.int32), best=best0, n_iter=jnp.zeros((), jnp.int32),
                   n_eval=jnp.zeros((), jnp.int32), early=jnp.zeros((), bool), no_early=jnp.zeros((), bool),
                   frozen=jnp.zeros(k, bool))

    carry0 = anchored(carry0, args, dtype)

    def only_if(pred, fn, *operands):
        """fn(*operands), used only where ``pred`` holds. Each phase's value is chosen by
        jnp.where, so everything in the body runs on every iteration; the verdict's k×k
        factorisations cost O(k³), which for hundreds of fixed effects outweighs the
        evaluation itself, so there they run under lax.cond (zeros where skipped)."""
        if k <= sm.UNROLL_MAX and exact_block is None:
            return fn(*operands)
        shapes = jax.eval_shape(fn, *operands)
        return jax.lax.cond(pred, fn, lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                            *operands)

    def body(c):
        phase, lb, center, j = c.phase, c.lb, c.center, c.j
        at_opt, at_boundary, at_center, at_fd = (phase == Phase.OPT), (phase == Phase.BOUNDARY), \
            (phase == Phase.CENTER), (phase == Phase.FD)
        sel = lambda cond, a, b: jax.tree.map(lambda u, v: jnp.where(cond, u, v), a, b)
        # the best attempt holds a k×k Hessian: for a wide fit, a branch rather than a copy a pass
        pick = sel if k <= sm.UNROLL_MAX else lambda cond, a, b: jax.lax.cond(cond, lambda: a, lambda: b)

        frozen = c.frozen
        on_face = lambda phi: jnp.where(frozen, 0.0, phi)
        theta_trial = lbfgs_trial(lb)
        phi_star = on_face(to_phi(lb.x))
        phi_proj, any_small = project(phi_star)
        point = jnp.where(at_opt, on_face(to_phi(theta_trial)),
                          jnp.where(at_boundary, phi_proj,
                                    jnp.where(at_center, phi_star, fd_point(center.phi, j))))
        at_polish = phase == Phase.POLISH
        best_old = c.best
        fixed = mask & (best_old.phi == 0.0)
        polish_step, polish_dec = only_if(at_polish, newton_step, best_old.grad, best_old.hess, fixed)
        point = jnp.where(at_polish, best_old.phi + polish_step, point)
        warm_in = sel(at_opt, c.warm, sel(at_fd, center.warm, sel(at_polish, best_old.warm, lb.warm_x)))
        (f_t, warm_t), g_t = evaluate(point, warm_in, args)
        finite = jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t))

        # OPT: one L-BFGS step in θ (chain rule through φ = exp on the diagonal).
        g_theta = jnp.where(frozen, 0.0, g_t * dphi_dtheta(theta_trial))
        lb_new = sel(at_opt, lbfgs_update(lb, f_t, g_theta, warm_t, options), lb)
        # Early boundary stop. A Cholesky diagonal below BOUNDARY_CANDIDATE that the gradient
        # still pushes down creeps towards 0 by about half a log unit per L-BFGS step (its
        # log-scale gradient vanishes with it): 25 of the steps of a 1-D singular REML fit,
        # and under vmap every replicate waits for the slowest. Once every other coordinate's
        # gradient is below the optimiser's own gradient tolerance, the optimiser stops and
        # the boundary phase tries those diagonals at exactly 0. If that is worse, the
        # optimiser resumes where it stopped, without early stops for the rest of the fit.
        # (A looser test, the other coordinates' share of the quasi-Newton decrement, stopped
        # sleepstudy bootstrap replicates whose correlation goes to ±1 too early: they
        # ended unconverged.)
        pinned = mask & (lb_new.x < _LOG_CANDIDATE) & (lb_new.g > 0)
        settled = jnp.all(pinned | (jnp.abs(lb_new.g) <= options.gtol * (1.0 + jnp.abs(lb_new.f))))
        early_stop = (at_opt & (lb_new.it > lb.it) & (lb_new.status < 0) & jnp.any(pinned) & settled
                      & ~c.no_early)
        lb_new = lb_new._replace(status=jnp.where(early_stop, Status.CONVERGED, lb_new.status).astype(jnp.int32))
        # Holding a scalar block at 0. A variance alone in its block (a random intercept, a
        # term of (x || g)) that the gradient pushes below BOUNDARY_CANDIDATE is held at
        # exactly 0 from then on, out of the optimiser's reach (its gradient zeroed), and
        # L-BFGS starts afresh on that face, so the other coordinates converge without the
        # creeping coordinate in its curvature pairs; the early stop above instead waits for
        # them to reach gtol while the diagonal creeps. The objective is even in such an
        # entry (D_jj = L_jj²), so 0 is stationary and the verdict's Hessian tells a boundary
        # optimum from a saddle; a saddle restarts the fit with holding off. It shortens the
        # slowest fits (docs/performance.md). A diagonal with other entries in its block is
        # not held: there 0 need not be stationary, and holding them gained little.
        pin_now = (at_opt & (lb_new.it > lb.it) & (lb_new.status < 0) & face & ~frozen
                   & (lb_new.x < _LOG_CANDIDATE) & (lb_new.g > 0) & ~c.no_early)
        freeze = jnp.any(pin_now)
        it_frozen = jnp.where(freeze, lb_new.it, 0)
        lb_new = sel(freeze, lbfgs_start(lb_new.x, lb_new.warm_x, options), lb_new)
        frozen = frozen | pin_now
        opt_done = at_opt & (lb_new.status >= 0)
        warm = sel(at_opt & finite, warm_t, c.warm)

        # BOUNDARY / CENTER: the evaluation becomes the point to judge.
        take_proj = at_boundary & (~any_small | no_worse(f_t, lb.f))
        resume = at_boundary & ~take_proj & c.early
        lb_new = sel(resume, lb._replace(status=jnp.asarray(-1, jnp.int32)), lb_new)
        new_center = take_proj | at_center
        center = sel(new_center, Center(phi=point, value=f_t, grad=g_t, warm=warm_t), center)

        # FD: the gradients around the centre, then the Hessian, the verdict and the best attempt.
        # Only this pass's row of the differences is written (in place), and the Hessian is
        # formed when they are complete: k×k work on every pass outweighed a wide fit's
        # evaluations.
        start = (j, jnp.zeros((), j.dtype))
        row_now = jax.lax.dynamic_slice(c.fd, start, (1, k))
        fd = jax.lax.dynamic_update_slice(c.fd, jnp.where(at_fd, g_t[None], row_now), start)
        fd_done = at_fd & (j == n_fd - 1)

        def verdict(fd, center, lb_status):
            diffs = fd[:n_fd]
            h = difference_steps(center.phi, work_dtype)[n_exact:, None]
            if n_fd == 2 * n_diff:
                rows = (diffs[:n_diff] - diffs[n_diff:]) / (2.0 * h)
            else:
                rows = (diffs - center.grad[None, :]) / h
            if n_exact:
                block = exact_hessian(center.phi, center.warm, args)
                hess = jnp.concatenate([jnp.concatenate([block, rows[:, :n_exact].T], axis=1), rows], axis=0)
            else:
                hess = rows
            hess = 0.5 * (hess + hess.T)
            return (hess,) + tuple(final_check(lb_status, center.grad, hess, center.value, work_dtype))

        hess, status, decrement = only_if(fd_done, verdict, fd, center, lb.status)
        attempt_out = Attempt(theta=lb.x, phi=center.phi, value=center.value, grad=center.grad, hess=hess,
                              warm=center.warm, status=status, decrement=decrement)
        better = (c.attempt == 0) | (center.value < best_old.value)
        best = pick(fd_done & better, attempt_out, best_old)
        # POLISH: kept when the decrement (same Hessian, same free coordinates) falls. The
        # value is only a guard against a failed step: in float32 its rounding is of the
        # order of the allowance (grouseticks: the step raised it by 1.7e-4, allowance
        # 1.35e-4, while the decrement fell from 1.2e-4 to 3e-9), so it may not be worse by
        # more than ten allowances.
        _, dec_new = only_if(at_polish, newton_step, g_t, best_old.hess, fixed)
        status_new, decrement_new = only_if(at_polish, lambda *a: final_check(*a, work_dtype), best_old.status, g_t,
                                            best_old.hess, f_t)
        keep_polish = (at_polish & finite & (dec_new < polish_dec) & (status_new == Status.CONVERGED)
                       & (f_t <= best_old.value + 10.0 * (abs_tol + rel_tol * jnp.abs(best_old.value))))
        best = pick(keep_polish, best_old._replace(phi=point, value=f_t, grad=g_t, warm=warm_t, decrement=decrement_new),
                   best)
        short = (best.status == Status.NOT_PD) | (best.status == Status.STALLED)
        restart = fd_done & short & (c.attempt < MAX_ESCAPES)
        theta_new = restart_theta(best.phi + only_if(restart, restart_step, best.grad, best.hess))
        lb_new = sel(restart, lbfgs_start(theta_new, best.warm, options), lb_new)
        warm = sel(restart, best.warm, warm)

        polish = (fd_done & better & (status == Status.CONVERGED) & (decrement > POLISH_ABOVE))
        # the next phase: the first of these (condition, phase) pairs that holds
        phase_new = jnp.select(
            [at_opt & opt_done, at_opt,
             at_boundary & take_proj, at_boundary & resume, at_boundary,
             at_center, at_polish,
             fd_done & restart, fd_done & polish, fd_done],
            [Phase.BOUNDARY, Phase.OPT,
             Phase.FD, Phase.OPT, Phase.CENTER,
             Phase.FD, Phase.DONE,
             Phase.OPT, Phase.POLISH, Phase.DONE],
            Phase.FD).astype(jnp.int32)
        j_new = jnp.where(at_fd & ~fd_done, j + 1, 0).astype(jnp.int32)
        return Carry(phase=phase_new, lb=lb_new, warm=warm, center=center, fd=fd, j=j_new,
                    attempt=c.attempt + restart.astype(jnp.int32), best=best,
                    n_iter=(c.n_iter + jnp.where(opt_done, lb_new.it, 0) + it_frozen
                            - jnp.where(resume, lb.it, 0)).astype(jnp.int32),
                    frozen=frozen & ~restart,
                    n_eval=c.n_eval + 1,
                    early=jnp.where(at_opt, early_stop, c.early & ~restart),
                    # An early stop that did not end the fit (its projection was worse, or
                    # the judged point needs a restart: e.g. L = 0 is a saddle with the
                    # optimum just above 1e-2·…) turns early stops off for the rest of the fit.
                    # Likewise a fit restarted after holding a diagonal holds none again.
                    no_early=c.no_early | resume | (restart & (c.early | jnp.any(c.frozen))))

    out = jax.lax.while_loop(lambda c: c.phase != Phase.DONE, body, carry0)
    return dict(out.best._asdict(), n_iter=out.n_iter, n_eval=out.n_eval)
