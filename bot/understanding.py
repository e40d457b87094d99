"""Language understanding for customer messages: intent, order number, product words, language.

Pure and deterministic: no I/O, no Telegram, no store. `understand(text, products)` reads a
message; `understand_all(text, products)` the one or two questions in it; `load_lexicon` sets
the shop's words; ``products`` (``ProductWords``, made by the caller from its catalog's names)
says which words are the shop's products.
(The intent model is fitted, or read from the user's cache, once when this module is imported.)

How it works, in order:

1. The text is bounded (``MAX_CHARS``), HTML entities are decoded, apostrophes inside words are
   dropped ("don't" -> "dont") and it is split into word tokens and clause breaks (.,!?;: ...).
2. Every token is folded for matching: casefold (ß -> ss), accents stripped, ё -> е.
3. Each folded token is mapped to *atoms* of the lexicon (``bot/lexicon/*.toml``, one file per
   language, and the shop's own file: ``load_lexicon``; a shop's synonym is read as the word
   it stands for): exact words, stems written ``stem*``
   (cheap morphology for Russian and German: заказ* covers заказа/заказе/заказом), and, for
   tokens of 4+ letters that are not stop-words, a typo match (optimal string alignment
   distance 1, or 2 for keywords of 8+ letters, same first letter) against keywords of 5+ letters.
3b. With ``products``: a word of a product name that is no lexicon word and no stop-word
   ("webcam", "ps5"), and the words joined to it as in a name ("noise cancelling", "iphone 15",
   "palatka na 2 cheloveka"), are the product. They lose their atoms (no intent cue), hold no
   order number, stay in the product words, and the model reads each run of them as one
   placeholder word it was trained with in place of product names (``intent_model.PRODUCT``).
   "other" before such a word asks for an alternative.
4. Lexicon phrases (one or more atoms in order, at most ``_GAP`` tokens apart) add their weight
   to their intent. A CANCEL, AGENT or ALTERNATIVES phrase preceded in the same clause by a
   negation ("I don't want to cancel", "no quiero cancelar", "не хочу отменять") is ignored;
   phrases marked ``!`` carry their own negation ("ya no lo quiero") and are never ignored.
5. The rules' winner is picked by a fixed priority among intents that reach ``_THRESHOLD``:
   AGENT > STOP_NOTIFICATIONS > CANCEL > ALTERNATIVES > (ORDER_STATUS vs STOCK by score)
   > HELP > THANKS > GREETING. A customer who asks for a person, or to stop messages, or to
   cancel, means that even when they also mention their order.
6. The learned model (``bot.intent_model``: a linear SVM over character n-grams, fitted once
   per process from ``bot/intent_data/``) gives every intent a probability; the rules'
   winner is added to it with ``_RULE_WEIGHT`` times its confidence, and an intent the rules
   saw negated gets nothing. The rules win where they are sure; the model reads what no
   lexicon entry covers (slang, Russian in Latin letters, "will you get it again"), and
   overrules a lone rule when it is nearly sure ("noise cancelling headphones" is a product).
   A winner below ``_MODEL_FLOOR`` is UNKNOWN.
7. Fallbacks: an order number alone means ORDER_STATUS; a short message that looks like a
   product name ("Kaffeemaschine Barista Pro"), with no stock question around it, is STOCK with
   ``GUESS_CONFIDENCE`` (the handler answers it only if the catalog knows the name), also after
   a greeting ("Hi, Dyson V11?") unless the model is sure it is only a greeting. With
   ``products`` the guess needs a word of a name, or one typo from one; else not understood.

Decisions worth knowing:

* Order numbers are 4-10 ASCII digits. After a marker (#, No., Nr., №, n.º, order, Bestellung,
  pedido, заказ, ...) digit groups written with thousands separators count as one number
  ("order 10 234" -> "10234", "Bestellnummer 100.234" -> "100234"). Without a marker only a
  plain run of digits counts, and not when it looks like a postcode, phone number, year, price,
  quantity, date or the digits of a SKU ("KAF-2031").
* ``product_words`` is only set for STOCK and ALTERNATIVES: the remaining words lower-cased
  with their accents kept (for display and for the store's own fuzzy product search). Words
  of a cancel, agent or stop phrase the decision overruled stay: they were part of the name.
* ``language`` is None for messages without language evidence (a bare number, emoji, gibberish).
* ``confidence`` is 0.0 for UNKNOWN; handlers can treat low values as "ask again". Only the
  rules reach 0.99 ("certain"); the model alone gives at most 0.95.
* Accuracy is measured, not asserted: bench/bench_intent_model.py (grouped cross-validation
  on the training data) and bench/bench_holdout.py (another shop's catalog and customers).
"""

from __future__ import annotations

import html
import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from rapidfuzz import fuzz
from rapidfuzz import process as fuzz_process
from rapidfuzz.distance import OSA

from bot import intent_model, lexicon

__all__ = [
    "MAX_CHARS",
    "Intent",
    "ProductWords",
    "Understanding",
    "load_lexicon",
    "understand",
    "understand_all",
]

# Telegram caps a message at 4096 characters; anything longer is not from Telegram.
MAX_CHARS = 4096


class Intent(StrEnum):
    ORDER_STATUS = "order_status"
    STOCK = "stock"
    CANCEL = "cancel"
    ALTERNATIVES = "alternatives"
    AGENT = "agent"
    STOP_NOTIFICATIONS = "stop_notifications"
    GREETING = "greeting"
    HELP = "help"
    THANKS = "thanks"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Understanding:
    intent: Intent
    order_number: str | None
    product_words: str | None
    language: str | None
    confidence: float


# --------------------------------------------------------------------------------------------
# The lexicon: words and phrases per language, in bot/lexicon/*.toml (the format is described
# in bot/lexicon/README.md), plus a shop's own file named by LEXICON_FILE (``load_lexicon``).
# --------------------------------------------------------------------------------------------


_NEGATABLE = frozenset({Intent.CANCEL, Intent.AGENT, Intent.ALTERNATIVES})
# Intents whose words turn up in product names ("noise cancelling", "back support", "door stop"):
# when the message is about a product after all, their words are part of its name.
_IN_NAMES = frozenset({Intent.CANCEL, Intent.AGENT, Intent.STOP_NOTIFICATIONS})

# Weak spelling cues for Latin-script languages when no word is known (product names).
_LANG_HINT_RE: Mapping[str, re.Pattern[str]] = {
    "de": re.compile(r"[äöüß]|sch|(?:ung|keit|heit|chen|maschine|kocher|sauger)\b"),
    "es": re.compile(r"[ñ¿¡]|(?:cion|ciones|dad|era|eras|ora|oras|ero|eros|ado|ada)\b"),
    "en": re.compile(r"\b(?:th|wh)|(?:ing|ness)\b"),
}

_EMOJI_INTENT: Mapping[str, Intent] = {
    "🙏": Intent.THANKS,
    "👍": Intent.THANKS,
    "❤": Intent.THANKS,
    "👋": Intent.GREETING,
}
_COMMANDS: Mapping[str, Intent] = {
    "start": Intent.GREETING,
    "help": Intent.HELP,
    "stop": Intent.STOP_NOTIFICATIONS,
}


_THRESHOLD = 0.99  # a full-weight phrase; 0.99 so that 0.6 + 0.4 counts despite float sums
_WEAK_THRESHOLD = 0.6  # a lone weak cue still beats UNKNOWN, with low confidence
_GAP = 3  # at most this many other tokens between the atoms of one phrase
_NEGATION_WINDOW = 4  # "no need for a human", "no quiero hablar con nadie"
_MAX_FUZZY_LOOKUPS = 100  # per message: bounds the cost of long random text
_MAX_PRODUCT_TOKENS = 6
_ORDER_DIGITS = (4, 10)
_MAX_NUMBER_RUNS = 64  # an order number is written early; a wall of digits is not a message
_ORDER_NUMBER_BOOST = 0.5
# The rules' decision is added to the model's probability with this weight times its confidence
# (chosen by grouped cross-validation on the training data: bench/bench_intent_model.py).
_RULE_WEIGHT = 0.6
_MODEL_FLOOR = 0.3  # a winner below this is a shrug: not understood
_NAME_OVERRIDE = 0.8  # below this the model is unsure; chosen on tests/data/dev (see its commit)
_SOCIAL = frozenset({Intent.GREETING, Intent.THANKS, Intent.UNKNOWN})
_MODEL_SURE = 0.5  # the model's greeting or chat this likely is not a product name after all
_MODEL_MAX_CONFIDENCE = 0.95
# What a bare product-looking name gets: handlers ask the catalog before answering it.
GUESS_CONFIDENCE = 0.5
_model = intent_model.model  # a seam for the cross-validation bench
_model()  # fitted at import, while the bot starts: the first customer must not wait for it
_INTENT_OF = {intent.value: intent for intent in Intent}

_PRIORITY = (
    Intent.AGENT,
    Intent.STOP_NOTIFICATIONS,
    Intent.CANCEL,
    Intent.ALTERNATIVES,
)
# "thanks for your help" is a closing, not a request for help.
_CLOSING_PRIORITY = (Intent.THANKS, Intent.HELP, Intent.GREETING)

# --------------------------------------------------------------------------------------------
# Regular expressions. Every repetition is over a disjoint class or a bounded slice, so none
# can backtrack catastrophically.
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"([^\W_]+(?:-[^\W_]+)*)|([.,!?;:¿¡\n(){}\[\]]+)")
_APOSTROPHE_RE = re.compile(r"(?<=[^\W\d_])['’`´](?=[^\W\d_])")
_COMBINING_RE = re.compile(r"[\u0300-\u036f]")
_DIGIT_RUN_RE = re.compile(r"(?<![0-9])[0-9]+(?:[ .,/:-][0-9]+)*")
_GROUPED_RE = re.compile(r"[0-9]{1,3}(?:( |\.|,)[0-9]{3})(?:\1[0-9]{3})*")
_MARKER_END_RE = re.compile(
    r"(?:#|n°|(?<![^\W\d_])(?:n\.?o|nr|nro|n|num|numero|number|nummer|номер|id|ref"
    r"|orders?|ord|ordernumber|orden|bestell(?:ung|nummer|nr|no)?|auftrag(?:s?nummer|snr|nr)?"
    r"|pedidos?|compra|заказ(?:а|е|у|ом|ы)?))[\s:.#°-]*$"
)
_NOT_ORDER_BEFORE_RE = re.compile(
    r"(?<![^\W\d_])(?:post\s?code|zip|plz|postleitzahl|codigo\s?postal|cp\b|индекс|почтов"
    r"|tel\b|tel\.|telefon|telephone|phone|handy|movil|whatsapp|call|телефон|звон"
    r"|model|modell|modelo|модел|art\b|art\.|artikel|sku\b|serie|артикул)"
)
_NOT_ORDER_AFTER_RE = re.compile(
    r"\s?(?:€|\$|£|₽|eur\b|euro|usd|dollar|руб|р\b|pcs|pieces|stuck|шт|units|unidades|x\b"
    r"|kg\b|km\b|ml\b|mal\b|veces|раз|%)"
)
_CYRILLIC_RE = re.compile(r"[а-яё]")
_LATIN_RE = re.compile(r"[a-z]")  # on folded text, where accents are gone
_YEAR_RE = re.compile(r"(?:19|20)[0-9]{2}")
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "йцукенгшщзхъ", "фывапролджэ", "ячсмитьбю")
_REPEAT_RE = re.compile(r"(.{1,4}?)\1+.{0,3}")
_VOWELS = frozenset("aeiouyäöüáéíóúаеёиоуыэюя")


# --------------------------------------------------------------------------------------------
# The lexicon in use: read and checked once at import, again only by ``load_lexicon``.
# --------------------------------------------------------------------------------------------

assert set(lexicon.INTENT_NAMES) == set(_INTENT_OF) - {Intent.UNKNOWN.value}
_fold = lexicon.fold
_C: lexicon.Lexicon[Intent] = lexicon.load(lexicon.BUILTIN, _INTENT_OF)


def load_lexicon(path: Path | None) -> None:
    """Use the built-in lexicon plus the shop's file ``path`` (None: the built-in one alone).

    Called once while the bot is built, before any message is read: ``understand()`` itself
    never reads a file. Raises ``lexicon.LexiconError`` (``file:line: reason``) and keeps the
    lexicon in use when the file is wrong.
    """
    global _C
    _C = lexicon.load([*lexicon.BUILTIN, *([path] if path is not None else [])], _INTENT_OF)
    for cached in (_lookup, _direct_atoms, _fuzzy_atoms, _token_votes):
        cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Token-level helpers.
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Token:
    text: str  # lower-cased original, accents kept (product words come from here)
    folded: str  # matching form
    clause: int
    atoms: frozenset[int]
    start: int  # where it is in the text read
    end: int


_NO_ATOMS: frozenset[int] = frozenset()


@lru_cache(maxsize=16384)
def _direct_atoms(folded: str) -> frozenset[int]:
    key = folded.replace("-", "")
    key = _C.synonyms.get(key, key)
    found: set[int] = set(_C.exact.get(key, ()))
    for n in _C.stem_lengths:
        if n > len(key):
            break
        found.update(_C.stems.get(key[:n], ()))
    return frozenset(found)


@lru_cache(maxsize=16384)
def _fuzzy_atoms(folded: str) -> frozenset[int]:
    best: tuple[int, str] | None = None
    for word, is_stem in _C.fuzzy.get(folded[0], ()):
        max_distance = 1 if len(word) < 8 else 2
        if is_stem and len(folded) > len(word):
            candidate = folded[: len(word)]
        elif abs(len(folded) - len(word)) <= max_distance:
            candidate = folded
        else:
            continue
        distance = OSA.distance(candidate, word, score_cutoff=max_distance)
        if distance <= max_distance and (best is None or distance < best[0]):
            best = (distance, word)
    # the typo stands for the keyword, so it gets whatever the keyword itself would match
    return _NO_ATOMS if best is None else _direct_atoms(best[1])


@lru_cache(maxsize=16384)
def _lookup(word: str) -> tuple[str, frozenset[int], bool]:
    """Folded form, lexicon atoms, and whether a typo match is worth trying."""
    folded = _fold(word)
    atoms = _direct_atoms(folded)
    typo_candidate = (
        not atoms and len(folded) >= 4 and not folded.isdigit() and folded not in _C.all_stopwords
    )
    return folded, atoms, typo_candidate


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    clause = 0
    fuzzy_budget = _MAX_FUZZY_LOOKUPS
    for match in _TOKEN_RE.finditer(text):
        word = match.group(1)
        if word is None:
            clause += 1
            continue
        folded, atoms, typo_candidate = _lookup(word)
        if typo_candidate and fuzzy_budget > 0:
            fuzzy_budget -= 1
            atoms = _fuzzy_atoms(folded)
        tokens.append(_Token(word, folded, clause, atoms, *match.span(1)))
    return tokens


def _negated(tokens: list[_Token], start: int, end: int) -> bool:
    clause = tokens[start].clause
    for i in range(max(0, start - _NEGATION_WINDOW), start):
        if tokens[i].clause == clause and tokens[i].folded in _C.negations:
            return True
    # "оператора не надо", "no human needed": the negation comes after what it denies
    after = [t.folded for t in tokens[end + 1 : end + 3] if t.clause == clause]
    return (len(after) == 2 and after[0] in _C.negations and after[1] in _C.not_needed) or (
        bool(after) and after[0] in _C.not_needed_alone
    )


def _match_phrase(
    tokens: list[_Token], start: int, phrase: lexicon.Phrase[Intent]
) -> list[int] | None:
    positions = [start]
    for atom in phrase.atoms[1:]:
        prev = positions[-1]
        for j in range(prev + 1, min(len(tokens), prev + 2 + _GAP)):
            if atom in tokens[j].atoms:
                positions.append(j)
                break
        else:
            return None
    return positions


@dataclass
class _Scores:
    by_intent: dict[Intent, float]
    by_lang: dict[str, float]
    used: set[int]  # token positions that belong to a matched phrase
    negated: set[Intent]  # intents whose phrase came after a negation ("I don't want to cancel")
    used_by: dict[int, set[Intent]]  # which intents' phrases a used position belongs to


def _score(tokens: list[_Token]) -> _Scores:
    matched: set[int] = set()  # phrase ids: each phrase counts once
    by_intent: dict[Intent, float] = {}
    by_lang: dict[str, float] = {}
    used: set[int] = set()
    negated: set[Intent] = set()
    used_by: dict[int, set[Intent]] = {}

    def use(positions: list[int], intent: Intent) -> None:
        used.update(positions)
        for position in positions:
            used_by.setdefault(position, set()).add(intent)

    for i, token in enumerate(tokens):
        for atom in token.atoms:
            for phrase in _C.by_first_atom.get(atom, ()):
                positions = _match_phrase(tokens, i, phrase)
                if positions is None:
                    continue
                if id(phrase) in matched:
                    # said twice ("moin moin", "hi hi") counts once, but both are not a product
                    use(positions, phrase.intent)
                    continue
                if (
                    phrase.intent in _NEGATABLE
                    and not phrase.negation_proof
                    and _negated(tokens, i, positions[-1])
                ):
                    use(positions, Intent.UNKNOWN)  # a denied request is never a product word
                    negated.add(phrase.intent)
                    continue
                matched.add(id(phrase))
                use(positions, phrase.intent)
                by_intent[phrase.intent] = by_intent.get(phrase.intent, 0.0) + phrase.weight
                for lang in phrase.langs:
                    by_lang[lang] = by_lang.get(lang, 0.0) + 1.0 / len(phrase.langs)
    return _Scores(by_intent, by_lang, used, negated, used_by)


# --------------------------------------------------------------------------------------------
# The shop's catalog: which words of a message are a product.
# --------------------------------------------------------------------------------------------

_PART_RE = re.compile(r"[^\W_]+")
_MIN_NAME_WORD = 3  # "xl", "m", "go": a word this short is a product only next to another
_MIN_NEAR = 5  # shorter words are compared as written ("idea" is not "ideal")
_MAX_PIECE = 3  # "wh", "s", "xm5": a part this short may be a piece of a model number
_NEAR_SCORE = 80  # rapidfuzz ratio: "jakcet" for "jacket" (83), "kofemolka" for "kofemolki"


@lru_cache(maxsize=16384)
def _name_parts(word: str) -> tuple[str, ...]:
    """A word as ``ProductWords`` holds it: lower case, no accents, Cyrillic in Latin letters
    (so "кофемашина" and "kofemashina" are one word), split where the catalog splits it."""
    return tuple(_PART_RE.findall(intent_model.latin_spelling(word)))


@dataclass(frozen=True)
class ProductWords:
    """The words of a shop's product names, in every language, for ``understand``.

    Built by the caller from its catalog (``ProductWords.of_names``), so that understanding
    reads no store. A word of a name that is no word of the lexicon ("webcam", "ps5"), and the
    words joined to it as in a name ("noise cancelling", "iphone 15", "lego technic 42115"),
    are the product: they are no intent's cue and no order number, and the model reads them
    as a product whatever they are.
    """

    words: frozenset[str]
    pairs: frozenset[tuple[str, str]]  # two words one after the other in some name
    long_words: tuple[str, ...] = ()  # the words of _MIN_NEAR letters or more, for near()

    def near(self, word: str) -> bool:
        """A word of a name, or one typo from one ("jakcet"): for a message that is only a
        name; a few milliseconds over a large catalog, asked only of such messages."""
        parts = _name_parts(word)
        return bool(parts) and all(
            part in self.words
            or fuzz_process.extractOne(
                part, self.long_words, scorer=fuzz.ratio, score_cutoff=_NEAR_SCORE
            )
            is not None
            for part in parts
        )

    @classmethod
    def of_names(cls, names: Iterable[str]) -> ProductWords:
        words: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        spelled: dict[str, list[str]] = {}  # names share most of their words
        for name in names:
            parts: list[str] = []
            for word in name.split():
                found = spelled.get(word)
                if found is None:
                    found = spelled[word] = _PART_RE.findall(intent_model.latin_spelling(word))
                parts.extend(found)
            words.update(parts)
            pairs.update(itertools.pairwise(parts))
        long_words = tuple(sorted(w for w in words if len(w) >= _MIN_NEAR))
        return cls(frozenset(words), frozenset(pairs), long_words)


def _split_in_two(part: str, words: frozenset[str]) -> tuple[str, str] | None:
    """A model number written as one word that is two words of a name ("wh1000xm5" for
    "WH-1000XM5", "flip6" for "Flip 6")."""
    if part in words or not any(ch.isdigit() for ch in part):
        return None
    for k in range(1, len(part)):
        if part[:k] in words and part[k:] in words:
            return part[:k], part[k:]
    return None


def _product_tokens(tokens: list[_Token], products: ProductWords) -> set[int]:
    """Positions of the tokens the catalog says are (part of) a product name."""
    parts = [_name_parts(t.text) for t in tokens]
    known = [bool(p) and all(x in products.words for x in p) for p in parts]
    digits = [any(ch.isdigit() for ch in t.folded) for t in tokens]
    for i, has_digit in enumerate(digits):
        if has_digit and not known[i]:
            parts[i] = tuple(
                y for x in parts[i] for y in (_split_in_two(x, products.words) or (x,))
            )
            known[i] = bool(parts[i]) and all(x in products.words for x in parts[i])
    # pieces that together make a word of a name ("wh 1000 xm5", "galaxy s 24") are the
    # product, short or a number as each may be; their outer parts join the name's pairs
    pieces: set[int] = set()
    piece = [d or len(t.folded) <= _MAX_PIECE for d, t in zip(digits, tokens, strict=True)]
    for i in range(len(tokens) - 1):
        if not (piece[i] and piece[i + 1]):
            continue
        for n in (3, 2):
            run = range(i, min(i + n, len(tokens)))
            if len(run) < n or not all(piece[j] for j in run):
                continue
            if not any(digits[j] for j in run) and any(
                tokens[j].folded in _C.all_stopwords for j in run
            ):
                continue  # "is my", "da es": words of the language, not of a model number
            whole = "".join(x for j in run for x in parts[j])
            as_name = (whole,) if whole in products.words else _split_in_two(whole, products.words)
            if as_name is not None:
                for j in run:
                    known[j] = True
                    parts[j] = as_name
                    pieces.add(j)
                break

    def joined(i: int, j: int) -> bool:  # token i then token j, as in a name
        return known[i] and known[j] and (parts[i][-1], parts[j][0]) in products.pairs

    found = set(pieces)
    for i, token in enumerate(tokens):
        if (
            known[i]
            and len(token.folded) >= _MIN_NAME_WORD
            and not token.folded.isdigit()
            and token.folded not in _C.all_stopwords
            and not _direct_atoms(token.folded)
        ):
            found.add(i)
    # words joined to a product word as in a name, intent words and numbers too ("noise
    # cancelling", "flip 6"); a function word only with the word after it ("case for iphone",
    # "olaplex no 3")
    grown = True
    while grown:
        grown = False
        for i in sorted(found):
            for d in (1, -1):
                j = i + d
                if not 0 <= j < len(tokens) or j in found or not joined(min(i, j), max(i, j)):
                    continue
                if tokens[j].folded in _C.all_stopwords:
                    k = j + d
                    if not (0 <= k < len(tokens) and joined(min(j, k), max(j, k))):
                        continue
                    found.add(k)
                found.add(j)
                grown = True
    return found


def _catalog_knows(
    tokens: list[_Token], content: list[int], named: set[int], products: ProductWords
) -> bool:
    """Whether a word left for a product name is the catalog's, or one typo away from one."""
    if any(i in named for i in content):
        return True
    return any(
        products.near(tokens[i].text)
        for i in content
        if len(tokens[i].folded) >= _MIN_NEAR and not tokens[i].folded.isdigit()
    )


def _mask(text: str, tokens: list[_Token], positions: set[int], by: str) -> str:
    """``text`` with each run of the tokens at ``positions`` replaced by ``by``."""
    out: list[str] = []
    at = 0
    previous = -2
    for i in sorted(positions):
        token = tokens[i]
        if i == previous + 1:
            at = token.end  # the same run: what lies between goes too
        else:
            out.append(text[at : token.start])
            out.append(by)
            at = token.end
        previous = i
    out.append(text[at:])
    return "".join(out)


def _other_product(tokens: list[_Token], named: set[int], scores: _Scores) -> None:
    """ "any other hiking boots in stock?", "andere Wanderschuhe lieferbar?": "other" before a
    product (the catalog's, or a word no rule knows in a stock question) asks for an
    alternative; "the other day", "another question" do not."""
    if Intent.ALTERNATIVES in scores.by_intent:
        return
    stock_question = Intent.STOCK in scores.by_intent
    for i, token in enumerate(tokens[:-1]):
        if token.folded not in _C.other or i in scores.used:
            continue
        j = i + 1
        if tokens[j].folded in _C.product_glue and j + 1 < len(tokens):
            j += 1
        nxt = tokens[j]
        if j in named or (
            stock_question
            and not nxt.atoms
            and nxt.folded not in _C.all_stopwords
            and not nxt.folded.isdigit()
            and j not in scores.used
        ):
            scores.by_intent[Intent.ALTERNATIVES] = 1.0
            scores.used.add(i)
            scores.used_by.setdefault(i, set()).add(Intent.ALTERNATIVES)
            return


# --------------------------------------------------------------------------------------------
# Order numbers.
# --------------------------------------------------------------------------------------------


def _order_number(folded_text: str) -> tuple[str | None, bool]:
    """The first plausible order number, marked ones first; and whether it was marked."""
    unmarked: str | None = None
    for n, match in enumerate(_DIGIT_RUN_RE.finditer(folded_text)):
        if n >= _MAX_NUMBER_RUNS:
            break
        start, end = match.span()
        run = match.group()
        before = folded_text[max(0, start - 32) : start]
        marked = _MARKER_END_RE.search(before) is not None
        if before.endswith("+") or (not marked and re.search(r"[^\W\d_]-$", before)):
            continue  # phone number or the digits of a SKU ("ORD-734412" is an order's)
        if _NOT_ORDER_AFTER_RE.match(folded_text, end):
            continue
        if marked:
            grouped = _GROUPED_RE.fullmatch(run)
            digits = re.sub(r"[^0-9]", "", run) if grouped else run.split(" ", 1)[0]
            if digits.isdigit() and _ORDER_DIGITS[0] <= len(digits) <= _ORDER_DIGITS[1]:
                return digits, True
            continue
        if unmarked is not None:
            continue
        if before[-1:].isalpha() or folded_text[end : end + 1].isalpha():
            continue  # part of a model name ("WH1000XM5", "S24"), not a number of its own
        chunks = run.split(" ")
        if len(chunks) > 1 and all(c.isdigit() and len(c) >= 5 for c in chunks):
            run = chunks[0]  # a list of order numbers; phone numbers come in shorter groups
        if not run.isdigit():
            continue
        if not _ORDER_DIGITS[0] <= len(run) <= _ORDER_DIGITS[1]:
            continue
        if before.endswith(("-", "/", ".", ",")) and before[-2:-1].isdigit():
            continue
        if _NOT_ORDER_BEFORE_RE.search(before[-20:]):
            continue
        if len(run) == 4 and _YEAR_RE.fullmatch(run):
            continue
        unmarked = run
    return unmarked, False


def _fold_text(text: str) -> str:
    text = text.replace("й", "\x00").replace("Й", "\x00")
    text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text)).casefold()
    return text.replace("\x00", "й").replace("ё", "е")


# --------------------------------------------------------------------------------------------
# Language, product words, gibberish.
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=16384)
def _token_votes(text: str, folded: str) -> tuple[tuple[str, float], ...]:
    owners = [lang for lang, words in _C.stopwords.items() if folded in words]
    votes = [(lang, 1.0 / len(owners)) for lang in owners]
    votes.extend((lang, 0.3) for lang, pattern in _LANG_HINT_RE.items() if pattern.search(text))
    return tuple(votes)


def _language(
    folded_text: str, tokens: list[_Token], scores: _Scores, gibberish: bool
) -> str | None:
    cyrillic = len(_CYRILLIC_RE.findall(folded_text))
    latin = len(_LATIN_RE.findall(folded_text))
    # Russian messages often carry Latin brand names ("кофемашина Barista Pro").
    if cyrillic and 2 * cyrillic >= latin:
        return "ru"
    if latin == 0 or gibberish:
        return None
    # phrases count for their language, Russian typed in Latin letters ("gde moy zakaz") too
    score = {lang: 1.5 * s for lang, s in scores.by_lang.items()}
    for token in tokens:
        for lang, vote in _token_votes(token.text, token.folded):
            score[lang] = score.get(lang, 0.0) + vote
    ranked = sorted(score.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or ranked[0][1] < 0.3:
        return None
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < 0.25:
        return None
    return ranked[0][0]


@lru_cache(maxsize=16384)
def _is_gibberish(word: str) -> bool:
    if word.isdigit() or len(word) < 4:
        return False
    if not any(ch in _VOWELS for ch in word):
        return True
    if word[0] in "ыьъ":
        return True
    if _REPEAT_RE.fullmatch(word) and len(set(word)) <= 4:
        return True
    return any(word[i : i + 4] in row for row in _KEYBOARD_ROWS for i in range(len(word) - 3))


def _content(
    tokens: list[_Token],
    scores: _Scores,
    order_number: str | None,
    overruled: frozenset[Intent] = frozenset(),
    named: set[int] | None = None,
) -> list[int]:
    """Positions of the words left for a product name. Words of a phrase of an ``overruled``
    intent stay: they were part of the name ("noise cancelling headphones"); so do the words
    the catalog says are a name ``named`` ("tienda para 2 personas")."""
    keep: list[int] = []
    for i, token in enumerate(tokens):
        if named and i in named:
            keep.append(i)
            continue
        if token.folded in _C.all_stopwords:
            continue
        if i in scores.used and not scores.used_by[i] <= overruled:
            continue
        # a number is part of a product name only right after a kept word ("Roomba 980")
        if token.folded.isdigit() and (
            not keep or keep[-1] != i - 1 or token.folded == order_number
        ):
            continue
        keep.append(i)
    return keep


def _looks_like_product(
    tokens: list[_Token], content: list[int], scores: _Scores, named: set[int]
) -> bool:
    if not 1 <= len(content) <= _MAX_PRODUCT_TOKENS:
        return False
    kept = set(content)
    for i, token in enumerate(tokens):
        if i in kept or i in scores.used or token.folded in _C.product_glue:
            continue
        if not token.folded.isdigit():
            return False
    words = [i for i in content if not tokens[i].folded.isdigit()]
    return bool(words) and not any(i not in named and _is_gibberish(tokens[i].text) for i in words)


# "Panzerglas für iPhone 15": the store's search reads the words after one of these as what the
# product fits, so it stays between two words of the name.
_FITS = frozenset({"for", "fur", "fuer", "para", "для", "dlya"})


def _product_words(tokens: list[_Token], content: Iterable[int]) -> str | None:
    kept = sorted(content)
    between = {
        i + 1
        for i in kept
        if i + 2 < len(tokens) and tokens[i + 1].folded in _FITS and i + 2 in kept
    }
    words = " ".join(tokens[i].text for i in sorted({*kept, *between}))
    return words or None


# --------------------------------------------------------------------------------------------
# The decision.
# --------------------------------------------------------------------------------------------


def _confidence(top: float, others: Iterable[float]) -> float:
    second = max(others, default=0.0)
    strength = min(1.0, top / 2.0)
    margin = top / (top + second) if top + second > 0 else 0.0
    return round(min(1.0, 0.5 * strength + 0.5 * margin), 3)


def _decide(scores: dict[Intent, float], has_order_number: bool) -> tuple[Intent, float] | None:
    strong = {intent: s for intent, s in scores.items() if s >= _THRESHOLD}

    def pick(intent: Intent) -> tuple[Intent, float]:
        rest = (s for other, s in scores.items() if other != intent)
        return intent, _confidence(scores[intent], rest)

    for intent in _PRIORITY:
        if intent in strong:
            return pick(intent)
    order, stock = strong.get(Intent.ORDER_STATUS, 0.0), strong.get(Intent.STOCK, 0.0)
    if order or stock:
        if order > stock or (order == stock and has_order_number):
            return pick(Intent.ORDER_STATUS)
        return pick(Intent.STOCK)
    for intent in _CLOSING_PRIORITY:
        if intent in strong:
            return pick(intent)
    if scores:
        intent, top = max(scores.items(), key=lambda kv: kv[1])
        if top >= _WEAK_THRESHOLD:
            return intent, round(min(0.45, pick(intent)[1]), 3)
    return None


def _combine(
    rules: tuple[Intent, float] | None, scores: _Scores, probabilities: Mapping[str, float]
) -> tuple[Intent, float]:
    """The model's probabilities, the rules' decision added with its confidence as weight.

    The rules are certain where their lexicon reaches (a full phrase, the priorities between
    intents): there their confidence is near 1 and they win unless the model is nearly sure of
    something else ("noise cancelling headphones": a product, not a cancellation). An intent
    the rules saw negated ("I don't want to cancel") gets nothing from the model either.
    """
    combined = {_INTENT_OF[name]: p for name, p in probabilities.items()}
    for intent in scores.negated:
        combined[intent] = 0.0
    if rules is not None:
        combined[rules[0]] += _RULE_WEIGHT * rules[1]
    intent = max(combined, key=combined.__getitem__)
    if rules is not None and intent is rules[0]:
        return intent, max(rules[1], _model_confidence(probabilities[intent.value]))
    if combined[intent] < _MODEL_FLOOR:
        return Intent.UNKNOWN, 0.0
    return intent, _model_confidence(probabilities[intent.value])


def _model_confidence(probability: float) -> float:
    # Above a guess (0.5) and below the rules' certainty (0.99): the model alone never makes
    # the account step drop its question.
    return round(min(_MODEL_MAX_CONFIDENCE, 0.5 + 0.45 * probability), 3)


def understand(text: str, products: ProductWords | None = None) -> Understanding:
    """Read one customer message. Never raises for any `str`; bounded time for any length.
    ``products``: the words of the shop's product names (see ``ProductWords``)."""
    text = text[:MAX_CHARS]
    if "&" in text:
        text = html.unescape(text)
    text = unicodedata.normalize("NFC", text).lower()

    command = re.match(r"\s*/([a-z]+)(?:@\w+)?\s*$", text)
    if command and command.group(1) in _COMMANDS:
        return Understanding(_COMMANDS[command.group(1)], None, None, None, 1.0)

    text = _APOSTROPHE_RE.sub("", text)
    tokens = _tokenize(text)
    named = _product_tokens(tokens, products) if products is not None and tokens else set()
    for i in named:
        tokens[i].atoms = _NO_ATOMS  # the catalog's word, not the lexicon's
    scores = _score(tokens)
    _other_product(tokens, named, scores)
    for emoji, intent in _EMOJI_INTENT.items():
        if emoji in text:
            scores.by_intent[intent] = scores.by_intent.get(intent, 0.0) + 1.0

    folded_text = _fold_text(text)
    order_number, _marked = _order_number(
        _fold_text(_mask(text, tokens, named, " ")) if named else folded_text
    )
    if order_number is not None and Intent.ORDER_STATUS in scores.by_intent:
        scores.by_intent[Intent.ORDER_STATUS] += _ORDER_NUMBER_BOOST

    words = [t for t in tokens if not t.folded.isdigit()]
    # a word of the catalog is no keyboard mash, vowels or not ("wh1000xm5", "hw q600c")
    mash = [t for i, t in enumerate(tokens) if not t.folded.isdigit() and i not in named]
    gibberish = bool(mash) and all(_is_gibberish(t.folded) for t in mash)
    language = _language(folded_text, tokens, scores, gibberish)
    content = _content(tokens, scores, order_number, named=named)

    if (
        not scores.by_intent
        and order_number is None
        and 2 * sum(_is_gibberish(t.folded) for t in mash) >= len(words)
    ):
        # no word at all (" 1", "🤔"), or keyboard mash ("zxcv bnm"): whatever the model
        # made of it would be a guess about noise
        return Understanding(Intent.UNKNOWN, None, None, language, 0.0)

    rules = _decide(scores.by_intent, order_number is not None)
    probabilities = _model().probabilities(
        _mask(text, tokens, named, f" {intent_model.PRODUCT} ") if named else text
    )
    decided = _combine(rules, scores, probabilities)

    def a_name() -> bool:
        # a short message of words no rule knows, which the catalog (when given) knows
        return _looks_like_product(tokens, content, scores, named) and (
            products is None or _catalog_knows(tokens, content, named, products)
        )

    if decided[0] is Intent.STOCK and _looks_like_product(tokens, content, scores, named):
        if Intent.STOCK not in scores.by_intent:
            # only a name, no stock question around it: the catalog has to agree
            decided = (Intent.STOCK, GUESS_CONFIDENCE) if a_name() else (Intent.UNKNOWN, 0.0)
    elif (
        not scores.by_intent
        and decided[0] not in _SOCIAL
        and probabilities[decided[0].value] < _NAME_OVERRIDE
        and _looks_like_product(tokens, content, scores, named)
    ):
        # words no rule knows and a model not sure what they ask: a product name is likeliest
        # ("enchufe inteligente" was an agent request), and the catalog decides; a short
        # greeting or thanks stays one ("moinsen")
        decided = (Intent.STOCK, GUESS_CONFIDENCE) if a_name() else (Intent.UNKNOWN, 0.0)
    elif decided[0] in (Intent.GREETING, Intent.UNKNOWN):
        if order_number is not None:
            only_number = not words or all(t.folded in _C.all_stopwords for t in words)
            decided = (Intent.ORDER_STATUS, 0.9 if only_number else 0.6)
        elif (
            (decided[0] is Intent.UNKNOWN or Intent.GREETING in scores.by_intent)
            and probabilities[decided[0].value] < _MODEL_SURE
            and a_name()
        ):
            # "Hi, Dyson V11?": a greeting the lexicon knows, and a name after it; but not
            # "hallo zusammen", nor chat the model knows for chat ("lol")
            decided = (Intent.STOCK, GUESS_CONFIDENCE)
    if decided[0] is Intent.UNKNOWN:
        return Understanding(Intent.UNKNOWN, None, None, language, 0.0)

    intent, confidence = decided
    product = None
    if intent in (Intent.STOCK, Intent.ALTERNATIVES):
        content = _content(tokens, scores, order_number, _IN_NAMES - {intent}, named)
        if products is not None and len(content) > _MAX_PRODUCT_TOKENS and named & set(content):
            # a long story around a name the catalog knows ("... die thermoflasche bei euch
            # gekauft und wollte ..."): its other words would drown the name in the search;
            # a word one typo from a name's stays
            content = [
                i
                for i in content
                if i in named
                or (tokens[i].folded.isdigit() and i - 1 in named)
                or (len(tokens[i].folded) >= _MIN_NEAR and products.near(tokens[i].text))
            ]
        product = _product_words(tokens, content)
    return Understanding(intent, order_number, product, language, confidence)


# Where a second question may start: after a question mark or full stop, or at "and" in the
# languages the bot speaks ("where is my order 100004 and is the kettle in stock?").
_SECOND_QUESTION_RE = re.compile(r"[?.!]+\s+|[,;]?\s+(?:and|also|und|y|e|и|а также|а)\s+")
# The questions that can be asked together and answered one after the other: each answer
# stands alone (a cancellation or a person would take the conversation somewhere else).
_TWO_AT_ONCE = frozenset({Intent.ORDER_STATUS, Intent.STOCK})
_MAX_SPLITS_TRIED = 4
# Each of two questions must be this clear on its own: "where is order 100004? it has the
# kettle" (0.89) is one question and a remark.
_EACH_SURE = 0.95


def understand_all(text: str, products: ProductWords | None = None) -> list[Understanding]:
    """One or two questions, in the order asked. Two when the message splits, at a question
    mark or an "and", into an order question and a stock question each understood on its own
    for certain (``_EACH_SURE``, a product named); otherwise what ``understand`` makes of
    the whole. The whole is read first: a message that is neither costs nothing more."""
    whole = understand(text, products)
    if whole.intent not in _TWO_AT_ONCE:
        return [whole]
    text = text[:MAX_CHARS]
    for n, split in enumerate(_SECOND_QUESTION_RE.finditer(text.lower())):
        if n >= _MAX_SPLITS_TRIED:
            break
        first, second = text[: split.start()], text[split.end() :]
        if not first.strip() or not second.strip():
            continue
        parts = [understand(first, products), understand(second, products)]
        if {p.intent for p in parts} == _TWO_AT_ONCE and all(
            p.confidence >= _EACH_SURE and (p.intent is not Intent.STOCK or p.product_words)
            for p in parts
        ):
            return parts
    return [whole]
