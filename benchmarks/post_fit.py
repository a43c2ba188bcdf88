"""What is computed after a fit, cold (a fresh process: its programs compiled) and warm.

    python benchmarks/post_fit.py --checkouts ../old-checkout,. --rounds 3

Each round runs every checkout in a fresh process (``PYTHONPATH`` set to it), alternating:
the model is fitted first (not timed), then the computation is timed twice, cold and warm:
``confint("profile")`` for sleepstudy (ML, an exact LMM) and cbpp (Laplace), the unpooled
estimates behind ``plot_shrinkage``, ``marginal_coefs()`` and the array API's
``marginal_loglik`` and ``conditional_modes`` called outside a jit, for contraception (q = 2). Reported: medians
over the rounds, and whether every checkout gave the same values.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, time, warnings
import numpy as np
import jaxmm
warnings.simplefilter("ignore")
from jaxmm._shrinkage import unpooled_effects
contraception = jaxmm.load_example("contraception")
FORMULA = "use01 ~ age + age2 + urban01 + C(livch) + (urban01 | district)"
cases = {
    "sleepstudy confint('profile')": (
        lambda: jaxmm.fit("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"), method="ML"),
        lambda res: res.confint("profile").to_numpy()),
    "cbpp confint('profile')": (
        lambda: jaxmm.fit("incidence ~ C(period) + (1 | herd)", jaxmm.load_example("cbpp"), family="binomial",
                          trials="size"),
        lambda res: res.confint("profile").to_numpy()),
    "contraception unpooled estimates": (
        lambda: jaxmm.fit(FORMULA, contraception, family="binomial"),
        lambda res: unpooled_effects(res, contraception)),
    "contraception marginal_coefs()": (
        lambda: jaxmm.fit(FORMULA, contraception, family="binomial"),
        lambda res: res.marginal_coefs().to_numpy()),
    "contraception marginal_loglik and conditional_modes (array API, outside a jit)": (
        lambda: jaxmm.fit(FORMULA, contraception, family="binomial"),
        lambda res: np.concatenate([
            np.atleast_1d(np.asarray(jaxmm.marginal_loglik(res.params, res.design, family="binomial"))),
            np.asarray(jaxmm.conditional_modes(res.params, res.design, family="binomial")[0]).ravel()])),
}
out = {}
for name, (fit, compute) in cases.items():
    res = fit()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        value = compute(res)
        times.append(time.perf_counter() - start)
    out[name] = {"cold": times[0], "warm": times[1], "value": value.round(5).tolist()}
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkouts", default=".")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    checkouts = [str(Path(c).resolve()) for c in args.checkouts.split(",")]
    seen = {c: [] for c in checkouts}
    for r in range(args.rounds):
        for c in checkouts:
            env = dict(os.environ, PYTHONPATH=c)
            proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd="/tmp")
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            seen[c].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(r, c, {k: (round(v["cold"], 2), round(v["warm"], 3)) for k, v in seen[c][-1].items()}, flush=True)
    lines = ["| checkout | computation | cold (s) | warm (s) |", "|---|---|---:|---:|"]
    for c, runs in seen.items():
        for model in runs[0]:
            cold = statistics.median(run[model]["cold"] for run in runs)
            warm = statistics.median(run[model]["warm"] for run in runs)
            lines.append(f"| `{Path(c).name}` | {model} | {cold:.2f} | {warm:.3f} |")
    first = seen[checkouts[0]][0]
    same = all(run[m]["value"] == first[m]["value"] for runs in seen.values() for run in runs for m in first)
    lines.append("")
    lines.append(f"Values equal to 5 decimals across checkouts and rounds: {same}.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
