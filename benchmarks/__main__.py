"""The benchmark runner: ``python -m benchmarks [NAME...]``.

Each benchmark is a module in this package with a ``main() -> None`` that prints
its results; :data:`BENCHMARKS` is the explicit list. Speed targets live here,
never in timed tests.
"""

from __future__ import annotations

import argparse
import importlib

#: name -> module; each module exposes ``main() -> None``.
BENCHMARKS: dict[str, str] = {
    "translate": "benchmarks.bench_translate",
    "parse": "benchmarks.bench_parse",
    "mllp": "benchmarks.bench_mllp",
    "worker": "benchmarks.bench_worker",
    "simulate": "benchmarks.bench_simulate",
    "hostile": "benchmarks.bench_hostile",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        print(f"== benchmark {name} ==", flush=True)
        importlib.import_module(BENCHMARKS[name]).main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
