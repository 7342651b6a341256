"""How long validation takes: the N Backends and N Routes of scale.py, validated one by one on
one thread (the build's validation pass without the IR). Prints the best of R rounds.

    uv run python benchmarks/validation.py [--objects 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

from scale import objects

from xds_operator.api.validation import validate


def main(n: int, rounds: int) -> None:
    docs = objects(n)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for obj in docs:
            spec, errors = validate(obj)
            assert spec is not None, errors
        best = min(best, time.perf_counter() - started)
    print(f"{n} Backends + {n} Routes: validate, best of {rounds}: {best:.3f} s "
          f"({best / (2 * n) * 1e6:.1f} us per object)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.objects, args.rounds)
