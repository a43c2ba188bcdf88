"""Per-group estimates without pooling, to set against the BLUPs.

A group's unpooled estimate maximises its own likelihood in b_i with β fixed at β̂: what a
separate regression per group would give. It is computed as the conditional mode under a
prior 10⁴ times wider than D̂ (sd ×100), which leaves well-determined groups unchanged and
keeps separated groups (a Bernoulli group of all zeros) finite instead of at −∞.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._design import design_from_formula
from ._families import get_family
from ._formula import parse_formula
from ._laplace import modes_and_cond_var
from ._params import Params

WIDEN = 100.0  # prior sd multiplier for the unpooled estimates


def unpooled_effects(res, data) -> np.ndarray:
    """(groups, q) per-group estimates of the random effects without shrinkage, in the
    order of ``res.group_labels``. ``data`` is the table the model was fitted to."""
    spec = parse_formula(res.formula)
    opts = dict(res.fit_options or {})
    design, info = design_from_formula(spec, data, trials=opts.get("trials"), offset=opts.get("offset"),
                                       weights=opts.get("weights"), missing=opts.get("missing", "raise"))
    if tuple(info.group_labels) != tuple(res.group_labels):
        raise ValueError("data do not match the fit: different groups")
    fam = get_family(res.family, res.link)
    L = np.linalg.cholesky(res.D + 1e-12 * np.trace(res.D) * np.eye(res.D.shape[0]))
    disp = res.sigma if res.sigma is not None else 1.0
    params = Params(jnp.asarray(res.beta), jnp.asarray(WIDEN * L), jnp.asarray(disp, dtype=jnp.float64))
    u0 = jnp.zeros((design.n_groups, L.shape[0]))
    b, _, _ = modes_and_cond_var(params, design, u0, fam)
    return np.asarray(b)[info.layout.group_slot]
