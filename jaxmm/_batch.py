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
    """One fitted model per value of the ``by`` column, all fitted in one compiled call.

    Columns of estimates are indexed by the ``by`` values; ``result[value]`` gives the
    full :class:`MixedModelResult` of one replicate. A replicate that did not converge is
    flagged in ``converged`` (with the reason in ``message``) and leaves the others as
    they are.
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
        raise AttributeError("the negative binomial's dispersion is nb_size (lme4's theta)")

    @property
    def fixef(self) -> pd.DataFrame:
        return pd.DataFrame(self.arrays["beta"], index=self._index(), columns=list(self.fixef_names))

    @property
    def D(self) -> np.ndarray:
        """(R, q, q): the random-effects covariance of each replicate."""
        chol = self.arrays["chol"]
        D = chol @ np.swapaxes(chol, -1, -2)
        D.flags.writeable = False
        return D

    @property
    def sigma(self) -> pd.Series:
        """Residual SD (gaussian) or the family's dispersion; NaN for families without one."""
        values = self.arrays["dispersion"] if self.dispersion_name == "sigma" else np.full(len(self), np.nan)
        return self._series(values, "sigma")

    @property
    def nb_size(self) -> pd.Series:
        """The negative binomial's size (lme4's theta) per replicate; NaN for other families."""
        values = self.arrays["dispersion"] if self.dispersion_name == "nb_size" else np.full(len(self), np.nan)
        return self._series(values, "nb_size")

    @property
    def loglik(self) -> pd.Series:
        return self._series(self.arrays["loglik"], "loglik")

    @property
    def converged(self) -> pd.Series:
        return self._series(self.converged_array, "converged")

    @property
    def message(self) -> pd.Series:
        return self._series(np.array(self.messages, dtype=object), "message")

    @property
    def singular(self) -> pd.Series:
        return self._series(self.singular_array, "singular")

    @property
    def n_iter(self) -> pd.Series:
        return self._series(self.arrays["n_iter"], "n_iter")

    @property
    def n_eval(self) -> pd.Series:
        return self._series(self.arrays["n_eval"], "n_eval")

    def to_frame(self) -> pd.DataFrame:
        """One row per replicate: fixed effects, random-effect SDs (``sd_<name>``) and
        correlations (``cor_<a>_<b>``), sigma, loglik and converged."""
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
