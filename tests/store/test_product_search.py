"""ProductIndex.search: words that match rank, words that match nothing only lower the score,
and Russian is found in Cyrillic, in Latin letters and in a mix of both."""

from __future__ import annotations

import pytest

from store import Store
from store.catalog import ProductIndex, ShopExamples, find_products, order_number_example
from store.master import ProductIn, upsert_product

CATALOG = {
    "HOD-0001": {"en": "Black Hoodie", "de": "Schwarzer Kapuzenpullover", "ru": "Чёрное худи"},
    "HOD-0002": {"en": "Red Hoodie", "de": "Roter Kapuzenpullover", "ru": "Красное худи"},
    "TSH-0001": {"en": "Cotton T-Shirt", "de": "Baumwoll-T-Shirt", "ru": "Хлопковая футболка"},
    "COF-0001": {
        "en": "Barista Pro Coffee Machine",
        "de": "Barista Pro Kaffeemaschine",
        "ru": "Кофемашина Barista Pro",
    },
    "KET-0001": {"en": "Steel Kettle 1.7 l", "ru": "Чайник стальной 1,7 л"},
}


@pytest.fixture(scope="module")
def index() -> ProductIndex:
    built = ProductIndex()
    built.build(CATALOG)
    return built


def _skus(index: ProductIndex, words: str) -> list[str]:
    return [m.sku for m in index.search(words, limit=3)]


@pytest.mark.parametrize(
    ("words", "skus"),
    [
        # "xl", "oversize", "size" are in no name: the black hoodie is still found; "black"
        # is a word of the catalog, so the red one misses it in full
        ("black hoodie xl", ["HOD-0001"]),
        ("hoodie xl", ["HOD-0001", "HOD-0002"]),
        ("black hoodie xl oversize", ["HOD-0001"]),
        ("hoodie black size xl oversize please", ["HOD-0001"]),
        # "cotton" is another product's word: it counts against the hoodie, yet leaves it first
        ("black hoodie xl cotton", ["HOD-0001"]),
        ("black hoodie oversize xl cotton", ["HOD-0001"]),
        ("кофемашина barista с капучинатором", ["COF-0001"]),
    ],
)
def test_extra_words_lower_the_score_but_keep_the_product(
    index: ProductIndex, words: str, skus: list[str]
) -> None:
    assert _skus(index, words) == skus


def test_more_words_that_match_rank_higher(index: ProductIndex) -> None:
    scores = [(m.sku, m.score) for m in index.search("black hoodie", limit=3)]
    assert scores == [("HOD-0001", 100.0), ("HOD-0002", 53.8)]
    # each word no product has costs a little
    assert [m.score for m in index.search("black hoodie xl")] == [90.6]
    assert [m.score for m in index.search("black hoodie xl oversize")] == [83.0]


def test_words_that_match_nothing_find_nothing(index: ProductIndex) -> None:
    assert _skus(index, "xl oversize") == []
    assert _skus(index, "zzzz") == []


@pytest.mark.parametrize(
    "words",
    [
        "кофемашина",
        "kofemashina",  # Russian typed in Latin letters
        "kofemaschina",
        "kofemashyna",
        "кoфемашина",  # a Latin "o" among Cyrillic letters
        "бариста",  # the Latin brand in Cyrillic letters
        "KOFEMASHINA BARISTA",
    ],
)
def test_russian_in_either_script(index: ProductIndex, words: str) -> None:
    assert _skus(index, words)[:1] == ["COF-0001"]


def test_transliteration_finds_the_name_in_the_language_asked(index: ProductIndex) -> None:
    [match] = index.search("chaynik", limit=1, language="ru")
    assert (match.sku, match.name, match.language) == ("KET-0001", "Чайник стальной 1,7 л", "ru")
    assert _skus(index, "hudi chernoe") == ["HOD-0001", "HOD-0002"]


def test_a_fuzzy_guess_with_words_that_match_nothing_is_no_match() -> None:
    index = ProductIndex()
    index.build({"CAR-0001": {"en": "Ford Model Car"}})
    assert _skus(index, "ford xl") == ["CAR-0001"]  # found as written, plus a detail
    assert _skus(index, "fnord") == ["CAR-0001"]  # a typo alone, as before
    assert _skus(index, "blorp fnord") == []  # a typo and a word of nothing: not a question


@pytest.mark.parametrize(
    ("latest", "example"),
    [
        ("100777", "100123"),
        ("52817", "50123"),
        ("20000001", "20000123"),
        ("1234", "1123"),
        ("123", None),  # shorter than any order number the bot reads
        ("A-100", None),
        (None, None),  # no orders yet
    ],
)
def test_an_order_number_example_has_the_shape_of_the_shops(
    latest: str | None, example: str | None
) -> None:
    assert order_number_example(latest) == example


def test_the_examples_come_from_the_kind_of_product_sold_most() -> None:
    index = ProductIndex()
    index.build(
        {
            "BAG-0001": {"en": "Leather Bag", "de": "Ledertasche"},
            "HOD-0003": {
                "en": "Green Hoodie",
                "de": "Grüner Kapuzenpullover",
                "ru": "Зелёное худи",
            },
            **CATALOG,
        },
        active={"BAG-0001", "HOD-0002", "HOD-0003", "TSH-0001"},  # not HOD-0001
    )
    examples = index.examples
    # "hoodie" is in the most active names; the first active SKU with it is HOD-0002
    assert examples == ShopExamples(
        {"en": "hoodie", "de": "Kapuzenpullover", "ru": "худи"}, "HOD-0002", None
    )
    assert (examples.word("de"), examples.word("es"), examples.word(None)) == (
        "Kapuzenpullover",
        "hoodie",
        "hoodie",
    )
    empty = ProductIndex()
    empty.build({})
    assert empty.examples == ShopExamples()


FITS = {
    "CAS-0008": {"en": "Pixel 8 Case", "de": "Hülle für Pixel 8", "ru": "Чехол для Pixel 8"},
    "PHN-0008": {"en": "Pixel 8 Smartphone", "de": "Pixel 8 Smartphone"},
    "GLS-0001": {"en": "Tempered Glass Screen Protector", "de": "Panzerglas-Displayschutz"},
}


@pytest.mark.parametrize(
    ("words", "first", "among"),
    [
        # what follows "für", "for", "для" is what the product fits: the Pixel itself and its
        # case share those words, the glass is what was asked for
        ("panzerglas für pixel 8", "GLS-0001", {"GLS-0001"}),
        ("screen protector for pixel 8", "GLS-0001", {"GLS-0001"}),
        ("hülle für pixel 8", "CAS-0008", {"CAS-0008"}),
        ("чехол для pixel 8", "CAS-0008", {"CAS-0008"}),
        ("pixel 8 smartphone", "PHN-0008", {"PHN-0008"}),
    ],
)
def test_words_after_for_say_what_the_product_fits(words: str, first: str, among: set[str]) -> None:
    index = ProductIndex()
    index.build(FITS)
    found = _skus(index, words)
    assert found[0] == first and among <= set(found)


SHOP = {
    "HPH-0001": {
        "en": "Sony WH-1000XM5 Noise Cancelling Headphones",
        "de": "Sony WH-1000XM5 Kopfhörer mit Geräuschunterdrückung",
        "ru": "Наушники Sony WH-1000XM5 с шумоподавлением",
    },
    "HPH-0002": {"en": "Bose QuietComfort Earbuds", "de": "Bose QuietComfort Ohrhörer"},
    "PHN-0001": {"en": "Galaxy S24 Smartphone", "ru": "Смартфон Galaxy S24"},
    "PHN-0002": {"en": "Galaxy A15 Smartphone", "ru": "Смартфон Galaxy A15"},
    "JKT-0001": {
        "en": "Rain Shield rain jacket",
        "de": "Regenjacke Rain Shield",
        "ru": "Детская парка Rain Shield",
    },
    "JKT-0002": {"en": "Alpenglow down jacket", "de": "Daunenjacke Alpenglow"},
}

# Each kind of name that customers type other than the catalog writes it.
ASKED_OTHERWISE = [
    # a model number in other pieces
    ("wh 1000 xm5", "HPH-0001"),
    ("wh1000xm5", "HPH-0001"),
    ("galaxy s 24", "PHN-0001"),
    # plural and case forms: German, Russian in either script, Spanish-style plural
    ("regenjacken", "JKT-0001"),
    ("daunenjacken alpenglow", "JKT-0002"),
    ("наушников sony", "HPH-0001"),
    ("naushnikov sony", "HPH-0001"),
    ("детские парки", "JKT-0001"),
    # umlauts written out or left bare
    ("kopfhoerer sony", "HPH-0001"),
    ("kopfhorer sony", "HPH-0001"),
    # a brand in Cyrillic letters, ending as Russian spells it
    ("наушники сони", "HPH-0001"),
    # the brand alone
    ("bose", "HPH-0002"),
]


@pytest.mark.parametrize(("words", "sku"), ASKED_OTHERWISE)
def test_a_name_asked_otherwise_is_in_the_first_three(words: str, sku: str) -> None:
    index = ProductIndex()
    index.build(SHOP)
    assert sku in _skus(index, words)


def test_pieces_join_only_into_a_word_of_a_name() -> None:
    index = ProductIndex()
    index.build(SHOP)
    # "s 24" is the S24; "a 15" the A15: each piece alone would find both phones
    assert _skus(index, "galaxy s 24")[0] == "PHN-0001"
    assert _skus(index, "galaxy a 15")[0] == "PHN-0002"
    # a compound written apart is the compound, not a word like any other's
    [apart] = index.search("regen jacke", limit=3)
    assert (apart.sku, apart.score) == ("JKT-0001", index.search("regenjacke")[0].score)
    # words of one name stay words: "rain shield" is not read as "rainshield"
    assert _skus(index, "rain shield")[0] == "JKT-0001"


async def test_the_stores_search_finds_names_asked_otherwise(store: Store) -> None:
    async with store.begin() as conn:
        for sku, names in SHOP.items():
            await upsert_product(
                conn,
                ProductIn(
                    sku=sku,
                    name_en=names["en"],
                    category="x",
                    price_minor=100,
                    currency="EUR",
                    name_de=names.get("de"),
                    name_ru=names.get("ru"),
                ),
            )
    index = await store.product_index()
    async with store.connect() as conn:
        for words, sku in ASKED_OTHERWISE:
            assert sku in [m.sku for m in index.search(words, limit=3)], words
            assert sku in [m.sku for m in await find_products(conn, words, 3)], words
