"""Result views (varcorr, to_dict, HTML), the CLI with Parquet/JSON/PNG output, and plots."""
import json

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm._cli import main
from jaxmm.errors import ArgumentError, JaxmmWarning


def test_varcorr_table(reference_fit):
    _, _, res = reference_fit("sleepstudy_reml")
    vc = res.varcorr()
    assert list(vc["name"]) == ["(Intercept)", "Days", ""]
    assert list(vc["group"]) == ["Subject", "Subject", "Residual"]
    np.testing.assert_allclose(vc["variance"].iloc[:2], np.diag(res.D))
    np.testing.assert_allclose(vc["std_dev"].iloc[2], res.sigma)
    assert vc["corr_(Intercept)"].iloc[1] == pytest.approx(res.corr.iloc[1, 0])
    assert np.isnan(vc["corr_(Intercept)"].iloc[0])


def test_to_dict_is_json_ready_and_complete(reference_fit):
    _, _, res = reference_fit("cbpp_binomial")
    d = json.loads(json.dumps(res.to_dict()))
    for key in ("fixef", "se", "D", "sigma", "ranef", "cond_var", "loglik", "aic", "bic", "convergence"):
        assert key in d
    assert d["fixef"] == pytest.approx(res.fixef.to_dict())
    assert d["se"]["(Intercept)"] == pytest.approx(float(np.sqrt(res.vcov.iloc[0, 0])))
    assert len(d["ranef"]) == res.n_groups and d["convergence"]["converged"] is True
    assert d["sigma"] is None and d["aic"] == pytest.approx(res.aic)


def test_html_repr(reference_fit):
    _, _, res = reference_fit("sleepstudy_reml")
    html = res._repr_html_()
    assert "<table" in html and "Days" in html and "Residual" in html


def test_cli_parquet_json_and_png_equal_the_python_api(tmp_path, capsys, reference_fit):
    ref, data, res = reference_fit("cbpp_binomial")
    path = tmp_path / "cbpp.parquet"
    data.to_parquet(path)
    out_json, out_png = tmp_path / "fit.json", tmp_path / "cat.png"
    code = main(["fit", str(path), ref["formula"], "--family", "binomial", "--trials", "size",
                 "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    assert "herd" in capsys.readouterr().out
    d = json.loads(out_json.read_text())
    assert d["fixef"] == pytest.approx(res.fixef.to_dict(), rel=1e-9)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_offset_and_missing(tmp_path, capsys):
    data = jaxmm.load_example("cbpp").assign(logsize=lambda d: np.log(d["size"]))
    data.loc[0, "period"] = np.nan
    path = tmp_path / "cbpp.csv"
    data.to_csv(path, index=False)
    formula = "incidence ~ C(period) + (1 | herd)"
    assert main(["fit", str(path), formula, "--family", "poisson", "--offset", "logsize"]) == 2
    assert "'period': 1 row(s)" in capsys.readouterr().err
    out_json = tmp_path / "f.json"
    assert main(["fit", str(path), formula, "--family", "poisson", "--offset", "logsize", "--missing", "drop",
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["n_dropped"] == 1


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "fit" in capsys.readouterr().out


def test_plots_have_labelled_axes(tmp_path, reference_fit):
    ref, data, res = reference_fit("contraception_q2")
    fig = res.plot_caterpillar(path=tmp_path / "c.png")
    assert all(ax.get_xlabel() for ax in fig.axes[:2])
    assert (tmp_path / "c.png").stat().st_size > 1000
    fig = res.plot_shrinkage(data, path=tmp_path / "s.png")
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes[:2])


def test_unpooled_estimates_bracket_the_blups(reference_fit):
    """BLUPs are shrunk: for a random intercept LMM each lies between 0 and the group's own
    estimate, by the factor n_i d / (n_i d + σ²) known in closed form."""
    from jaxmm._shrinkage import unpooled_effects

    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(30), rng.integers(2, 15, 30))
    b = rng.normal(0, 1.0, 30)
    data = pd.DataFrame({"g": g, "y": 2.0 + b[g] + rng.normal(0, 1.5, g.size)})
    res = jaxmm.fit("y ~ 1 + (1 | g)", data)
    raw = unpooled_effects(res, data)[:, 0]
    blup = res.ranef.to_numpy()[:, 0]
    n = np.bincount(g)
    d, s2 = res.D.iloc[0, 0], res.sigma**2
    own = data.groupby("g")["y"].mean().to_numpy() - res.fixef.iloc[0]
    np.testing.assert_allclose(raw, own, rtol=1e-3, atol=1e-3)  # prior 10⁴·D: nearly unpooled
    np.testing.assert_allclose(blup, own * n * d / (n * d + s2), rtol=1e-6, atol=1e-8)


def test_verbose_progress_after_the_delay(capsys, monkeypatch, reference_fit):
    import jaxmm._progress as progress

    ref, data, _ = reference_fit("cbpp_binomial")
    monkeypatch.setattr(progress, "DELAY", 0.0)  # report from the first iteration
    if not progress.available():  # JAX_PLATFORMS without cpu: the fit says so and runs silently
        with pytest.warns(JaxmmWarning, match="JAX_PLATFORMS"):
            jaxmm.fit(ref["formula"], data, family="binomial", trials="size", verbose=True)
        assert capsys.readouterr().err == ""
        return
    res = jaxmm.fit(ref["formula"], data, family="binomial", trials="size", verbose=True)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("jaxmm: ") and "iteration" not in l and "compiling" not in l]
    assert len(lines) == res.n_iter + 1  # the start, then every accepted iteration
    monkeypatch.setattr(progress, "DELAY", 1e9)  # a quick fit stays silent
    monkeypatch.setattr(progress, "COMPILE_DELAY", 1e9)
    jaxmm.fit(ref["formula"], data, family="binomial", trials="size", verbose=True)
    assert capsys.readouterr().err == ""


def test_a_wait_for_a_compile_gets_one_line_after_a_second(capsys, monkeypatch):
    """A fit waiting for its program's compile (prefetched on a background thread) says so
    once the wait passes COMPILE_DELAY; quick waits and progress functions get no line."""
    import threading
    import time

    import jaxmm._progress as progress
    from jaxmm._jit import compiled

    monkeypatch.setattr(progress, "COMPILE_DELAY", 0.05)
    program = compiled(lambda x: x + 1)
    progress.start(None)
    try:
        program._pending.append(threading.Thread(target=time.sleep, args=(0.5,)))  # a compile under way
        program._pending[-1].start()
        assert float(program(1.0)) == 2.0
        with progress.compiling():  # a wait shorter than the delay
            pass
    finally:
        progress.stop()
    err = capsys.readouterr().err
    assert err.count("jaxmm: compiling the fit's program") == 1
    progress.start(lambda *a: None)  # a function receives iterations only
    try:
        with progress.compiling():
            time.sleep(0.3)
    finally:
        progress.stop()
    assert capsys.readouterr().err == ""


def test_verbose_function_receives_every_iteration(reference_fit):
    """verbose=f gets (iteration, −loglik, max|grad|, elapsed) after the start and every
    accepted iteration, with no delay, through the same compiled program as verbose=True."""
    import jaxmm._progress as progress

    ref, data, _ = reference_fit("cbpp_binomial")
    if not progress.available():  # JAX_PLATFORMS without cpu: covered by the test below
        return
    seen = []
    res = jaxmm.fit(ref["formula"], data, family="binomial", trials="size", verbose=lambda *a: seen.append(a))
    assert len(seen) == res.n_iter + 1
    objectives = [s[1] for s in seen]
    assert all(b <= a + 1e-9 for a, b in zip(objectives, objectives[1:]))  # accepted steps only go down
    assert objectives[-1] == pytest.approx(-res.loglik, abs=1e-3)
    assert all(isinstance(s[0], int) and s[3] >= 0 for s in seen)
    with pytest.raises(ArgumentError, match="verbose must be True, False or a function"):
        jaxmm.fit(ref["formula"], data, family="binomial", trials="size", verbose="yes")


def test_verbose_without_a_cpu_platform_warns_and_fits(capsys, monkeypatch, reference_fit):
    """Under JAX_PLATFORMS=cuda a host callback has no CPU device to land on: verbose=True
    must not break the fit (seen on a GPU), and the CLI then runs without progress."""
    import jaxmm._progress as progress

    ref, data, quiet = reference_fit("cbpp_binomial")
    monkeypatch.setattr(progress, "available", lambda: False)
    monkeypatch.setattr(progress, "DELAY", 0.0)
    with pytest.warns(JaxmmWarning, match="JAX_PLATFORMS does not list 'cpu'"):
        res = jaxmm.fit(ref["formula"], data, family="binomial", trials="size", verbose=True)
    assert capsys.readouterr().err == ""
    assert res.loglik == quiet.loglik


def test_summary_has_lme4s_sections(reference_fit):
    """Scaled residuals (quantiles of the Pearson residuals over σ), the correlation of the
    fixed effects with R's abbreviated names, df.resid, and what the fit used besides the formula."""
    from jaxmm._render import _abbreviated

    _, _, res = reference_fit("cbpp_binomial")
    text = res.summary()
    lines = text.splitlines()
    assert "Trials: size" in lines
    q = np.quantile(res.residuals("pearson"), [0, 0.25, 0.5, 0.75, 1])
    at = lines.index("Scaled residuals:")
    assert lines[at + 2].split() == [f"{v:.4f}" for v in q]
    assert lines[lines.index([l for l in lines if "df.resid" in l][0]) + 1].split()[-1] == str(56 - 5)
    corr = res.vcov.to_numpy()[3, 1] / np.sqrt(res.vcov.to_numpy()[3, 3] * res.vcov.to_numpy()[1, 1])
    row = [l for l in lines if l.strip().startswith("period4") and len(l.split()) == 4][0]
    assert row.split()[2] == f"{corr:.3f}"
    assert "(Intr)  perid2  perid3" in text
    # R: abbreviate(c("(Intercept)", "GenderM", "btypescold", "situself", "Days"), 6)
    assert [_abbreviated(n) for n in ["(Intercept)", "GenderM", "btypescold", "situself", "Days"]] == \
        ["(Intr)", "GendrM", "btypsc", "sitslf", "Days"]


def test_summary_columns_line_up_their_decimals():
    """Each column of numbers has one number of decimals (enough for the smallest entry), as R
    prints them: sleepstudy's fixed effects read as lme4's 251.405 / 10.467 and 6.825 / 1.546."""
    from jaxmm._render import aligned

    assert aligned([251.40510, 10.467286], 5) == ["251.405", "10.467"]
    assert aligned([6.8246, 1.54579], 4) == ["6.825", "1.546"]
    assert aligned([612.09, 35.072, 654.94], 4) == ["612.09", "35.07", "654.94"]
    assert aligned([0.0, 1.5], 4) == ["0.000", "1.500"]
    assert aligned([2.5e-7, 1.0], 4) == ["2.500e-07", "1.000e+00"]
    text = jaxmm.fit_example("sleepstudy").summary()
    rows = [l.split() for l in text.splitlines() if l.strip().startswith(("(Intercept)", "Days"))]
    assert [len(r[1].split(".")[1]) for r in rows[-2:]] == [3, 3]  # the fixed effects' estimates
