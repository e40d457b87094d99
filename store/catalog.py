"""Products as the bot shows them: names per language, availability, alternatives, search."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum

from rapidfuzz import fuzz, process
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import order_lines, orders, product_alternatives, products, restocks, stock

LANGUAGES = ("en", "de", "es", "ru")


class StockState(StrEnum):
    IN_STOCK = "in_stock"
    BACKORDER_DATED = "backorder_dated"
    BACKORDER_UNDATED = "backorder_undated"
    OUT_OF_STOCK = "out_of_stock"  # not sold on backorder
    DISCONTINUED = "discontinued"


@dataclass(frozen=True)
class Product:
    sku: str
    name: str  # in the language asked for, English when there is none
    names: dict[str, str] = field(hash=False, compare=True)
    category: str = ""
    price_minor: int = 0
    currency: str = "EUR"
    active: bool = True
    backorderable: bool = True


@dataclass(frozen=True)
class Availability:
    sku: str
    state: StockState
    free_qty: int
    next_date: date | None  # when a unit ordered now would ship, if known
    next_restock_qty: int | None  # units in the next open restock
    waiting_qty: int  # units already waiting ahead of a new order


@dataclass(frozen=True)
class ProductMatch:
    sku: str
    name: str
    score: float
    language: str  # the language whose name matched best


_PRODUCT_COLS = (
    products.c.sku,
    products.c.name_en,
    products.c.name_de,
    products.c.name_es,
    products.c.name_ru,
    products.c.category,
    products.c.price_minor,
    products.c.currency,
    products.c.active,
    products.c.backorderable,
)


def names_of(m: object) -> dict[str, str]:
    mapping = m._mapping  # type: ignore[attr-defined]
    return {lang: mapping[f"name_{lang}"] for lang in LANGUAGES if mapping[f"name_{lang}"]}


def pick_name(names: dict[str, str], language: str | None) -> str:
    return names.get(language or "en") or names["en"]


def _product(row: object, language: str | None) -> Product:
    m = row._mapping  # type: ignore[attr-defined]
    names = names_of(row)
    return Product(
        sku=m["sku"],
        name=pick_name(names, language),
        names=names,
        category=m["category"],
        price_minor=int(m["price_minor"]),
        currency=m["currency"],
        active=bool(m["active"]),
        backorderable=bool(m["backorderable"]),
    )


def normalize_sku(text: str) -> str:
    return text.strip().upper()


async def product_by_sku(
    conn: AsyncConnection, sku: str, language: str | None = None
) -> Product | None:
    row = (
        await conn.execute(select(*_PRODUCT_COLS).where(products.c.sku == normalize_sku(sku)))
    ).first()
    return _product(row, language) if row else None


async def availability(conn: AsyncConnection, sku: str) -> Availability | None:
    """Which of the five stock answers applies to ``sku`` (None for an unknown SKU)."""
    sku = normalize_sku(sku)
    p = (
        await conn.execute(
            select(products.c.active, products.c.backorderable).where(products.c.sku == sku)
        )
    ).first()
    if p is None:
        return None
    s = (
        await conn.execute(select(stock.c.on_hand, stock.c.allocated).where(stock.c.sku == sku))
    ).first()
    free = 0 if s is None else int(s.on_hand - s.allocated)
    waiting = int(
        await conn.scalar(
            select(func.coalesce(func.sum(order_lines.c.qty_waiting), 0)).where(
                order_lines.c.sku == sku, order_lines.c.qty_waiting > 0
            )
        )
        or 0
    )
    open_rs = (
        await conn.execute(
            select(
                (restocks.c.qty - restocks.c.qty_received).label("left"), restocks.c.expected_date
            )
            .where(restocks.c.sku == sku, restocks.c.status == "open")
            .order_by(restocks.c.expected_date, restocks.c.restock_id)
        )
    ).all()
    # A unit ordered now queues behind everything waiting; it ships with the restock whose
    # cumulative quantity reaches it.
    next_date: date | None = None
    next_qty: int | None = None
    cum = 0
    for r in open_rs:
        cum += int(r.left)
        if cum >= waiting + 1:
            next_date, next_qty = r.expected_date, int(r.left)
            break
    if not p.active:
        state = StockState.DISCONTINUED
    elif free > 0:
        state = StockState.IN_STOCK
    elif not p.backorderable:
        state = StockState.OUT_OF_STOCK
    elif next_date is not None:
        state = StockState.BACKORDER_DATED
    else:
        state = StockState.BACKORDER_UNDATED
    if state is StockState.IN_STOCK:
        next_date, next_qty = None, None
    return Availability(sku, state, max(free, 0), next_date, next_qty, waiting)


async def alternatives_in_stock(
    conn: AsyncConnection, sku: str, limit: int = 3, language: str | None = None
) -> list[Product]:
    """Products in stock now that can replace ``sku``: its explicit alternatives first (in
    their order), then active products of the same category closest in price."""
    sku = normalize_sku(sku)
    base = (
        await conn.execute(
            select(products.c.category, products.c.price_minor).where(products.c.sku == sku)
        )
    ).first()
    if base is None or limit <= 0:
        return []
    in_stock = (stock.c.on_hand - stock.c.allocated) > 0
    joined = products.join(stock, stock.c.sku == products.c.sku)
    explicit = (
        await conn.execute(
            select(*_PRODUCT_COLS)
            .select_from(
                joined.join(product_alternatives, product_alternatives.c.alt_sku == products.c.sku)
            )
            .where(product_alternatives.c.sku == sku, products.c.active.is_(True), in_stock)
            .order_by(product_alternatives.c.rank)
            .limit(limit)
        )
    ).all()
    result = [_product(r, language) for r in explicit]
    if len(result) < limit:
        seen = {sku, *(p.sku for p in result)}
        similar = (
            await conn.execute(
                select(*_PRODUCT_COLS)
                .select_from(joined)
                .where(
                    products.c.category == base.category,
                    products.c.active.is_(True),
                    in_stock,
                    products.c.sku.not_in(seen),
                )
                .order_by(func.abs(products.c.price_minor - base.price_minor), products.c.sku)
                .limit(limit - len(result))
            )
        ).all()
        result.extend(_product(r, language) for r in similar)
    return result


# --- fuzzy search ------------------------------------------------------------------------


def _fold(text: str) -> str:
    # Case and accents do not matter to a customer typing on a phone ("kaffeemaschine",
    # "cafetera" for "Cafetera Exprés"); Cyrillic letters survive NFKD untouched except й/ё.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Russian in Latin letters, the spelling people type on a Latin keyboard ("kofemashina"). Both
# the index and the question are read in it, so "кофемашина", "kofemashina" and "кoфемашина"
# (a Latin o among Cyrillic letters) are one word, and the fuzzy match takes the variants
# ("kofemaschina", "kofemashyna").
_LATIN = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
        "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
        "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "ts",
        "ч": "ch", "ш": "sh", "щ": "sch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
        "я": "ya",
    }
)  # fmt: skip


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """``word`` without its inflection ending and with German umlauts written out read as
    plain vowels ("kopfhoerer", "kopfhörer" -> "kopfhor"); the word itself when too short,
    or a number, or a model name with digits."""
    if len(word) <= _MIN_STEM or any(ch.isdigit() for ch in word):
        return word
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= _MIN_STEM:
            word = word[: -len(ending)]
            break
    return word.replace("ae", "a").replace("oe", "o").replace("ue", "u")


def _is_piece(word: str) -> bool:
    return len(word) <= _PIECE_LEN or word.isdigit()


def _words(text: str) -> list[str]:
    out, cur = [], []
    for ch in _fold(text):
        if ch.isalnum():
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return [w.translate(_LATIN) for w in out]


# Answers kept per index build: customers ask for the same few products in the same words (a
# new product, a restock), and a common word costs 2-5 ms to rank over a 20,000-product
# catalog (every product with "kettle" in a name is scored).
SEARCH_CACHE_SIZE = 4096
# What a word of the question that no product name has counts for, against 1 for the others.
UNKNOWN_WORD_WEIGHT = 0.25
# "Panzerglas für iPhone 15", "funda para iphone", "чехол для iphone": the words after one of
# these say what the product fits, the ones before what it is. They count this much.
FITS_WEIGHT = 0.5
_FOR_WORDS = frozenset({"for", "fur", "fuer", "para", "dlya"})
# What a word matched by its stem counts for ("Regenjacken" for "Regenjacke", "naushnikov" for
# "naushniki"): between a word's beginning (90) and the word as written (100).
STEM_SCORE = 92.0

# Endings of plural and case forms, on the folded Latin spelling the index keeps: Russian (in
# Latin letters, as both the index and the question are read), German, Spanish, English. One
# list for all four: a question's language is not known here, and stripping one more ending
# than a language has only merges forms of the same word, or words the fuzzy match would
# take for one another anyway. Longest first.
_ENDINGS = tuple(
    sorted(
        [
            "iyami", "yami", "ami", "ogo", "ego", "omu", "emu", "ymi", "imi", "yaya", "aya",
            "iyah", "yah", "ah", "ern", "en", "er", "es", "oe", "ee", "ye", "ie", "iy", "yy",
            "oy", "ey", "ov", "ev", "om", "em", "yu", "ya", "a", "e", "i", "y", "u", "o", "n",
            "s",
        ],
        key=len,
        reverse=True,
    )
)  # fmt: skip
_MIN_STEM = 3
# A model number in pieces ("wh 1000 xm5", "galaxy s 24", "hw q600c"): pieces this short, or
# numbers, are read joined when the joined form is a word of a name.
_PIECE_LEN = 3


@dataclass(frozen=True)
class ShopExamples:
    """What the bot's texts give as examples ("a product name like “kettle”"), from the shop's
    own store: a customer of a bike shop is not told to ask about kettles. None where the
    store has nothing to show (an empty catalog, no orders yet): the texts then give none."""

    words: dict[str, str] = field(default_factory=dict)  # language -> a word of many names
    sku: str | None = None
    order_number: str | None = None  # made up, in the shape of the shop's order numbers

    def word(self, language: str | None) -> str | None:
        return self.words.get(language or "en") or self.words.get("en")


# Words of 4+ letters that name no product however often they occur in names.
_NOT_EXAMPLES = frozenset(
    ["with", "without", "from", "plus", "ohne", "fuer", "para", "como", "sobre", "sans", "avec"]
)
_EXAMPLE_WORD_RE = re.compile(r"[^\W\d_]{4,}")


def _examples(names: dict[str, dict[str, str]], active: Collection[str] | None) -> ShopExamples:
    """One product of the kind the shop sells most of (the English word in the most names of
    active products; ties: alphabetical; then the first SKU with it), and from its name in
    each language the word most names share ("Bike", "Trekkingrad", "bicicleta")."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    skus = sorted(sku for sku in names if active is None or sku in active)
    for sku in skus:
        for lang, name in names[sku].items():
            counts[lang].update(_example_words(name).keys())
    if not skus:
        return ShopExamples()
    lang_of_top = next((lang for lang in ("en", *counts) if counts.get(lang)), None)
    if lang_of_top is None:
        return ShopExamples(sku=skus[0])  # names without a word to show ("X1")
    top = min(counts[lang_of_top].items(), key=lambda kv: (-kv[1], kv[0]))[0]
    example = next(s for s in skus if top in _example_words(names[s].get(lang_of_top, "")))
    words: dict[str, str] = {}
    for lang, name in names[example].items():
        found = _example_words(name)
        if found:
            key = max(found, key=lambda w: (counts[lang][w], len(w), w))
            # German nouns keep their capital; elsewhere a name's Title Case goes
            words[lang] = found[key] if lang == "de" else key
    return ShopExamples(words, example)


def _example_words(name: str) -> dict[str, str]:
    """Words of a name that could stand for it, folded -> as written."""
    found = {w.casefold(): w for w in _EXAMPLE_WORD_RE.findall(name)}
    return {k: w for k, w in found.items() if k not in _NOT_EXAMPLES}


def order_number_example(latest: str | None) -> str | None:
    """A number like the shop's own: as long, with its first digit (100123 for 6 digits from
    1). Made up: a real one would be some customer's order."""
    if latest is None or not latest.isdigit() or len(latest) < 4:
        return None
    return (latest[0] + "0" * len(latest))[: len(latest) - 3] + "123"


class ProductIndex:
    """An in-memory word index of product names in all languages.

    Query words are matched against the vocabulary (exact, prefix, then fuzzy with rapidfuzz),
    so the cost depends on the number of distinct words, not on the number of products.
    """

    def __init__(self) -> None:
        self.version: tuple[int, datetime | None] = (0, None)
        self._names: dict[str, dict[str, str]] = {}
        self._postings: dict[str, dict[str, str]] = {}  # word -> sku -> language
        self._vocab: list[str] = []
        self._by_prefix: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        self._answers = functools.lru_cache(maxsize=SEARCH_CACHE_SIZE)(self._search)
        self.examples = ShopExamples()
        self.generation = 0  # counts builds: what is derived from the names follows it

    @classmethod
    async def load(cls, conn: AsyncConnection) -> ProductIndex:
        index = cls()
        await index.refresh(conn, force=True)
        return index

    @staticmethod
    async def _version(conn: AsyncConnection) -> tuple[int, datetime | None]:
        row = (await conn.execute(select(func.count(), func.max(products.c.updated_at)))).one()
        return int(row[0]), row[1]

    async def refresh(self, conn: AsyncConnection, force: bool = False) -> bool:
        """Rebuild if the catalog changed since the last build. True if rebuilt. The example
        order number follows the orders at every call (one look-up in their unique index)."""
        version = await self._version(conn)
        latest = await conn.scalar(select(func.max(orders.c.order_number)))
        number = order_number_example(latest)
        if not force and version == self.version:
            if number != self.examples.order_number:
                self.examples = replace(self.examples, order_number=number)
            return False
        # Discontinued products stay findable: "discontinued, here are alternatives" is an answer.
        rows = (await conn.execute(select(*_PRODUCT_COLS))).all()
        self.build({r.sku: names_of(r) for r in rows}, active={r.sku for r in rows if r.active})
        self.examples = replace(self.examples, order_number=number)
        self.version = version
        return True

    def build(
        self, names: dict[str, dict[str, str]], active: Collection[str] | None = None
    ) -> None:
        """Index ``names`` (sku -> language -> name); ``active``: the SKUs still sold (the
        examples come from these; None: all)."""
        postings: dict[str, dict[str, str]] = defaultdict(dict)
        for sku, by_lang in names.items():
            for w in _words(sku):
                postings[w].setdefault(sku, "en")
            for lang, name in by_lang.items():
                for w in _words(name):
                    postings[w].setdefault(sku, lang)
        self._names = names
        self._postings = dict(postings)
        self._vocab = list(self._postings)
        by_stem: dict[str, list[str]] = defaultdict(list)
        for w in self._vocab:
            by_stem[_stem(w)].append(w)
        self._by_stem = dict(by_stem)
        by_prefix: dict[str, list[str]] = defaultdict(list)
        for w in self._vocab:
            for n in range(1, min(len(w), 4) + 1):
                by_prefix[w[:n]].append(w)
        self._by_prefix = dict(by_prefix)
        self._answers.cache_clear()
        self.examples = _examples(names, active)
        self.generation += 1

    def names(self) -> list[str]:
        """Every SKU and every name in every language, as the catalog has them."""
        return [text for sku, by_lang in self._names.items() for text in (sku, *by_lang.values())]

    def __len__(self) -> int:
        return len(self._names)

    def _word_matches(self, token: str) -> dict[str, float]:
        found: dict[str, float] = {}
        if token in self._postings:
            found[token] = 100.0
        if len(token) > _MIN_STEM:
            for w in self._by_stem.get(_stem(token), ()):
                if w != token:
                    found[w] = max(found.get(w, 0.0), STEM_SCORE)
        if len(token) >= 2:
            for w in self._by_prefix.get(token[:4], ()):
                if w != token and w.startswith(token):
                    found[w] = max(found.get(w, 0), 90.0)
        if len(token) >= 3:
            cutoff = 75 if len(token) >= 5 else 80
            for w, score, _ in process.extract(
                token, self._vocab, scorer=fuzz.ratio, limit=8, score_cutoff=cutoff
            ):
                found[w] = max(found.get(w, 0.0), float(score) * 0.95)
            if len(token) >= 5:
                # Part of a compound word ("maschine" in "kaffeemaschine").
                for w, score, _ in process.extract(
                    token, self._vocab, scorer=fuzz.partial_ratio, limit=8, score_cutoff=90
                ):
                    if len(w) > len(token):
                        found[w] = max(found.get(w, 0.0), float(score) * 0.8)
        return found

    def _joined(self, tokens: list[str]) -> list[str]:
        """Pieces of a model number, or two halves of a compound, read as the one word of a
        name they make together ("wh 1000 xm5" for "WH-1000XM5", "regen jacke" for
        "Regenjacke"), and a model number written as one word read as the two words of a
        name ("wh1000xm5", "flip6", "galaxys24")."""
        out: list[str] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token not in self._postings and any(ch.isdigit() for ch in token):
                split = next(
                    (
                        (token[:k], token[k:])
                        for k in range(1, len(token))
                        if token[:k] in self._postings and token[k:] in self._postings
                    ),
                    None,
                )
                if split is not None:
                    out.extend(split)
                    i += 1
                    continue
            for n in (3, 2):
                run = tokens[i : i + n]
                # and a German compound written apart ("regen jacke", "fleece weste")
                if len(run) == n and (n == 2 or any(_is_piece(t) for t in run)):
                    joined = "".join(run)
                    if joined in self._postings and not all(t in self._postings for t in run):
                        out.append(joined)
                        i += n
                        break
            else:
                out.append(tokens[i])
                i += 1
        return out

    def search(self, text: str, limit: int = 5, language: str | None = None) -> list[ProductMatch]:
        return list(self._answers(text, limit, language))

    def _search(self, text: str, limit: int, language: str | None) -> tuple[ProductMatch, ...]:
        tokens = self._joined(_words(text))[:8]
        if not tokens or limit <= 0:
            return ()
        sku = normalize_sku(text)
        if sku in self._names:
            return (ProductMatch(sku, pick_name(self._names[sku], language), 100.0, "en"),)
        scores: dict[str, float] = defaultdict(float)
        langs: dict[str, str] = {}
        unknown = 0.0
        known = 0.0
        weight = 1.0
        head = len(tokens)  # the words that say what the product is
        sure = False  # a word found as written (or its beginning), not only by a fuzzy guess
        for n_token, token in enumerate(tokens):
            if token in _FOR_WORDS and 0 < n_token < len(tokens) - 1:
                weight = FITS_WEIGHT
                head = min(head, n_token)
                continue
            best: dict[str, tuple[float, str]] = {}
            matches = self._word_matches(token)
            if not matches:
                unknown += weight
            else:
                known += weight
                sure = sure or max(matches.values()) >= 90
            for w, s in matches.items():
                for p_sku, lang in self._postings[w].items():
                    if s > best.get(p_sku, (0.0, ""))[0]:
                        best[p_sku] = (s, lang)
            for p_sku, (s, lang) in best.items():
                scores[p_sku] += weight * s
                langs.setdefault(p_sku, lang)
        # A word no product has ("black hoodie xl cotton" in a shop that never says "xl") is
        # probably a detail the catalog leaves out: it lowers the score a little, once another
        # word was found as written ("blorp fnord" is not a near miss of "Ford" plus a detail).
        # A word some other product has counts in full: it tells the products apart.
        query = " ".join(tokens[:head])
        n = known + (UNKNOWN_WORD_WEIGHT if sure else 1.0) * unknown
        if n <= 0:
            return ()
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: max(limit * 4, 20)]
        out = []
        for p_sku, total in ranked:
            lang = langs[p_sku]
            # Tie-break on the whole name so "kettle steel" prefers the steel kettle.
            name = " ".join(_words(self._names[p_sku].get(lang, "")))
            whole = fuzz.token_set_ratio(query, name)
            score = round(0.85 * total / n + 0.15 * whole, 1)
            out.append(
                ProductMatch(p_sku, pick_name(self._names[p_sku], language or lang), score, lang)
            )
        out.sort(key=lambda m: (-m.score, m.sku))
        return tuple(m for m in out if m.score >= 50)[:limit]


async def find_products(
    conn_or_index: AsyncConnection | ProductIndex,
    text: str,
    limit: int = 5,
    language: str | None = None,
) -> list[ProductMatch]:
    """Products matching ``text`` (SKU, or words of a name in any language, typos allowed),
    best first. Pass a loaded ``ProductIndex`` (``Store.product_index()``) for speed; with a
    connection an index is built for this one call."""
    index = (
        conn_or_index
        if isinstance(conn_or_index, ProductIndex)
        else await ProductIndex.load(conn_or_index)
    )
    return index.search(text, limit=limit, language=language)
