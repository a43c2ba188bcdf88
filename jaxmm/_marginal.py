"""Marginal (population-averaged) means and coefficients.

Conditional on b, row i has mean g⁻¹(ηᵢ + zᵢb); averaged over b ~ N(0, D) its mean is
μᵢ = E[g⁻¹(ηᵢ + s)] with s = zᵢb ~ N(0, vᵢ), vᵢ = zᵢ D zᵢᵀ: a one-dimensional integral
whatever q is, done by Gauss–Hermite quadrature. For a non-identity link μ is not
g⁻¹(ηᵢ): the population-averaged effect of x is attenuated (logit) or the level shifted
(log: μ = exp(η + v/2)).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._params import chol_from_natural, n_chol, natural_from_params

_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(40)


def marginal_means(eta, variance, family):
    """E[g⁻¹(η + s)], s ~ N(0, variance), for every entry (40-point Gauss–Hermite)."""
    nodes, weights = jnp.asarray(_NODES, eta.dtype), jnp.asarray(_WEIGHTS, eta.dtype)
    # sqrt has an infinite derivative at 0 (rows with z·L = 0, padding rows): 0·inf would
    # be a NaN in the delta-method Jacobian, so zero variances take a finite branch
    positive = variance > 0
    sd = jnp.where(positive, jnp.sqrt(jnp.where(positive, variance, 1.0)), 0.0)
    s = jnp.sqrt(2.0) * sd[..., None] * nodes.reshape((1,) * sd.ndim + (-1,))
    return family.inverse_link(eta[..., None] + s) @ weights / jnp.sqrt(jnp.pi)


def _regressed(beta, X, offset, keep, variance, family):
    """The population-averaged β: least squares of g(μ) − offset on X over the rows kept,
    μ the marginal means at β with the rows' random-effect variances."""
    mu = marginal_means(X @ beta + offset, variance, family)
    target = jnp.where(keep > 0, family.link_function(mu) - offset, 0.0)
    Xw = X * keep[:, None]
    return jnp.linalg.solve(Xw.T @ X, Xw.T @ target)


def _marginal_beta(beta, chol, design, family):
    acc = beta.dtype
    X, Z, offset = design.X.astype(acc), design.Z.astype(acc), design.offset.astype(acc)
    keep = (design.weights > 0).astype(acc)  # padding and weight-0 rows take no part
    return _regressed(beta, X, offset, keep, jnp.sum((Z @ chol) ** 2, axis=1), family)


@functools.partial(jax.jit, static_argnames=("family", "p", "structure"))
def _marginal_beta_and_jacobian(phi, design, family, p: int, structure):
    """The population-averaged β at φ = (β, free entries of L) and its Jacobian in φ, in
    one program (op by op, the Jacobian compiled each of its operations on its own)."""
    nc = n_chol(structure)
    of = lambda v: _marginal_beta(v[:p], chol_from_natural(v[p:p + nc], structure), design, family)
    return of(phi), jax.jacobian(of)(phi)


@functools.partial(jax.jit, static_argnames=("family", "p", "structures"))
def _terms_beta_and_jacobian(phi, X, offset, Zs, family, p: int, structures):
    """As :func:`_marginal_beta_and_jacobian` for several independent terms, φ = (β, each
    term's free entries of L_k): a row's variance is Σ_k z_k D_k z_kᵀ."""
    from ._crossed_engine import split_natural

    nc = sum(n_chol(s) for s in structures)

    def of(v):
        variance = sum(jnp.sum((Z @ L) ** 2, axis=1) for Z, L in zip(Zs, split_natural(v[p:p + nc], structures)))
        return _regressed(v[:p], X, offset, jnp.ones_like(offset), variance, family)

    return of(phi), jax.jacobian(of)(phi)


def marginal_coefs(res) -> pd.DataFrame:
    from ._inference import wald_table

    if res.link == "identity":
        return wald_table(res.fixef, res.vcov)
    structure = res.D_array.shape[0] if res.re_blocks is None else tuple(res.re_blocks)
    p, nc = len(res.beta), n_chol(structure)
    # (β, L): the dispersion, if any, does not enter the population-averaged β
    phi = natural_from_params(res.params, 0, structure)
    beta, J = (np.asarray(a) for a in _marginal_beta_and_jacobian(phi, res.design, res.family_spec, p, structure))
    return _table(beta, J, np.asarray(res.cov_natural)[:p + nc, :p + nc], list(res.fixef_names))


def terms_marginal_coefs(res) -> pd.DataFrame:
    """:func:`marginal_coefs` of a fit with several terms (``CrossedResult``)."""
    from ._inference import wald_table
    from ._params import free_entries

    if res.link == "identity":
        return wald_table(res.fixef, res.vcov)
    structures = tuple(t.structure for t in res.terms)
    p = len(res.fixef)
    nc = sum(n_chol(s) for s in structures)
    phi = np.concatenate([res.fixef.to_numpy()] + [np.asarray(L)[free_entries(s)]
                                                   for L, s in zip(res.chols, structures)])
    rows = res.rows
    offset = np.zeros(rows.y.shape[0]) if rows.offset is None else rows.offset
    beta, J = (np.asarray(a) for a in _terms_beta_and_jacobian(phi, rows.X, offset, tuple(t.Z for t in res.terms),
                                                                res.family_spec, p, structures))
    return _table(beta, J, np.asarray(res.cov_natural)[:p + nc, :p + nc], list(res.fixef.index))


def _table(beta, J, cov_natural, names) -> pd.DataFrame:
    """The population-averaged β with delta-method standard errors, z and p."""
    from ._inference import wald_table

    cov = J @ cov_natural @ J.T
    return wald_table(pd.Series(beta, index=names), pd.DataFrame(cov, index=names, columns=names))


@functools.partial(jax.jit, static_argnames=("family",))
def population_means(design, beta, chol, family):
    """The marginal mean of every design row (padding rows included; callers select)."""
    acc = beta.dtype
    eta = design.X.astype(acc) @ beta + design.offset.astype(acc)
    variance = jnp.sum((design.Z.astype(acc) @ chol) ** 2, axis=1)
    return marginal_means(eta, variance, family)
