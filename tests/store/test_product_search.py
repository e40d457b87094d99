"""ProductIndex.search: words that match rank, words that match nothing only lower the score,
and Russian is found in Cyrillic, in Latin letters and in a mix of both."""

from __future__ import annotations

import pytest

from store.catalog import ProductIndex, ShopExamples, order_number_example

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
