"""Two checkouts of jaxmm on the same problems, in one run: cold and warm fits, alternating.

    python benchmarks/before_after.py --before ../old-checkout --after . \
        --problems binomial-q2-100k-balanced,binomial-q2-1M-balanced --rounds 3

Each round fits every problem once with each checkout (``PYTHONPATH`` set to it), each fit in
a fresh process (``engines.py``: one cold fit, then ``--repeats`` warm ones), so both sides
see the same machine load. Reported: the medians over the rounds and after/before.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engines as E  # noqa: E402
import problems as P  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--problems", default="binomial-q2-100k-balanced,binomial-q2-1M-balanced")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sides = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pid in args.problems.split(","):
            problem = P.get(pid)
            data = E.write_data(P.generate(problem)[0], tmp, problem.id)
            seen = {side: [] for side in sides}
            for r in range(args.rounds):
                for side, path in sides.items():
                    os.environ["PYTHONPATH"] = path
                    rec = E._run_engine_once("jaxmm", problem, data, 1800, args.repeats, tmp, tag=f"{side}{r}")
                    if rec["status"] != "ok":
                        raise SystemExit(f"{pid} {side}: {rec['status']}: {rec.get('note')}")
                    seen[side].append(rec)
                    print(pid, side, r, round(rec["cold_s"], 3), round(rec["warm_s"], 3), rec["loglik"], flush=True)
            med = {side: {k: statistics.median(x[k] for x in recs) for k in ("cold_s", "warm_s")}
                   for side, recs in seen.items()}
            logliks = {side: recs[0]["loglik"] for side, recs in seen.items()}
            rows.append(f"| {pid} | {med['before']['cold_s']:.2f} | {med['after']['cold_s']:.2f} | "
                        f"{med['after']['cold_s'] / med['before']['cold_s']:.2f} | {med['before']['warm_s']:.3f} | "
                        f"{med['after']['warm_s']:.3f} | {med['after']['warm_s'] / med['before']['warm_s']:.2f} | "
                        f"{logliks['after'] - logliks['before']:.1e} |")
    table = "\n".join(["| problem | cold before (s) | cold after (s) | ratio | warm before (s) | warm after (s) "
                       "| ratio | loglik after − before |", "|---|---:|---:|---:|---:|---:|---:|---:|"] + rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
