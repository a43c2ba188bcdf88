"""``jax.jit`` with the XLA compiler options that jaxmm's programs are compiled with.

XLA's options differ between backends and between jaxlib releases: an option that one of
them does not know is an error ("No such compile option"), not a no-op (XLA:GPU, and
XLA:CPU from jaxlib 0.11, refuse ``xla_cpu_use_fusion_emitters``, which jaxlib 0.10's
XLA:CPU takes). So a program is
compiled with all its options first; where the compiler refuses one, each option is tried
once on a one-line program and the program is compiled again with those the backend takes
(probing up front would add about 70 ms to every first fit). The backend is read at call
time, so importing jaxmm starts no backend and a JAX_PLATFORMS set after the import still
counts.
"""
from __future__ import annotations

import functools
import inspect
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp

# LLVM's expensive passes buy nothing for these programs (segment sums and small unrolled
# solves): without them fits compile faster and run no slower (docs/performance.md).
#
# GPU fits are not bit-reproducible by default: XLA's scatter-add (the per-group sums)
# adds with atomics in arrival order. xla_gpu_deterministic_ops fixes the order at about
# twice the run time, so it is left to the user (docs/devices.md, "GPU").
COMPILER_OPTIONS = {"xla_llvm_disable_expensive_passes": True}

# XLA:CPU's elemental emitters compile in about half the time of its fused emitters and
# run the Laplace row passes slower; the exact LMM, which reads the rows once, runs as fast.
# So small Laplace fits and every LMM take them (_engine.ELEMENTAL_MAX_ROWS;
# docs/performance.md).
ELEMENTAL_COMPILER_OPTIONS = {**COMPILER_OPTIONS, "xla_cpu_use_fusion_emitters": False}

# LLVM's optimisation level 0 roughly halves XLA:CPU's compile and makes the compiled passes
# 1.3-3.4 times slower. A small fit's run time is its fixed costs, so "quick" programs,
# those over few rows in all (_engine.QUICK_MAX_ROWS), take it (docs/performance.md).
QUICK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}

# On a GPU, XLA would make the programs' dots Triton GEMM fusions and autotune each one,
# compiling every candidate tiling. The row and group products are written out
# (_smallmat.matmul) and the long products are sums (Kernels.products_as_sums, below), so no dot is
# left worth timing candidates for: Triton GEMM and the autotuner are off, which shortens
# the compile at no cost in GPU time (docs/performance.md, benchmarks/results/gpu.md).
GPU_COMPILER_OPTIONS = {**COMPILER_OPTIONS, "xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}


class Kernels(NamedTuple):
    """How the numeric core writes two kinds of sums: a static value that the compiled
    entry points take as their ``kernels`` argument and pass down (:class:`compiled` fills
    it in from the backend and the emitter choice, :func:`kernels_for`). Both choices change
    the program, not the result beyond rounding.

    ``separate_group_sums``: a pass's per-group sums are one segment sum per output
    (``_inner._row_sums``) rather than one over the stacked outputs. With XLA:CPU's fused
    emitters the stacked sum first copies the tile outputs into one array.

    ``products_as_sums``: the long products, over all rows or groups (the start values'
    XᵀWX and Xᵀv, the LMM's statistics and per-group reductions: ``_smallmat.cross``), and
    the LMM's per-group products are sums of elementwise products rather than dots. On an
    accelerator a dot is a cuBLAS call whose algorithm, without XLA's autotuner (off:
    :data:`GPU_COMPILER_OPTIONS`), is cuBLAS's default; as sums they are fused reductions.
    The CPU's GEMM is faster than a fused reduction once X has more than a few columns.

    The defaults are the plain forms (a stacked segment sum, dots).
    """

    separate_group_sums: bool = False
    products_as_sums: bool = False


def kernels_for(backend: str, elemental: bool = False) -> Kernels:
    """The kernels a program compiled for ``backend`` (with XLA:CPU's elemental emitters
    where ``elemental``) is traced with (docs/performance.md)."""
    cpu = backend == "cpu"
    return Kernels(separate_group_sums=cpu and not elemental, products_as_sums=not cpu)


def option_probe(v):
    """The one-line program an option is tried on (named, so compile logs can tell it apart)."""
    return v + 1


@functools.cache
def accepts(backend: str, name: str, value) -> bool:
    """Whether ``backend``'s compiler takes the option ``name=value``."""
    try:
        device = jax.local_devices(backend=backend)[0]
        # An abstract argument: a concrete one would be made by a program of its own.
        x = jax.ShapeDtypeStruct((), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(device))
        lowered = jax.jit(option_probe).lower(x)
        lowered.compile(compiler_options={name: value})
    except Exception:  # noqa: BLE001 - the error type is jaxlib's and has changed name across releases
        return False
    return True


def accepted_options(backend: str, options: dict) -> dict:
    return {k: v for k, v in options.items() if accepts(backend, k, v)}


class compiled:
    """``jax.jit(fun, static_argnames=...)`` compiled with :data:`COMPILER_OPTIONS`, with
    :data:`ELEMENTAL_COMPILER_OPTIONS` where ``elemental``, or on a GPU with
    :data:`GPU_COMPILER_OPTIONS`, less what the backend refuses.

    ``elemental`` may also be a function of the call's arguments (returning a bool): a
    program whose choice depends on the data's size then has one jit for each choice.
    It applies on the CPU only; other backends compile with :data:`COMPILER_OPTIONS`.
    ``quick`` (a bool, or a function of the arguments like ``elemental``) adds
    :data:`QUICK_COMPILER_OPTIONS`, also on the CPU only.

    A function with a ``kernels`` parameter (static) is given :func:`kernels_for` the
    backend and emitter choice where the caller passes none.

    Also a decorator: ``@compiled(static_argnames=(...), elemental=True)``.
    """

    def __init__(self, fun=None, *, static_argnames=(), elemental=False, quick=False):
        self._fun, self._static, self._elemental, self._quick = fun, tuple(static_argnames), elemental, quick
        self._jitted, self._filtered = {}, set()
        self._pending: list[threading.Thread] = []
        self._takes_kernels = fun is not None and "kernels" in inspect.signature(fun).parameters
        if self._takes_kernels:
            self._static += ("kernels",)
        if fun is not None:
            functools.update_wrapper(self, fun)

    def _with_kernels(self, key, kwargs):
        if self._takes_kernels and "kernels" not in kwargs:
            return {**kwargs, "kernels": kernels_for(key[0], key[1])}
        return kwargs

    def _key(self, args, kwargs):
        backend = jax.default_backend()
        # The emitter and level choices are XLA:CPU's: another backend refuses the emitter
        # option, and a refused option costs a failed compile, a second trace and the probes.
        cpu = backend == "cpu"
        choose = lambda choice: cpu and bool(choice(*args, **kwargs) if callable(choice) else choice)
        return backend, choose(self._elemental), choose(self._quick)

    def prefetch(self, *args, **kwargs):
        """Start compiling the program for these arguments on a background thread.

        Array arguments are given as ``jax.ShapeDtypeStruct`` (without a sharding, as for
        arrays on the default device). The next call waits for the thread and finds the
        program in jax's compilation cache, so the caller can build the arrays while XLA
        compiles: a large fit's design (host work and transfers) then overlaps its
        compilation. A failure here is left to that call to raise.

        Returns a ``threading.Event`` set once the program is lowered (or its trace failed):
        from then on the thread is in XLA's compiler, which runs without the GIL.
        """
        key = self._key(args, kwargs)
        jitted = self._for(key)
        kwargs = self._with_kernels(key, kwargs)
        # thread-local: carried over, so compile logs still see it (read defensively: a jax
        # without the flag must not fail the fit)
        log = bool(getattr(jax.config, "jax_log_compiles", False))

        lowered = threading.Event()

        def work():
            try:
                with jax.log_compiles(log):
                    program = jitted.trace(*args, **kwargs).lower()
                    lowered.set()
                    program.compile()
            except Exception:  # noqa: BLE001 - the call compiles again and raises it there
                pass
            finally:
                lowered.set()

        thread = threading.Thread(target=work, name=f"jaxmm-compile-{getattr(self._fun, '__name__', '')}",
                                  daemon=True)
        thread.start()
        self._pending.append(thread)
        return lowered

    def __call__(self, *args, **kwargs):
        if self._fun is None:
            return compiled(args[0], static_argnames=self._static, elemental=self._elemental, quick=self._quick)
        while self._pending:  # a program compiling in the background (prefetch) is waited for, not compiled twice
            thread = self._pending.pop()
            if thread.is_alive():
                from . import _progress

                with _progress.compiling():
                    thread.join()
        key = self._key(args, kwargs)
        kwargs = self._with_kernels(key, kwargs)
        try:
            return self._for(key)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - jaxlib's error type has changed name across releases
            if "compile option" not in str(err) or key in self._filtered:
                raise
            self._filtered.add(key)
            self._jitted[key] = self._jit(accepted_options(key[0], self._options(key)))
            return self._jitted[key](*args, **kwargs)

    def _jit(self, options):
        return jax.jit(self._fun, static_argnames=self._static, compiler_options=options)

    @staticmethod
    def _options(key):
        backend, elemental, quick = key
        if backend == "gpu":
            return GPU_COMPILER_OPTIONS
        options = ELEMENTAL_COMPILER_OPTIONS if elemental else COMPILER_OPTIONS
        return {**options, **QUICK_COMPILER_OPTIONS} if quick else options

    def _for(self, key):
        if key not in self._jitted:
            self._jitted[key] = self._jit(self._options(key))
        return self._jitted[key]

    def _cache_size(self) -> int:
        """Compiled programs held for the current backend (the no-retrace tests read it)."""
        backend = jax.default_backend()
        return sum(jitted._cache_size() for key, jitted in self._jitted.items() if key[0] == backend)
