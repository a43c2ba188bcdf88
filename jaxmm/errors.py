"""Exceptions raised by jaxmm.

Every input problem raises a subclass of ``JaxmmError``, which is itself a
``ValueError`` so that generic handlers keep working.
"""


class JaxmmError(ValueError):
    """Base class for every error jaxmm raises about its inputs (a ``ValueError``).

    Examples
    --------
    >>> import jaxmm
    >>> issubclass(jaxmm.errors.DataError, jaxmm.errors.JaxmmError), issubclass(jaxmm.errors.JaxmmError, ValueError)
    (True, True)
    """


class FormulaError(JaxmmError):
    """The formula cannot be parsed or does not describe a supported model; formulas may call
    only an allow-list of functions, so no formula runs code.

    Examples
    --------
    >>> import jaxmm
    >>> try:
    ...     jaxmm.fit("incidence ~ __import__('os') + (1 | herd)", jaxmm.load_example("cbpp"))
    ... except jaxmm.errors.FormulaError as err:
    ...     print(str(err)[:46])
    formula term not allowed: the call __import__(
    """


class DataError(JaxmmError):
    """A column is missing, has the wrong type, or holds values the model cannot use.

    Examples
    --------
    >>> import jaxmm
    >>> try:
    ...     jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"),
    ...               family="binomial", trials="sizes")
    ... except jaxmm.errors.DataError as err:
    ...     print(err)
    trials column 'sizes' is not in the data (columns: ['herd', 'incidence', 'size', 'period', 'failures'])
    """


class ArgumentError(JaxmmError):
    """An argument (family, link, method, ...) has an invalid value.

    Examples
    --------
    >>> import jaxmm
    >>> try:
    ...     jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"),
    ...               family="binomial", link="log")
    ... except jaxmm.errors.ArgumentError as err:
    ...     print(err)
    unknown link 'log' for family 'binomial'; choose one of ['logit', 'probit', 'cloglog']
    """


class JaxmmWarning(UserWarning):
    """Something about the fit the user should know, e.g. dropped aliased columns; the base of
    jaxmm's warnings.

    Examples
    --------
    >>> import jaxmm, warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", jaxmm.errors.JaxmmWarning)
    ...     res = jaxmm.fit_example("sleepstudy")
    """


class ConvergenceWarning(JaxmmWarning):
    """The fit did not converge (``res.converged`` is False); ``res.message`` says why.

    Examples
    --------
    >>> import jaxmm, warnings, pandas as pd
    >>> data = pd.DataFrame({"y": [0, 0, 0, 1, 1, 1] * 5, "x": [0, 0, 0, 1, 1, 1] * 5,
    ...                      "g": [g for g in "abcde" for _ in range(6)]})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = jaxmm.fit("y ~ x + (1 | g)", data, family="binomial")
    >>> type(caught[0].message).__name__, res.status.name
    ('ConvergenceWarning', 'SEPARATED')
    """


class SingularFitWarning(JaxmmWarning):
    """The estimate lies on the boundary: a random-effect variance is zero or a correlation ±1
    (``res.singular``).

    Examples
    --------
    >>> import jaxmm, warnings
    >>> data = jaxmm.load_example("grouseticks")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = jaxmm.fit("TICKS ~ cHEIGHT + (1 | BROOD) + (1 | LOCATION)", data, family="poisson")
    >>> type(caught[0].message).__name__, res.singular
    ('SingularFitWarning', True)
    """


__all__ = ["JaxmmError", "FormulaError", "DataError", "ArgumentError", "JaxmmWarning", "ConvergenceWarning",
           "SingularFitWarning"]
