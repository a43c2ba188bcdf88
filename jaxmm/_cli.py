"""The ``jaxmm`` command line: fit a file or a shipped example and print the summary."""
from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxmm", description="Fit generalised linear mixed models with JAX.")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("example", help="fit a dataset shipped with jaxmm and print the summary")
    ex.add_argument("name", nargs="?", help="example name; omit to list them")
    fit = sub.add_parser("fit", help="fit a model to a CSV file and print the summary")
    fit.add_argument("data", help="CSV file")
    fit.add_argument("formula", help="e.g. 'y ~ x + (x | subject)'")
    fit.add_argument("--family", default="gaussian")
    fit.add_argument("--method", default=None)
    fit.add_argument("--link", default=None)
    fit.add_argument("--trials", default=None, help="column of binomial trial counts")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        from ._examples import EXAMPLES, fit_example

        if args.command == "example":
            if args.name is None:
                for name, (_, formula, kw) in EXAMPLES.items():
                    print(f"{name:<14} {formula}  {kw}")
                return 0
            print(fit_example(args.name).summary())
            return 0
        import pandas as pd

        from ._fit import fit

        try:
            data = pd.read_csv(args.data)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read data file {args.data!r}: {exc}") from None
        res = fit(args.formula, data, family=args.family, method=args.method, link=args.link, trials=args.trials)
        print(res.summary())
        return 0
    except ValueError as exc:  # every jaxmm input error is a ValueError
        print(f"jaxmm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
