"""L-BFGS (optax, zoom line search) inside ``lax.while_loop``.

The whole minimisation is one traced function of (x0, warm0, args), so a fit can be
jitted, vmapped over datasets and sharded. ``warm`` is auxiliary state that the
objective returns and receives back at the next outer iteration: the conditional
modes, so each inner Newton solve starts from the previous one.
"""
from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class Status(enum.IntEnum):
    CONVERGED = 0      # relative gradient below gtol
    STALLED = 1        # no decrease for several iterations; gradient small but not below gtol
    MAX_ITER = 2
    NONFINITE = 3      # objective or gradient became NaN/inf
    NOT_PD = 4         # stopped where the Hessian is not positive definite

    @property
    def message(self) -> str:
        return {
            Status.CONVERGED: "converged: Newton decrement below tolerance at a positive-definite Hessian",
            Status.STALLED: "stopped: objective no longer decreases; gradient not below tolerance",
            Status.MAX_ITER: "stopped: reached the maximum number of iterations",
            Status.NONFINITE: "stopped: objective or gradient is not finite",
            Status.NOT_PD: "stopped at a point where the Hessian is not positive definite",
        }[self]


class OptOptions(NamedTuple):
    max_iter: int = 1000
    gtol: float = 1e-9       # max|∇f| ≤ gtol·(1 + |f|)
    ftol: float = 1e-15      # relative decrease regarded as no progress
    stall_iters: int = 5
    memory: int = 10


class OptResult(NamedTuple):
    x: jnp.ndarray
    value: jnp.ndarray
    grad: jnp.ndarray
    warm: object
    n_iter: jnp.ndarray
    status: jnp.ndarray


_C1, _C2 = 1e-4, 0.9  # the strong Wolfe constants of optax's zoom line search


def minimize(fun, x0, warm0, args, options: OptOptions = OptOptions()) -> OptResult:
    """Minimise ``fun(x, warm, args) -> (value, new_warm)`` over the vector x.

    Each iteration first tries the full L-BFGS step with its own value-and-gradient call,
    which also returns the conditional modes at the new point. Near-quadratic objectives
    accept that step almost always (strong Wolfe conditions), so an iteration costs one
    objective-and-gradient evaluation. Otherwise optax's zoom line search takes over and
    the modes are refreshed by a forward pass at the point it accepts.
    """
    direction = optax.scale_by_lbfgs(memory_size=options.memory)
    # 'one' tries the full quasi-Newton step first. optax's default ('keep') starts from the
    # last accepted step length, which leaves L-BFGS converging only linearly here.
    zoom = optax.scale_by_zoom_linesearch(max_linesearch_steps=40, initial_guess_strategy="one")
    value_and_grad = jax.value_and_grad(fun, has_aux=True)
    (f0, warm0), g0 = value_and_grad(x0, warm0, args)

    def small_grad(f, g):
        return jnp.max(jnp.abs(g)) <= options.gtol * (1.0 + jnp.abs(f))

    def body(c):
        x, state, f, g, warm, it, stall, _ = c
        d, state = direction.update(g, state, x)
        d = -d
        (f_t, warm_t), g_t = value_and_grad(x + d, warm, args)
        slope0, slope_t = g @ d, g_t @ d
        wolfe = (jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t)) & (slope0 < 0)
                 & (f_t <= f + _C1 * slope0) & (jnp.abs(slope_t) <= _C2 * jnp.abs(slope0)))

        def line_search(_):
            updates, ls = zoom.update(d, zoom.init(x), x, value=f, grad=g,
                                      value_fn=lambda y: fun(y, warm, args)[0])
            x_ls = x + updates
            _, warm_ls = fun(x_ls, warm, args)
            return x_ls, optax.tree.get(ls, "value"), optax.tree.get(ls, "grad"), warm_ls

        x_new, f_new, g_new, warm_new = jax.lax.cond(
            wolfe, lambda _: (x + d, f_t, g_t, warm_t), line_search, None)
        finite = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new))
        no_progress = (f - f_new) <= options.ftol * (1.0 + jnp.abs(f))
        stall = jnp.where(no_progress, stall + 1, 0)
        status = jnp.where(
            ~finite, Status.NONFINITE,
            jnp.where(small_grad(f_new, g_new), Status.CONVERGED,
                      jnp.where(stall >= options.stall_iters, Status.STALLED, -1)))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        x_new, f_new, g_new, warm_new = keep((x_new, f_new, g_new, warm_new), (x, f, g, warm))
        return x_new, state, f_new, g_new, warm_new, it + 1, stall, status

    status0 = jnp.where(small_grad(f0, g0), Status.CONVERGED,
                        jnp.where(jnp.isfinite(f0), -1, Status.NONFINITE))
    init = (x0, direction.init(x0), f0, g0, warm0, 0, 0, status0)
    x, _, f, g, warm, it, _, status = jax.lax.while_loop(
        lambda c: (c[7] < 0) & (c[5] < options.max_iter), body, init)
    status = jnp.where(status < 0, Status.MAX_ITER, status)
    return OptResult(x, f, g, warm, it, status)
