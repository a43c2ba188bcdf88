"""Plots of the random effects (matplotlib, an optional extra: pip install "jaxmm[plot]").

Each function draws into a new figure and returns it; ``path=`` also saves it as a PNG.
"""
from __future__ import annotations

import numpy as np

from .errors import ArgumentError


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArgumentError('plots need matplotlib: pip install "jaxmm[plot]"') from None
    return plt


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def caterpillar(res, *, path=None, max_labels: int = 40):
    """BLUPs ± 1.96 conditional SD, sorted, one panel per random effect (lme4's dotplot of ranef)."""
    sd = np.sqrt(np.maximum(np.diagonal(np.asarray(res.cond_var), axis1=1, axis2=2), 0.0))
    panel = (res.group_name, list(res.re_names), np.asarray(res.ranef_array), sd, list(res.group_labels))
    return _caterpillar([panel], res.formula, path, max_labels)


def factor_caterpillar(res, *, path=None, max_labels: int = 40):
    """:func:`caterpillar` of a fit with several terms: the panels of every grouping factor."""
    panels = []
    for label, frame in res.ranef.items():
        sd = np.sqrt(np.maximum(np.diagonal(res.cond_var[label], axis1=1, axis2=2), 0.0))
        panels.append((label, list(frame.columns), frame.to_numpy(), sd, list(frame.index)))
    return _caterpillar(panels, res.formula, path, max_labels)


def _caterpillar(panels, formula: str, path, max_labels: int):
    """One panel per effect of each (factor, effect names, BLUPs, conditional SDs, levels)."""
    plt = _pyplot()
    n_panels = sum(len(names) for _, names, *_ in panels)
    most = max(b.shape[0] for _, _, b, *_ in panels)
    height = min(max(3.0, 0.18 * most), 12.0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, height), squeeze=False, sharey=False)
    axes = iter(axes[0])
    for group, names, b, sd, labels in panels:
        m = b.shape[0]
        for k, name in enumerate(names):
            ax = next(axes)
            order = np.argsort(b[:, k], kind="stable")
            y = np.arange(m)
            # Thin bars and small markers keep 1000 groups readable as a band.
            lw, ms = (1.2, 4) if m <= 100 else (0.4, 1.5)
            ax.errorbar(b[order, k], y, xerr=1.96 * sd[order, k], fmt="o", ms=ms, lw=lw, color="tab:blue",
                        ecolor="tab:blue", alpha=0.8 if m <= 100 else 0.5)
            ax.axvline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_xlabel(f"BLUP of {name}  (± 1.96 conditional SD)")
            if m <= max_labels:
                ax.set_yticks(y)
                ax.set_yticklabels([str(labels[i]) for i in order], fontsize=7)
            else:
                ax.set_yticks([])
            ax.set_ylim(-1, m)
            ax.set_ylabel(f"{group} ({m} groups, sorted by BLUP)" if k == 0 else "")
            ax.set_title(name if len(panels) == 1 else f"{name} | {group}")
    fig.suptitle(f"Conditional modes of the random effects: {formula}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def shrinkage(res, data, *, path=None):
    """Each group's unpooled estimate (x) against its BLUP (y), one panel per random effect.

    On the diagonal a group would keep its own estimate (no pooling); on the horizontal
    line at 0 it would take the population value (complete pooling). BLUPs lie between:
    pulled towards the population line, the more so for small groups (colour).
    """
    from ._shrinkage import unpooled_effects

    plt = _pyplot()
    names, b = list(res.re_names), np.asarray(res.ranef_array)
    raw = unpooled_effects(res, data)
    sizes = _group_sizes(res, data)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.6), squeeze=False)
    fig.subplots_adjust(wspace=0.35, right=0.86)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        # Groups with (quasi-)separated data have extreme own estimates; they are drawn at the
        # edge as triangles so the bulk stays readable.
        lo, hi = np.nanpercentile(raw[:, k], [2.5, 97.5])
        pad = 0.15 * (hi - lo if hi > lo else 1.0)
        lim = (min(lo - pad, b[:, k].min()), max(hi + pad, b[:, k].max()))
        x = np.clip(raw[:, k], *lim)
        inside = (raw[:, k] >= lim[0]) & (raw[:, k] <= lim[1])
        norm = _log_norm(sizes)
        size = 10 if len(b) > 200 else 22
        sc = ax.scatter(x[inside], b[inside, k], c=sizes[inside], s=size, cmap="viridis", alpha=0.8, norm=norm)
        for side, marker in ((raw[:, k] < lim[0], "<"), (raw[:, k] > lim[1], ">")):
            if side.any():
                ax.scatter(x[side], b[side, k], c=sizes[side], s=size * 1.5, marker=marker, cmap="viridis",
                           alpha=0.8, norm=norm)
        ax.plot(lim, lim, color="black", lw=0.8, ls="--", label="no pooling (BLUP = own estimate)")
        ax.axhline(0.0, color="tab:red", lw=1.0, label="complete pooling (population value)")
        ax.set_xlim(*lim)
        span = b[:, k].max() - b[:, k].min()
        ax.set_ylim(b[:, k].min() - 0.1 * span - 1e-12, b[:, k].max() + 0.1 * span + 1e-12)
        ax.set_xlabel(f"{name}: the group's own (unpooled) estimate")
        ax.set_ylabel(f"{name}: BLUP (shrunk)")
        ax.set_title(name)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    if sizes.max() > sizes.min():
        cb = fig.colorbar(sc, cax=fig.add_axes([0.89, 0.15, 0.015, 0.7]))
        cb.set_label("rows in the group")
    else:
        axes[0][-1].text(1.02, 0.5, f"every group has {int(sizes[0])} rows", transform=axes[0][-1].transAxes,
                         rotation=90, va="center", fontsize=8)
    fig.suptitle(f"Shrinkage of the BLUPs towards the population value: {res.formula}", fontsize=10)
    return _save(fig, path)


def _log_norm(sizes):
    from matplotlib.colors import LogNorm, Normalize

    if sizes.max() == sizes.min():  # one size: a constant colour, not a degenerate scale
        return Normalize(vmin=sizes.min() - 1, vmax=sizes.max() + 1)

    return LogNorm(vmin=max(sizes.min(), 1), vmax=max(sizes.max(), 2)) if sizes.max() > 10 * max(sizes.min(), 1) \
        else Normalize(vmin=sizes.min(), vmax=sizes.max())


def _group_sizes(res, data):
    from ._table import as_pandas

    counts = as_pandas(data)[res.group_name].value_counts()
    return np.array([counts.get(g, 0) for g in res.group_labels], dtype=float)
