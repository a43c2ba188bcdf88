"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4: fits each
model on one device and with its groups sharded over 4 (CPU) devices, and prints the
largest differences as JSON (tests/test_sharding.py)."""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import jax

import jaxmm


def data():
    rng = np.random.default_rng(3)
    n = 300
    sizes = rng.integers(1, 12, n)  # unequal groups: the blocks hold different numbers of rows
    g = np.repeat(np.arange(n), sizes)
    x = rng.normal(size=g.size)
    b = rng.normal(size=(n, 2)) * [0.8, 0.4]
    eta = -0.3 + 0.6 * x + b[g, 0] + b[g, 1] * x
    return pd.DataFrame(dict(yb=rng.binomial(1, 1 / (1 + np.exp(-eta))), yc=eta + rng.normal(size=g.size),
                             x=x, g=[f"s{i}" for i in g]))


def main():
    df = data()
    out = {"n_devices_available": len(jax.devices())}
    # The exact LMM and the Laplace fit are the two sharded programs (every family's Laplace
    # fit is the same program but for its kernel); a list of devices makes a mesh of its own,
    # taken once.
    for family, formula in [("gaussian", "yc ~ x + (x | g)"), ("binomial", "yb ~ x + (x | g)")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxmm.errors.JaxmmWarning)
            one = jaxmm.fit(formula, df, family)
            # a number of devices, or a list of them not starting at the first (a mesh of its own)
            four = jaxmm.fit(formula, df, family, devices=4) if family == "binomial" else None
            listed = jaxmm.fit(formula, df, family, devices=jax.devices()[1:3]) if family == "gaussian" else four
            four = listed if four is None else four
        diff = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        if family == "gaussian":  # the same split fit from a Parquet dataset (_dataset)
            import tempfile

            import pyarrow as pa
            import pyarrow.parquet as pq

            folder = Path(tempfile.mkdtemp())
            for k, rows in enumerate(np.array_split(np.arange(len(df)), 3)):
                pq.write_table(pa.Table.from_pandas(df.iloc[rows], preserve_index=False), folder / f"{k}.parquet")
            from_dataset = jaxmm.fit(formula, folder, family, devices=jax.devices()[1:3])
            out["dataset"] = dict(n_devices=from_dataset.n_devices, loglik=abs(from_dataset.loglik - listed.loglik),
                                  fixef=diff(from_dataset.fixef, listed.fixef),
                                  ranef=diff(from_dataset.ranef, listed.ranef))
        out[family] = dict(
            n_devices=[one.n_devices, four.n_devices, listed.n_devices],
            converged=[one.converged, four.converged, listed.converged],
            loglik=max(abs(one.loglik - four.loglik), abs(one.loglik - listed.loglik)),
            fixef=max(diff(one.fixef, four.fixef), diff(one.fixef, listed.fixef)),
            vcov=max(diff(one.vcov, four.vcov), diff(one.vcov, listed.vcov)),
            D=max(diff(one.D, four.D), diff(one.D, listed.D)),
            sigma=0.0 if one.sigma is None else abs(one.sigma - four.sigma),
            ranef=max(diff(one.ranef, four.ranef), diff(one.ranef, listed.ranef)),
            ranef_index=bool(one.ranef.index.equals(four.ranef.index)),
        )
        if family == "binomial":  # no profile intervals for a split fit: refused, naming devices=
            try:
                four.confint("profile")
                out[family]["profile_refused"] = None
            except jaxmm.errors.ArgumentError as exc:
                out[family]["profile_refused"] = str(exc)
    # several terms: the rows, the pairs of cells and a GLMM's rows split (_crossed_shard);
    # 3 devices pad the cells, pairs and rows, the nested LMM's blocks are one per level (its
    # split fit from a Parquet file)
    crossed = Path(__file__).parent.parent / "data" / "crossed"
    for name, family, kw, n_devices in [("cbpp_observation_level", "binomial", {"trials": "size"}, 3),
                                        ("pastes_nested_reml", "gaussian", {}, 4)]:
        ref = json.loads((crossed / f"{name}.json").read_text())
        table = pd.read_csv(crossed / f"{name}.csv")
        source = table
        if family == "gaussian":  # the nested model split from a Parquet dataset, its rows streamed
            import tempfile

            source = Path(tempfile.mkdtemp()) / f"{name}.parquet"
            table.to_parquet(source, index=False, row_group_size=7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxmm.errors.JaxmmWarning)
            one = jaxmm.fit(ref["formula"], table, family, **kw)
            split = jaxmm.fit(ref["formula"], source, family, devices=n_devices, **kw)
        diff = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        out[name] = dict(
            n_devices=[one.n_devices, split.n_devices], converged=[one.converged, split.converged],
            loglik=abs(one.loglik - split.loglik), fixef=diff(one.fixef, split.fixef), vcov=diff(one.vcov, split.vcov),
            chols=max(diff(a, b) for a, b in zip(one.chols, split.chols)),
            ranef=max(diff(a, b) for a, b in zip(one.ranefs, split.ranefs)),
            cond_var=max(diff(a, b) for a, b in zip(one.cond_vars, split.cond_vars)))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
