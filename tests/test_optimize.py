"""The outer optimiser on its own: known minima, line-search recovery, warm-start plumbing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm._optimize import OptOptions, Status, lbfgs_start, lbfgs_trial, lbfgs_update, minimize
from conftest import small_jit


def _no_warm(f):
    return lambda x, warm, args: (f(x, args), warm)


def test_rosenbrock_needs_the_line_search():
    # The full L-BFGS step overshoots on the curved valley, so rejections and
    # interpolation are exercised; the minimum is (1, 1).
    def rosen(x, calls, a):
        return (a - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2, calls + 1

    res = small_jit(lambda x0: minimize(rosen, x0, 0, 1.0))(jnp.array([-1.2, 1.0]))
    assert int(res.status) == Status.CONVERGED
    np.testing.assert_allclose(np.asarray(res.x), [1.0, 1.0], atol=1e-7)
    assert 10 < int(res.n_iter) < 200
    assert int(res.warm) > int(res.n_iter) + 1  # some trial steps were rejected


def test_zoom_keeps_the_minimum_inside_a_reversed_bracket():
    """After an overshoot the bracket runs backwards: lo = 1 (sufficient decrease, slope > 0)
    and hi = 0. A trial at 0.5 with more decrease, still descending towards lo, leaves the
    minimum between 0.5 and 1: the old lo must become hi (Nocedal & Wright, Algorithm 3.6:
    hi <- lo when phi'(a)(hi - lo) >= 0). Keeping hi = 0 instead left every later trial in
    (0, 0.5), all worse, and the search shrank onto 0.5 for its 30 trials (seen in a
    sleepstudy bootstrap refit: 22 evaluations at one point, then a restart)."""
    from jaxmm._optimize import _Search

    state = lbfgs_start(jnp.zeros(1), jnp.zeros(()))
    one = lambda v: jnp.asarray(v, jnp.float64)
    search = _Search(d=jnp.ones(1), slope0=one(-1.0), alpha=one(0.5), lo=one(1.0), f_lo=one(-0.4), s_lo=one(0.5),
                     hi=one(0.0), f_hi=one(0.0), s_hi=one(-1.0), trials=jnp.asarray(2, jnp.int32))
    state = state._replace(f=one(0.0), g=jnp.array([-1.0]), search=search, it=jnp.asarray(1, jnp.int32))
    # at 0.5: f = -0.45 (below f_lo), slope -0.95: no curvature condition, minimum ahead
    new = lbfgs_update(state, one(-0.45), jnp.array([-0.95]), jnp.zeros(()))
    assert int(new.it) == 1 and int(new.status) == -1  # not accepted, still searching
    assert float(new.search.lo) == 0.5 and float(new.search.f_lo) == -0.45
    assert float(new.search.hi) == 1.0 and float(new.search.f_hi) == -0.4
    assert 0.5 < float(new.search.alpha) < 1.0
    # a trial that ascends towards lo (minimum behind it) keeps the far end
    behind = lbfgs_update(state, one(-0.45), jnp.array([0.95]), jnp.zeros(()))
    assert float(behind.search.lo) == 0.5 and float(behind.search.hi) == 0.0
    assert 0.0 < float(behind.search.alpha) < 0.5


def test_quadratic_minimum():
    A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    b = jnp.array([1.0, -2.0, 0.5])
    quad = lambda x, a: 0.5 * x @ a[0] @ x - a[1] @ x
    res = minimize(_no_warm(quad), jnp.zeros(3), jnp.zeros(()), (A, b))
    assert int(res.status) == Status.CONVERGED
    np.testing.assert_allclose(np.asarray(res.x), np.linalg.solve(np.asarray(A), np.asarray(b)), rtol=1e-8)


def test_backtracks_out_of_a_nonfinite_region():
    # f is NaN outside (0, 1). From 0.999 the gradient is about 1000 and the first step
    # (length 1) lands at about −0.001, so NaN trials must be rejected and bisected.
    def fun(x, warm, a):
        inside = (x > 0) & (x < 1)
        safe = jnp.where(inside, x, 0.5)
        return jnp.sum(jnp.where(inside, -jnp.log(safe) - jnp.log(1.0 - safe), jnp.nan)), warm

    x0, warm0 = jnp.array([0.999]), jnp.zeros(())
    res = minimize(fun, x0, warm0, None)
    assert int(res.status) == Status.CONVERGED
    np.testing.assert_allclose(np.asarray(res.x), [0.5], rtol=1e-7)
    # The same steps driven from Python record every trial point (a host callback would
    # need JAX's CPU platform, absent under JAX_PLATFORMS=cuda): the NaN region was visited.
    value_and_grad = small_jit(jax.value_and_grad(fun, has_aux=True))
    state, visited = lbfgs_start(x0, warm0), []
    for _ in range(200):
        if int(state.status) >= 0:
            break
        x = lbfgs_trial(state)
        visited.append(float(x[0]))
        (f, warm), g = value_and_grad(x, state.warm_x, None)
        state = lbfgs_update(state, f, g, warm)
    assert int(state.status) == Status.CONVERGED and float(state.x[0]) == float(res.x[0])
    assert any(not 0 < t < 1 for t in visited)


def test_nonfinite_start_is_reported():
    f = lambda x, a: jnp.sum(jnp.log(x))
    res = minimize(_no_warm(f), jnp.array([-1.0]), jnp.zeros(()), None)
    assert int(res.status) == Status.NONFINITE


def test_max_iter_is_reported():
    rosen = lambda x, a: (1 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2
    res = minimize(_no_warm(rosen), jnp.array([-1.2, 1.0]), jnp.zeros(()), None, OptOptions(max_iter=3))
    assert int(res.status) == Status.MAX_ITER
    assert int(res.n_iter) == 3


def test_warm_state_comes_from_the_accepted_point():
    # The objective reports the point it was evaluated at as its warm state and counts
    # its calls; at the end the warm state must be the returned minimiser.
    def fun(x, warm, a):
        return jnp.sum((x - a) ** 2) + jnp.sum(x ** 4), (x, warm[1] + 1)

    res = minimize(fun, jnp.array([2.0, -3.0]), (jnp.zeros(2), 0), jnp.array([0.5, 1.0]))
    assert int(res.status) == Status.CONVERGED
    np.testing.assert_array_equal(np.asarray(res.warm[0]), np.asarray(res.x))
    assert int(res.warm[1]) >= int(res.n_iter) + 1


def test_decrement_stop_ends_early_within_its_allowance():
    """With dtol set, L-BFGS stops once the decrease its next step predicts is below the
    allowance: fewer iterations, and the true gap to the minimum is of that order."""
    rosen = lambda x, a: (1 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2
    x0, w0 = jnp.array([-1.2, 1.0]), jnp.zeros(())
    full = minimize(_no_warm(rosen), x0, w0, None, OptOptions(gtol=1e-12))
    early = minimize(_no_warm(rosen), x0, w0, None, OptOptions(gtol=1e-12, dtol_abs=1e-8))
    assert int(full.status) == int(early.status) == Status.CONVERGED
    assert int(early.n_iter) < int(full.n_iter)
    assert 0.0 <= float(early.value) - float(full.value) < 1e-6


def test_a_search_for_a_negligible_decrease_stops_at_the_objectives_rounding():
    """A trial that fails to decrease the objective, where the decrease it sought (½·α·|slope|)
    is below the dtol allowance: near a minimum known only to its rounding, every comparison
    there is noise, and the search would spend its 30 trials on it. With dtol set the run
    ends (STALLED, for the caller's verdict to judge); a search seeking more, or without dtol,
    or with the stop switched off, goes on."""
    from jaxmm._optimize import _Search

    one = lambda v: jnp.asarray(v, jnp.float64)

    def rejected(slope0, options):
        search = _Search(d=jnp.ones(1), slope0=one(slope0), alpha=one(1.0), lo=one(0.0), f_lo=one(1e5),
                         s_lo=one(slope0), hi=one(jnp.inf), f_hi=one(jnp.inf), s_hi=one(jnp.inf),
                         trials=jnp.asarray(0, jnp.int32))
        state = lbfgs_start(jnp.zeros(1), jnp.zeros(()), options)
        state = state._replace(f=one(1e5), g=jnp.array([slope0]), search=search, it=jnp.asarray(3, jnp.int32))
        # the trial's value is 1e-9 higher: rounding, not the objective
        return int(lbfgs_update(state, one(1e5 + 1e-9), jnp.array([slope0]), jnp.zeros(()), options).status)

    dtol = OptOptions(dtol_abs=1e-10, dtol_rel=1e-15)  # allowance 1e-10 + 1e-15·1e5 = 1.1e-10
    assert rejected(-1e-10, dtol) == Status.STALLED                      # seeks 5e-11
    assert rejected(-1e-6, dtol) == -1                                   # seeks 5e-7: still searching
    assert rejected(-1e-10, OptOptions()) == -1                          # no dtol: the old rule
    assert rejected(-1e-10, dtol._replace(negligible_stop=False)) == -1  # switched off


def _driver_fit(f, theta0, monkeypatch=None, early=True, diag=None, face=None, noise=0.0, work_dtype=None):
    """optimise_and_check on a toy objective of natural coordinates φ (by default every one
    a Cholesky diagonal); early=False switches the early boundary stop off; ``face`` marks
    the diagonals that may be held at 0 (scalar blocks); ``noise`` adds a rounding-like
    error to the value alone; ``work_dtype`` sets the verdict's allowance."""
    import jax
    from jaxmm import _driver, _verdict

    if not early:
        monkeypatch.setattr(_driver, "_LOG_CANDIDATE", -np.inf)

    def evaluate(phi, warm, args):
        value, grad = jax.value_and_grad(f)(phi)
        return (value + noise * jnp.sin(1e7 * jnp.sum(phi)), warm), grad

    theta0 = jnp.asarray(theta0, jnp.float64)
    mask = np.ones(theta0.shape[0], bool) if diag is None else np.asarray(diag, bool)
    restart = lambda phi: jnp.where(mask, jnp.log(jnp.maximum(jnp.abs(phi), _verdict.ESCAPE_FLOOR)), phi)
    return small_jit(lambda t: _driver.optimise_and_check(evaluate, t, jnp.zeros(()), jnp.zeros(3), mask, restart,
                                                        work_dtype=work_dtype, face_mask=face))(theta0)


def test_a_diagonal_pushed_to_zero_is_stopped_early_and_finished_there(monkeypatch):
    """f even in a diagonal with its minimum at 0 (a variance with no support in the data,
    as in a singular random-intercept REML fit, where β and σ are profiled out): the
    optimiser stops once the diagonal is negligible instead of creeping down in log
    coordinates, and the boundary phase finishes it at exactly 0."""
    f = lambda phi: 3.0 * phi[0] ** 2 + 5.0 * phi[0] ** 4
    early = _driver_fit(f, [0.0])
    assert int(early["status"]) == Status.CONVERGED and float(early["phi"][0]) == 0.0
    creeping = _driver_fit(f, [0.0], monkeypatch, early=False)
    assert int(creeping["status"]) == Status.CONVERGED and float(creeping["phi"][0]) == 0.0
    assert int(early["n_eval"]) < int(creeping["n_eval"]) - 5
    assert float(early["value"]) == float(creeping["value"]) == 0.0


def test_an_interior_optimum_below_the_boundary_candidate_is_kept():
    """An even f whose minimum is at φ = ±0.005, where φ = 0 is a local maximum: an early
    stop between 0.005·√2 and 0.01 sees the boundary as no worse, but there the Hessian
    is not positive definite. The fit must still end at the interior optimum, converged."""
    c = 0.005
    f = lambda phi: 1e8 * (phi[0] ** 2 - c ** 2) ** 2
    res = _driver_fit(f, [0.0])
    assert int(res["status"]) == Status.CONVERGED
    assert abs(float(res["phi"][0])) == pytest.approx(c, rel=1e-6)


def test_a_scalar_block_at_zero_is_held_there_while_the_rest_converge():
    """φ0 is a variance alone in its block (f even in it, minimum at 0), φ1 a coefficient it
    is coupled to. Without holding it, φ0 creeps down in log coordinates until φ1 is
    converged to the optimiser's tolerance; held at 0 once it is below the candidate and
    still pushed down, the optimiser finishes φ1 on that face. Same minimum, fewer
    evaluations, φ0 exactly 0."""
    f = lambda phi: 3.0 * phi[0] ** 2 + 5.0 * phi[0] ** 4 + (phi[1] - 1.0) ** 2 + 4.0 * phi[0] ** 2 * phi[1] ** 2
    kw = dict(diag=[True, False])
    held = _driver_fit(f, [0.0, 0.0], face=[True, False], **kw)
    creeping = _driver_fit(f, [0.0, 0.0], **kw)
    for res in (held, creeping):
        assert int(res["status"]) == Status.CONVERGED and float(res["phi"][0]) == 0.0
        assert float(res["phi"][1]) == pytest.approx(1.0, abs=1e-4)  # the verdict allows a decrement of 1e-8
    assert int(held["n_eval"]) < int(creeping["n_eval"])


def test_a_held_scalar_block_whose_optimum_is_interior_is_released():
    """The even f of the interior-optimum test, with φ held at 0 once below the candidate:
    0 is a local maximum, so the verdict there is a saddle and the fit must leave the
    face and end at ±0.005, converged."""
    c = 0.005
    f = lambda phi: 1e8 * (phi[0] ** 2 - c ** 2) ** 2
    res = _driver_fit(f, [0.0], face=[True])
    assert int(res["status"]) == Status.CONVERGED
    assert abs(float(res["phi"][0])) == pytest.approx(c, rel=1e-6)



_A4 = np.array([400.0, 3.0, 50.0, 0.5])
_C4 = np.array([0.3, -1.2, 0.5, 2.0])


def _bumpy(phi):
    """A smooth, badly scaled, non-quadratic objective around 1000 (minimum near _C4)."""
    r = phi - _C4
    return 1000.0 + jnp.sum(_A4 * (r ** 2 + r ** 4)) + 20.0 * r[0] * r[1] + 5.0 * jnp.sin(r[2]) * r[3] ** 2


def _noisy_fit(monkeypatch, polish: bool, noise=1e-4, work_dtype=jnp.float32):
    """_bumpy whose value carries a rounding-like error (the float32 case: the gradient
    keeps its digits), judged with the float32 allowance eps32·|f| = 1.2e-4."""
    from jaxmm import _driver

    if polish:
        monkeypatch.undo()
    else:
        monkeypatch.setattr(_driver, "POLISH_ABOVE", np.inf)
    return _driver_fit(_bumpy, [2.0, 3.0, -1.0, 0.0], diag=[False] * 4, noise=noise, work_dtype=work_dtype)


def test_a_converged_fit_short_of_the_optimum_takes_a_newton_step(monkeypatch):
    """Where the float32 allowance lets the fit stop measurably short of the optimum, and
    the value's rounding hides any further decrease from the line search, the gradient
    still points to the optimum: one Newton step with the verdict's Hessian closes the
    gap (½‖Δ‖²_H, the decrement; 1e-7 is 4.5e-4 standard errors)."""
    best = float(_bumpy(_noisy_fit(monkeypatch, polish=False, noise=0.0, work_dtype=jnp.float64)["phi"]))
    unpolished = _noisy_fit(monkeypatch, polish=False)
    polished = _noisy_fit(monkeypatch, polish=True)
    for res in (unpolished, polished):
        assert int(res["status"]) == Status.CONVERGED
    assert float(_bumpy(unpolished["phi"])) - best > 1e-6  # the premise: it stopped short
    assert abs(float(_bumpy(polished["phi"])) - best) < 1e-9
    assert float(polished["decrement"]) < 1e-9
    assert int(polished["n_eval"]) == int(unpolished["n_eval"]) + 1


@pytest.mark.parametrize("work_dtype, rtol", [(jnp.float64, 1e-6), (jnp.float32, 2e-4)])
def test_the_verdicts_hessian_equals_autodiff(monkeypatch, work_dtype, rtol):
    """The Hessian judged (and inverted for the covariance) is differences of the gradient:
    forward with the step 1e-6 in float64, central with eps^(1/3) = 4.9e-3 in float32
    (where truncation dominates); each is close to the autodiff Hessian at the judged
    point."""
    import jax

    res = _noisy_fit(monkeypatch, polish=True, noise=0.0, work_dtype=work_dtype)
    exact = np.asarray(jax.hessian(_bumpy)(res["phi"]))
    np.testing.assert_allclose(np.asarray(res["hess"]), exact, rtol=rtol, atol=rtol * np.abs(exact).max())
