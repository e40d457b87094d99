"""Cross-validated accuracy of the intent model, alone and inside understand() (run by hand;
prints figures, asserts nothing).

    .venv/bin/python bench/bench_intent_model.py [--folds 5]

Folds are grouped by origin: every variant expanded from one template (and every two-request
message built from one pair) stays in the same fold, so a fold is tested on phrasings it never
saw, not on a typo of a sentence it was trained on. Prints accuracy per language and intent of
the model alone (argmax of its probabilities) and of understand() with the fold's model in
place of the shipped one (the rules and the model together), plus the training set's size and
the time to fit.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import intent_model, understanding  # noqa: E402


def _line(name: str, hits: Counter[str], totals: Counter[str]) -> str:
    parts = [f"{key or '-'} {hits[key] / totals[key]:.1%}" for key in sorted(totals)]
    return f"{name}: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    rows = intent_model.training_set()
    expanded = time.perf_counter() - start
    start = time.perf_counter()
    intent_model.fit([r.text for r in rows], [r.intent for r in rows])
    fitted = time.perf_counter() - start
    print(
        f"training set: {len(rows)} messages "
        f"({', '.join(f'{k} {v}' for k, v in sorted(Counter(r.language for r in rows).items()))})"
        f"; expanded in {expanded:.2f} s, fitted in {fitted:.2f} s"
    )

    groups = sorted({r.group for r in rows})
    fold_of = {g: i % args.folds for i, g in enumerate(groups)}
    counts = {
        k: Counter[str]() for k in ("lang", "intent", "m_lang", "m_intent", "u_lang", "u_intent")
    }
    for fold in range(args.folds):
        train = [r for r in rows if fold_of[r.group] != fold]
        test = [r for r in rows if fold_of[r.group] == fold]
        model = intent_model.fit([r.text for r in train], [r.intent for r in train])
        understanding._model = lambda model=model: model  # type: ignore[misc]
        for r in test:
            probabilities = model.probabilities(r.text)
            m_ok = max(probabilities, key=probabilities.__getitem__) == r.intent
            u_ok = understanding.understand(r.text).intent.value == r.intent
            counts["lang"][r.language] += 1
            counts["intent"][r.intent] += 1
            counts["m_lang"][r.language] += m_ok
            counts["m_intent"][r.intent] += m_ok
            counts["u_lang"][r.language] += u_ok
            counts["u_intent"][r.intent] += u_ok
    n = len(rows)
    for label, prefix in (("model alone", "m"), ("understand() (rules + model)", "u")):
        ok = sum(counts[f"{prefix}_lang"].values())
        print(f"{label}: {ok}/{n} = {ok / n:.1%}")
        print("  " + _line("by language", counts[f"{prefix}_lang"], counts["lang"]))
        print("  " + _line("by intent", counts[f"{prefix}_intent"], counts["intent"]))


if __name__ == "__main__":
    main()
