"""Several JAX processes joined by jax.distributed on one host fit one model as one process
does (examples/multihost.py). Its own module, so that pytest-xdist (one worker per module)
runs it beside test_sharding's subprocess rather than after it."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_four_processes_reading_their_own_groups_agree_with_one():
    # examples/multihost.py 4: 4 processes joined by jax.distributed.initialize on localhost
    # (2 CPU devices each) fit over all 8 devices, each reading only its own groups of a
    # partitioned dataset and of a plain Parquet file (a text factor's levels agreed between
    # them, one level in one process's rows only; poly's and scale's state summed over their
    # rows), streamed into their designs; and a two-term model, a GLMM from the plain file
    # and an LMM from the partitioned dataset, each process reading its own rows (their cells
    # merged, their statistics summed). It exits non-zero unless every fit agrees with a
    # single-process fit within 1e-8 (every term's random effects included), each fit's
    # processes' rows add up to the table with none holding half (read from the plain file,
    # their fitted values keep its row numbers, one-term and two-term), and a bad response in one
    # process's rows is raised by all of them (for one term and for two; and a two-term model
    # whose numeric C() column takes a value in one share only, named as such). From one process's
    # share of the LMM, Satterthwaite's df equal one process's, and a parametric bootstrap
    # (each process simulating its own rows, every refit summing the statistics) gives every
    # process the same replicates.
    script = Path(__file__).parent.parent / "examples" / "multihost.py"
    proc = subprocess.run([sys.executable, str(script), "4"], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("2 local of 8 devices") == 4 and "-> agree" in proc.stdout
    shares = [int(n) for n in re.findall(r"read (\d+) and \d+ of 3181 rows", proc.stdout)]
    assert len(shares) == 4 and sum(shares) == 3181 and max(shares) < 3181 / 2
