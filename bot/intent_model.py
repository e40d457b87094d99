"""A learned intent model: TF-IDF over character n-grams, a linear SVM.

The rules in ``bot.understanding`` are precise where their lexicon reaches and blind past it:
slang, dialect, Russian typed in Latin letters, a question asked in words no entry has. This
model reads the shape of the words instead, and ``understand()`` weighs its probabilities with
the rules' decision.

Training data ships with the package in ``bot/intent_data/``:

* ``labelled.tsv``: hand-labelled customer messages (language, intent, text);
* ``templates.tsv``: phrasings per language and intent, written as templates: ``(a|b|c)`` picks
  one, ``[x]`` is there or not, ``{p}`` is a product from ``products.tsv``, ``{n}`` an order
  number;
* ``products.tsv``: product names per language for ``{p}`` (a kitchen, clothing and sports
  shop: none of the hold-out's electronics, so the hold-out measures a catalog never seen).

``training_set()`` expands every template into variants the way people type in a chat app
(lower case, no punctuation, no accents or umlauts, a typo, an emoji, Russian in Latin letters,
a greeting or a "pls" in another language, two requests in one message) with a fixed seed, so the
same data always gives the same messages and the same model. ``model()`` fits it once per
process, in a child process (about 2 s with its start-up), and keeps only plain arrays:
scikit-learn is used to fit, never to predict; it would stay in memory (127 MB) and its
per-call overhead alone (~150 us) would cost more than the whole rest of ``understand()``.

Text is normalised before features are taken (``normalise``): lower case, accents and umlauts
dropped, Cyrillic written in Latin letters with one fixed scheme and common Latin spellings of
Russian folded onto it ("kh" -> "h", "j" -> "y", "sch" -> "sh"), digits made 0, letters repeated
three times or more cut to two ("heyyy" -> "heyy"). So "где мой заказ", "gde moj zakaz" and
"gde moy zakaz" share their features, and so do "Kopfhörer" and "kopfhorer".
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import math
import os
import random
import re
import subprocess
import sys
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np

from bot.lexicon import INTENT_NAMES

__all__ = [
    "INTENTS",
    "PRODUCT",
    "IntentModel",
    "latin_spelling",
    "model",
    "normalise",
    "training_set",
]

DATA = Path(__file__).parent / "intent_data"
_ROOT = Path(__file__).resolve().parents[1]
_FIT_TIMEOUT = 120  # seconds; ~2 s on a quiet machine

# The labels, in the order of the probabilities; the values of bot.understanding.Intent.
INTENTS = (*INTENT_NAMES, "unknown")

# The intent a message with two requests is answered with: the same order as the rules' priority
# (a person, stop, cancel before anything else; a greeting or thanks never hides a request).
_PAIR_PRIORITY = (
    "agent",
    "stop_notifications",
    "cancel",
    "alternatives",
    "order_status",
    "stock",
    "help",
    "thanks",
    "greeting",
)

# Only the start of a long message is read: the request comes early, and the cost stays bounded.
MAX_MODEL_CHARS = 400
_MAX_WORDS = 60
_NGRAMS = (2, 3, 4, 5)
_SEED = 20261201
_C = 2.0  # the SVM's regularisation, chosen by grouped cross-validation (0.3-5: 83.7-85.3%)
_SHARPNESS = 4.0  # decision values are mostly within +-1.5; this spreads them into a softmax
_WORD_CACHE = 32768
_TEXT_CACHE = 16384
# The word that stands for a product name: ``understand()`` puts it where the shop's catalog
# says the words are a product, and training puts it in place of some products' names, so the
# model learns the shape of a question around a product whatever the shop sells. It has one
# feature, the whole word: its letters are no word's.
PRODUCT = "qxprodq"
_PRODUCT_SHARE = 0.35  # of the products in training messages

# --------------------------------------------------------------------------------------------
# Normalisation and features.
# --------------------------------------------------------------------------------------------

_CYRILLIC = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
        "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
        "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "c",
        "ч": "ch", "ш": "sh", "щ": "sh", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
        "я": "ya", "ß": "ss",
    }
)  # fmt: skip
_LATIN_VARIANTS = (("shch", "sh"), ("sch", "sh"), ("kh", "h"), ("ts", "c"), ("j", "y"))
_COMBINING_RE = re.compile(r"[\u0300-\u036f]")
_APOSTROPHE_RE = re.compile(r"['’`´]")
_PUNCT_RE = re.compile(r"[\s.,!?;:¿¡\"()\[\]{}<>*/\\|@#%&+=~^_\-–—…«»„“”]+")
_DIGIT_RE = re.compile(r"[0-9]")
_REPEAT_RE = re.compile(r"(.)\1{2,}")


def latin_spelling(text: str) -> str:
    """Lower case, no accents, Cyrillic in the Latin letters of ``normalise``, digits kept."""
    text = text.lower().replace("й", "y")
    text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text)).translate(_CYRILLIC)
    for variant, canonical in _LATIN_VARIANTS:
        if variant in text:
            text = text.replace(variant, canonical)
    return text


@lru_cache(maxsize=16384)
def normalise(text: str) -> str:
    """The form features are taken from (see the module's docstring)."""
    text = text[:MAX_MODEL_CHARS].lower().replace("й", "y")
    text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text)).translate(_CYRILLIC)
    for variant, canonical in _LATIN_VARIANTS:
        if variant in text:
            text = text.replace(variant, canonical)
    text = _APOSTROPHE_RE.sub("", text)
    text = _DIGIT_RE.sub("0", _PUNCT_RE.sub(" ", text))
    return _REPEAT_RE.sub(r"\1\1", text).strip()


def _word_features(word: str) -> list[str]:
    out = ["\x01" + word]
    if word == PRODUCT:
        return out
    padded = f" {word} "
    size = len(padded)
    for n in _NGRAMS:
        if size < n:
            break
        out.extend(padded[i : i + n] for i in range(size - n + 1))
    return out


def features(text: str) -> list[str]:
    """Character 2-5-grams of each word padded with spaces (scikit-learn's ``char_wb``), and
    each whole word."""
    return [f for word in normalise(text).split()[:_MAX_WORDS] for f in _word_features(word)]


# --------------------------------------------------------------------------------------------
# The model at call time: plain arrays, no scikit-learn.
# --------------------------------------------------------------------------------------------


class IntentModel:
    """A fitted linear model over binary TF-IDF features, as plain arrays.

    With binary term frequencies a message's score for an intent is the sum, over its distinct
    features, of idf * weight, divided by the L2 norm of the idfs, plus the intercept. The
    feature ids of each word are kept (most words recur), so a message costs one dictionary
    look-up per word, one set union and two fancy-indexed sums.
    """

    def __init__(
        self,
        vocabulary: dict[str, int],
        idf: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        intents: tuple[str, ...],
    ) -> None:
        self.vocabulary = vocabulary
        self.intents = intents
        self.intercept = intercept
        self.idf = idf
        self.coef = coef
        # idf * weight per intent, and idf squared last: one fancy-indexed sum gives the scores
        # and the norm together
        self._table = np.ascontiguousarray(np.hstack([idf[:, None] * coef, (idf * idf)[:, None]]))
        self._intercepts = intercept.tolist()
        self._word_ids = lru_cache(maxsize=_WORD_CACHE)(self._ids_of_word)
        # customers send the same few messages ("hi", "where is my order") again and again
        self.probabilities = lru_cache(maxsize=_TEXT_CACHE)(self._probabilities)

    def _ids_of_word(self, word: str) -> frozenset[int]:
        # one map() over every slice keeps the look-ups in C: ~11 us for a word never seen
        if word == PRODUCT:
            known = self.vocabulary.get("\x01" + word)
            return frozenset(() if known is None else (known,))
        padded = f" {word} "
        size = len(padded)
        grams = [padded[i : i + n] for n in _NGRAMS for i in range(size - n + 1)]
        grams.append("\x01" + word)
        ids = set(map(self.vocabulary.get, grams))
        ids.discard(None)
        return frozenset(cast(set[int], ids))

    def scores(self, text: str) -> list[float] | None:
        """The linear decision value of every intent (order of ``intents``); None when the text
        has no feature the model knows."""
        ids: set[int] = set()
        for word in normalise(text).split()[:_MAX_WORDS]:
            ids.update(self._word_ids(word))
        if not ids:
            return None
        *sums, norm2 = np.add.reduce(self._table.take(list(ids), axis=0)).tolist()
        norm = math.sqrt(norm2)
        return [s / norm + b for s, b in zip(sums, self._intercepts, strict=True)]

    def _probabilities(self, text: str) -> dict[str, float]:
        """A softmax of the decision values: a ranking with a sense of margin, not a calibrated
        probability (a linear SVM's values are not). Uniform for text the model knows nothing
        of: the intercepts alone would only say which intent was most common in training."""
        scores = self.scores(text)
        if scores is None:
            return dict.fromkeys(self.intents, 1.0 / len(self.intents))
        top = max(scores)
        exp = [math.exp((s - top) * _SHARPNESS) for s in scores]
        total = sum(exp)
        return {intent: e / total for intent, e in zip(self.intents, exp, strict=True)}


def fit(texts: Sequence[str], labels: Sequence[str], c: float = _C) -> IntentModel:
    """Fit on these messages (scikit-learn imported here only: it is not needed to predict)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

    vectorizer = TfidfVectorizer(analyzer=features, binary=True, min_df=2, dtype=np.float64)
    x = vectorizer.fit_transform(texts)
    classifier = LinearSVC(C=c, random_state=0)
    classifier.fit(x, labels)
    return IntentModel(
        vocabulary={str(k): int(v) for k, v in vectorizer.vocabulary_.items()},
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        coef=np.asarray(classifier.coef_.T, dtype=np.float64),
        intercept=np.ascontiguousarray(classifier.intercept_, dtype=np.float64),
        intents=tuple(str(label) for label in classifier.classes_),
    )


@lru_cache(maxsize=1)
def model() -> IntentModel:
    """The model fitted on the shipped training data, once per process.

    It is fitted in a child process that hands back the arrays: scikit-learn and SciPy, once
    imported, would stay in the bot's memory for good (RSS 19 -> 146 MB, and 78,000 more
    objects for every full garbage collection to walk) for a fit that runs once. The arrays
    are kept in the user's cache directory under a digest of everything they depend on (the
    training data, this module, the scikit-learn version), so a restart, or the next of four
    test workers, loads them in milliseconds instead of fitting again (~2 s).
    """
    cached = _cache_path()
    if cached is not None:
        try:
            return _load(cached.read_bytes())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # missing, or half-written by a process that died: fit again
    data = _fit_in_child()
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            os.replace(partial, cached)  # readers see the whole file or none
        except OSError:
            pass  # a read-only home: every start fits, nothing else changes
    return _load(data)


def _cache_path() -> Path | None:
    try:
        sklearn_version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return None
    digest = hashlib.sha256(sklearn_version.encode())
    for path in (Path(__file__), *sorted(DATA.glob("*.tsv"))):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except RuntimeError:  # no home directory to be found: no cache, the fit still runs
        return None
    return Path(base) / "backorder-bot" / f"intent-model-{digest.hexdigest()[:24]}.npz"


def _fit_in_child() -> bytes:
    env = dict(os.environ)
    # the child must import this package from where the parent did, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_ROOT), env.get("PYTHONPATH"))))
    child = subprocess.run(
        [sys.executable, "-m", "bot.intent_model"],
        capture_output=True,
        check=False,
        env=env,
        timeout=_FIT_TIMEOUT,
    )
    if child.returncode != 0:
        raise RuntimeError(f"fitting the intent model failed: {child.stderr.decode()[-2000:]}")
    return child.stdout


def _dump(fitted: IntentModel) -> bytes:
    words = sorted(fitted.vocabulary, key=fitted.vocabulary.__getitem__)
    out = io.BytesIO()
    np.savez(
        out,
        vocabulary=np.array(words, dtype=str),
        idf=fitted.idf,
        coef=fitted.coef,
        intercept=fitted.intercept,
        intents=np.array(fitted.intents, dtype=str),
    )
    return out.getvalue()


def _load(data: bytes) -> IntentModel:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        words = arrays["vocabulary"].tolist()
        return IntentModel(
            vocabulary={word: i for i, word in enumerate(words)},
            idf=arrays["idf"],
            coef=arrays["coef"],
            intercept=arrays["intercept"],
            intents=tuple(arrays["intents"].tolist()),
        )


def _fit_shipped() -> IntentModel:
    rows = training_set()
    return fit([r.text for r in rows], [r.intent for r in rows])


# --------------------------------------------------------------------------------------------
# Training data: hand-labelled messages and templates expanded into chat-style variants.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    language: str
    intent: str
    text: str
    group: str  # the template or labelled row it came from (cross-validation keeps one apart)


def _read(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


_GROUP_RE = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]")
_SPACES_RE = re.compile(r"\s+")
_STRIP_PUNCT_RE = re.compile(r"[.,!?¿¡;:]")

# Latin spellings of Russian people use: one is picked per letter and message.
_TRANSLIT: dict[str, tuple[str, ...]] = {
    "а": ("a",), "б": ("b",), "в": ("v",), "г": ("g",), "д": ("d",), "е": ("e", "e", "ye"),
    "ё": ("e", "yo"), "ж": ("zh", "j"), "з": ("z",), "и": ("i",), "й": ("y", "j", "i"),
    "к": ("k",), "л": ("l",), "м": ("m",), "н": ("n",), "о": ("o",), "п": ("p",), "р": ("r",),
    "с": ("s",), "т": ("t",), "у": ("u",), "ф": ("f",), "х": ("h", "kh", "x"),
    "ц": ("ts", "c"), "ч": ("ch",), "ш": ("sh",), "щ": ("sch", "shch", "sh"), "ъ": ("",),
    "ы": ("y", "i"), "ь": ("", "'"), "э": ("e",), "ю": ("yu", "ju", "iu"),
    "я": ("ya", "ja", "ia"),
}  # fmt: skip
_UMLAUTS = {"ä": ("a", "ae"), "ö": ("o", "oe"), "ü": ("u", "ue"), "ß": ("ss",)}
_NEUTRAL_EMOJI = ("🙂", "😅", "😩", "🙄", "😭", "😤", "🤷")
_GREETINGS = ("hi", "hey", "hallo", "moin", "hola", "buenas", "привет", "privet", "здравствуйте")
_PLEASE = ("pls", "please", "bitte", "porfa", "por favor", "пожалуйста", "pozhaluysta", "плз")
_VARIANTS = {"order_status": 12, "stock": 12}
_DEFAULT_VARIANTS = 9
_PAIRS_PER_LANGUAGE = 120


def _expand(template: str, rng: random.Random, products: Sequence[str]) -> str:
    def choose(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return rng.choice(match.group(1).split("|"))
        return match.group(2) if rng.random() < 0.5 else ""

    text = _GROUP_RE.sub(choose, template)
    while "{p}" in text:
        product = PRODUCT if rng.random() < _PRODUCT_SHARE else rng.choice(products)
        text = text.replace("{p}", product, 1)
    while "{n}" in text:
        text = text.replace("{n}", str(rng.randint(1000, 999999)), 1)
    return _SPACES_RE.sub(" ", text).strip()


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1 :]  # dropped
    if kind == 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swapped
    if kind == 2:
        return word[:i] + word[i] + word[i:]  # doubled
    return word[:i] + rng.choice("aeiosntr") + word[i + 1 :]  # wrong key


def _perturb(text: str, language: str, rng: random.Random) -> str:
    if rng.random() < 0.7:
        text = text.lower()
    if rng.random() < 0.5:
        text = _STRIP_PUNCT_RE.sub("", text)
    if language == "de" and rng.random() < 0.5:
        for umlaut, spellings in _UMLAUTS.items():
            text = text.replace(umlaut, rng.choice(spellings))
    if language == "es" and rng.random() < 0.5:
        text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text))
        text = unicodedata.normalize("NFC", text)
    if language == "ru" and rng.random() < 0.3:
        text = "".join(
            rng.choice(_TRANSLIT[ch.lower()]) if ch.lower() in _TRANSLIT else ch for ch in text
        )
    if rng.random() < 0.25:
        words = text.split(" ")
        long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha() and w != PRODUCT]
        if long:
            i = rng.choice(long)
            words[i] = _typo(words[i], rng)
            text = " ".join(words)
    if rng.random() < 0.1:
        text = f"{text} {rng.choice(_NEUTRAL_EMOJI)}"
    return text


def _decorate(text: str, intent: str, rng: random.Random) -> str:
    if intent in ("greeting", "thanks", "unknown"):
        return text
    roll = rng.random()
    if roll < 0.1:
        return f"{rng.choice(_GREETINGS)} {text}"
    if roll < 0.16:
        return f"{text} {rng.choice(_PLEASE)}"
    return text


def training_set() -> list[Example]:
    """Every training message, the same on every call (fixed seed)."""
    rng = random.Random(_SEED)
    products: dict[str, list[str]] = {}
    for row in _read("products.tsv"):
        products.setdefault(row["language"], []).append(row["product"])
    everything = [p for names in products.values() for p in names]
    out: list[Example] = []
    seen: set[str] = set()

    def add(example: Example) -> None:
        key = example.text.casefold()
        if key and key not in seen:
            seen.add(key)
            out.append(example)

    for i, row in enumerate(_read("labelled.tsv")):
        add(Example(row["language"], row["intent"], row["text"], f"labelled:{i}"))
    singles: dict[tuple[str, str], list[str]] = {}
    for i, row in enumerate(_read("templates.tsv")):
        language, intent = row["language"], row["intent"]
        for _ in range(_VARIANTS.get(intent, _DEFAULT_VARIANTS)):
            # one product in ten from another language's list: brand names and code-switching
            pool = everything if rng.random() < 0.1 else products[language]
            text = _expand(row["template"], rng, pool)
            text = _decorate(_perturb(text, language, rng), intent, rng)
            add(Example(language, intent, text, f"template:{i}"))
            singles.setdefault((language, intent), []).append(text)
    for language in sorted({lang for lang, _ in singles}):
        intents = [i for i in _PAIR_PRIORITY if (language, i) in singles]
        for n in range(_PAIRS_PER_LANGUAGE):
            first, second = rng.sample(intents, 2)
            if {first, second} == {"order_status", "stock"}:
                continue  # which one wins depends on the words; the rules' scores decide
            label = min(first, second, key=_PAIR_PRIORITY.index)
            a = rng.choice(singles[(language, first)])
            b = rng.choice(singles[(language, second)])
            joint = rng.choice((", ", " and ", ". ", " ", " y ", " und ", " и "))
            add(Example(language, label, f"{a}{joint}{b}", f"pair:{language}:{n}"))
    return out


if __name__ == "__main__":
    # model()'s child: fit, and write the arrays to stdout
    sys.stdout.buffer.write(_dump(_fit_shipped()))
