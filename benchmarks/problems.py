"""Registry of benchmark problems: deterministic simulated mixed-model datasets.

A problem is (family, q, size, layout):

- family: ``binomial`` (Bernoulli 0/1 response), ``poisson`` or ``gaussian``;
- q: random-effects dimension, 1 = random intercept, 2 = + slope on x1, 3 = + slope on x2;
- size: ``13k`` (13,700 rows / 218 groups), ``100k`` (100,000 / 5,000),
  ``1M`` (1,000,000 / 50,000), ``10M`` (10,000,000 / 1,000,000);
- layout: ``balanced`` (rows spread as evenly as possible) or ``skewed`` (lognormal group
  sizes normalised to the row total, every group at least one row).

Every problem has the same fixed part, ``y ~ x1 + x2``; the random term is ``(1 | g)``,
``(x1 | g)`` or ``(x1 + x2 | g)``. ``generate(problem)`` returns ``(DataFrame, formula,
fit_kwargs)`` where ``fit_kwargs`` are the jaxmm.fit keyword arguments (gaussian models are
fitted by ML so that every engine reports a comparable log-likelihood).

Data are generated with vectorised numpy from a seed derived from the problem id, so the
same id always gives the same data (10M rows take a few seconds). Covariates and Gaussian
responses are rounded to 6 decimals so that the CSV handed to the engines holds exactly the
numbers generated. Columns: ``g`` (int64 group code 0..m-1, rows in group order), ``x1``,
``x2`` (float64, standard normal), ``y`` (int64 for binomial/poisson, float64 for gaussian).
"""
from __future__ import annotations

import dataclasses
import itertools
import zlib

import numpy as np
import pandas as pd

FAMILIES = ("binomial", "poisson", "gaussian")
QS = (1, 2, 3)
LAYOUTS = ("balanced", "skewed")
# size label -> (rows, groups)
SIZES = {
    "13k": (13_700, 218),
    "100k": (100_000, 5_000),
    "1M": (1_000_000, 50_000),
    "10M": (10_000_000, 1_000_000),
}
BASE_SEED = 20240611
SKEW_SIGMA = 1.0  # sd of log group size in the skewed layout

# True parameters. beta = (intercept, x1, x2); sd = random-effect sds for (1, x1, x2);
# corr = the full 3x3 random-effects correlation (its leading q x q block is used).
_CORR_GLMM = np.array([[1.0, -0.83, 0.20], [-0.83, 1.0, -0.10], [0.20, -0.10, 1.0]])
_CORR_LMM = np.array([[1.0, -0.40, 0.20], [-0.40, 1.0, -0.10], [0.20, -0.10, 1.0]])
TRUTH = {
    # Bernoulli: intercept 1.5, slope -0.3, sd(intercept) 0.5, sd(slope) 0.18, corr -0.83
    "binomial": dict(beta=(1.5, -0.3, 0.2), sd=(0.5, 0.18, 0.12), corr=_CORR_GLMM),
    # Poisson: intercept 1 (mean count about e)
    "poisson": dict(beta=(1.0, 0.25, -0.15), sd=(0.4, 0.15, 0.10), corr=_CORR_GLMM),
    # Gaussian: residual sigma 1
    "gaussian": dict(beta=(2.0, 0.5, -0.3), sd=(0.8, 0.3, 0.2), corr=_CORR_LMM, sigma=1.0),
}
RANDOM_TERMS = {1: "(1 | g)", 2: "(x1 | g)", 3: "(x1 + x2 | g)"}


@dataclasses.dataclass(frozen=True)
class Problem:
    family: str
    q: int
    size: str
    layout: str

    @property
    def id(self) -> str:
        return f"{self.family}-q{self.q}-{self.size}-{self.layout}"

    @property
    def rows(self) -> int:
        return SIZES[self.size][0]

    @property
    def groups(self) -> int:
        return SIZES[self.size][1]

    @property
    def formula(self) -> str:
        return f"y ~ x1 + x2 + {RANDOM_TERMS[self.q]}"

    @property
    def fit_kwargs(self) -> dict:
        method = "ML" if self.family == "gaussian" else "laplace"
        return dict(family=self.family, method=method)

    @property
    def seed(self) -> int:
        return (BASE_SEED + zlib.crc32(self.id.encode())) % 2**32

    def to_dict(self) -> dict:
        return dict(id=self.id, family=self.family, q=self.q, size=self.size, layout=self.layout,
                    rows=self.rows, groups=self.groups, formula=self.formula, fit_kwargs=self.fit_kwargs)


def all_problems(sizes=None, families=None, qs=None, layouts=None) -> list[Problem]:
    """The problems in the cross product of the selections (all values where None), smallest first."""
    sizes = list(SIZES) if sizes is None else list(sizes)
    families = list(FAMILIES) if families is None else list(families)
    qs = list(QS) if qs is None else [int(q) for q in qs]
    layouts = list(LAYOUTS) if layouts is None else list(layouts)
    for name, values, allowed in (("size", sizes, SIZES), ("family", families, FAMILIES),
                                  ("q", qs, QS), ("layout", layouts, LAYOUTS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {bad}; choose from {list(allowed)}")
    return [Problem(f, q, s, l) for s, f, q, l in itertools.product(sizes, families, qs, layouts)]


def group_sizes(rows: int, groups: int, layout: str, rng: np.random.Generator) -> np.ndarray:
    """Rows per group (int64, sums to ``rows``, every entry >= 1)."""
    if rows < groups:
        raise ValueError("need at least one row per group")
    if layout == "balanced":
        sizes = np.full(groups, rows // groups, dtype=np.int64)
        sizes[: rows % groups] += 1
        return sizes
    if layout != "skewed":
        raise ValueError(f"unknown layout {layout!r}")
    # Heavy-tailed weights; one row per group is guaranteed, the remaining rows are shared
    # in proportion to the weights by largest remainder so the total is exact.
    w = rng.lognormal(0.0, SKEW_SIGMA, groups)
    extra = rows - groups
    raw = w / w.sum() * extra
    base = np.floor(raw).astype(np.int64)
    short = extra - int(base.sum())
    if short:
        frac = raw - base
        base[np.argpartition(-frac, short - 1)[:short]] += 1
    return base + 1


def _random_effects(family: str, q: int, groups: int, rng: np.random.Generator) -> np.ndarray:
    t = TRUTH[family]
    sd = np.asarray(t["sd"][:q])
    cov = t["corr"][:q, :q] * np.outer(sd, sd)
    L = np.linalg.cholesky(cov)
    return rng.standard_normal((groups, q)) @ L.T


def generate(problem: Problem):
    """The problem's data. Returns ``(DataFrame, formula, fit_kwargs)``."""
    rng = np.random.default_rng(problem.seed)
    n, m, q = problem.rows, problem.groups, problem.q
    sizes = group_sizes(n, m, problem.layout, rng)
    g = np.repeat(np.arange(m, dtype=np.int64), sizes)
    x1 = np.round(rng.standard_normal(n), 6)
    x2 = np.round(rng.standard_normal(n), 6)
    t = TRUTH[problem.family]
    b0, b1, b2 = t["beta"]
    b = _random_effects(problem.family, q, m, rng)
    eta = b0 + b1 * x1 + b2 * x2 + b[g, 0]
    if q >= 2:
        eta += b[g, 1] * x1
    if q >= 3:
        eta += b[g, 2] * x2
    if problem.family == "binomial":
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    elif problem.family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(np.int64)
    else:
        y = np.round(eta + t["sigma"] * rng.standard_normal(n), 6)
    df = pd.DataFrame({"g": g, "x1": x1, "x2": x2, "y": y})
    return df, problem.formula, problem.fit_kwargs


def get(problem_id: str) -> Problem:
    """Problem from its id, e.g. ``binomial-q2-13k-balanced``."""
    try:
        family, q, size, layout = problem_id.split("-")
        return Problem(family, int(q.lstrip("q")), size, layout)
    except ValueError:
        raise ValueError(f"bad problem id {problem_id!r}; expected FAMILY-qN-SIZE-LAYOUT, "
                         "e.g. binomial-q2-13k-balanced") from None


if __name__ == "__main__":
    import time

    for p in all_problems(families=["binomial"], qs=[2]):
        t0 = time.perf_counter()
        df, formula, kw = generate(p)
        c = df.groupby("g").size()
        print(f"{p.id:<28} {len(df):>10,} rows {df.g.nunique():>9,} groups  sizes {c.min()}..{c.max()} "
              f"mean(y)={df.y.mean():.3f}  {time.perf_counter() - t0:.2f}s  {formula} {kw}")
