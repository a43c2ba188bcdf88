"""``jax.jit`` with the XLA compiler options that jaxmm's programs are compiled with.

XLA's options differ between backends and between jaxlib releases: an option that one of
them does not know is an error ("No such compile option"), not a no-op. Seen: XLA:GPU
(jaxlib 0.11.2, H100) and XLA:CPU of the same release both refuse
``xla_cpu_use_fusion_emitters``, which jaxlib 0.10.2's XLA:CPU takes. So a program is
compiled with all its options first; where the compiler refuses one, each option is tried
once on a one-line program and the program is compiled again with those the backend takes
(probing up front would add about 70 ms to every first fit). The backend is read at call
time, so importing jaxmm starts no backend and a JAX_PLATFORMS set after the import still
counts.
"""
from __future__ import annotations

import contextvars
import functools
import threading

import jax
import jax.numpy as jnp

# LLVM's expensive passes buy nothing for these programs (segment sums and small unrolled
# solves): measured on a 2-core CPU, without them a Laplace fit compiles 15-20 % faster
# (3.6 -> 3.0 s) and also runs about 10 % faster at 100k and 1M rows.
#
# GPU fits are not bit-reproducible by default: XLA's scatter-add (the per-group sums)
# adds with atomics in arrival order, so refits differ in the last digits (seen on an
# H200). xla_gpu_deterministic_ops fixes the order, but it made the fits 2.1-2.2x slower
# at 1M and 10M rows there, so it is left to the user
# (XLA_FLAGS=--xla_gpu_deterministic_ops=true); see README "GPU".
COMPILER_OPTIONS = {"xla_llvm_disable_expensive_passes": True}

# XLA:CPU's elemental emitters compile in about half the time of its default fusion
# emitters. They ran the Laplace row passes 45-60 % slower (the family kernels: 100k rows,
# 2-core CPU); since the logit kernel's log1p is a polynomial (_families.log1p_unit) a
# whole Laplace fit runs about 12 % slower, so Laplace fits below a size take them
# (_engine.ELEMENTAL_MAX_ROWS, with the measurements). The exact LMM reads the rows once and then
# works on per-group statistics, and there they run as fast: measured, a q = 2 LMM at 100k
# rows compiled in 0.98 s against 1.97 s with equal warm fits at 100k and 1M rows; the
# 1000-replicate by= fit took 2.3 s cold against 3.3 s; drawing responses (the simulator)
# was no slower either.
ELEMENTAL_COMPILER_OPTIONS = {**COMPILER_OPTIONS, "xla_cpu_use_fusion_emitters": False}

# XLA:GPU makes the programs' dots Triton GEMM fusions and autotunes each one, compiling
# every candidate tiling; without them the dots are cuBLAS calls. Measured on an H100
# (benchmarks/results_gpu.md, session 16), Bernoulli q = 2: XLA's compile of the 13.7k and
# 1M fits took 2.7 and 2.4 s against 4.0 and 3.7 s, and a cold 10M fit 5.13 and 4.28 s
# against 6.82 and 4.83 s (two alternating rounds) with the same log-likelihood; the warm
# 10M fit's GPU part went from 0.44 to 0.47 s. (Without the autotuner as well, cuBLAS's
# default algorithms made that part 1.6 s.) X β, Z L and the gradient's per-group products
# were dots then; they are now unrolled products (_smallmat.matmul): on the H100 in session
# 19 the warm 10M fit's GPU part went from 0.48 to 0.44 s. The long products, over all rows
# or groups, are sums on a GPU (products_as_sums, below). With those no dot is left that is
# worth timing candidates for, and XLA's autotuner is off: on an H100 (session 20,
# benchmarks/results_gpu.md), three alternating rounds of cold 10M fits took 3.86, 4.35 and
# 4.00 s without it against 5.13, 5.31 and 4.82 s with it, XLA's compile 2.4-2.5 s against
# 3.3-3.5 s, and the warm GPU part 0.430, 0.428 and 0.435 s against 0.434, 0.429 and 0.428 s.
# (With the long products still dots, in session 19, it had cost 0.095 s of GPU time.)
GPU_COMPILER_OPTIONS = {**COMPILER_OPTIONS, "xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}


# Whether the program being traced sums its per-group row terms with one segment sum per
# output (see _inner._row_sums): set by `compiled` while it calls (and so traces) a
# program; None outside one, where XLA's default emitters apply.
_SEPARATE_GROUP_SUMS = contextvars.ContextVar("jaxmm_separate_group_sums", default=None)


def separate_group_sums() -> bool:
    """One segment sum per output for the per-group sums of a row pass, rather than one
    over the stacked outputs: on the CPU with XLA's fused emitters. Measured (2-core CPU,
    Bernoulli q = 2): the 10M-row fit ran in 26.5 s against 29.4 s warm with the same
    log-likelihood, since the stacked sums first copy the tile outputs into one array; with
    the elemental emitters a 1M-row fit was a little slower (2.26-2.37 s against
    2.09-2.22 s), so programs compiled with them keep the stacked sum. Accelerators keep
    it too (not measured there)."""
    chosen = _SEPARATE_GROUP_SUMS.get()
    return jax.default_backend() == "cpu" if chosen is None else chosen


# Whether the long products, over all rows or groups (a GLMM's start values' XᵀWX and Xᵀv,
# the LMM's statistics and per-group reductions: _smallmat.cross), and the LMM's per-group
# products are written as sums of elementwise products rather than dots. On an H100 (session 19,
# benchmarks/results_gpu.md), with XLA's autotuner off, XLA's compile of the 10M-row fit took
# 0.40-0.78 s less and its warm GPU part 0.095 s more: without the autotuner, the dots over
# all 10M rows ran cuBLAS's default algorithm. As sums they are reductions, which need no
# cuBLAS algorithm: on the H100 in session 20 they alone did not shorten the compile, but they
# let the autotuner go (GPU_COMPILER_OPTIONS) at no cost in GPU time. The CPU keeps the dots:
# its GEMM is faster than a fused reduction once X has more than a few columns.
_PRODUCTS_AS_SUMS = contextvars.ContextVar("jaxmm_products_as_sums", default=None)


def products_as_sums() -> bool:
    """Long products as sums (accelerators) rather than dots (the CPU); see above."""
    chosen = _PRODUCTS_AS_SUMS.get()
    return jax.default_backend() != "cpu" if chosen is None else chosen


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

    Also a decorator: ``@compiled(static_argnames=(...), elemental=True)``.
    """

    def __init__(self, fun=None, *, static_argnames=(), elemental=False):
        self._fun, self._static, self._elemental = fun, tuple(static_argnames), elemental
        self._jitted, self._filtered = {}, set()
        self._pending: list[threading.Thread] = []
        if fun is not None:
            functools.update_wrapper(self, fun)

    @staticmethod
    def _separate_sums(key) -> bool:
        return key[0] == "cpu" and not key[1]

    def _key(self, args, kwargs):
        backend = jax.default_backend()
        # The emitter choice is XLA:CPU's: another backend refuses the option, and a
        # refused option costs a failed compile, a second trace and the probes.
        elemental = backend == "cpu" and bool(
            self._elemental(*args, **kwargs) if callable(self._elemental) else self._elemental)
        return backend, elemental

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
        # thread-local: carried over, so compile logs still see it (read defensively: a jax
        # without the flag must not fail the fit)
        log = bool(getattr(jax.config, "jax_log_compiles", False))

        lowered = threading.Event()

        def work():
            _SEPARATE_GROUP_SUMS.set(self._separate_sums(key))
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
            return compiled(args[0], static_argnames=self._static, elemental=self._elemental)
        while self._pending:  # a program compiling in the background (prefetch) is waited for, not compiled twice
            self._pending.pop().join()
        key = self._key(args, kwargs)
        # Each key has its own jit, so what its trace reads here stays true of its cache.
        token = _SEPARATE_GROUP_SUMS.set(self._separate_sums(key))
        try:
            return self._for(key)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - jaxlib's error type has changed name across releases
            if "compile option" not in str(err) or key in self._filtered:
                raise
            self._filtered.add(key)
            self._jitted[key] = self._jit(accepted_options(key[0], self._options(key)))
            return self._jitted[key](*args, **kwargs)
        finally:
            _SEPARATE_GROUP_SUMS.reset(token)

    def _jit(self, options):
        return jax.jit(self._fun, static_argnames=self._static, compiler_options=options)

    @staticmethod
    def _options(key):
        backend, elemental = key
        if backend == "gpu":
            return GPU_COMPILER_OPTIONS
        return ELEMENTAL_COMPILER_OPTIONS if elemental else COMPILER_OPTIONS

    def _for(self, key):
        if key not in self._jitted:
            self._jitted[key] = self._jit(self._options(key))
        return self._jitted[key]

    def _cache_size(self) -> int:
        """Compiled programs held for the current backend (the no-retrace tests read it)."""
        backend = jax.default_backend()
        return sum(jitted._cache_size() for (b, _), jitted in self._jitted.items() if b == backend)
