"""jaxmm's programs are compiled with XLA options that not every backend or jaxlib release
knows; an unknown option must cost the option, not the fit."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import _jit


def test_options_the_compiler_refuses_are_dropped(monkeypatch):
    backend = jax.default_backend()
    # Every fit is compiled with this one, on the CPU (jaxlib 0.10.2, 0.11.2) and on the GPU.
    assert _jit.accepts(backend, "xla_llvm_disable_expensive_passes", True)
    # Small programs take these on the CPU: a refusal would drop them without a word.
    if backend == "cpu":
        assert all(_jit.accepts(backend, k, v) for k, v in _jit.QUICK_COMPILER_OPTIONS.items())
    assert not _jit.accepts(backend, "xla_no_such_option_anywhere", True)
    monkeypatch.setattr(_jit, "COMPILER_OPTIONS", {**_jit.COMPILER_OPTIONS, "xla_no_such_option_anywhere": True})

    def double(x, n):
        return 2 * x + n

    f = _jit.compiled(double, static_argnames=("n",))
    np.testing.assert_array_equal(f(jnp.arange(3.0), n=1), [1.0, 3.0, 5.0])
    assert f._cache_size() == 1
    f(jnp.arange(3.0) + 1, n=1)
    assert f._cache_size() == 1  # compiled once with the accepted options, then reused


def test_other_errors_are_not_swallowed():
    @_jit.compiled(static_argnames=())
    def bad(x):
        return x @ x  # shapes that do not multiply

    try:
        bad(jnp.zeros((2, 3)))
    except TypeError as err:
        assert "dot_general" in str(err) or "contracting" in str(err) or "shape" in str(err).lower()
    else:
        raise AssertionError("a shape error must propagate")


_ONLY_THEIR_PROGRAMS = r"""
import json, logging, warnings
import jax, pandas as pd
import jaxmm
warnings.simplefilter("ignore")
names = []
class Record(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        name = message[len("Compiling jit("):].split(")")[0] if message.startswith("Compiling jit(") else None
        if name is not None and name != "option_probe":  # jaxlibs that refuse an option probe each once
            names.append(name)
logging.getLogger("jax").addHandler(Record())
logging.getLogger("jax").setLevel(logging.DEBUG)
sleep = jaxmm.load_example("sleepstudy")
with jax.log_compiles(True):
    single = jaxmm.fit("Reaction ~ Days + (Days | Subject)", sleep, method="ML")
    steps = {"fit": list(names)}
    single.bootstrap(20, seed=1)
    steps["bootstrap"] = names[len(steps["fit"]):]
    stacked = pd.concat([sleep.assign(rep=k) for k in range(3)])
    jaxmm.fit("Reaction ~ Days + (1 | Subject)", stacked, by="rep")
    steps["by"] = names[len(steps["fit"]) + len(steps["bootstrap"]):]
print(json.dumps(steps))
"""


def test_fits_compile_their_own_programs_and_nothing_else():
    """In a fresh process a fit, a bootstrap and a by= fit compile exactly their programs.
    Host values handed to jax outside them (jnp.asarray of a design column, a
    jax.random.key, a constant) each compiled a small program of their own, 10-25 ms in a
    fresh process: jnp.asarray once per new shape in jax 0.10."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _ONLY_THEIR_PROGRAMS], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(proc.stdout.strip().splitlines()[-1])
    # On the CPU the bootstrap refits through the fit's own program (_simulate), elsewhere
    # through a vmapped one.
    refit = [] if jax.default_backend() == "cpu" else ["_refit_lmm"]
    assert steps == {"fit": ["_fit_lmm"], "bootstrap": ["simulate_responses"] + refit,
                     "by": ["fit_lmm_batch"]}, steps


def test_elemental_may_depend_on_the_arguments():
    # A function of the call's arguments picks the emitters: one jit for each choice, and
    # the cache size counts both.
    seen = []

    def small(x):
        seen.append(x.shape[0])
        return x.shape[0] < 4

    f = _jit.compiled(lambda x: x * 2.0, elemental=small)
    np.testing.assert_array_equal(f(jnp.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(f(jnp.ones(5)), [2.0] * 5)
    backend = jax.default_backend()
    f(jnp.zeros(2))
    assert f._cache_size() == 2
    if backend == "cpu":
        assert sorted(f._jitted) == [(backend, False, False), (backend, True, False)] and seen == [2, 5, 2]
    else:  # the choice is XLA:CPU's (next test)
        assert sorted(f._jitted) == [(backend, False, False)] and seen == []


def test_elemental_and_quick_are_chosen_on_the_cpu_only(monkeypatch):
    # Another backend refuses xla_cpu_use_fusion_emitters: asking for it there would cost
    # a failed compile, a second trace and the option probes on every first fit.
    def never(x):
        raise AssertionError("the emitter choice was consulted off the CPU")

    f = _jit.compiled(lambda x: x + 1.0, elemental=never, quick=never)
    g = _jit.compiled(lambda x: x + 2.0, elemental=True, quick=True)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    # Only the key changes here: the programs still compile for the CPU device, with the
    # options other backends get.
    monkeypatch.setattr(_jit, "GPU_COMPILER_OPTIONS", {})
    monkeypatch.setattr(_jit, "ELEMENTAL_COMPILER_OPTIONS", {"xla_no_such_option_anywhere": True})
    monkeypatch.setattr(_jit, "QUICK_COMPILER_OPTIONS", {"xla_no_such_option_anywhere": True})
    np.testing.assert_array_equal(f(jnp.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(g(jnp.ones(2)), [3.0, 3.0])
    assert list(f._jitted) == [("gpu", False, False)] and list(g._jitted) == [("gpu", False, False)]
    assert not g._filtered  # compiled at the first try


def test_a_gpu_compiles_with_the_gpu_options(monkeypatch):
    # GPU_COMPILER_OPTIONS (no Triton GEMM fusions, no autotuner) are a GPU's, and only a GPU's: an option
    # put there is tried for the gpu key (here refused, as unknown) and not for the others.
    assert _jit.GPU_COMPILER_OPTIONS["xla_gpu_enable_triton_gemm"] is False
    assert _jit.GPU_COMPILER_OPTIONS["xla_gpu_autotune_level"] == 0
    assert not {"xla_gpu_enable_triton_gemm", "xla_gpu_autotune_level"} & set(_jit.COMPILER_OPTIONS)
    on_gpu = jax.default_backend() == "gpu"  # a real GPU tries (and refuses) the option at once
    monkeypatch.setattr(_jit, "GPU_COMPILER_OPTIONS", {"xla_no_such_option_anywhere": True})
    f = _jit.compiled(lambda x: x * 3.0)
    np.testing.assert_array_equal(f(jnp.ones(2)), [3.0, 3.0])
    assert f._filtered == ({("gpu", False, False)} if on_gpu else set())
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    np.testing.assert_array_equal(f(jnp.ones(2)), [3.0, 3.0])
    assert f._filtered == {("gpu", False, False)}


def test_kernels_follow_the_backend_and_the_emitters():
    # A function with a `kernels` parameter is given the kernels of the backend and emitter
    # choice it is compiled for: one segment sum per output on the CPU with the fused
    # emitters, products as sums on accelerators. A caller's own choice is kept.
    seen = {}

    def record(x, kernels=_jit.Kernels()):
        seen[x.shape[0]] = kernels
        return x + 1.0

    f = _jit.compiled(record, elemental=lambda x, kernels=None: x.shape[0] < 4)
    f(jnp.ones(2))
    f(jnp.ones(5))
    backend = jax.default_backend()
    assert seen == {2: _jit.kernels_for(backend, True), 5: _jit.kernels_for(backend, False)}
    assert _jit.kernels_for("cpu", False) == _jit.Kernels(separate_group_sums=True, products_as_sums=False)
    assert _jit.kernels_for("cpu", True) == _jit.Kernels(separate_group_sums=False, products_as_sums=False)
    assert _jit.kernels_for("gpu", False) == _jit.Kernels(separate_group_sums=False, products_as_sums=True)
    chosen = _jit.Kernels(separate_group_sums=True, products_as_sums=True)
    f(jnp.ones(3), kernels=chosen)
    assert seen[3] == chosen


def _compile_log():
    """(thread name, message) of every XLA compilation jax logs from here on."""
    import logging
    import threading

    seen = []

    class Record(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Finished XLA compilation of jit("):
                seen.append((threading.current_thread().name, message.split("(")[1].split(")")[0]))

    handler = Record()
    logging.getLogger("jax").addHandler(handler)
    return seen, handler


def test_prefetch_compiles_in_the_background_and_the_call_reuses_it():
    import logging
    import threading

    traced = []

    def scaled(x, n):
        traced.append(threading.current_thread().name)
        return x * n + 0.5

    f = _jit.compiled(scaled, static_argnames=("n",))
    seen, handler = _compile_log()
    try:
        with jax.log_compiles(True):
            lowered = f.prefetch(jax.ShapeDtypeStruct((7,), jnp.result_type(float)), n=3)
            assert lowered.wait(timeout=120)
            assert traced == ["jaxmm-compile-scaled"]  # the event comes after the trace
            out = f(np.arange(7.0), n=3)
    finally:
        logging.getLogger("jax").removeHandler(handler)
    np.testing.assert_array_equal(out, np.arange(7.0) * 3 + 0.5)
    # traced and compiled once, on the compile thread; the call found the program
    assert traced == ["jaxmm-compile-scaled"]
    assert [s for s in seen if s[1] == "scaled"] == [("jaxmm-compile-scaled", "scaled")]
    assert f._cache_size() == 1


def test_a_prefetch_that_fails_leaves_the_error_to_the_call():
    f = _jit.compiled(lambda x: x @ x)
    # shapes that do not multiply; the event is set all the same, so no caller waits forever
    assert f.prefetch(jax.ShapeDtypeStruct((2, 3), jnp.result_type(float))).wait(timeout=120)
    try:
        f(jnp.zeros((2, 3)))
    except TypeError:
        pass
    else:
        raise AssertionError("the shape error must reach the caller")


def test_a_fit_compiles_its_program_while_the_design_is_built():
    # A shape no other test fits, so the program is new here.
    import logging
    import warnings

    import pandas as pd

    import jaxmm

    rng = np.random.default_rng(11)
    n = 3001
    df = pd.DataFrame(dict(g=rng.integers(0, 41, n), x=rng.normal(size=n)))
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-0.5 - 0.3 * df.x))).astype(float)
    seen, handler = _compile_log()
    try:
        with jax.log_compiles(True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jaxmm.fit("y ~ x + (x | g)", df, family="binomial")
            jaxmm.fit("y ~ x + (1 | g)", df.assign(y=rng.poisson(2.0, n)), family="poisson", dtype="float32")
    finally:
        logging.getLogger("jax").removeHandler(handler)
    # the design's arrays match the abstract design the program compiled for: no second compile
    assert [s for s in seen if s[1] == "_fit_glmm"] == [("jaxmm-compile-_fit_glmm", "_fit_glmm")] * 2, seen


def test_the_design_is_filled_once_the_fit_program_is_lowered(monkeypatch):
    # Tracing and lowering hold the GIL, as does much of the layout; side by side they
    # took turns. The rows are laid out (make_design) only once the program is lowered.
    import logging
    import warnings

    import pandas as pd

    import jaxmm
    from jaxmm import _design

    events = []

    class Record(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Finished jaxpr to MLIR") and "_fit_glmm" in message:
                events.append("lowered")

    make_design = _design.make_design

    def recorded(*args, **kwargs):
        events.append("layout")
        return make_design(*args, **kwargs)

    monkeypatch.setattr(_design, "make_design", recorded)
    rng = np.random.default_rng(12)
    n = 2999  # a shape no other test fits, so the program is new here
    df = pd.DataFrame(dict(g=rng.integers(0, 37, n), x=rng.normal(size=n)))
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-0.5 - 0.3 * df.x))).astype(float)
    handler = Record()
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jaxmm.fit("y ~ x + (x | g)", df, family="binomial")
    finally:
        logging.getLogger("jax").removeHandler(handler)
    assert events == ["lowered", "layout"], events
