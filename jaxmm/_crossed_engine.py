"""The compiled fit of an exact LMM with several random-effect terms (:mod:`._crossed_lmm`).

θ is the terms' relative Cholesky factors, one after another in the terms' order, each
packed as :mod:`._params` packs one term (its ``structure``: q, or the block sizes of
``(x || g)``). The optimiser, its boundary handling and its verdict are the single-term
fit's (:func:`._driver.optimise_and_check`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._crossed_laplace import CrossedRows, _gram, _per_row, crossed_rows, eta_of, laplace_loglik
from ._crossed_effects import effects, solution
from ._crossed_lmm import CrossedStats, Terms, crossed_stats, factor, profiled_loglik
from ._crossed_shard import n_real_rows, pad_rows, pad_stats, place_rows, place_stats
from ._driver import optimise_and_check
from ._engine import quick_rows
from ._jit import compiled
from ._optimize import OptOptions
from ._params import chol_from_natural, layout_masks, n_chol, re_dim, vec_from_chol
from ._start import _orthonormalising_map
from ._verdict import ESCAPE_FLOOR, restart_chol


def split_natural(phi, structures) -> tuple:
    """The terms' relative factors Λ_k from φ (their free entries, one term after another)."""
    out, at = [], 0
    for s in structures:
        nc = n_chol(s)
        out.append(chol_from_natural(phi[at:at + nc], s))
        at += nc
    return tuple(out)


def term_masks(structures):
    """(diagonal entries, scalar blocks) over θ, as :func:`._params.layout_masks` for each term."""
    masks = [layout_masks(0, s, 0) for s in structures]
    return np.concatenate([d for d, _ in masks]), np.concatenate([f for _, f in masks])


def start_theta(structures, dtype) -> jnp.ndarray:
    """Λ_k = I for every term (lme4's start): every SD equal to the residual SD."""
    return jnp.concatenate([vec_from_chol(jnp.eye(re_dim(s), dtype=dtype), s) for s in structures])


def _fit_crossed_lmm(stats: CrossedStats, terms: Terms, structures: tuple, reml: bool, opt=OptOptions(),
                     shared: tuple = ()):
    dtype = stats.XtX.dtype
    diag_mask, face_mask = term_masks(structures)

    def evaluate(phi, warm, s):
        value, grad = jax.value_and_grad(lambda v: -profiled_loglik(split_natural(v, structures), s, terms, reml))(phi)
        return (value, warm), grad

    def restart_theta(phi):
        return jnp.concatenate([vec_from_chol(restart_chol(lam, ESCAPE_FLOOR), s)
                                for lam, s in zip(split_natural(phi, structures), structures)])

    best = optimise_and_check(evaluate, start_theta(structures, dtype), jnp.zeros((), dtype), stats, diag_mask,
                              restart_theta, opt, face_mask=face_mask)
    sol = solution(split_natural(best["phi"], structures), stats, terms, reml, shared)
    return dict(
        phi=best["phi"], loglik=-best["value"], grad=best["grad"], hess=best["hess"], status=best["status"],
        decrement=best["decrement"], n_iter=best["n_iter"], n_eval=best["n_eval"],
        beta=sol.beta, sigma=sol.sigma, vcov=sol.vcov, chols=sol.chols, ranefs=sol.ranefs, cond_vars=sol.cond_vars,
        cross_vars=sol.cross_vars,
    )


def _quick_lmm(stats: CrossedStats, *args, **kwargs) -> bool:
    # small data compile at LLVM's quick level, as one-term fits do (_engine.QUICK_MAX_ROWS)
    return quick_rows(stats.row_cell.shape[0])


def _quick_glmm(rows: CrossedRows, *args, **kwargs) -> bool:
    return quick_rows(rows.y.shape[0])


fit_crossed_lmm = compiled(_fit_crossed_lmm, static_argnames=("terms", "structures", "reml", "opt", "shared"),
                           elemental=True, quick=_quick_lmm)


def effects_at_modes(beta, lams, dispersion, u1, u2, rows: CrossedRows, terms: Terms, family, shared: tuple = ()):
    """BLUPs, conditional covariances and shared cross blocks (:func:`effects`) at the modes
    (u₁, u₂), from the factor of the Hessian there."""
    eta = eta_of(beta, lams, u1, u2, rows, terms)
    _, _, w = _per_row(family, rows, eta, dispersion)
    return effects(factor(lams, _gram(w, rows, terms, u1.dtype), terms), rows.cells, lams, terms, u1, u2, shared)


def _fit_crossed_glmm(rows: CrossedRows, terms: Terms, structures: tuple, family, opt=OptOptions(),
                      shared: tuple = ()):
    """Laplace fit of a GLMM with several terms. φ = (β, the terms' free entries, the log
    dispersion where the family has one); the modes warm-start each evaluation. θ, the
    modes and every sum over rows are float64 (unless x64 is off) whatever the rows' dtype."""
    dtype, work = jnp.result_type(float), rows.X.dtype
    X = rows.X.astype(dtype)
    p, nd = rows.X.shape[1], family.n_dispersion
    nc = sum(n_chol(s) for s in structures)
    diag, face = term_masks(structures)
    pad = lambda mask, k: np.concatenate([np.zeros(p, bool), mask, np.zeros(k, bool)])
    diag_mask, face_mask = pad(diag, nd), pad(face, nd)

    # β in orthonormalised coordinates, as for one term (_start._orthonormalising_map)
    A, A_inv = _orthonormalising_map(X.T @ X, n_real_rows(rows).astype(dtype))

    def unpack(phi):
        dispersion = jnp.exp(phi[p + nc]) if nd else jnp.ones((), dtype)
        return A @ phi[:p], split_natural(phi[p:p + nc], structures), dispersion

    def evaluate(phi, warm, r):
        def objective(v):
            beta, lams, disp = unpack(v)
            value, modes = laplace_loglik(beta, lams, disp, r, terms, family, *warm)
            return -value, modes
        (value, modes), grad = jax.value_and_grad(objective, has_aux=True)(phi)
        return (value, modes), grad

    def restart_theta(phi):
        lams = split_natural(phi[p:p + nc], structures)
        return jnp.concatenate([phi[:p]] + [vec_from_chol(restart_chol(lam, ESCAPE_FLOOR), s)
                                            for lam, s in zip(lams, structures)] + [phi[p + nc:]])

    # β from least squares of a linear predictor near the data; Λ_k = I; dispersion 1
    eta0 = family.initial_eta(rows.y.astype(dtype), rows.trials.astype(dtype)) - rows.offset.astype(dtype)
    beta0 = jnp.linalg.lstsq(X, eta0)[0]
    theta0 = jnp.concatenate([A_inv @ beta0, start_theta(structures, dtype), jnp.zeros((nd,), dtype)])
    warm0 = (jnp.zeros((terms.m[0], terms.q[0]), dtype), jnp.zeros((terms.rest,), dtype))
    best = optimise_and_check(evaluate, theta0, warm0, rows, diag_mask, restart_theta, opt, face_mask=face_mask,
                              work_dtype=work)
    beta, lams, dispersion = unpack(best["phi"])
    u1, u2 = best["warm"]
    ranefs, cond_vars, cross = effects_at_modes(beta, lams, dispersion, u1, u2, rows, terms, family, shared)
    # back from the orthonormalised β: φ = M φ_s with M = diag(A, I)
    k = theta0.shape[0]
    M_inv = jnp.eye(k, dtype=dtype).at[:p, :p].set(A_inv)
    return dict(
        phi=best["phi"].at[:p].set(beta), loglik=-best["value"], grad=M_inv.T @ best["grad"],
        hess=M_inv.T @ best["hess"] @ M_inv, status=best["status"],
        decrement=best["decrement"], n_iter=best["n_iter"], n_eval=best["n_eval"], beta=beta,
        dispersion=dispersion, chols=lams, ranefs=ranefs, cond_vars=cond_vars, cross_vars=cross,
    )


fit_crossed_glmm = compiled(_fit_crossed_glmm, static_argnames=("terms", "structures", "family", "opt", "shared"),
                            elemental=True, quick=_quick_glmm)


def shared_terms(terms) -> tuple:
    """Pairs (a, b), a < b, of terms on one factor."""
    return tuple((a, b) for a in range(len(terms)) for b in range(a + 1, len(terms))
                 if terms[a].label == terms[b].label)


def estimate(rows, terms: tuple, fam, reml: bool, opt: OptOptions = OptOptions(), y=None, mesh=None,
             job=None) -> dict:
    """The compiled fit of the fitted rows (``_crossed_result.FittedRows``) (with response ``y`` in place of theirs, for
    refits of simulated responses): its outputs on the device. ``mesh``: split the fit over
    its devices (:mod:`._crossed_shard`); ``job``: the rows are this process's of a job whose
    processes each hold their own, placed on its mesh by ``job`` (``_process_crossed.Job``)."""
    y = rows.y if y is None else y
    Zs, codes = [f.Z for f in terms], [f.codes for f in terms]
    structures, shared = tuple(f.structure for f in terms), shared_terms(terms)
    if fam.exact:
        # float32 rows are the data rounded to float32; their statistics are summed in float64
        # once, so the fit's arithmetic is float64 either way
        kind = lambda a: None if a is None else np.asarray(a, rows.dtype)
        stats = crossed_stats(kind(y), kind(rows.X), [kind(Z) for Z in Zs], codes, rows.terms,
                              weights=kind(rows.weights), offset=kind(rows.offset))
        if job is not None:
            stats = job.stats(stats, codes, rows.terms)
        elif mesh is not None:
            stats = place_stats(pad_stats(stats, rows.terms, mesh.size), mesh)
        return fit_crossed_lmm(stats, rows.terms, structures, reml, opt=opt, shared=shared)
    data = crossed_rows(y, rows.X, Zs, codes, rows.terms, offset=rows.offset, trials=rows.trials, dtype=rows.dtype)
    if job is not None:
        data = job.rows(data, codes, rows.terms)
    elif mesh is not None:
        data = place_rows(pad_rows(data, rows.terms, mesh.size), mesh)
    return fit_crossed_glmm(data, rows.terms, structures, fam, opt=opt, shared=shared)
