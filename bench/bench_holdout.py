"""Accuracy of bot.understanding on the hold-out: another shop's catalog and customers (run by
hand; prints figures, asserts nothing).

    .venv/bin/python bench/bench_holdout.py [--misses] [--file tests/data/holdout/messages.tsv]
        [--catalog CATALOG.tsv (default: the catalog.tsv beside --file)]

The hold-out (tests/data/holdout/) is an electronics shop, not the demo shop: its catalog
(catalog.tsv, names in en/de/es/ru) and messages written the way people type in a chat app.
Nothing in the rules or the model was fitted to it; it is read only here, so that its figures
say how the understanding does on a shop it has never seen. Thresholds are chosen on the
development set instead (``--file tests/data/dev/messages.tsv``: a third shop, intents only).
Prints intent accuracy per language and per intent, order numbers, and for stock questions
whether the expected product is among the first three results of the store's own product
search on the product words.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.handlers.conversation import GUESS_CONFIDENCE  # noqa: E402
from bot.understanding import Intent, ProductWords, understand  # noqa: E402
from store.catalog import LANGUAGES, ProductIndex  # noqa: E402

HOLDOUT = ROOT / "tests" / "data" / "holdout"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def load_index(path: Path = HOLDOUT / "catalog.tsv") -> ProductIndex:
    """The product index the bot would build from this catalog in the store."""
    index = ProductIndex()
    index.build(
        {
            row["sku"]: {lang: row[f"name_{lang}"] for lang in LANGUAGES if row[f"name_{lang}"]}
            for row in _read(path)
        }
    )
    return index


def _line(name: str, hits: Counter[str], totals: Counter[str]) -> str:
    parts = [f"{key} {hits[key]}/{totals[key]}" for key in sorted(totals)]
    return f"{name}: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", type=Path, default=HOLDOUT / "messages.tsv")
    parser.add_argument(
        "--catalog", type=Path, help="the shop's catalog (default: catalog.tsv beside --file)"
    )
    parser.add_argument("--misses", action="store_true", help="list every miss")
    parser.add_argument(
        "--no-catalog-words",
        action="store_true",
        help="understand without the catalog's words (the bot passes them)",
    )
    args = parser.parse_args()

    rows = _read(args.file)
    catalog = args.catalog or args.file.parent / "catalog.tsv"
    index = load_index(catalog if catalog.is_file() else HOLDOUT / "catalog.tsv")
    catalog_words = None if args.no_catalog_words else ProductWords.of_names(index.names())
    by_lang: Counter[str] = Counter()
    by_lang_hits: Counter[str] = Counter()
    by_intent: Counter[str] = Counter()
    by_intent_hits: Counter[str] = Counter()
    numbers = numbers_ok = 0
    products = products_ok = 0
    acted_ok = 0
    misses: list[str] = []
    for row in rows:
        u = understand(row["text"], catalog_words)
        ok = u.intent == Intent(row["intent"])
        acted = u.intent
        # the bot answers a guessed product name only when the catalog knows it
        guessed = u.intent is Intent.STOCK and u.confidence <= GUESS_CONFIDENCE
        if guessed and not (u.product_words and index.search(u.product_words, limit=1)):
            acted = Intent.UNKNOWN
        acted_ok += acted == Intent(row["intent"])
        by_lang[row["language"]] += 1
        by_lang_hits[row["language"]] += ok
        by_intent[row["intent"]] += 1
        by_intent_hits[row["intent"]] += ok
        numbers += 1
        number_ok = (u.order_number or "") == row["order_number"]
        numbers_ok += number_ok
        found = ""
        if row["sku"] and row["intent"] == Intent.STOCK:
            products += 1
            top = index.search(u.product_words, limit=3) if u.product_words else []
            found = ",".join(m.sku for m in top)
            hit = row["sku"] in {m.sku for m in top}
            products_ok += hit
            if not hit:
                misses.append(
                    f"  product {row['language']} {row['text']!r}: words {u.product_words!r} -> "
                    f"[{found}], expected {row['sku']}"
                )
        if not ok or not number_ok:
            misses.append(
                f"  {row['language']} {row['text']!r}: expected {row['intent']}/"
                f"{row['order_number']!r}, got {u.intent.value}/{u.order_number!r} "
                f"({u.confidence}, words {u.product_words!r})"
            )
    n = len(rows)
    total_ok = sum(by_lang_hits.values())
    print(f"{args.file}: {n} messages, catalog of {len(index)} products")
    print(f"intent: {total_ok}/{n} = {total_ok / n:.1%}")
    print(_line("by language", by_lang_hits, by_lang))
    print(
        "by language %: "
        + ", ".join(f"{k} {by_lang_hits[k] / by_lang[k]:.1%}" for k in sorted(by_lang))
    )
    print(_line("by intent", by_intent_hits, by_intent))
    print(
        f"as the bot acts (a guessed product name the catalog does not know: not understood): "
        f"{acted_ok}/{n} = {acted_ok / n:.1%}"
    )
    print(f"order numbers: {numbers_ok}/{numbers}")
    print(f"product top-3 (stock questions): {products_ok}/{products}")
    if args.misses:
        print("misses:\n" + ("\n".join(misses) or "  none"))


if __name__ == "__main__":
    main()
