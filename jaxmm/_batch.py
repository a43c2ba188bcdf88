"""The result of many fits made in one call (``fit(..., by=column)``)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from ._results import MixedModelResult


class ByKeys:
    """A mapping of the ``by`` column's values (``keys``) to replicates: its length,
    iteration over the keys, and a key's position (a KeyError naming the column if absent)."""

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(self.keys)

    def _position(self, key) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"{key!r} is not a value of the by column {self.by!r}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class BatchResult(ByKeys):
    """One fitted model per value of the ``by`` column, all fitted in one compiled, vmapped call
    (``fit(..., by=column)`` with one random-effect term).

    Estimates are indexed by the ``by`` values; ``result[value]`` gives one replicate's full
    ``MixedModelResult``; ``len``, iteration and ``in`` go over the values. A replicate
    that did not converge is flagged in ``converged`` (with the reason in ``message``) and
    leaves the others as they are.

    Attributes
    ----------
    by : str
        The column.
    keys : tuple
        Its values, in the order of the rows of every estimate.
    formula, family, method : str
        The model as fitted.
    fixef_names, re_names : tuple of str
        The fixed and random effects' names.
    arrays : dict
        The fits' raw outputs, each with a leading replicate axis.
    converged_array, singular_array : numpy.ndarray
        (R,) flags.
    messages : tuple of str
        Why each replicate's optimiser stopped.
    n_obs_array : numpy.ndarray
        Rows per replicate.
    n_dropped : int
        Rows dropped for missing values before splitting.
    dispersion_name : str or None
        ``"sigma"``, ``"nb_size"`` or None (no dispersion).
    single : callable
        Builds one replicate's result (what ``result[value]`` calls, once per value).
    n_devices : int
        Devices the replicates were split over.

    Examples
    --------
    >>> import jaxmm, pandas as pd
    >>> data = jaxmm.load_example("sleepstudy")
    >>> sims = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data).simulate(3, seed=1)
    >>> stacked = pd.concat([data.assign(Reaction=sims[c], rep=c) for c in sims])
    >>> batch = jaxmm.fit("Reaction ~ Days + (Days | Subject)", stacked, by="rep")
    >>> batch
    <BatchResult: 3 fits of 'Reaction ~ Days + (Days | Subject)' (gaussian, REML) by 'rep'; 3 converged, 0 singular>
    >>> batch["sim_2"].fixef.round(2)
    (Intercept)    256.40
    Days             7.89
    Name: estimate, dtype: float64
    """

    by: str
    keys: tuple
    formula: str
    family: str
    method: str
    fixef_names: tuple
    re_names: tuple
    arrays: dict                    # engine output, host arrays with a leading replicate axis
    converged_array: np.ndarray     # (R,) bool
    messages: tuple                 # (R,) str
    singular_array: np.ndarray      # (R,) bool
    n_obs_array: np.ndarray         # (R,) rows per replicate
    n_dropped: int                  # rows dropped for missing values before splitting
    dispersion_name: str | None     # "sigma", "nb_size" (negative binomial) or None (no dispersion)
    single: Callable[[int], MixedModelResult] = dataclasses.field(repr=False)
    n_devices: int = 1
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        for arr in self.arrays.values():
            arr.flags.writeable = False

    def __getitem__(self, key) -> MixedModelResult:
        r = self._position(key)
        if r not in self._cache:
            self._cache[r] = self.single(r)
        return self._cache[r]

    def _index(self) -> pd.Index:
        return pd.Index(list(self.keys), name=self.by)

    def _series(self, values, name) -> pd.Series:
        return pd.Series(np.asarray(values), index=self._index(), name=name)

    @property
    def theta(self):
        """Not an attribute: the negative binomial's size is ``nb_size`` (lme4's theta)."""
        raise AttributeError("the negative binomial's dispersion is nb_size (lme4's theta)")

    @property
    def fixef(self) -> pd.DataFrame:
        """Every replicate's fixed effects, one row per ``by`` value.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").fixef.round(2)
              (Intercept)   Days
        half
        0          255.13   8.25
        1          249.00  10.91
        """
        return pd.DataFrame(self.arrays["beta"], index=self._index(), columns=list(self.fixef_names))

    @property
    def D(self) -> np.ndarray:
        """Every replicate's random-effects covariance, (R, q, q).

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").D[0].round(1)
        array([[767. , -51.5],
               [-51.5,  81.2]])
        """
        chol = self.arrays["chol"]
        D = chol @ np.swapaxes(chol, -1, -2)
        D.flags.writeable = False
        return D

    @property
    def sigma(self) -> pd.Series:
        """Every replicate's residual SD (gaussian) or the family's dispersion; NaN for families
        without one.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").sigma.round(2).tolist()
        [14.93, 29.2]
        """
        values = self.arrays["dispersion"] if self.dispersion_name == "sigma" else np.full(len(self), np.nan)
        return self._series(values, "sigma")

    @property
    def nb_size(self) -> pd.Series:
        """Every replicate's negative binomial size (lme4's theta); NaN for other families.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").nb_size.isna().all().item()
        True
        """
        values = self.arrays["dispersion"] if self.dispersion_name == "nb_size" else np.full(len(self), np.nan)
        return self._series(values, "nb_size")

    @property
    def loglik(self) -> pd.Series:
        """Every replicate's maximised log-likelihood (REML criterion for REML fits).

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").loglik.round(2).tolist()
        [-405.31, -452.8]
        """
        return self._series(self.arrays["loglik"], "loglik")

    @property
    def converged(self) -> pd.Series:
        """Whether each replicate converged (as ``MixedModelResult.converged``).

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").converged.tolist()
        [True, True]
        """
        return self._series(self.converged_array, "converged")

    @property
    def message(self) -> pd.Series:
        """Why each replicate's optimiser stopped.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").message.iloc[0]
        'converged: Newton decrement below tolerance at a positive-definite Hessian'
        """
        return self._series(np.array(self.messages, dtype=object), "message")

    @property
    def singular(self) -> pd.Series:
        """Whether each replicate is a boundary (singular) fit, lme4's rule.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").singular.tolist()
        [False, False]
        """
        return self._series(self.singular_array, "singular")

    @property
    def n_iter(self) -> pd.Series:
        """Every replicate's optimiser iterations.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> bool((jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half").n_iter > 0).all())
        True
        """
        return self._series(self.arrays["n_iter"], "n_iter")

    @property
    def n_eval(self) -> pd.Series:
        """Every replicate's objective evaluations (lme4's ``feval``).

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> batch = jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half")
        >>> bool((batch.n_eval >= batch.n_iter).all())
        True
        """
        return self._series(self.arrays["n_eval"], "n_eval")

    def to_frame(self) -> pd.DataFrame:
        """Every replicate's estimates in one table.

        Returns
        -------
        pandas.DataFrame
            One row per replicate: fixed effects, random-effect SDs (``sd_<name>``) and
            correlations (``cor_<a>_<b>``), the dispersion, loglik and converged.

        Examples
        --------
        >>> import jaxmm
        >>> data = jaxmm.load_example("sleepstudy")
        >>> halves = data.assign(half=data["Days"] // 5)  # each subject's days 0-4 and 5-9
        >>> batch = jaxmm.fit("Reaction ~ Days + (Days | Subject)", halves, by="half")
        >>> batch.to_frame()[["sd_(Intercept)", "sd_Days"]].round(2)
              sd_(Intercept)  sd_Days
        half
        0              27.69     9.01
        1              50.58     6.24
        """
        from ._inference import variance_parameters

        frame = self.fixef
        labels, values = variance_parameters(self.D, self.re_names)
        for k, label in enumerate(labels):
            frame[label] = values[:, k]
        if self.dispersion_name:
            frame[self.dispersion_name] = getattr(self, self.dispersion_name)
        frame["loglik"] = self.loglik
        frame["converged"] = self.converged
        return frame

    def __repr__(self) -> str:
        return (f"<BatchResult: {len(self)} fits of {self.formula!r} ({self.family}, {self.method}) by "
                f"{self.by!r}; {int(self.converged_array.sum())} converged, {int(self.singular_array.sum())} singular>")
