"""Simulation from a fitted model and the parametric bootstrap.

The bootstrap refits every replicate. On an accelerator they are refitted in one vmapped,
compiled call (in batches of about 2²² values). On the CPU a vmapped program buys no
throughput: its loops run until the slowest replicate stops, and it is a program of its
own to compile. There the replicates go one after another through the program that
compiled the fit (``_engine.fit_one``, with the fit's own arguments), so a bootstrap after
a fit compiles only the simulator (docs/performance.md).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._types import Design
from ._engine import _fit_glmm, _fit_lmm, elemental_rows, fit_one, quick_rows
from ._jit import Kernels, compiled
from ._gc import with_frozen_heap
from ._optimize import OptOptions, Status
from ._sharding import to_host
from ._warn import warn
from .errors import ArgumentError, ConvergenceWarning

# Replicates refitted per compiled call: bounded so that n_batch × rows stays near 2²² values.
_BATCH_VALUES = 1 << 22


@compiled(static_argnames=("family", "n"), elemental=True)
def simulate_responses(seed, design: Design, beta, chol, dispersion, family, n: int):
    """(n, rows) responses: b ~ N(0, D) drawn afresh for every group (lme4's simulate with
    use.u = FALSE), then y | b from the family. Padding rows get 1, inside every support.

    ``seed`` (an integer) becomes the key inside the program: ``jax.random.key`` called
    outside compiles a program of its own.

    One draw of shape (n, …) per quantity rather than a vmap over n keys: each call site
    of the threefry generator is a large kernel, and split keys under vmap compile slower
    (docs/performance.md).
    """
    m, q = design.n_groups, chol.shape[0]
    acc = beta.dtype
    eta_fixed = design.X.astype(acc) @ beta + design.offset.astype(acc)
    kb, ky = jax.random.split(jax.random.key(seed))
    b = jax.random.normal(kb, (n, m, q), acc) @ chol.T
    eta = eta_fixed[None] + jnp.sum(design.Z.astype(acc)[None] * b[:, design.group], axis=-1)
    rows = lambda a: jnp.broadcast_to(a.astype(acc), eta.shape)
    y = family.sample(ky, eta, rows(design.trials), dispersion, rows(design.weights))
    return jnp.where(design.weights > 0, y, 1.0).astype(design.y.dtype)


# What a refit returns: what the bootstrap reports. The rest of a fit's output (the covariance
# of β̂, the BLUPs and their conditional variances, (R, m, q) arrays over R replicates) is left
# out of the program; its compile time is about the same either way (docs/performance.md).
REFIT_OUTPUTS = ("beta", "chol", "dispersion", "status", "loglik", "n_iter", "n_eval")


def _refit_outputs(out: dict) -> dict:
    return {k: out[k] for k in REFIT_OUTPUTS}


def _elemental_refit(design: Design, Y, family, chunks: int, blocks, nagq: int = 1, kernels=None) -> bool:
    return elemental_rows(Y.shape[0] * Y.shape[1], nagq)


def _quick_refit(design: Design, Y, family, chunks: int = 1, blocks=None, nagq: int = 1, kernels=None) -> bool:
    return quick_rows(Y.shape[0] * Y.shape[1], nagq ** design.Z.shape[-1])


@compiled(static_argnames=("family", "chunks", "blocks", "nagq"), elemental=_elemental_refit, quick=_quick_refit)
def _refit_laplace(design: Design, Y, family, chunks: int, blocks, nagq: int = 1, kernels: Kernels = Kernels()):
    fit = lambda y: _refit_outputs(_fit_glmm(None, design._replace(y=y), family, OptOptions(), chunks, blocks,
                                             nagq=nagq, kernels=kernels))
    return jax.vmap(fit)(Y)


def _quick_refit_lmm(design: Design, Y, *_, **__) -> bool:
    return quick_rows(Y.shape[0] * Y.shape[1])


@compiled(static_argnames=("reml", "blocks"), elemental=True, quick=_quick_refit_lmm)
def _refit_lmm(design: Design, Y, reml: bool, blocks, kernels: Kernels = Kernels()):
    refit = lambda y: _refit_outputs(_fit_lmm(None, design._replace(y=y), reml, OptOptions(), blocks, kernels=kernels))
    return jax.vmap(refit)(Y)


def refit_responses(design: Design, Y, family, reml: bool, chunks: int, blocks, nagq: int = 1):
    """The model refitted to every row of Y (each a response vector for ``design``), with
    ``nagq`` quadrature nodes per random effect (1 = Laplace); one compiled, vmapped call.
    A dict of the :data:`REFIT_OUTPUTS`, each with a leading replicate axis."""
    if family.exact:
        return _refit_lmm(design, Y, reml, blocks)
    return _refit_laplace(design, Y, family, chunks, blocks, nagq)


def _check_n_seed(n, seed):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ArgumentError(f"n must be a positive whole number, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ArgumentError(f"seed must be a whole number, got {seed!r}")
    if not -2 ** 63 <= int(seed) < 2 ** 63:  # the key is made from a 64-bit integer
        raise ArgumentError(f"seed must fit in 64 bits (-2**63 <= seed < 2**63), got {seed!r}")
    return int(n), int(seed)


def _draw(res, n: int, seed: int):
    family = res.family_spec
    # Host values go to the compiled call as they are: jnp.asarray would compile a copy
    # program for each of them in a fresh process.
    return simulate_responses(np.int64(seed), res.design, np.asarray(res.params.beta), np.asarray(res.params.chol),
                              np.asarray(res.params.dispersion), family, n)


@with_frozen_heap
def simulate(res, n: int = 1, seed: int = 0) -> pd.DataFrame:
    """``n`` simulated response vectors for the fitted rows (columns ``sim_1`` … ``sim_n``)."""
    n, seed = _check_n_seed(n, seed)
    Y = to_host(_draw(res, n, seed))[:, res.layout.row_slot]
    return pd.DataFrame(Y.T, index=res.row_index, columns=[f"sim_{k + 1}" for k in range(n)])


_BOOT_OUTPUTS = ("beta", "chol", "dispersion", "status", "loglik")


def _refits(res, Y, family, one_by_one: bool) -> dict:
    """The model refitted to every row of Y: host arrays of :data:`_BOOT_OUTPUTS`, each with
    a leading replicate axis. ``one_by_one``: through the fit's own program (see the module
    docstring), else vmapped in batches."""
    reml = res.method == "REML"
    if one_by_one:
        outs = []
        for y in to_host(Y):
            out = fit_one(res.design._replace(y=y), family, reml, res.layout.chunks, res.re_blocks, res.nAGQ)
            # Only what the bootstrap reports is kept (a refit's BLUPs and their variances
            # are dropped at once); read back at the end, so the refits are dispatched
            # while the previous ones run.
            outs.append({k: out[k] for k in _BOOT_OUTPUTS})
        return {k: np.stack([to_host(o[k]) for o in outs]) for k in _BOOT_OUTPUTS}
    n, rows = Y.shape[0], res.design.y.shape[0]
    batch = max(1, min(n, _BATCH_VALUES // max(rows, 1)))
    outs = []
    for start in range(0, n, batch):
        chunk = Y[start:start + batch]
        if chunk.shape[0] < batch:  # one compiled shape: pad the last chunk with its first replicate
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[:1], batch - chunk.shape[0], axis=0)])
        out = refit_responses(res.design, chunk, family, reml, res.layout.chunks, res.re_blocks, res.nAGQ)
        outs.append({k: to_host(out[k]) for k in _BOOT_OUTPUTS})
    return {k: np.concatenate([o[k] for o in outs])[:n] for k in _BOOT_OUTPUTS}


@with_frozen_heap
def bootstrap(res, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Parametric bootstrap: ``n`` simulated datasets, each refitted. One row per replicate:
    the fixed effects, then ``sd_<name>`` and ``cor_<a>_<b>``, then ``sigma`` where the
    family has one. ``attrs["converged"]`` flags each refit."""
    from ._inference import variance_parameters

    n, seed = _check_n_seed(n, seed)
    family = res.family_spec
    Y = _draw(res, n, seed)
    out = _refits(res, Y, family, one_by_one=jax.default_backend() == "cpu" and res.n_devices == 1)
    D = out["chol"] @ np.swapaxes(out["chol"], -1, -2)
    labels, values = variance_parameters(D, res.re_names)
    frame = pd.DataFrame(out["beta"], columns=list(res.fixef_names))
    for k, label in enumerate(labels):
        frame[label] = values[:, k]
    if res.sigma is not None:
        frame["sigma"] = out["dispersion"]
    if res.nb_size is not None:
        frame["nb_size"] = out["dispersion"]
    frame.index.name = "replicate"
    converged = (out["status"] == Status.CONVERGED) & np.all(np.isfinite(out["beta"]), axis=1)
    frame.attrs["converged"] = converged
    if not converged.all():
        warn(f"{int((~converged).sum())} of {n} bootstrap refits did not converge "
             "(attrs['converged'] flags them)", ConvergenceWarning)
    return frame
