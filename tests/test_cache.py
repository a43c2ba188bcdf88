"""The persistent compilation cache: on by default in the user's cache folder, a later
process reuses the compiled fit, JAXMM_NO_CACHE=1 and --no-cache turn it off, and a folder
that cannot be written leaves it off with no error."""
import os
import subprocess
import sys
import warnings

import jax
import pytest

import jaxmm
from jaxmm import _cache
from jaxmm.errors import ArgumentError

FIT = ("import jax, jaxmm; r = jaxmm.fit_example('cbpp'); "
       "print(jax.config.jax_compilation_cache_dir, repr(r.loglik))")


def _env(**values):
    env = {k: v for k, v in os.environ.items() if k not in ("JAXMM_CACHE_DIR", "JAXMM_NO_CACHE")}
    env.update(values)
    return env


def _run(code, env):
    return subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], env=env, capture_output=True,
                          text=True, check=True)


def test_cache_is_on_by_default_written_and_reused(tmp_path):
    env = _env(XDG_CACHE_HOME=str(tmp_path))
    folder = tmp_path / "jaxmm" / "xla"
    first = _run(FIT, env)
    assert first.stdout.split()[0] == str(folder)
    files = sorted(p.name for p in folder.iterdir())
    assert files, "no compiled program was written to the cache"
    second = _run(FIT, env)
    assert second.stdout == first.stdout
    # the second process found everything it needed: nothing new was compiled and stored
    assert sorted(p.name for p in folder.iterdir()) == files


def test_the_cache_is_turned_off_by_the_environment_the_cli_or_an_unwritable_folder(tmp_path, capsys, monkeypatch):
    """What ``import jaxmm`` does (``_cache.enable_by_default``), run here with the environment
    a process would have, and the CLI's --no-cache."""
    from jaxmm._cli import main

    saved = jax.config.jax_compilation_cache_dir
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    try:
        monkeypatch.setenv("JAXMM_CACHE_DIR", str(tmp_path / "xla"))
        monkeypatch.setenv("JAXMM_NO_CACHE", "1")
        assert _cache.enable_by_default() is None and not (tmp_path / "xla").exists()
        monkeypatch.delenv("JAXMM_NO_CACHE")
        monkeypatch.setenv("JAXMM_CACHE_DIR", str(blocker / "xla"))  # a folder inside a file cannot be made
        jax.config.update("jax_compilation_cache_dir", None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _cache.enable_by_default() is None
        assert jax.config.jax_compilation_cache_dir is None
        with pytest.raises(ArgumentError, match="cannot be created or written"):
            jaxmm.enable_compilation_cache(blocker / "xla")
        jax.config.update("jax_compilation_cache_dir", saved)
        assert main(["example", "--no-cache"]) == 0  # lists the examples, with the cache off
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", saved)
    assert "cbpp" in capsys.readouterr().out


def test_jax_warnings_about_unwritten_entries_are_silenced(tmp_path):
    saved = jax.config.jax_compilation_cache_dir
    try:
        assert jaxmm.enable_compilation_cache(tmp_path / "xla") == tmp_path / "xla"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _cache._use(tmp_path / "xla")  # the filter jaxmm installs, first in the list
            warnings.warn("Error writing persistent compilation cache entry for 'jit_fit': OSError: no space")
    finally:
        jax.config.update("jax_compilation_cache_dir", saved)
