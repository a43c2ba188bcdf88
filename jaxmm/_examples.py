"""Datasets shipped with jaxmm, each with the model it is usually fitted with.

sleepstudy, cbpp and grouseticks come from R's lme4, contraception from mlmRev; seedlike is
simulated with the shape of the accuracy-vs-intelligence example (218 subjects, ~13k
Bernoulli trials, correlated random intercept and slope).
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

from .errors import ArgumentError

EXAMPLES: dict[str, tuple[str, str, dict]] = {
    "sleepstudy": ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", {}),
    "cbpp": ("cbpp.csv", "incidence ~ C(period) + (1 | herd)", {"family": "binomial", "trials": "size"}),
    "grouseticks": ("grouseticks.csv", "TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", {"family": "poisson"}),
    # several random-effect terms: broods nested in locations (lme4's grouseticks model less INDEX)
    "grouseticks_terms": ("grouseticks.csv", "TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
                          {"family": "poisson"}),
    "contraception": ("contraception.csv", "use01 ~ age + age2 + urban01 + C(livch) + (urban01 | district)",
                      {"family": "binomial"}),
    "seedlike": ("seedlike.csv", "y ~ x + (x | subject)", {"family": "binomial"}),
}


def _check(name: str) -> None:
    if name not in EXAMPLES:
        raise ArgumentError(f"unknown example {name!r}; choose one of {sorted(EXAMPLES)}")


def load_example(name: str) -> pd.DataFrame:
    """The data of a shipped example (sleepstudy, cbpp, grouseticks, contraception, seedlike).

    Parameters
    ----------
    name : str
        The example's name.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> import jaxmm
    >>> jaxmm.load_example("cbpp").shape
    (56, 5)
    """
    _check(name)
    with resources.files("jaxmm").joinpath("data", EXAMPLES[name][0]).open("r") as fh:
        return pd.read_csv(fh)


def example_model(name: str) -> tuple[str, dict]:
    """The model a shipped example is usually fitted with.

    Parameters
    ----------
    name : str
        The example's name.

    Returns
    -------
    tuple
        (formula, keyword arguments for ``fit``).

    Examples
    --------
    >>> import jaxmm
    >>> jaxmm.example_model("cbpp")
    ('incidence ~ C(period) + (1 | herd)', {'family': 'binomial', 'trials': 'size'})
    """
    _check(name)
    _, formula, kwargs = EXAMPLES[name]
    return formula, dict(kwargs)


def fit_example(name: str):
    """Fit a shipped example with its usual model (what ``jaxmm example NAME`` prints).

    Parameters
    ----------
    name : str
        The example's name.

    Returns
    -------
    MixedModelResult or CrossedResult

    Examples
    --------
    >>> import jaxmm
    >>> round(jaxmm.fit_example("sleepstudy").loglik, 3)
    -871.814
    """
    from ._fit import fit

    formula, kwargs = example_model(name)
    return fit(formula, load_example(name), **kwargs)
