"""Exceptions raised by jaxmm.

Every input problem raises a subclass of :class:`JaxmmError`, which is itself a
``ValueError`` so that generic handlers keep working.
"""


class JaxmmError(ValueError):
    """Base class for every error jaxmm raises about its inputs."""


class FormulaError(JaxmmError):
    """The formula cannot be parsed or does not describe a supported model."""


class DataError(JaxmmError):
    """A column is missing, has the wrong type, or holds values the model cannot use."""


class ArgumentError(JaxmmError):
    """An argument (family, link, method, ...) has an invalid value."""


class JaxmmWarning(UserWarning):
    """Something about the fit the user should know, e.g. dropped aliased columns."""


class ConvergenceWarning(JaxmmWarning):
    """The fit did not converge (``res.converged`` is False); ``res.message`` says why."""


class SingularFitWarning(JaxmmWarning):
    """The estimate lies on the boundary: a random-effect variance is zero (``res.singular``)."""


__all__ = ["JaxmmError", "FormulaError", "DataError", "ArgumentError", "JaxmmWarning", "ConvergenceWarning",
           "SingularFitWarning"]
