"""Shared fixtures. Fits are compiled once per session and shared between test modules."""
import gc
import json
import os
import warnings
from pathlib import Path

# pytest-xdist's workers (pyproject's addopts) share a GPU where there is one: JAX's default
# of taking 75 % of its memory up front would leave the others none. Set before any backend starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np
import pandas as pd
import pytest

import jaxmm  # also switches float64 on

jax.config.update("jax_enable_x64", True)
# Silent broadcasting between arrays of different rank hides shape bugs; make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

DATA = Path(__file__).parent / "data"
REFERENCE_CASES = sorted(p.stem for p in DATA.glob("*.json"))


def load_reference(name):
    ref = json.loads((DATA / f"{name}.json").read_text())
    data = pd.read_csv(DATA / f"{name}.csv")
    return ref, data


def fit_kwargs(ref):
    kw = {"family": ref["family"], "method": ref["method"]}
    for key in ("trials", "link"):
        if ref.get(key):
            kw[key] = ref[key]
    return kw


def central_differences(f, x, steps, richardson: bool = False):
    """Derivatives of f along each coordinate of x, by central differences with step
    ``steps[k]`` (or one step for all): (f(x + h eₖ) − f(x − h eₖ)) / 2h, row k of the result
    (f may return an array). ``richardson``: (4 D(h/2) − D(h)) / 3, which cancels the h² term.
    f is called with float64 numpy arrays."""
    x = np.asarray(x, dtype=float)
    steps = np.broadcast_to(np.asarray(steps, dtype=float), x.shape)

    def along(k, h):
        e = np.zeros_like(x)
        e[k] = h
        return (np.asarray(f(x + e), dtype=float) - np.asarray(f(x - e), dtype=float)) / (2 * h)

    return np.stack([(4.0 * along(k, h / 2) - along(k, h)) / 3.0 if richardson else along(k, h)
                     for k, h in enumerate(steps)])


def second_differences(f, x, rel=1e-3):
    """The diagonal of a scalar f's Hessian, roughly: (f(x + h) − 2 f(x) + f(x − h)) / h² per
    coordinate, h = rel·(1 + |xₖ|)."""
    x = np.asarray(x, dtype=float)
    f0, out = f(x), np.zeros_like(x)
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = rel * (1.0 + abs(x[k]))
        out[k] = (f(x + e) - 2.0 * f0 + f(x - e)) / e[k] ** 2
    return out


def small_jit(fun, **kwargs):
    """``jax.jit`` with the compiler options jaxmm gives a program over a few rows
    (``_jit``: on the CPU, the elemental emitters at LLVM's level 0). The tests' own
    programs (objectives, gradients, finite differences) run on small data: compiled as
    jaxmm compiles such data, and in about half the time."""
    from jaxmm import _jit

    backend = jax.default_backend()
    cpu = backend == "cpu"
    options = _jit.accepted_options(backend, _jit.compiled._options((backend, cpu, cpu)))
    return jax.jit(fun, compiler_options=options, **kwargs)


def bit_reproducible() -> bool:
    """Whether two fits of the same numbers in one order give the same bits. A GPU's
    scatter-adds (the per-group sums) add in arrival order unless XLA is told otherwise
    (docs/devices.md, "GPU"), so there they agree to rounding only."""
    return jax.default_backend() == "cpu" or "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", "")


def assert_same(actual, desired):
    """Equal where the backend is bit-reproducible, else equal to rounding (1e-8 relative;
    a GPU gave 2e-11 on ranef)."""
    if bit_reproducible():
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(desired))
    else:
        np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=1e-8, atol=1e-12)


_FITS = {}
FIT_WARNINGS = {}  # jaxmm warnings raised while fitting each reference case


@pytest.fixture(scope="session")
def reference_fit():
    """reference_fit(name) -> (ref, data, result); each case is fitted once per session."""

    def get(name):
        if name not in _FITS:
            ref, data = load_reference(name)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = jaxmm.fit(ref["formula"], data, **fit_kwargs(ref))
            _FITS[name] = (ref, data, res)
            FIT_WARNINGS[name] = [w for w in caught if issubclass(w.category, jaxmm.errors.JaxmmWarning)]
        return _FITS[name]

    return get


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test module once the process holds many
    memory mappings.

    Every XLA:CPU executable keeps memory mappings for its code; the suite compiles
    hundreds of programs (many shapes, batched and profile fits), and one process passed
    Linux's 65530 mappings (vm.max_map_count) about three quarters of the way through, at
    which point LLVM's code allocation fails inside a compile (a segfault). Below half that,
    the programs are kept: later modules fit the same models (sleepstudy, cbpp, the
    reference cases), and a kept program skips its trace and lowering, which the disk cache
    does not. Where the mappings cannot be counted, every module drops them.
    """
    yield
    if _memory_mappings() > MAX_MAPPINGS_KEPT:
        jax.clear_caches()
        gc.collect()


MAX_MAPPINGS_KEPT = 30_000


def _memory_mappings() -> float:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return float("inf")


@pytest.fixture(scope="session", autouse=True)
def _programs_on_disk(tmp_path_factory):
    """Keep the session's compiled programs on disk (``jaxmm.enable_compilation_cache``,
    JAX's persistent compilation cache), so that a program which a later module needs
    again after :func:`_release_compiled_programs`, or which the other xdist worker has
    compiled, is loaded instead of compiled: XLA's compile is most of the suite's time, and
    the same fits (sleepstudy, cbpp, the reference cases) come back in many modules. Every
    program is kept, however short its compile (loading one takes milliseconds). The
    directory is this run's own, in pytest's temporary folder, shared by its workers: nothing
    carries over between runs."""
    saved = {name: getattr(jax.config, name) for name in
             ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    base = tmp_path_factory.getbasetemp()
    # an xdist worker's folder is popen-gwN in the run's folder
    folder = base.parent / "xla-cache" if base.name.startswith("popen-gw") else base / "xla-cache"
    jaxmm.enable_compilation_cache(folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # processes the tests start (the CLI, sharded fits) use this run's folder too, not the
    # user's cache folder, which jaxmm uses by default
    saved_env = os.environ.get("JAXMM_CACHE_DIR")
    os.environ["JAXMM_CACHE_DIR"] = str(folder)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    if saved_env is None:
        os.environ.pop("JAXMM_CACHE_DIR", None)
    else:
        os.environ["JAXMM_CACHE_DIR"] = saved_env
