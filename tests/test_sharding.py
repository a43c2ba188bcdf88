"""fit(..., devices=N): one fit's groups sharded over several devices equals the one-device
fit. The devices are 4 CPU devices forced by XLA_FLAGS, which must be set before JAX
starts, so the fits run in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import jaxmm
from jaxmm.errors import ArgumentError

HELPER = Path(__file__).parent / "helpers" / "sharded_fit.py"


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(HELPER)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_sharded_fit_equals_single_device(sharded, family):
    assert sharded["n_devices_available"] == 4
    r = sharded[family]
    assert r["n_devices"] == ([1, 2, 2] if family == "gaussian" else [1, 4, 4])
    assert all(r["converged"])
    for key in ("loglik", "fixef", "vcov", "D", "sigma", "ranef"):
        assert r[key] < 1e-8, (key, r[key])
    assert r["ranef_index"]
    if family == "binomial":
        assert "split over devices (devices= gave 4)" in r["profile_refused"]
    if family == "gaussian":  # from a Parquet dataset, the same split fit exactly
        d = sharded["dataset"]
        assert d["n_devices"] == 2 and d["loglik"] == d["fixef"] == d["ranef"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name,n_devices", [("cbpp_observation_level", 3), ("pastes_nested_reml", 4)])
def test_several_terms_split_over_devices_equal_one_device(sharded, name, n_devices):
    # measured: log-likelihoods within 2e-10, everything else within 1e-10 (the GLMM's vcov,
    # from differences of gradients) and 1e-11
    r = sharded[name]
    assert r["n_devices"] == [1, n_devices] and all(r["converged"])
    assert r["loglik"] < 2e-9 and r["vcov"] < 1e-9
    for key in ("fixef", "chols", "ranef", "cond_var"):
        assert r[key] < 1e-10, (key, r[key])


def test_devices_argument_errors():
    import pandas as pd

    data = pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 6], "g": [1, 1, 2, 2, 3, 3]})
    with pytest.raises(ArgumentError, match=rf"devices=99: there are \d+ {jax.default_backend()} device"):
        jaxmm.fit("y ~ 1 + (1 | g)", data, devices=99)
    with pytest.raises(ArgumentError, match="devices=0"):
        jaxmm.fit("y ~ 1 + (1 | g)", data, devices=0)
    with pytest.raises(ArgumentError, match="devices must be"):
        jaxmm.fit("y ~ 1 + (1 | g)", data, devices="gpu")
    with pytest.raises(ArgumentError, match="devices must be a non-empty list"):
        jaxmm.fit("y ~ 1 + (1 | g)", data, devices=[])
    with pytest.raises(ArgumentError, match="cannot be combined with by="):
        jaxmm.fit("y ~ 1 + (1 | g)", data.assign(r=[1, 1, 1, 2, 2, 2]), by="r", devices=1)
