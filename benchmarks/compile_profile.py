"""Where the test suite's time goes in XLA: programs compiled, and their compile time, per test.

A pytest plugin (a ``jax.monitoring`` listener per test) and its report:

    PYTHONPATH=benchmarks python -m pytest -q -p compile_profile     # writes one JSON per worker
    python benchmarks/compile_profile.py [--top 30]                  # the report

The counts find code that runs JAX operations one by one outside a jit, where every
operation is a program of its own (hundreds of programs in one test). The JSON files go to
``$JAXMM_COMPILE_PROFILE`` (default: the system's temporary folder).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

FOLDER = Path(os.environ.get("JAXMM_COMPILE_PROFILE", tempfile.gettempdir())) / "jaxmm_compile_profile"
_EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")

_current = ["<outside a test>"]
_stats: dict = collections.defaultdict(collections.Counter)
_hit = [False]  # the program being compiled was loaded from the persistent cache


def _listener(event, duration, **_):
    name = event.rsplit("/", 1)[-1]
    if event.startswith("/jax/core/compile/") and name in _EVENTS:
        if name == "backend_compile_duration" and _hit[0]:  # a load, timed by the same event
            name, _hit[0] = "cache_load_duration", False
        _stats[_current[0]][name] += duration
        _stats[_current[0]][name + "_n"] += 1


def _hit_listener(event, **_):
    if event == "/jax/compilation_cache/cache_hits":
        _hit[0] = True


def pytest_configure(config):
    from jax._src import monitoring

    if not hasattr(config, "workerinput"):  # the controlling process: forget an earlier run
        for old in FOLDER.glob("*.json"):
            old.unlink()
    monitoring.register_event_duration_secs_listener(_listener)
    monitoring.register_event_listener(_hit_listener)


def pytest_runtest_logstart(nodeid, location):
    _current[0] = nodeid


def pytest_sessionfinish(session):
    FOLDER.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (FOLDER / f"{worker}.json").write_text(json.dumps({k: dict(v) for k, v in _stats.items()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    tests = {}
    for path in sorted(FOLDER.glob("*.json")):
        tests.update(json.loads(path.read_text()))
    if not tests:
        raise SystemExit(f"no profile in {FOLDER}: run the suite with -p compile_profile first")
    total = collections.Counter()
    files = collections.defaultdict(collections.Counter)
    for test, counts in tests.items():
        total.update(counts)
        files[test.split("::")[0]].update(counts)
    compile_s, programs = total["backend_compile_duration"], int(total["backend_compile_duration_n"])
    print(f"{programs} programs, {compile_s:.1f} s of XLA compile, {total['jaxpr_trace_duration']:.1f} s of "
          f"tracing, {total['jaxpr_to_mlir_module_duration']:.1f} s of lowering; "
          f"{int(total['cache_load_duration_n'])} programs loaded from the persistent cache in "
          f"{total['cache_load_duration']:.1f} s")
    print("\nby file:")
    for name, c in sorted(files.items(), key=lambda kv: -kv[1]["backend_compile_duration"])[:args.top]:
        print(f"  {c['backend_compile_duration']:6.1f} s  {int(c['backend_compile_duration_n']):5d} programs  {name}")
    print("\nby test, most programs first:")
    for name, c in sorted(tests.items(), key=lambda kv: -kv[1].get("backend_compile_duration_n", 0))[:args.top]:
        print(f"  {int(c.get('backend_compile_duration_n', 0)):5d} programs  {c.get('backend_compile_duration', 0):6.1f} s"
              f"  {name}")


if __name__ == "__main__":
    main()
