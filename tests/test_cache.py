"""The opt-in persistent compilation cache: a later process reuses the compiled fit."""
import os
import subprocess
import sys


def test_cache_is_written_and_reused(tmp_path):
    env = dict(os.environ, JAXMM_CACHE_DIR=str(tmp_path / "xla"))
    code = "import jaxmm; r = jaxmm.fit_example('cbpp'); print(repr(r.loglik))"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    files = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert files, "no compiled program was written to the cache"
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert second.stdout == first.stdout
    # the second process found everything it needed: nothing new was compiled and stored
    assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == files
