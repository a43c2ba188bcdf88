"""The result of ``fit(..., by=column)`` for a model with several random-effect terms: one
:class:`CrossedResult` per value of the column."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ._batch import ByKeys
from ._crossed_result import CrossedResult


@dataclasses.dataclass(frozen=True, eq=False)
class CrossedBatchResult(ByKeys):
    """One fit per value of the ``by`` column of a model with several random-effect terms
    (``fit(..., by=column)``), fitted one after another, those of one shape through one
    compiled program.

    ``result[value]`` is one replicate's ``CrossedResult``; ``len``, iteration and
    ``in`` go over the values. A replicate that did not converge is flagged in ``converged``
    (the reason in ``message``).

    Attributes
    ----------
    by : str
        The column.
    keys : tuple
        Its values.
    formula : str
        The model.
    results : tuple of CrossedResult
        The fits, in the order of ``keys``.
    n_dropped : int
        Rows dropped for missing values before splitting.

    Examples
    --------
    >>> import jaxmm, pandas as pd
    >>> data = jaxmm.load_example("sleepstudy")
    >>> sims = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data).simulate(3, seed=1)
    >>> stacked = pd.concat([data.assign(Reaction=sims[c], rep=c) for c in sims])
    >>> jaxmm.fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", stacked, by="rep")
    <CrossedBatchResult: 3 fits of 'Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)' by 'rep'; 3 converged, 0 singular>
    """

    by: str
    keys: tuple
    formula: str
    results: tuple = dataclasses.field(repr=False)
    n_dropped: int = 0

    def __getitem__(self, key) -> CrossedResult:
        return self.results[self._position(key)]

    def _index(self) -> pd.Index:
        return pd.Index(list(self.keys), name=self.by)

    def _per_replicate(name: str):
        """A Series of every replicate's ``name`` (``loglik``, ``converged`` ...)."""
        doc = f"""Every replicate's ``{name}`` (as ``CrossedResult``'s), indexed by the ``by`` values.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> cb = jaxmm.fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", halves, by="half")
        >>> cb.{name}.index.tolist()
        [0, 1]
        """
        return property(lambda self: pd.Series([getattr(r, name) for r in self.results], index=self._index(),
                                               name=name), doc=doc)

    @property
    def fixef(self) -> pd.DataFrame:
        """Every replicate's fixed effects, one row per ``by`` value.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> cb = jaxmm.fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", halves, by="half")
        >>> cb.fixef.round(2)
              (Intercept)   Days
        half
        0          255.13   8.25
        1          249.00  10.91
        """
        return pd.DataFrame([r.fixef for r in self.results], index=self._index())

    loglik = _per_replicate("loglik")
    converged = _per_replicate("converged")
    message = _per_replicate("message")
    singular = _per_replicate("singular")
    n_eval = _per_replicate("n_eval")
    del _per_replicate

    def to_frame(self) -> pd.DataFrame:
        """Every replicate's estimates in one table.

        Returns
        -------
        pandas.DataFrame
            One row per replicate: the fixed effects, every term's SDs and correlations (the rows
            of ``confint``), the dispersion where the family has one, loglik and converged.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> cb = jaxmm.fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", halves, by="half")
        >>> cb.to_frame()[["sd_(Intercept)|Subject", "sd_Days|Subject", "loglik"]].round(2)
              sd_(Intercept)|Subject  sd_Days|Subject  loglik
        half
        0                      26.81             8.69 -405.56
        1                      39.42             4.54 -452.92
        """
        from ._crossed_refit import parameter_names, term_parameters

        frame = self.fixef
        names, per_term = parameter_names(self.results[0])
        for k, labels in enumerate(per_term):
            values = np.stack([term_parameters(r.terms[k], r.chols[k] @ r.chols[k].T)[1] for r in self.results])
            for j, label in enumerate(labels):
                frame[label] = values[:, j]
        if self.results[0].sigma is not None:
            frame[names[-1]] = [r.sigma for r in self.results]
        frame["loglik"] = self.loglik
        frame["converged"] = self.converged
        return frame

    def __repr__(self) -> str:
        return (f"<CrossedBatchResult: {len(self)} fits of {self.formula!r} by {self.by!r}; "
                f"{int(self.converged.sum())} converged, {int(self.singular.sum())} singular>")
