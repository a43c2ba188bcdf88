"""``jaxmm.fit``: formula and table in, labelled immutable result out."""
from __future__ import annotations


import jax
import numpy as np

from ._dataset import is_dataset
from ._batch import BatchResult
from ._batch_design import designs_by
from ._design import plan_design
from ._stream_design import plan_streamed
from ._types import TILE_ROWS, default_chunk_rows
from ._engine import fit_glmm_batch, fit_lmm_batch, fit_one, prefetch_one
from ._families import get_family
from ._formula import parse_formula
from ._gc import with_frozen_heap
from . import _progress
from ._optimize import OptOptions, Status
from ._quadrature import MAX_QUADRATURE_DIM, check_dimension, check_nodes, nodes_of
from ._fit_result import _outcome, _result
from ._results import FitOptions
from ._sharding import make_mesh, place, resolve_devices, to_host
from ._warn import warn
from .errors import ArgumentError, ConvergenceWarning, DataError, JaxmmWarning, SingularFitWarning

_METHODS = {"gaussian": ("REML", "ML"), "other": ("laplace", "AGHQ")}


def _resolve_method(family, method):
    allowed = _METHODS["gaussian" if family.exact else "other"]
    if method is None:
        return allowed[0]
    if not isinstance(method, str):
        raise ArgumentError(f"method must be a string; choose one of {list(allowed)}")
    for m in allowed:
        if method.lower() == m.lower():
            return m
    raise ArgumentError(f"unknown method {method!r} for family {family.name!r}; choose one of {list(allowed)}")


def _method_from_reml(family, method, REML):
    """lme4's ``REML=`` for gaussian models, as ``method=``."""
    if REML is None:
        return method
    if not isinstance(REML, bool):
        raise ArgumentError(f"REML must be True or False, got {REML!r}")
    if family.name != "gaussian":
        raise ArgumentError(f"REML= applies to gaussian models; a {family.name} model is fitted by method='laplace' "
                            "(or nAGQ=k for quadrature)")
    wanted = "REML" if REML else "ML"
    if method is not None and str(method).upper() != wanted:
        raise ArgumentError(f"REML={REML} contradicts method={method!r}; give one of them")
    return wanted


def _one_row_per_group(family, design) -> str | None:
    """Why a model in which every group has one row cannot be fitted, or None. The random
    effect is then confounded with the residual (gaussian, gamma, negative binomial) or
    not identified at all (Bernoulli); lme4 refuses these too. Poisson and binomial counts
    keep an observation-level random effect (overdispersion)."""
    if family.name == "poisson":
        return None
    if family.name == "binomial":
        trials = np.asarray(design.trials) * (np.asarray(design.weights) > 0)
        if trials.max() > 1:
            return None
        return "a Bernoulli (0/1) response cannot identify a random-effect variance"
    return f"the random-effect variance cannot be told apart from the {family.name} model's residual variance"


@with_frozen_heap
def fit(formula: str, data, family="gaussian", *, method: str | None = None, trials: str | None = None,
        link: str | None = None, offset=None, weights=None, missing: str = "raise", bucket: bool = True,
        dtype: str = "float64", verbose=False, by: str | None = None, devices=None, nAGQ: int = 1,
        REML: bool | None = None):
    """Fit a (generalised) linear mixed model, as lme4's ``lmer`` and ``glmer``.

    Parameters
    ----------
    formula : str
        formulaic's fixed part plus lme4's random terms, e.g.
        ``y ~ x + C(period) + (x | subject)``. Several terms (``(1 | s) + (1 | i)``,
        ``(1 | a/b)``, ``(1 | a:b)``) give a ``CrossedResult``.
    data : table or path
        A pandas, polars or pyarrow table (or anything ``pandas.DataFrame`` accepts), or a
        Parquet dataset: the path of a file or a directory of files, or a
        ``pyarrow.dataset.Dataset``, of which only the columns the model uses are read,
        record batch by record batch. Under ``jax.distributed`` with ``devices=`` over every
        process, each process reads only its own rows of it.
    family : str
        ``"gaussian"`` (exact LMM), ``"binomial"`` (links logit, probit, cloglog),
        ``"poisson"``, ``"negative_binomial"`` (NB2, its size estimated) or ``"gamma"`` (log
        link; ``sigma`` is the coefficient of variation 1/√shape), the others by Laplace.
    method : str, optional
        ``"REML"`` (gaussian default) or ``"ML"``; ``"laplace"`` for other families, or
        ``"AGHQ"`` with ``nAGQ`` > 1 (which selects it by itself, as in lme4).
    trials : str, optional
        The column of binomial trial counts; without it a binomial response is 0/1 (or write
        the response as lme4 does, ``cbind(successes, failures) ~ ...``).
    link : str, optional
        The link function; the canonical one by default.
    offset : str or array_like, optional
        A column name or array added to the linear predictor; ``offset(expr)`` terms in the
        formula are added to it.
    weights : str or array_like, optional
        Prior weights for the gaussian family: row i has residual variance σ²/wᵢ, as lme4's
        ``weights=``.
    missing : {"raise", "drop"}
        ``"raise"`` names each used column with missing values and their rows; ``"drop"``
        drops those rows and records their number as ``n_dropped``.
    bucket : bool
        Pad rows and groups up to the next of a coarse ladder of sizes (at most 25 % more)
        with inert rows, so that datasets of similar size reuse one compiled fit. The estimates
        do not change; ``False`` compiles for the exact shape.
    dtype : {"float64", "float32"}
        The precision of the stored rows and of the row- and group-level arithmetic. float32
        halves memory traffic (the GPU option); parameters, the optimiser and sums over groups
        stay float64, and the exact LMM accumulates its statistics in float64.
    verbose : bool or callable
        ``True`` prints progress (iteration, −loglik, max|gradient|) on stderr once a fit has
        run for about 2 s; a function ``f(iteration, objective, max_abs_grad, elapsed)`` is
        called after every accepted iteration instead (objective: −loglik).
    by : str, optional
        A column: fit one model per value of it, all in one compiled, vmapped call, into a
        ``BatchResult`` (several terms: one after another, into a
        ``CrossedBatchResult``). The formula is evaluated once on the whole table, so
        every replicate has the same columns.
    devices : int or list, optional
        A number N (the first N of ``jax.devices()``) or a list of jax devices: the groups (or
        a several-term fit's rows and pairs of cells) are split over them with
        ``jax.sharding``; the estimates equal a one-device fit's. Works across processes
        under ``jax.distributed.initialize()``.
    nAGQ : int
        Nodes per random effect of adaptive Gauss–Hermite quadrature (lme4's argument). 1 is
        the Laplace approximation; k > 1 integrates each subject's random effects with a
        product rule of k^q nodes centred at the mode and scaled by the conditional
        covariance, for q ≤ 3 (lme4 allows only q = 1). The reported log-likelihood is the
        integral itself (lme4's ``logLik`` for nAGQ > 1 subtracts the saturated model's).
    REML : bool, optional
        lme4's spelling for gaussian models: ``REML=True`` is ``method="REML"``,
        ``REML=False`` is ``method="ML"``.

    Returns
    -------
    MixedModelResult, CrossedResult, BatchResult or CrossedBatchResult
        One random-effect term, several, or one fit per ``by`` value.

    Raises
    ------
    FormulaError, DataError, ArgumentError
        For every input problem, naming the column or argument.

    Examples
    --------
    >>> import jaxmm
    >>> data = jaxmm.load_example("cbpp")
    >>> res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", data, family="binomial", trials="size")
    >>> res.fixef.round(3)
    (Intercept)   -1.399
    period2       -0.992
    period3       -1.129
    period4       -1.580
    Name: estimate, dtype: float64
    >>> round(res.loglik, 4)
    -92.0263
    """
    if missing not in ("raise", "drop"):
        raise ArgumentError(f"missing must be 'raise' or 'drop', got {missing!r}")
    if dtype not in ("float64", "float32"):
        raise ArgumentError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    fam = get_family(family, link)
    method = _resolve_method(fam, _method_from_reml(fam, method, REML))
    spec = parse_formula(formula)
    from_dataset = is_dataset(data)
    # A dataset is streamed, never read as one table: a one-term fit's design (_stream_design),
    # under jax.distributed each process reading only its own groups (_process_fit), and the
    # rows of several-term and by= fits (_stream_rows; each process its own, _process_crossed).
    one_term = from_dataset and not spec.terms and by is None
    arrays = any(v is not None and not isinstance(v, str) for v in (offset, weights))  # aligned to all the rows
    own_rows = from_dataset and by is None and devices is not None and jax.process_count() > 1 and not arrays
    own_groups = one_term and own_rows
    stream = one_term and not own_groups
    nAGQ = check_nodes(nAGQ)
    if method == "AGHQ" and nAGQ == 1:
        raise ArgumentError("method='AGHQ' needs the number of quadrature nodes: pass nAGQ=k with k > 1 "
                            "(nAGQ=1 is the Laplace approximation)")
    if nAGQ > 1 and fam.name != "gaussian":
        # as in lme4, nAGQ alone selects the quadrature; method='laplace' is the default name
        method = "AGHQ"
    if trials is not None and fam.name != "binomial":
        raise ArgumentError(f"trials= applies only to the binomial family, not {fam.name!r}")
    if spec.trials_expr is not None:
        if fam.name != "binomial":
            raise ArgumentError(f"a cbind(successes, failures) response is binomial; the family is {fam.name!r}")
        if trials is not None:
            raise ArgumentError("the response cbind(successes, failures) gives the trials; drop trials=")
    if weights is not None and fam.name != "gaussian":
        raise ArgumentError(f"weights= (prior weights) applies only to the gaussian family, not {fam.name!r}; "
                            "for binomial counts use trials=")
    if not isinstance(bucket, bool):
        raise ArgumentError(f"bucket must be True or False, got {bucket!r}")
    if not (isinstance(verbose, bool) or callable(verbose)):
        raise ArgumentError(f"verbose must be True, False or a function of (iteration, objective, max_abs_grad, "
                            f"elapsed), got {verbose!r}")
    if spec.terms:
        from ._crossed_fit import fit_terms

        res = fit_terms(spec, data, fam, method, formula, trials=trials, offset=offset, weights=weights,
                        missing=missing, dtype=dtype, verbose=_progress_possible(verbose), by=by, devices=devices,
                        nAGQ=nAGQ, own=own_rows)
        return res if by is not None else _warned(res)
    fit_options = FitOptions(trials=trials, offset=offset, weights=weights, missing=missing, nAGQ=nAGQ)
    if by is not None:
        if not isinstance(by, str):
            raise ArgumentError(f"by must be a column name, got {type(by).__name__}")
        if verbose:
            raise ArgumentError("verbose=True reports one optimiser; it is not available with by=")
        if devices is not None:
            raise ArgumentError("devices= splits the groups of one fit; it cannot be combined with by=")
        return _fit_by(spec, data, fam, method, by, formula, fit_options, dtype, bucket)
    mesh = None
    if devices is not None:
        mesh = make_mesh(resolve_devices(devices))
    verbose = _progress_possible(verbose)
    opt = OptOptions(verbose=bool(verbose))
    nagq = nodes_of(method, nAGQ)

    tile = _tile_rows(fam)
    if own_groups:
        # each process reads only its own groups of the dataset
        from ._process_fit import fit_own_rows

        if verbose:
            _progress.start(None if verbose is True else verbose)
        try:
            return _warned(fit_own_rows(
                spec, data, fam, method, mesh, options=fit_options, dtype=dtype, bucket=bucket, tile=tile,
                nagq=nagq, opt=opt, blocks_of=_re_blocks, one_row=_one_row_per_group,
                result=lambda out, info, design, blocks, n_obs: _result(
                    out, info, fam, formula, method, blocks, fit_options, design, n_devices=mesh.size, n_obs=n_obs)))
        finally:
            _progress.stop()
    planned = (plan_streamed if stream else plan_design)(
        spec, data, trials=trials, offset=offset, weights=weights, bucket=bucket, missing=missing,
        check_response=fam.check_response, min_chunks=1 if mesh is None else mesh.size, tile=tile,
        chunk_rows=default_chunk_rows(autodiff=method == "AGHQ"))
    shape = planned.groups.layout.shape
    q = len(planned.re_names)
    if mesh is None and shape.levels >= 2 and not (method == "AGHQ" and q > MAX_QUADRATURE_DIM):  # else raised below
        # The fit's program compiles on a background thread while the host lays out and
        # transfers the rows (at 10M rows about a second of host work).
        lowered = prefetch_one(planned.abstract(dtype, tile), fam, method == "REML", shape.chunks,
                               _re_blocks(spec, q), nagq, opt=opt)
        # Tracing and lowering are Python and hold the GIL, as does much of the layout: side by
        # side the two took turns, so the layout waits for the lowering. XLA's compile, the
        # longer part, runs without the GIL and overlaps the layout (docs/performance.md).
        lowered.wait()
    design, info = planned.place(dtype=dtype, host=mesh is not None, tile=tile)
    # The planned host rows end here, before the fit's temporaries are allocated.
    del planned, data
    if mesh is not None:
        design = place(design, mesh)
    if method == "AGHQ":
        check_dimension(design.Z.shape[1], info.re_names)
    layout = info.layout
    n_obs, n_groups = layout.row_slot.size, layout.group_slot.size
    if n_groups < 2:
        raise DataError(f"grouping factor {spec.group!r} has a single level; a random effect needs at least two groups")

    if n_obs == n_groups:
        why = _one_row_per_group(fam, design)
        if why:
            raise DataError(f"every group of {spec.group!r} has a single row: {why} (lme4 refuses such a model too)")
    blocks = _re_blocks(spec, design.Z.shape[1])
    if verbose:
        _progress.start(None if verbose is True else verbose)
    try:
        out = fit_one(design, fam, method == "REML", layout.chunks, blocks, nagq, opt=opt, mesh=mesh)
        out = {k: to_host(v) for k, v in out.items()}
    finally:
        _progress.stop()
    return _warned(_result(out, info, fam, formula, method, blocks, fit_options, design,
                           n_devices=1 if mesh is None else mesh.size))


def _warned(res):
    """``res``, after warning that it did not converge or is a boundary (singular) fit (at the
    caller of ``fit``: past this function, ``fit`` and its heap-freezing wrapper)."""
    if not res.converged:
        warn(f"the fit did not converge: {res.message}", ConvergenceWarning)
    elif res.singular:
        warn(
            "boundary (singular) fit: a random-effect variance is estimated as zero (or a correlation as "
            "±1), so D is singular. The data do not support this random-effects structure; the fixed "
            "effects are still valid, but consider dropping the term with zero variance.",
            SingularFitWarning)
    return res


def _re_blocks(spec, q: int):
    """The random-effects block sizes of a fit: None for one correlated block; (x || g),
    lme4's double bar, gives independent effects (D diagonal)."""
    return None if spec.correlated else (1,) * q


def _tile_rows(fam) -> int:
    """Rows per tile of a fit's design: the Laplace passes sum over tiles, while the exact
    LMM (every gaussian fit) reads the rows once, where the padding would only add rows."""
    return 1 if fam.exact else TILE_ROWS


def _progress_possible(verbose):
    """``verbose``, or False with a warning where no host callback can run."""
    if verbose and not _progress.available():
        warn("verbose=True prints progress through a JAX host callback, which needs JAX's CPU "
             "platform; JAX_PLATFORMS does not list 'cpu' (use e.g. JAX_PLATFORMS=cuda,cpu). "
             "Fitting without progress lines.", JaxmmWarning)
        return False
    return verbose


def _fit_by(spec, data, fam, method, by, formula, fit_options, dtype, bucket) -> BatchResult:
    designs, infos, keys, n_dropped = designs_by(spec, data, by, trials=fit_options.trials, offset=fit_options.offset,
                                      weights=fit_options.weights, dtype=dtype, bucket=bucket,
                                      missing=fit_options.missing, check_response=fam.check_response,
                                      tile=_tile_rows(fam))
    if method == "AGHQ":
        check_dimension(designs.Z.shape[-1], infos[0].re_names)
    blocks = _re_blocks(spec, designs.Z.shape[-1])
    if fam.exact:
        out = fit_lmm_batch(designs, method == "REML", blocks=blocks)
    else:
        out = fit_glmm_batch(designs, fam, blocks=blocks, nagq=nodes_of(method, fit_options.nAGQ))
    out = {k: np.asarray(v) for k, v in out.items()}
    replicate = lambda r: {k: v[r] for k, v in out.items()}
    # A gaussian outcome never reads the replicate's info (no separation check), so the
    # lazily built infos stay unbuilt.
    outcomes = [_outcome(fam, infos[r] if fam.name != "gaussian" else None, replicate(r)) for r in range(len(keys))]
    converged = np.array([status == Status.CONVERGED for status, _ in outcomes])
    scale = out["dispersion"] if fam.exact else np.ones(len(keys))
    singular = np.any(np.abs(np.diagonal(out["chol"], axis1=1, axis2=2)) / scale[:, None] < 1e-4, axis=1)
    batch = BatchResult(
        by=by, keys=tuple(keys), formula=formula, family=fam.name, method=method,
        fixef_names=infos[0].fixef_names, re_names=infos[0].re_names, arrays=out,
        converged_array=converged, messages=tuple(m for _, m in outcomes), singular_array=singular,
        n_obs_array=np.asarray(infos.n_rows), n_dropped=n_dropped,
        dispersion_name=fam.dispersion_name if fam.n_dispersion else None,
        single=lambda r: _result(replicate(r), infos[r], fam, formula, method, blocks, fit_options,
                                 jax.tree_util.tree_map(lambda a: a[r], designs)),
    )
    failed = [k for k, c in zip(keys, converged) if not c]
    if failed:
        warn(f"{len(failed)} of {len(keys)} fits did not converge (by={by!r} values {failed[:5]}"
             f"{' ...' if len(failed) > 5 else ''}); see .converged and .message", ConvergenceWarning)
    n_singular = int(np.sum(singular & converged))
    if n_singular:
        warn(f"{n_singular} of {len(keys)} fits are boundary (singular) fits: a random-effect variance "
             "is estimated as zero (or a correlation as ±1); see .singular", SingularFitWarning)
    return batch
