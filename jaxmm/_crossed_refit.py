"""Simulation, the parametric bootstrap and refits of a fit with several random-effect terms.

Refits go one after another through the program that compiled the fit (the same shapes and
static arguments, so nothing recompiles); only the simulator is a program of its own.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._crossed_engine import estimate
from ._gc import with_frozen_heap
from ._inference import variance_parameters
from ._jit import compiled
from ._optimize import Status
from ._params import same_block
from ._sharding import outputs_to_host, to_host
from ._simulate import _check_n_seed
from ._warn import warn
from .errors import ConvergenceWarning


@compiled(static_argnames=("levels", "family", "n", "stream"), elemental=True)
def simulate_terms(seed, X, offset, trials, weights, Zs, codes, beta, chols, dispersion, levels, family, n: int,
                   stream: int | None = None):
    """(n, rows) responses: every term's b_k ~ N(0, D_k) drawn afresh for each of its
    ``levels[k]`` levels (lme4's simulate with use.u = FALSE), then y | b from the family.
    ``stream``: the rows are one process's share of a job's, whose y | b are drawn from the
    process's own stream (its b, by level, every process's)."""
    keys = jax.random.split(jax.random.key(seed), len(Zs) + 1)
    noise = keys[0] if stream is None else jax.random.fold_in(keys[0], stream)
    eta = jnp.broadcast_to(X @ beta + offset, (n, X.shape[0]))
    for key, Z, code, L, m in zip(keys[1:], Zs, codes, chols, levels):
        b = jax.random.normal(key, (n, m, L.shape[0]), beta.dtype) @ L.T
        eta = eta + jnp.sum(Z[None] * b[:, code], axis=-1)
    rows = lambda a: jnp.broadcast_to(a, eta.shape)
    return family.sample(noise, eta, rows(trials), dispersion, rows(weights))


def _draw(res, n: int, seed: int) -> np.ndarray:
    rows = res.rows
    ones = np.ones(rows.y.shape[0])
    dispersion = res.sigma if res.sigma is not None else 1.0
    return to_host(simulate_terms(
        np.int64(seed), rows.X, ones * 0.0 if rows.offset is None else rows.offset,
        ones if rows.trials is None else rows.trials, ones if rows.weights is None else rows.weights,
        tuple(t.Z for t in res.terms), tuple(t.codes for t in res.terms), res.fixef.to_numpy(),
        tuple(res.chols), np.float64(dispersion), tuple(len(t.levels) for t in res.terms), res.family_spec, n,
        stream=None if res.job is None else jax.process_index()))


@with_frozen_heap
def simulate(res, n: int = 1, seed: int = 0) -> pd.DataFrame:
    """``n`` simulated response vectors for the fitted rows (columns ``sim_1`` … ``sim_n``)."""
    n, seed = _check_n_seed(n, seed)
    Y = _draw(res, n, seed)
    return pd.DataFrame(Y.T, index=res.rows.index, columns=[f"sim_{k + 1}" for k in range(n)])


def refit(res, y=None, reml: bool | None = None) -> dict:
    """The model refitted to the response ``y`` (the fitted one by default), by REML or ML
    (the fit's own method by default): the fit's outputs, on the host."""
    reml = res.method == "REML" if reml is None else reml
    job = res.job  # a process's share: refitted with the other processes' rows
    out = estimate(res.rows, res.terms, res.family_spec, reml, y=y, mesh=None if job is None else job.mesh, job=job)
    return outputs_to_host(out, ("beta", "chols", "status", "loglik", "sigma" if res.family_spec.exact else
                                 "dispersion"))


def term_parameters(term, D):
    """A term's SDs then correlations (within its blocks: none across the blocks of
    ``(x || g)``) from D (the last axes), labelled as :func:`._inference.variance_parameters`."""
    labels, values = variance_parameters(D, term.names)
    q = len(term.names)
    keep = np.array([True] * q + [same_block(term.structure, i, j) for i in range(q) for j in range(i)])
    return [v for v, k in zip(labels, keep) if k], values[..., keep]


def parameter_names(res) -> tuple[list[str], list]:
    """The labels of the variance parameters (per term ``sd_<name>|<group>`` and
    ``cor_<a>_<b>|<group>``, then the dispersion's name) and, per term, its labels."""
    def labelled(groups):
        return [[f"{v}|{g}" for v in term_parameters(term, np.eye(len(term.names)))[0]]
                for term, g in zip(res.terms, groups)]

    per_term = labelled([term.label for term in res.terms])
    flat = [v for labels in per_term for v in labels]
    if len(set(flat)) < len(flat):  # two terms on one factor with an effect of one name: lme4's "g", "g.1"
        seen: dict = {}
        groups = []
        for term in res.terms:
            k = seen[term.label] = seen.get(term.label, -1) + 1
            groups.append(term.label if k == 0 else f"{term.label}.{k}")
        per_term = labelled(groups)
    extra = [] if res.sigma is None else [res.family_spec.dispersion_name]
    return [v for labels in per_term for v in labels] + extra, per_term


@with_frozen_heap
def bootstrap(res, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Parametric bootstrap: ``n`` simulated datasets, each refitted. One row per replicate:
    the fixed effects, then each term's SDs and correlations, then the dispersion where the
    family has one. ``attrs["converged"]`` flags each refit."""
    n, seed = _check_n_seed(n, seed)
    Y = _draw(res, n, seed)
    outs = [refit(res, y) for y in Y]
    frame = pd.DataFrame(np.stack([o["beta"] for o in outs]), columns=list(res.fixef.index))
    _, per_term = parameter_names(res)
    for k, labels in enumerate(per_term):
        chols = np.stack([o["chols"][k] for o in outs])
        _, values = term_parameters(res.terms[k], chols @ np.swapaxes(chols, 1, 2))
        for j, label in enumerate(labels):
            frame[label] = values[:, j]
    if res.sigma is not None:
        key = "sigma" if res.family_spec.exact else "dispersion"
        frame[res.family_spec.dispersion_name] = [float(o[key]) for o in outs]
    frame.index.name = "replicate"
    converged = np.array([int(o["status"]) == Status.CONVERGED for o in outs]) & np.all(
        np.isfinite(frame.to_numpy()[:, :len(res.fixef)]), axis=1)
    frame.attrs["converged"] = converged
    if not converged.all():
        warn(f"{int((~converged).sum())} of {n} bootstrap refits did not converge "
             "(attrs['converged'] flags them)", ConvergenceWarning)
    return frame
