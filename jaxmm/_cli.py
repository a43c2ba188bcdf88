"""The ``jaxmm`` command line: fit a file or a shipped example and print the summary."""
from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2), like every jaxmm error."""

    def error(self, message):
        self.exit(2, f"jaxmm: error: {message} (see jaxmm --help)\n")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="jaxmm", description="Fit generalised linear mixed models with JAX.")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("example", help="fit a dataset shipped with jaxmm and print the summary")
    ex.add_argument("name", nargs="?", help="example name; omit to list them")
    fit = sub.add_parser("fit", help="fit a model to a CSV file or a Parquet dataset and print the summary")
    fit.add_argument("data", help="CSV file, or a Parquet file (.parquet/.pq) or directory of them (needs pyarrow)")
    fit.add_argument("formula", help="e.g. 'y ~ x + (x | subject)'")
    fit.add_argument("--family", default="gaussian", help="gaussian (default), binomial, poisson, negative_binomial or gamma")
    fit.add_argument("--method", default=None, help="REML (gaussian default) or ML; laplace otherwise")
    fit.add_argument("--link", default=None, help="link function (the canonical one by default)")
    fit.add_argument("--trials", default=None, metavar="COL", help="column of binomial trial counts")
    fit.add_argument("--offset", default=None, metavar="COL", help="column added to the linear predictor")
    fit.add_argument("--weights", default=None, metavar="COL", help="column of prior weights (gaussian)")
    fit.add_argument("--missing", default="raise", choices=["raise", "drop"],
                     help="rows with missing values: raise an error (default) or drop them")
    fit.add_argument("--nAGQ", "--nagq", dest="nAGQ", type=int, default=1, metavar="K",
                     help="adaptive Gauss-Hermite nodes per random effect (1 = Laplace, the default; q <= 3)")
    fit.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    fit.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    fit.add_argument("--plot", default=None, metavar="PATH", help="also write a caterpillar plot (PNG)")
    for sub in (ex, fit):
        sub.add_argument("--no-cache", action="store_true",
                         help="compile afresh and keep nothing on disk (as JAXMM_NO_CACHE=1)")
    return ap


def _read_table(path: str):
    import os

    import pandas as pd

    lower = path.lower()
    if os.path.isdir(path) or lower.endswith((".parquet", ".pq")):
        return path  # a Parquet dataset: fit reads the model's columns alone (_dataset)
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        if "pyarrow" in str(exc):
            raise
        raise ValueError(f"cannot read data file {path!r}: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"jaxmm: warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import warnings

    with warnings.catch_warnings():
        # one clean line per warning, not Python's source path and line of code
        warnings.showwarning = _warning_line
        return _run(args)


def _run(args) -> int:
    try:
        from ._examples import EXAMPLES, fit_example

        if args.no_cache:
            from ._cache import disable_compilation_cache

            disable_compilation_cache()

        if args.command == "example":
            if args.name is None:
                for name, (_, formula, kw) in EXAMPLES.items():
                    print(f"{name:<{max(map(len, EXAMPLES)) + 1}} {formula}  {kw}")
                return 0
            print(fit_example(args.name).summary())
            return 0
        from . import _progress
        from ._fit import fit

        data = _read_table(args.data)
        res = fit(args.formula, data, family=args.family, method=args.method, link=args.link, trials=args.trials,
                  offset=args.offset, weights=args.weights, missing=args.missing, dtype=args.dtype,
                  verbose=_progress.available(),
                  nAGQ=args.nAGQ)
        print(res.summary())
        if args.json:
            import json

            try:
                with open(args.json, "w") as fh:
                    json.dump(res.to_dict(), fh, indent=1, allow_nan=False)
            except OSError as exc:
                raise ValueError(f"cannot write {args.json!r}: {exc.strerror}") from None
        if args.plot:
            try:
                res.plot_caterpillar(path=args.plot)
            except OSError as exc:
                raise ValueError(f"cannot write {args.plot!r}: {exc.strerror}") from None
        return 0
    except ValueError as exc:  # every jaxmm input error is a ValueError
        print(f"jaxmm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
