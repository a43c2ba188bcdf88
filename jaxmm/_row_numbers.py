"""Row numbers in error messages. A problem found in some of the rows (a batch of a dataset, a
process's share, the rows kept after those with missing values were dropped) names the rows
of the user's data, counted from its first row, not positions in the part that was checked."""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import DataError


class At(NamedTuple):
    """Where a part's rows lie: ``start``, the position of its first row among the rows read
    (a process's share counts its own rows), and ``numbers``, their row numbers in the data
    where the rows read are not all the data's (a share)."""

    start: int
    numbers: np.ndarray | None = None

    def data_rows(self, positions) -> np.ndarray:
        """The data's row numbers of the part's rows at ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions + self.start if self.numbers is None else self.numbers[positions]


def renumbered(step, at: At, index):
    """``step()`` on a table, its DataError's "first rows: [...]" (positions in the table,
    whose ``index`` holds their positions in the part) made the data's row numbers."""
    try:
        return step()
    except DataError as exc:
        shift = lambda m: "first rows: [" + ", ".join(
            str(int(v)) for v in at.data_rows(np.asarray(index)[[int(v) for v in m.group(1).split(", ")]])) + "]"
        raise DataError(re.sub(r"first rows: \[([\d, ]+)\]", shift, str(exc))) from None


def fitted_index(n: int, kept: np.ndarray | None, numbers: list | None = None) -> pd.Index:
    """The fitted rows' numbers in the data: for a share (its batches' row ``numbers``, None
    otherwise) those numbers, else the ``kept`` rows (where some were dropped) or all ``n``."""
    if numbers is not None:
        return pd.Index(np.concatenate(numbers) if numbers else np.zeros(0, np.int64))
    return pd.RangeIndex(n) if kept is None else pd.Index(kept)
