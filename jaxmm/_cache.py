"""Opt-in persistent compilation cache, so a new Python process does not recompile fits."""
from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled fits on disk and reuse them in later processes.

    A fit compiles in a few seconds the first time a model shape is seen; with the cache a
    new process loads the compiled program instead. The cache is JAX's own
    (``jax_compilation_cache_dir``), so it also serves the caller's other jitted code.
    The default location is ``$JAXMM_CACHE_DIR`` or ``~/.cache/jaxmm/xla``.
    """
    if path is None:
        path = os.environ.get("JAXMM_CACHE_DIR") or Path.home() / ".cache" / "jaxmm" / "xla"
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Only programs that take a while to compile are worth a file on disk.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path
