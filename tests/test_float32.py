"""The float32 option: rows stored and computed in float32, θ and group sums in float64.
Estimates must agree with the float64 fit to a few significant digits and the fit must
still end converged."""
import numpy as np
import pytest

import jaxmm
from jaxmm._design import design_from_formula
from jaxmm._formula import parse_formula
from conftest import fit_kwargs, load_reference


@pytest.mark.parametrize("name", ["contraception_q2", "sleepstudy_reml", "grouseticks_poisson"])
def test_float32_agrees_with_float64(reference_fit, name):
    ref, data, res64 = reference_fit(name)
    res32 = jaxmm.fit(ref["formula"], data, dtype="float32", **fit_kwargs(ref))
    assert res32.converged, res32.message
    se = np.sqrt(np.diag(res64.vcov))
    # Within 0.1 % of a standard error (the fit's Newton polish; without it grouseticks
    # stopped 1.1 % away, inside the float32 allowance), the log-likelihood within 1e-3.
    assert np.max(np.abs(res32.fixef.values - res64.fixef.values) / se) < 1e-3
    np.testing.assert_allclose(res32.sd, res64.sd, rtol=1e-3, atol=1e-4)
    assert abs(res32.loglik - res64.loglik) < 1e-3
    # Standard errors come from finite differences of float32 gradients: 0.07-0.12 % off
    # for grouseticks whatever the step (measured with 2.5e-3, 4.9e-3, 1e-2 and 2e-2).
    np.testing.assert_allclose(np.sqrt(np.diag(res32.vcov)), se, rtol=2e-3)


def test_float32_design_is_stored_in_float32():
    ref, data = load_reference("cbpp_binomial")
    design, _ = design_from_formula(parse_formula(ref["formula"]), data, trials=ref.get("trials"), dtype="float32")
    assert all(str(a.dtype) == "float32" for a in (design.X, design.Z, design.y, design.weights))


def test_unknown_dtype_is_refused():
    ref, data = load_reference("sleepstudy_reml")
    with pytest.raises(jaxmm.errors.ArgumentError, match="dtype"):
        jaxmm.fit(ref["formula"], data, dtype="float16")
