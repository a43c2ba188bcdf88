"""Adaptive Gauss–Hermite quadrature (AGHQ) of the marginal likelihood, and the dispatch
between it and Laplace.

In lme4's spherical form (b = L u, u ~ N(0, I)) subject i contributes

    p(yᵢ) = (2π)^{-q/2} ∫ exp hᵢ(u) du,   hᵢ(u) = log p(yᵢ | u) − ½‖u‖²

Centred at the mode ûᵢ and scaled by L̃ᵢ = chol(Hᵢ⁻¹) (u = ûᵢ + √2 L̃ᵢ z), the product
rule with k nodes per dimension, (zₘ, wₘ) for the weight e^{−‖z‖²}, gives

    p(yᵢ) ≈ π^{-q/2} |L̃ᵢ| Σₘ wₘ exp( hᵢ(ûᵢ + √2 L̃ᵢ zₘ) + ‖zₘ‖² )

(MATH.md writes the same in the b scale). With k = 1 (z = 0, w = √π per dimension) it is
the Laplace formula; it is exact for every k when hᵢ is quadratic (gaussian responses).

Gradients are exact: ûᵢ and Hᵢ carry the implicit-function-theorem derivatives of
``_inner.mode_and_curvature``, and the nodes move with them.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _smallmat as sm
from ._types import Design
from ._inner import InnerOptions, group_logdens, linear_parts, mode_and_curvature
from ._laplace import laplace_loglik
from ._params import Params
from .errors import ArgumentError

# k^q function evaluations per subject: beyond three random effects the product rule
# costs more than it buys (lme4 offers AGHQ for one scalar random effect only).
MAX_QUADRATURE_DIM = 3
# Rows × nodes evaluated at once: bounds the temporaries of the node loop.
_NODE_BATCH_ELEMENTS = 1 << 22


def check_nodes(nagq) -> int:
    """``nAGQ`` as an int ≥ 1, or a named error."""
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)):
        raise ArgumentError(f"nAGQ must be a whole number of quadrature nodes (1 = Laplace), got {nagq!r}")
    if nagq < 1:
        raise ArgumentError(f"nAGQ must be at least 1 (1 = Laplace), got {nagq}; lme4's nAGQ=0 shortcut "
                            "(fixed effects inside the inner solver) is not offered")
    return int(nagq)


def nodes_of(method: str, nagq: int) -> int:
    """Quadrature nodes per random effect of a fit given ``nAGQ=nagq``: 1 (Laplace, or an
    exact gaussian fit) unless its method is AGHQ."""
    return int(nagq) if method == "AGHQ" else 1


def check_dimension(q: int, re_names=None):
    """Refuse quadrature over more than MAX_QUADRATURE_DIM random effects."""
    if q > MAX_QUADRATURE_DIM:
        names = f" ({', '.join(re_names)})" if re_names else ""
        raise ArgumentError(
            f"nAGQ > 1 (adaptive Gauss-Hermite quadrature) is available for at most {MAX_QUADRATURE_DIM} random "
            f"effects per group: the product rule needs nAGQ^q nodes. This model has q = {q}{names}; "
            "use nAGQ=1 (Laplace) or fewer random effects")


@functools.lru_cache(maxsize=None)
def gauss_hermite_rule(k: int, q: int):
    """Product-rule nodes z (k^q, q) and log weights log wₘ + ‖zₘ‖² − (q/2) log π (k^q,).

    The log weights absorb the e^{‖z‖²} of the adaptive rule and the π^{-q/2}, so
    log p(yᵢ) = log|L̃ᵢ| + logsumexpₘ (hᵢ(uₘ) + log weightₘ).
    """
    z1, w1 = np.polynomial.hermite.hermgauss(k)
    grids = np.meshgrid(*([z1] * q), indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=1)
    logw = sum(np.log(g.ravel()) for g in np.meshgrid(*([w1] * q), indexing="ij"))
    return z, logw + np.sum(z * z, axis=1) - 0.5 * q * np.log(np.pi)


def aghq_loglik(params: Params, design: Design, u0, family, nagq: int, options: InnerOptions = InnerOptions(),
                log_normalizer=None):
    """AGHQ marginal log-likelihood with ``nagq`` nodes per random effect, and the spherical
    modes û (returned without gradient). Arguments as :func:`_laplace.laplace_loglik`."""
    work = design.X.dtype
    acc = params.beta.dtype
    q = design.Z.shape[1]
    eta_fixed, ZL = linear_parts(design, params.beta, params.chol)
    dispersion = params.dispersion.astype(work)
    u, _, H = mode_and_curvature(eta_fixed, ZL, dispersion, design, u0.astype(work), family, options)
    scale = sm.cholesky(sm.cho_inverse(sm.cholesky(H)))  # L̃ᵢ: L̃ L̃ᵀ = Hᵢ⁻¹
    log_det_scale = sm.logdet_from_cholesky(scale) / 2.0

    z, logw = gauss_hermite_rule(int(nagq), q)
    z, logw = jnp.asarray(z, work), jnp.asarray(logw, work)

    def at_node(node):
        zm, lw = node
        um = u + np.sqrt(2.0) * sm.matvec(scale, zm[None])  # written out, not a batched dot (_smallmat.matmul)
        return group_logdens(um, eta_fixed, ZL, dispersion, design, family, options.kernels) + lw

    batch = max(1, min(z.shape[0], _NODE_BATCH_ELEMENTS // max(design.y.shape[0], 1)))
    terms = jax.lax.map(at_node, (z, logw), batch_size=batch)          # (k^q, m)
    per_group = jax.scipy.special.logsumexp(terms.astype(acc), axis=0) + log_det_scale.astype(acc)
    if log_normalizer is None:
        log_normalizer = jnp.sum(design.weights.astype(acc)
                                 * family.normalizer(design.y.astype(acc), design.trials.astype(acc), params.dispersion))
    return jnp.sum(per_group) + log_normalizer, jax.lax.stop_gradient(u)


def marginal_loglik(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions(), nagq: int = 1,
                    log_normalizer=None):
    """The marginal log-likelihood by Laplace (``nagq`` = 1) or AGHQ, and the modes û."""
    if nagq == 1:
        return laplace_loglik(params, design, u0, family, options, log_normalizer)
    return aghq_loglik(params, design, u0, family, nagq, options, log_normalizer)
