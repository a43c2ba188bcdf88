"""A neural network as the fixed part of a GLMM, with the random effects integrated out.

    y_ij | b_i ~ Bernoulli(logit⁻¹( f_w(x_ij) + β₀ + β₁ t_ij + b_i0 + b_i1 t_ij )),
    b_i ~ N(0, D)

f_w is a small MLP in plain JAX. Everything (w, β and the Cholesky factor L of D) is
trained together with optax on −jaxmm.marginal_loglik: the Laplace approximation of the
likelihood with b integrated out, differentiated exactly (the conditional modes enter
through the implicit function theorem). The MLP's output is the design's offset.

Mini-batching by subject. Subjects are independent, so the log-likelihood is a sum of
per-subject terms. A step uses a batch of B whole subjects out of M and scales their
log-likelihood by M/B: an unbiased estimate of the full log-likelihood and of its gradient
(each subject's term, Laplace or not, is computed exactly; only which subjects enter is
random). Splitting a subject across batches would not be: its rows share b_i.

The comparison, on data whose effect of x is nonlinear (f(x) = 2 sin 1.5x):
- held-out subjects: log p(y) of their data with b integrated out (a population-level
  prediction, since nothing is known about their b);
- new observations of training subjects: log p(y | b̂), with b̂ the BLUPs from their
  training rows (a conditional prediction).
The linear GLMM y ~ x + t + (1 + t | subject) is fitted with jaxmm.fit on the same rows.

Run: python examples/neural_fixed_part.py
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

import jaxmm

TRUE_SD, TRUE_CORR = (0.8, 0.6), 0.3


def true_f(x):
    return 2.0 * np.sin(1.5 * x)


def simulate(seed=0, n_train=120, n_heldout=40, n_obs=20, n_new=5):
    """A table with columns subject, x, t, y and role: 'train' (training subjects, first
    n_obs − n_new rows each), 'new' (their last n_new rows) or 'heldout' (other subjects)."""
    rng = np.random.default_rng(seed)
    m = n_train + n_heldout
    sd, r = np.array(TRUE_SD), TRUE_CORR
    D = np.diag(sd) @ np.array([[1.0, r], [r, 1.0]]) @ np.diag(sd)
    b = rng.multivariate_normal(np.zeros(2), D, size=m)
    subject = np.repeat(np.arange(m), n_obs)
    x = rng.uniform(-2.5, 2.5, size=m * n_obs)
    t = np.tile(np.linspace(0.0, 1.0, n_obs), m)
    eta = true_f(x) - 0.3 + 0.8 * t + b[subject, 0] + b[subject, 1] * t
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    within = np.tile(np.arange(n_obs), m)
    role = np.where(subject >= n_train, "heldout", np.where(within >= n_obs - n_new, "new", "train"))
    return pd.DataFrame({"subject": subject, "x": x, "t": t, "y": y, "role": role})


# --- the MLP: plain JAX, parameters as a list of (W, c) layers -----------------------------
def init_mlp(key, sizes=(1, 32, 32, 1)):
    layers = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        layers.append((jax.random.normal(k, (a, b)) * np.sqrt(1.0 / a), jnp.zeros(b)))
    return layers


def mlp(layers, x):
    h = x[:, None]
    for W, c in layers[:-1]:
        h = jnp.tanh(h @ W + c[None, :])
    W, c = layers[-1]
    return (h @ W + c[None, :])[:, 0]


# --- designs -------------------------------------------------------------------------------
def _columns(frame):
    one = np.ones(len(frame))
    X = np.column_stack([one, frame["t"]])        # β₀ + β₁ t; f_w(x) enters as the offset
    Z = np.column_stack([one, frame["t"]])        # (1 + t | subject)
    return X, Z


def subject_batches(frame, batch_subjects):
    """Stacked designs of ``batch_subjects`` whole subjects each (leading axis: batch), and
    the x of every design row. Subjects with equal row counts give batches of one shape."""
    subjects = np.unique(frame["subject"])
    n_batches = len(subjects) // batch_subjects
    designs, xs = [], []
    for k in range(n_batches):
        part = frame[frame["subject"].isin(subjects[k * batch_subjects:(k + 1) * batch_subjects])]
        X, Z = _columns(part)
        order = jaxmm.row_order(part["subject"].to_numpy())
        designs.append(jaxmm.design(X, Z, part["y"].to_numpy(), part["subject"].to_numpy()))
        xs.append(jnp.asarray(part["x"].to_numpy()[order]))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *designs)
    return stacked, jnp.stack(xs), len(subjects)


def one_design(frame):
    X, Z = _columns(frame)
    order = jaxmm.row_order(frame["subject"].to_numpy())
    return jaxmm.design(X, Z, frame["y"].to_numpy(), frame["subject"].to_numpy()), jnp.asarray(frame["x"].to_numpy()[order])


def _params_of(model):
    rows, cols = np.tril_indices(2)
    chol = jnp.zeros((2, 2)).at[rows, cols].set(model["chol"])
    return jaxmm.Params(model["beta"], chol, jnp.ones(()))


def neg_loglik(model, design, x, scale):
    """−(M/B)·log p(y_batch): the mini-batch estimate of the full negative log-likelihood."""
    with_f = design._replace(offset=mlp(model["mlp"], x))
    return -scale * jaxmm.marginal_loglik(_params_of(model), with_f, family="binomial")


def train(frame, *, steps=600, batch_subjects=40, learning_rate=1e-2, seed=0, verbose=False):
    """Adam on the mini-batch estimate, cycling through the subject batches in order."""
    designs, xs, n_subjects = subject_batches(frame, batch_subjects)
    n_batches = xs.shape[0]
    scale = n_subjects / batch_subjects
    model = {"mlp": init_mlp(jax.random.PRNGKey(seed)), "beta": jnp.zeros(2),
             "chol": jnp.array([0.5, 0.0, 0.5])}
    opt = optax.adam(learning_rate)
    state = opt.init(model)

    # The batches go in as an argument: closed over, they would be constants of the program,
    # which XLA folds at compile time (seconds here, for nothing).
    @jax.jit
    def step(model, state, designs, xs, k):
        design = jax.tree.map(lambda a: a[k], designs)
        value, grad = jax.value_and_grad(neg_loglik)(model, design, xs[k], scale)
        updates, state = opt.update(grad, state, model)
        return optax.apply_updates(model, updates), state, value

    for i in range(steps):
        model, state, value = step(model, state, designs, xs, i % n_batches)
        if verbose and i % 100 == 0:
            print(f"step {i:4d}  -loglik (estimate) {float(value):.2f}")
    return model


def bernoulli_loglik(y, eta):
    return float(jnp.sum(y * eta - jnp.logaddexp(0.0, eta)))


def evaluate(frame, *, steps=600, batch_subjects=40, verbose=False):
    """Per-observation held-out log-likelihoods of the linear GLMM and of the MLP model."""
    train_rows = frame[frame["role"] == "train"]
    new_rows = frame[frame["role"] == "new"]
    heldout = frame[frame["role"] == "heldout"]

    # the linear GLMM, through the formula interface
    linear = jaxmm.fit("y ~ x + t + (1 + t | subject)", train_rows, family="binomial")
    held_design = jaxmm.design(np.column_stack([np.ones(len(heldout)), heldout["x"], heldout["t"]]),
                               np.column_stack([np.ones(len(heldout)), heldout["t"]]),
                               heldout["y"].to_numpy(), heldout["subject"].to_numpy())
    lin_pop = float(jaxmm.marginal_loglik(linear.params, held_design, family="binomial"))
    lin_eta_new = np.log(linear.predict(new_rows).to_numpy()) - np.log1p(-linear.predict(new_rows).to_numpy())
    lin_cond = bernoulli_loglik(new_rows["y"].to_numpy(), lin_eta_new)

    # the MLP fixed part
    model = train(train_rows, steps=steps, batch_subjects=batch_subjects, verbose=verbose)
    params = _params_of(model)
    design, x = one_design(heldout)
    nn_pop = float(jaxmm.marginal_loglik(params, design._replace(offset=mlp(model["mlp"], x)), family="binomial"))
    design, x = one_design(train_rows)
    b, _ = jaxmm.conditional_modes(params, design._replace(offset=mlp(model["mlp"], x)), family="binomial")
    slot = {s: k for k, s in enumerate(np.unique(train_rows["subject"]))}
    b_new = np.asarray(b)[[slot[s] for s in new_rows["subject"]]]
    t_new = new_rows["t"].to_numpy()
    eta_new = (mlp(model["mlp"], jnp.asarray(new_rows["x"].to_numpy())) + params.beta[0] + params.beta[1] * t_new
               + b_new[:, 0] + b_new[:, 1] * t_new)
    nn_cond = bernoulli_loglik(new_rows["y"].to_numpy(), eta_new)

    D = np.asarray(params.chol @ params.chol.T)
    return {
        "heldout_subjects": {"linear": lin_pop / len(heldout), "mlp": nn_pop / len(heldout)},
        "new_observations": {"linear": lin_cond / len(new_rows), "mlp": nn_cond / len(new_rows)},
        "mlp_sd": np.sqrt(np.diag(D)).tolist(), "linear_sd": np.sqrt(np.diag(linear.D)).tolist(),
    }


def main():
    start = time.perf_counter()
    frame = simulate(seed=0, n_train=300, n_heldout=100)
    out = evaluate(frame, steps=1500, batch_subjects=60, verbose=True)
    print(f"\nper-observation held-out log-likelihood (higher is better; {time.perf_counter() - start:.0f} s)")
    for what, label in [("heldout_subjects", "new subjects, b integrated out"),
                        ("new_observations", "new rows of seen subjects, given the BLUPs")]:
        row = out[what]
        print(f"  {label:<45} linear GLMM {row['linear']:.4f}   MLP {row['mlp']:.4f}")
    print(f"  random-effect SDs (truth {TRUE_SD}): MLP {np.round(out['mlp_sd'], 3)}, "
          f"linear {np.round(out['linear_sd'], 3)}")


if __name__ == "__main__":
    main()
