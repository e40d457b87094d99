"""Throughput and latency of bot.understanding.understand (run by hand, not part of the tests).

    .venv/bin/python bench/bench_understanding.py [--rounds N]

Prints messages/second and p50/p99/max latency for: the labelled set (warm caches, as in a
running bot), the labelled set with caches cleared before every message (worst case for a
message never seen before), 4096-character messages built from real words, 4096 characters of
random letters, and a few pathological inputs.
"""

from __future__ import annotations

import argparse
import csv
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import understanding  # noqa: E402
from bot.understanding import MAX_CHARS, ProductWords, understand  # noqa: E402

DATA = ROOT / "tests" / "data" / "understanding.tsv"
CATALOG = ROOT / "tests" / "data" / "holdout" / "catalog.tsv"


def _clear_caches() -> None:
    for cached in (
        understanding._fold,
        understanding._lookup,
        understanding._direct_atoms,
        understanding._fuzzy_atoms,
        understanding._token_votes,
        understanding._is_gibberish,
        understanding._name_parts,
        understanding.intent_model.normalise,
    ):
        cached.cache_clear()
    understanding._model()._word_ids.cache_clear()
    understanding._model().probabilities.cache_clear()


def _measure(
    name: str,
    messages: Sequence[str],
    rounds: int,
    before: Callable[[], None] | None = None,
    products: ProductWords | None = None,
) -> None:
    for message in messages:  # warm-up: import-time work and caches, as in a running bot
        understand(message, products)
    times: list[float] = []
    for _ in range(rounds):
        for message in messages:
            if before is not None:
                before()
            start = time.perf_counter()
            understand(message, products)
            times.append(time.perf_counter() - start)
    times.sort()
    total = sum(times)

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(len(times) * p))] * 1e3

    print(
        f"{name:<34} n={len(times):>6}  {len(times) / total:>9.0f} msg/s  "
        f"p50 {pct(0.50):6.3f} ms  p99 {pct(0.99):6.3f} ms  max {times[-1] * 1e3:6.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    with DATA.open(encoding="utf-8", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    rng = random.Random(20240601)
    words = [w for text in texts for w in text.split()]
    long_real = [" ".join(rng.choice(words) for _ in range(900))[:MAX_CHARS] for _ in range(50)]
    letters = string.ascii_letters + "абвгдежзийклмнопрстуфхцчшщыэюяäöüßñ" + " " * 12
    long_random = ["".join(rng.choice(letters) for _ in range(MAX_CHARS)) for _ in range(50)]
    pathological = [
        "1 " * 2048,
        "1." * 2048,
        "order no # " * 372,
        "#" * MAX_CHARS,
        "a" * MAX_CHARS,
        "заказ" * 819,
        "a\u0301" * 2048,
        "&amp;" * 819,
    ]

    with CATALOG.open(encoding="utf-8", newline="") as f:
        names = [
            v
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for v in row.values()
        ]
    products = ProductWords.of_names(names)

    print(f"python {sys.version.split()[0]}, {len(texts)} labelled messages")
    _measure("labelled set (warm)", texts, args.rounds)
    _measure("labelled set, catalog's words (warm)", texts, args.rounds, products=products)
    _measure("labelled set (cold caches)", texts, max(1, args.rounds // 4), _clear_caches)
    _measure(
        "labelled set, catalog (cold caches)",
        texts,
        max(1, args.rounds // 4),
        _clear_caches,
        products=products,
    )
    _measure("4096 chars of real words (warm)", long_real, max(1, args.rounds // 4))
    _measure("4096 chars of real words (cold)", long_real, 1, _clear_caches)
    _measure("4096 random letters (cold)", long_random, 1, _clear_caches)
    _measure("pathological 4096-char inputs", pathological, max(1, args.rounds // 4))


if __name__ == "__main__":
    main()
