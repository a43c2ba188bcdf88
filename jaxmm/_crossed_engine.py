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

from ._crossed_lmm import CrossedStats, Terms, profiled_loglik, solution
from ._driver import optimise_and_check
from ._jit import compiled
from ._optimize import OptOptions
from ._params import chol_from_natural, layout_masks, n_chol, re_dim, vec_from_chol
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


fit_crossed_lmm = compiled(_fit_crossed_lmm, static_argnames=("terms", "structures", "reml", "opt", "shared"), elemental=True)
