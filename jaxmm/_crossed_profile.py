"""Profile-likelihood intervals of a fit with several random-effect terms (lme4's
``confint(method = "profile")``), as :mod:`._profile` computes them for one term.

The likelihood is the exact ML one for gaussian fits (from the blocked statistics) and the
Laplace approximation otherwise, over φ = (β, each term's free entries of L_k, the log
dispersion). A variance parameter of term t is held through that term's factor
(:func:`._profile.constrain_chol`); its index carries the term, ``t·TERM + local index``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._crossed_arrays import CrossedDesign, exact_loglik, fitted_design, lmm_stats
from ._crossed_engine import split_natural
from ._crossed_laplace import laplace_loglik
from ._engine import quick_rows
from ._gc import with_frozen_heap
from ._jit import compiled
from ._optimize import OptOptions, minimize
from ._params import free_entries, n_chol, same_block
from ._profile import (COR, DISPERSION, FIXED, SD, _grad_and_hessian, constrain_chol, held_beta_and_dispersion,
                       solve_ends)
from .errors import ArgumentError

TERM = 1 << 16  # a variance parameter's index: term · TERM + its index within the term


def _unpack(phi, p: int, structures, nd: int):
    nc = sum(n_chol(s) for s in structures)
    disp = jnp.exp(phi[p + nc]) if nd else jnp.ones((), phi.dtype)
    return phi[:p], split_natural(phi[p:p + nc], structures), disp


def _minus_loglik(beta, chols, disp, warm, design: CrossedDesign, family):
    """(−ℓ, the modes to warm-start the next evaluation)."""
    if family.exact:
        return -exact_loglik(beta, chols, disp, lmm_stats(design), design.terms, False), warm
    value, modes = laplace_loglik(beta, chols, disp, design.rows, design.terms, family, *warm)
    return -value, modes


def _targets_of(phi, p: int, structures, pairs):
    """Every term's SDs, then the correlations of ``pairs`` (term, i, j), at φ."""
    _, chols, _ = _unpack(phi, p, structures, 0)
    sds = [jnp.sqrt(jnp.sum(L * L, axis=1) + 1e-300) for L in chols]
    cors = [jnp.dot(chols[t][i], chols[t][j]) / (sds[t][i] * sds[t][j]) for t, i, j in pairs]
    return jnp.concatenate(sds + ([jnp.stack(cors)] if cors else []))


def _quick_start(design: CrossedDesign, *args, **kwargs) -> bool:
    # small data compile at LLVM's quick level, as the fits do (_engine.QUICK_MAX_ROWS)
    return quick_rows(design.rows.X.shape[0])


def _quick_logliks(design: CrossedDesign, warm, phi_hat, scale, kinds, *args, **kwargs) -> bool:
    return quick_rows(kinds.shape[0] * design.rows.X.shape[0])


@compiled(static_argnames=("family", "structures", "pairs", "nd"), elemental=True, quick=_quick_start)
def crossed_profile_start(design: CrossedDesign, phi_hat, family, structures, pairs, nd: int):
    """The modes at the estimate, the variance parameters with their gradients in φ, and the
    Hessian of −ℓ in φ there (which scales the free parameters and gives the first step)."""
    p = design.rows.X.shape[1]
    terms = design.terms
    warm = (jnp.zeros((terms.m[0], terms.q[0]), phi_hat.dtype), jnp.zeros((terms.rest,), phi_hat.dtype))
    _, warm = _minus_loglik(*_unpack(phi_hat, p, structures, nd), warm, design, family)
    targets = lambda v: _targets_of(v, p, structures, pairs)
    f = lambda v: _minus_loglik(*_unpack(v, p, structures, nd), warm, design, family)[0]
    return warm, targets(phi_hat), jax.jacrev(targets)(phi_hat), _grad_and_hessian(f, phi_hat)[1]


@compiled(static_argnames=("family", "structures", "nd"), elemental=True, quick=_quick_logliks)
def crossed_profile_logliks(design: CrossedDesign, warm, phi_hat, scale, kinds, indices, values, family, structures,
                            nd: int):
    """ℓ_p at each (kind, index, value): one constrained fit per entry, vmapped."""
    p = design.rows.X.shape[1]

    def objective(psi, u, args):
        kind, index, value = args
        phi = phi_hat + scale * psi
        beta, disp = held_beta_and_dispersion(phi, kind, index, value, p, nd)
        _, chols, _ = _unpack(phi, p, structures, 0)
        variance = (kind == SD) | (kind == COR)
        chols = tuple(constrain_chol(L, jnp.where(variance & (index // TERM == t), kind, -1), index % TERM, value)
                      for t, L in enumerate(chols))
        return _minus_loglik(beta, chols, disp, u, design, family)

    def one(kind, index, value):
        return -minimize(objective, jnp.zeros_like(phi_hat), warm, (kind, index, value), OptOptions(gtol=1e-10)).value

    return jax.vmap(one)(kinds, indices, values)


@with_frozen_heap
def crossed_profile_intervals(res, level: float) -> pd.DataFrame:
    from ._crossed_refit import parameter_names
    from ._inference import normal_quantile

    if res.method == "REML":
        raise ArgumentError("profile intervals are computed on the ML likelihood; refit with method='ML'")
    if res.job is not None:
        # the vmapped constrained fits over rows split across devices did not finish in 5
        # minutes where one device takes 4 s (a two-term LMM, 4 CPU devices): refused, not left waiting
        raise ArgumentError("profile intervals are not available for a fit whose processes each hold their own rows "
                            "(a jax.distributed fit of a dataset); use confint(method='wald') or method='boot'")
    family = res.family_spec
    nd = 1 if family.exact else family.n_dispersion
    structures = tuple(t.structure for t in res.terms)
    p = len(res.fixef)
    design = fitted_design(res)
    disp = res.sigma if res.sigma is not None else 1.0
    phi_hat = jnp.concatenate([jnp.asarray(res.fixef.to_numpy())]
                              + [jnp.asarray(L)[free_entries(s)] for L, s in zip(res.chols, structures)]
                              + ([jnp.log(jnp.asarray([disp]))] if nd else []))
    # the correlations profiled, (term, a, b) with a < b: those of a block, in varcorr's order
    pairs = tuple((t, j, i) for t, term in enumerate(res.terms) for i in range(len(term.names)) for j in range(i)
                  if same_block(term.structure, i, j))
    warm, values, jac, hess = crossed_profile_start(design, phi_hat, family, structures, pairs, nd)
    cov = np.linalg.pinv(np.asarray(hess))
    scale = jnp.asarray(np.sqrt(np.maximum(np.diag(cov), 1e-12)))
    jac, values = np.asarray(jac), np.asarray(values)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, cov, jac), 1e-12))
    # the profiled parameters: β, every term's SDs and correlations, the dispersion; standard
    # errors by the delta method give the first secant step
    targets = [(FIXED, j, float(res.fixef.iloc[j]), float(np.sqrt(max(cov[j, j], 1e-24)))) for j in range(p)]
    sd_at = np.cumsum([0] + [len(term.names) for term in res.terms])
    for t, term in enumerate(res.terms):
        for k in range(len(term.names)):
            sd = float(values[sd_at[t] + k])
            targets.append((SD, t * TERM + k, sd, float(se[sd_at[t] + k]) if sd > 0 else 0.1))
    for n_pair, (t, a, b) in enumerate(pairs):
        at = sd_at[-1] + n_pair
        ok = values[sd_at[t] + a] > 0 and values[sd_at[t] + b] > 0
        targets.append((COR, t * TERM + a * len(res.terms[t].names) + b, float(values[at]) if ok else np.nan,
                        float(se[at]) if ok else 0.1))
    if nd:
        targets.append((DISPERSION, 0, float(disp), float(np.sqrt(max(cov[-1, -1], 1e-24))) * float(disp)))
    kept = [tg for tg in targets if np.isfinite(tg[2])]
    lower, upper = solve_ends(kept, normal_quantile(0.5 + level / 2.0), res.loglik,
                              lambda kinds, indices, values: crossed_profile_logliks(
                                  design, warm, phi_hat, scale, jnp.asarray(kinds), jnp.asarray(indices),
                                  jnp.asarray(values), family, structures, nd))
    names, per_term = parameter_names(res)
    # each term's labels: its SDs, then its pairs in the order of ``pairs``
    label = {}
    for t, labels in enumerate(per_term):
        q = len(res.terms[t].names)
        label.update({(SD, t * TERM + k): labels[k] for k in range(q)})
        own = [(a, b) for (u, a, b) in pairs if u == t]
        label.update({(COR, t * TERM + a * q + b): labels[q + n] for n, (a, b) in enumerate(own)})
    label.update({(FIXED, j): name for j, name in enumerate(res.fixef.index)})
    if nd:
        label[DISPERSION, 0] = names[-1]
    frame = pd.DataFrame({"lower": lower, "upper": upper}, index=[label[k, i] for k, i, *_ in kept])
    return frame.reindex(list(res.fixef.index) + names)
