"""The persistent compilation cache, on by default: a new Python process loads the programs
that earlier ones compiled instead of compiling them again.

It is JAX's own cache (``jax_compilation_cache_dir``), so it also serves the caller's other
jitted code. ``import jaxmm`` turns it on in the user's cache folder (``JAXMM_CACHE_DIR``,
else ``$XDG_CACHE_HOME/jaxmm/xla``, ``~/.cache/jaxmm/xla``; ``~/Library/Caches/jaxmm/xla`` on
macOS, ``%LOCALAPPDATA%\\jaxmm\\xla`` on Windows) unless ``JAXMM_NO_CACHE=1``; a folder that
cannot be written leaves it off, with no error, and a full disk costs only the files not
written (JAX's warning about each is silenced). ``disable_compilation_cache()`` turns it off.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import jax

from .errors import ArgumentError

# JAX warns once per program it cannot write or read back (a full disk, a file being
# replaced by another process): the program is then compiled, as without a cache.
_JAX_CACHE_IO = r"Error (writing|reading) persistent compilation cache entry"


def default_cache_dir() -> Path:
    """Where the cache lives unless a folder is given (see the module docstring)."""
    if os.environ.get("JAXMM_CACHE_DIR"):
        return Path(os.environ["JAXMM_CACHE_DIR"]).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxmm" / "xla"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            return True
    except OSError:
        return False


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled fits on disk and reuse them in later processes (on by default; this
    chooses another folder, or turns the cache back on after
    ``disable_compilation_cache``).

    A fit compiles in a second or two the first time a model shape is seen; with the cache a
    new process loads the compiled program instead.

    Parameters
    ----------
    path : str or path, optional
        The folder (by default ``JAXMM_CACHE_DIR``, else the user's cache folder).

    Returns
    -------
    pathlib.Path
        The folder in use.

    Raises
    ------
    ArgumentError
        When ``path`` cannot be created or written.

    Examples
    --------
    >>> import jaxmm, tempfile
    >>> folder = jaxmm.enable_compilation_cache(tempfile.mkdtemp())
    >>> folder.is_dir()
    True
    >>> jaxmm.disable_compilation_cache()
    """
    path = default_cache_dir() if path is None else Path(path).expanduser()
    if not _writable(path):
        raise ArgumentError(f"the compilation cache folder {str(path)!r} cannot be created or written")
    _use(path)
    return path


def _use(path: Path) -> None:
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Only programs that take a while to compile are worth a file on disk.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    warnings.filterwarnings("ignore", message=_JAX_CACHE_IO)


def disable_compilation_cache() -> None:
    """Compile every program afresh in this process and write nothing to disk.

    Returns
    -------
    None

    Examples
    --------
    >>> import jaxmm
    >>> jaxmm.disable_compilation_cache()
    """
    jax.config.update("jax_compilation_cache_dir", None)


def enable_by_default() -> Path | None:
    """What ``import jaxmm`` does: the cache in :func:`default_cache_dir`, unless
    ``JAXMM_NO_CACHE`` is set (to anything but "" or "0") or the folder cannot be written."""
    if os.environ.get("JAXMM_NO_CACHE", "") not in ("", "0"):
        return None
    path = default_cache_dir()
    if not _writable(path):
        return None
    _use(path)
    return path
