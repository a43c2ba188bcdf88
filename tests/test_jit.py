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
