"""θ and φ: the two flat vectors of the parameters share one layout (_params)."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm._params import (Params, chol_from_natural, layout_masks, n_chol, natural_from_params, pack,
                           params_from_natural, unpack)


@pytest.mark.parametrize("structure, n_dispersion", [(2, 1), ((1, 1), 0), ((2, 1), 1)])
def test_natural_and_packed_vectors_share_one_layout(structure, n_dispersion):
    rng = np.random.default_rng(0)
    d = structure if isinstance(structure, int) else sum(structure)
    L = np.tril(rng.standard_normal((d, d)))
    np.fill_diagonal(L, np.abs(np.diag(L)) + 0.1)
    if not isinstance(structure, int):  # block diagonal
        mask = np.zeros((d, d), bool)
        start = 0
        for b in structure:
            mask[start:start + b, start:start + b] = True
            start += b
        L = np.where(mask, L, 0.0)
    params = Params(jnp.asarray([0.5, -1.0, 2.0]), jnp.asarray(L), jnp.asarray(1.7 if n_dispersion else 1.0))
    phi = natural_from_params(params, n_dispersion, structure)
    back = params_from_natural(phi, 3, structure, n_dispersion)
    for a, b in zip(back, params):
        np.testing.assert_allclose(a, b, rtol=1e-15)
    # the driver's map θ → φ: exp() on the diagonal entries of L, the rest as they are,
    # the log dispersion in both
    theta = pack(params, n_dispersion, structure)
    diag, scalar = layout_masks(3, structure, n_dispersion)
    assert diag.shape == theta.shape == phi.shape
    np.testing.assert_allclose(jnp.where(diag, jnp.exp(theta), theta), phi, rtol=1e-15)
    np.testing.assert_allclose(unpack(theta, 3, structure, n_dispersion).chol, L, rtol=1e-15)
    np.testing.assert_allclose(chol_from_natural(phi[3:3 + n_chol(structure)], structure), L, rtol=1e-15)
    # a block of its own: every diagonal entry of (x || g), none of a correlated block
    assert scalar.sum() == (0 if isinstance(structure, int) else sum(b == 1 for b in structure))
