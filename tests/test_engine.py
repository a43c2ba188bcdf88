"""JAX invariants of the engine: IFT gradients equal finite differences, vmapped equals
looped, Laplace is exact for the Gaussian, and a new dataset of the same shape reuses the
compiled fit."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._place_rows import make_design
from jaxmm._engine import fit_glmm, fit_lmm
from jaxmm._families import get_family
from jaxmm._inner import InnerOptions, conditional_modes
from jaxmm._laplace import laplace_loglik
from jaxmm._lmm import lmm_loglik, lmm_stats, profiled_loglik
from jaxmm._params import Params, pack, unpack

from conftest import central_differences, second_differences, small_jit


def _design_of(ref, data, res):
    """The design of a reference case, rebuilt through the public parsing path."""
    from jaxmm._design import design_from_formula
    from jaxmm._formula import parse_formula

    design, _ = design_from_formula(parse_formula(ref["formula"]), data, trials=ref.get("trials"))
    return design


def _objective_at_fit(reference_fit, name):
    """The Laplace log-likelihood of a reference case as a function of θ, and θ̂."""
    ref, data, res = reference_fit(name)
    design = _design_of(ref, data, res)
    fam = get_family(ref["family"])
    p, q = design.X.shape[1], design.Z.shape[1]
    u0 = jnp.zeros((design.n_groups, q))
    f = lambda t: laplace_loglik(unpack(t, p, q, 0), design, u0, fam)[0]
    return f, np.asarray(pack(res.params, fam.n_dispersion)), p


@pytest.mark.parametrize("name", ["cbpp_binomial", "contraception_q2", "grouseticks_poisson"])
@pytest.mark.parametrize("where", ["optimum", "away"])
def test_gradient_matches_finite_differences(reference_fit, name, where):
    objective, theta, _ = _objective_at_fit(reference_fit, name)
    f = small_jit(objective)
    # Steps on each parameter's own scale (its curvature), e.g. age² has SE 7e-4, a
    # log-SD about 0.1; a common step would be too coarse for one and noisy for another.
    # The curvature needs one digit: second differences of f, not jax.hessian, whose
    # program (forward over reverse through the solver's rule) took most of this test.
    scale = 1.0 / np.sqrt(np.abs(second_differences(lambda t: float(f(jnp.asarray(t))), theta)))
    if where == "away":
        theta = theta + 2.0 * scale * np.cos(np.arange(theta.size) + 1.0)
    g_auto = np.asarray(small_jit(jax.grad(objective))(jnp.asarray(theta)))
    g_fd = central_differences(lambda t: float(f(jnp.asarray(t))), theta, 1e-4 * scale)
    err = np.abs(g_auto - g_fd)
    assert np.all(err <= 1e-5 * np.abs(g_fd) + 1e-5 / scale), (g_auto, g_fd)
    if where == "away":  # the check is not vacuous: away from the optimum the gradient is large
        assert np.max(np.abs(g_auto) * scale) > 1.0


def test_second_derivatives_are_exact(reference_fit):
    """The IFT rule is itself differentiable: the Hessian equals differences of the gradient."""
    f, theta, p = _objective_at_fit(reference_fit, "contraception_q2")
    theta = jnp.asarray(theta)
    grad = small_jit(jax.grad(f))
    hess = np.asarray(small_jit(jax.jacfwd(jax.jacfwd(f)))(theta))
    h = 1e-5
    for k in [0, 3, p, p + 1, p + 2]:
        e = jnp.zeros_like(theta).at[k].set(h)
        col = (np.asarray(grad(theta + e)) - np.asarray(grad(theta - e))) / (2 * h)
        np.testing.assert_allclose(hess[:, k], col, rtol=1e-4, atol=1e-4 * np.abs(col).max())


def test_modes_derivative_matches_finite_differences(reference_fit):
    ref, data, res = reference_fit("grouseticks_poisson")
    design = _design_of(ref, data, res)
    fam = get_family("poisson")
    eta_fixed = design.X @ jnp.asarray(res.params.beta)
    u0 = jnp.zeros((design.n_groups, 1))

    def modes_at(scale):
        return conditional_modes(eta_fixed, design.Z * scale, jnp.ones(()), design, u0, fam)

    modes_of = small_jit(modes_at)  # one program, not the solver's operations one by one
    jac = np.asarray(small_jit(jax.jacfwd(modes_at))(0.9))
    h = 1e-6
    fd = (np.asarray(modes_of(0.9 + h)) - np.asarray(modes_of(0.9 - h))) / (2 * h)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-7)


def test_batched_modes_equal_a_loop_over_groups(reference_fit):
    """All groups solved together (segment sums, batched q×q solves) = each group alone."""
    ref, data, res = reference_fit("contraception_q2")
    design = _design_of(ref, data, res)
    fam = get_family("binomial")
    beta, L = jnp.asarray(res.params.beta), jnp.asarray(res.params.chol)
    eta_fixed = design.X @ beta
    ZL = design.Z @ L
    u_all = np.asarray(conditional_modes(eta_fixed, ZL, jnp.ones(()), design, jnp.zeros((design.n_groups, 2)), fam))
    group = np.asarray(design.group)
    counts = np.asarray(design.counts)
    # Each group alone, padded with weight-0 rows to the largest group's size, so that one
    # compiled solve serves them all: the extremes of the sizes and a spread between.
    alone = small_jit(conditional_modes, static_argnums=(5,))
    size = int(np.max(np.bincount(group)))
    by_size = np.argsort(counts, kind="stable")
    for i in np.unique(by_size[np.linspace(0, design.n_groups - 1, 8).astype(int)]):
        rows = np.flatnonzero(group == i)
        rows = np.concatenate([rows, np.full(size - rows.size, rows[0])])
        live = jnp.asarray(np.arange(size) < np.sum(group == i), design.weights.dtype)
        one = design._replace(
            X=design.X[rows], Z=design.Z[rows], y=design.y[rows], trials=design.trials[rows],
            offset=design.offset[rows], weights=design.weights[rows] * live, group=jnp.zeros(size, jnp.int32),
            counts=jnp.asarray([float(np.sum(live))]), tile_group=None)
        u_i = alone(eta_fixed[rows], ZL[rows], jnp.ones(()), one, jnp.zeros((1, 2)), fam)
        np.testing.assert_allclose(np.asarray(u_i)[0], u_all[i], rtol=1e-9, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["contraception_q2", "grouseticks_poisson"])
def test_tiled_passes_equal_row_passes(reference_fit, name):
    """Sums over (T, 4) tiles then over tiles = segment sums of single rows: the pass
    values, the Laplace log-likelihood and its gradient (which goes through the tiles'
    custom JVP and its transpose)."""
    from jaxmm._inner import _evaluate, group_logdens
    from jaxmm._jit import Kernels

    ref, data, res = reference_fit(name)
    tiled = _design_of(ref, data, res)
    assert tiled.tile_group is not None and tiled.y.shape[0] == 4 * tiled.tile_group.shape[0]
    rows = tiled._replace(tile_group=None)
    fam = get_family(ref["family"])
    p, q = tiled.X.shape[1], tiled.Z.shape[1]
    u = jnp.asarray(0.3 * np.random.default_rng(1).standard_normal((tiled.n_groups, q)))
    eta_fixed, ZL = tiled.X @ jnp.asarray(res.params.beta), tiled.Z @ jnp.asarray(res.params.chol)
    one = jnp.ones(())
    # jitted (one program per layout): run op by op, each of the hundreds of operations
    # compiled on its own, this test took 20-28 s
    kernels = Kernels()
    evaluate = small_jit(lambda d: _evaluate(u, eta_fixed, ZL, one, d, fam, kernels))
    logdens = small_jit(lambda d: group_logdens(u, eta_fixed, ZL, one, d, fam, kernels))
    for a, b in zip(evaluate(tiled), evaluate(rows)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logdens(tiled), logdens(rows), rtol=1e-12)
    theta = jnp.asarray(pack(res.params, fam.n_dispersion)) + 0.05
    u0 = jnp.zeros((tiled.n_groups, q))
    value_grad = small_jit(
        lambda d: jax.value_and_grad(lambda t: laplace_loglik(unpack(t, p, q, 0), d, u0, fam)[0])(theta))
    (v_t, g_t), (v_r, g_r) = value_grad(tiled), value_grad(rows)
    np.testing.assert_allclose(v_t, v_r, rtol=1e-12)
    np.testing.assert_allclose(g_t, g_r, rtol=1e-8, atol=1e-8)


def test_vmapped_objective_equals_loop(reference_fit):
    f, theta, _ = _objective_at_fit(reference_fit, "cbpp_binomial")
    thetas = jnp.asarray(theta + 0.2 * np.random.default_rng(0).standard_normal((5, theta.size)))
    batched = np.asarray(small_jit(jax.vmap(f))(thetas))
    f_one = small_jit(f)
    looped = np.array([float(f_one(t)) for t in thetas])
    np.testing.assert_allclose(batched, looped, rtol=1e-12)
    gb = np.asarray(small_jit(jax.vmap(jax.grad(f)))(thetas))
    g_one = small_jit(jax.grad(f))
    gl = np.stack([np.asarray(g_one(t)) for t in thetas])
    np.testing.assert_allclose(gb, gl, rtol=1e-9, atol=1e-10)


def test_step_halving_keeps_poisson_from_diverging(reference_fit):
    """A start far from the mode (exp(η) overflows on a full Newton step) still converges."""
    ref, data, res = reference_fit("grouseticks_poisson")
    design = _design_of(ref, data, res)
    fam = get_family("poisson")
    eta_fixed = design.X @ jnp.asarray(res.params.beta)
    ZL = design.Z @ jnp.asarray(res.params.chol)
    from_zero = conditional_modes(eta_fixed, ZL, jnp.ones(()), design, jnp.zeros((design.n_groups, 1)), fam)
    far = jnp.full((design.n_groups, 1), 25.0)
    from_far = conditional_modes(eta_fixed, ZL, jnp.ones(()), design, far, fam)
    assert np.all(np.isfinite(np.asarray(from_far)))
    np.testing.assert_allclose(np.asarray(from_far), np.asarray(from_zero), atol=1e-8)


def test_float32_solve_stops_at_rounding_level_steps():
    """Near the mode a float32 h is flat only to its rounding, so a tiny Newton step can be
    refused and halved again and again; a group whose step is below the tolerance is done.
    Before this rule, groups of a skewed float32 Poisson design kept every solve running to
    the cap of max_iter + max_halvings passes (140), at 13x the cost of the converged solve."""
    from jaxmm._inner import _solve

    rng = np.random.default_rng(11)
    m = 5000
    sizes = np.maximum(1, np.round(rng.lognormal(0.0, 1.0, m) * 100_000 / np.exp(0.5) / m)).astype(int)
    g = np.repeat(np.arange(m), sizes)
    x = rng.normal(size=g.size)
    b = rng.normal(0.0, 0.4, m)
    y = rng.poisson(np.exp(1.0 + 0.25 * x + b[g])).astype(float)
    X = np.column_stack([np.ones(g.size), x])
    design, _, _ = make_design(X, X[:, :1], y, g, dtype=jnp.float32)
    eta_fixed = design.X @ jnp.asarray([1.0, 0.25], jnp.float32)
    ZL = design.Z * jnp.float32(0.4)
    solve = small_jit(lambda u0: _solve(eta_fixed, ZL, jnp.ones((), jnp.float32), design, u0, get_family("poisson"),
                                      InnerOptions()))
    u, h, grad, H, passes = solve(jnp.zeros((design.n_groups, 1), jnp.float32))
    assert int(passes) <= 15
    # and it stopped at the mode: every remaining Newton step is below the float32 tolerance
    step = np.asarray(grad)[:, 0] / np.asarray(H)[:, 0, 0]
    assert np.max(np.abs(step)) < 1e3 * np.finfo(np.float32).eps


def test_laplace_is_exact_for_gaussian(reference_fit):
    """For a Gaussian response the Laplace objective equals the closed-form ML likelihood."""
    ref, data, res = reference_fit("sleepstudy_ml")
    design = _design_of(ref, data, res)
    fam = get_family("gaussian")
    u0 = jnp.zeros((design.n_groups, 2))
    laplace_at = small_jit(lambda prm, d: laplace_loglik(prm, d, u0, fam)[0])
    exact_at = small_jit(lambda prm, d: lmm_loglik(prm, lmm_stats(d)))
    for params in [
        Params(jnp.asarray([240.0, 12.0]), jnp.asarray([[20.0, 0.0], [1.5, 4.0]]), jnp.asarray(30.0)),
        Params(jnp.asarray(res.params.beta), jnp.asarray(res.params.chol), jnp.asarray(res.params.dispersion)),
    ]:
        laplace = float(laplace_at(params, design))
        exact = float(exact_at(params, design))
        assert laplace == pytest.approx(exact, rel=1e-12)
    # and at the ML fit both equal the profiled optimum lme4 reports
    assert exact == pytest.approx(res.loglik, abs=1e-8)
    assert exact == pytest.approx(ref["loglik"], abs=1e-6)


def test_profiled_lmm_equals_unprofiled_at_its_argmax(reference_fit):
    ref, data, res = reference_fit("sleepstudy_ml")
    design = _design_of(ref, data, res)
    stats = lmm_stats(design)
    sigma = float(res.sigma)
    lam = jnp.asarray(res.params.chol) / sigma
    profiled = float(profiled_loglik(lam, stats, reml=False))
    assert profiled == pytest.approx(float(lmm_loglik(res.params, stats)), rel=1e-12)
    # moving β or σ away from their profiled values can only lower the likelihood
    for db, ds in [(0.5, 0.0), (0.0, 0.3), (-0.2, -0.2)]:
        moved = Params(jnp.asarray(res.params.beta) + db, jnp.asarray(res.params.chol) * (1 + ds / sigma),
                       jnp.asarray(sigma + ds))
        assert float(lmm_loglik(moved, stats)) < profiled


def _simulated_bernoulli(seed, n_groups=40, per=12):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.standard_normal(g.size)
    b = rng.standard_normal((n_groups, 2)) * [0.8, 0.3]
    eta = 0.2 + 0.7 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": [f"s{k}" for k in g]})


def test_same_shape_does_not_recompile():
    first = jaxmm.fit("y ~ x + (x | g)", _simulated_bernoulli(1), family="binomial")
    size = fit_glmm._cache_size()
    second = jaxmm.fit("y ~ x + (x | g)", _simulated_bernoulli(2), family="binomial")
    assert fit_glmm._cache_size() == size
    assert not np.allclose(first.fixef, second.fixef)  # really a different dataset

    rng = np.random.default_rng(3)
    lmm_data = lambda: pd.DataFrame({"y": rng.standard_normal(60), "x": rng.standard_normal(60),
                                     "g": np.repeat(np.arange(6), 10)})
    jaxmm.fit("y ~ x + (1 | g)", lmm_data())
    size = fit_lmm._cache_size()
    jaxmm.fit("y ~ x + (1 | g)", lmm_data())
    assert fit_lmm._cache_size() == size


@pytest.mark.parametrize("name", ["cbpp_binomial", "sleepstudy_reml"])
def test_evaluation_count_covers_every_phase(reference_fit, name):
    # The start point and every accepted L-BFGS step cost one evaluation at least, then the
    # boundary trial and the k gradients of the forward-difference Hessian follow.
    _, _, res = reference_fit(name)
    q = res.D.shape[0]
    k = q * (q + 1) // 2 + (len(res.beta) + res.n_dispersion if res.family != "gaussian" else 0)
    assert res.n_eval >= res.n_iter + 2 + k
    assert f"{res.n_iter} iterations, {res.n_eval} evaluations" in res.summary()
    assert res.to_dict()["convergence"]["n_eval"] == res.n_eval


def test_emitter_choice_by_size_changes_no_estimate(monkeypatch):
    # Small fits compile with XLA:CPU's elemental emitters at LLVM's optimisation level 0,
    # large ones with the fused emitters at the default level (_engine.ELEMENTAL_MAX_ROWS,
    # _engine.QUICK_MAX_ROWS): a program of each kind for one dataset must give the same
    # fit. Other backends have no such choice: there the size changes nothing, so the
    # second fit must reuse the first one's program.
    from jaxmm import _engine

    def programs(elemental, quick):
        jitted = fit_glmm._jitted.get((backend, elemental, quick))
        return 0 if jitted is None else jitted._cache_size()

    data = _simulated_bernoulli(6)  # an interior optimum (seed 4 is singular)
    backend = jax.default_backend()
    cpu = backend == "cpu"
    assert len(data) <= _engine.QUICK_MAX_ROWS
    before = programs(False, False)
    small = jaxmm.fit("y ~ x + (x | g)", data, family="binomial")
    assert not small.singular
    assert programs(cpu, cpu) >= 1
    monkeypatch.setattr(_engine, "ELEMENTAL_MAX_ROWS", 0)
    monkeypatch.setattr(_engine, "QUICK_MAX_ROWS", 0)
    large = jaxmm.fit("y ~ x + (x | g)", data, family="binomial")
    assert programs(False, False) == before + cpu
    np.testing.assert_allclose(large.fixef, small.fixef, rtol=1e-8)
    np.testing.assert_allclose(large.D, small.D, rtol=1e-7, atol=1e-10)
    assert abs(large.loglik - small.loglik) < 1e-9


def test_separate_and_stacked_group_sums_agree(reference_fit):
    # The per-group sums of a row pass, one segment sum per output or one over the stacked
    # outputs (_jit.Kernels.separate_group_sums), are the same sums.
    from jaxmm._inner import _row_sums
    from jaxmm._jit import Kernels

    ref, data, res = reference_fit("contraception_q2")
    design = _design_of(ref, data, res)
    assert design.tile_group is not None
    rows = design.y.reshape(design.tile_group.shape[0], -1)
    terms = [rows * design.weights.reshape(rows.shape), jnp.cos(rows), rows * rows]
    sums = {}
    for separate in (True, False):
        kernels = Kernels(separate_group_sums=separate)
        sums[separate] = np.asarray(small_jit(lambda t: _row_sums(t, design, kernels))(terms))
    assert sums[True].shape == (design.n_groups, 3)
    np.testing.assert_allclose(sums[True], sums[False], rtol=1e-14, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["binomial", "gaussian REML"])
def test_products_as_sums_are_the_same_fit_without_matrix_dots(model):
    # On accelerators the products over all rows (the start values' XᵀWX and Xᵀv, the LMM's
    # statistics) and over the groups are sums, not dots (_jit.Kernels.products_as_sums), and the
    # fit's other small products are written out (_smallmat): XLA:GPU then has no dot over
    # the rows or groups left to autotune. The CPU keeps its dots; both give the same fit.
    import re

    from jaxmm import _jit
    from jaxmm._design import design_from_formula
    from jaxmm._engine import _fit_glmm, _fit_lmm
    from jaxmm._formula import parse_formula

    data = _simulated_bernoulli(1, n_groups=60, per=15)  # not a boundary fit: θ is determined
    if model == "binomial":
        fam = get_family("binomial")
        fit = lambda d, kernels: _fit_glmm(None, d, fam, kernels=kernels)
    else:
        # a random slope of its own, so that the LMM's θ is interior too (with the Bernoulli
        # response alone its slope variance sat at the boundary, where θ is not determined)
        rng = np.random.default_rng(2)
        group = data["g"].str[1:].astype(int).to_numpy()
        slope = 0.5 + 0.6 * rng.standard_normal(60)[group]
        data["y"] = data["y"] + slope * data["x"] + rng.standard_normal(len(data))
        fit = lambda d, kernels: _fit_lmm(None, d, True, kernels=kernels)
    design, _ = design_from_formula(parse_formula("y ~ x + (x | g)"), data)
    # the options a small fit compiles with (on the CPU, the elemental emitters at level 0)
    backend = jax.default_backend()
    options = _jit.accepted_options(backend, _jit.compiled._options((backend, True, True)))
    out, dots = {}, {}
    for as_sums in (False, True):
        kernels = _jit.Kernels(separate_group_sums=False, products_as_sums=as_sums)
        lowered = jax.jit(lambda d: fit(d, kernels)).lower(design)  # a new function: a trace of its own
        text = lowered.as_text()
        out[as_sums] = jax.device_get(lowered.compile(compiler_options=options)(design))
        dots[as_sums] = re.findall(r"stablehlo\.dot_general.*?:\s*\((tensor<[^>]*>), (tensor<[^>]*>)\)", text)
    dims = lambda t: [int(n) for n in t[len("tensor<"):-1].split("x")[:-1]]  # tensor<3x14xf64>: [3, 14]
    largest = lambda found: max((max(dims(a) + dims(b) + [0]) for a, b in found), default=0)
    assert largest(dots[False]) >= len(data)  # the CPU's XᵀX is a dot over the (padded) rows
    # Left: vectors of the parameters, and the LMM's p×p products (its Cholesky factor of
    # XᵀR⁻¹X, differentiated), none over the rows or the groups.
    assert dots[True] and largest(dots[True]) < design.n_groups, dots[True]
    assert out[True]["loglik"] == pytest.approx(out[False]["loglik"], rel=1e-12)
    np.testing.assert_allclose(out[True]["theta"], out[False]["theta"], rtol=1e-7, atol=1e-9)
    for name in ("ranef", "cond_var"):
        np.testing.assert_allclose(out[True][name], out[False][name], rtol=1e-6, atol=1e-10)
