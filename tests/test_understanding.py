"""Language understanding: exact behaviours, accuracy on the labelled set, robustness."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import intent_model
from bot.understanding import (
    MAX_CHARS,
    Intent,
    ProductWords,
    Understanding,
    understand,
    understand_all,
)

DATA = Path(__file__).parent / "data" / "understanding.tsv"
LANGUAGES = {"en", "de", "es", "ru"}


def _rows() -> list[dict[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


# --- order numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("10234", "10234"),
        ("#10234", "10234"),
        ("No. 10234", "10234"),
        ("Nr.10234", "10234"),
        ("№ 10234", "10234"),
        ("№10234", "10234"),
        ("n.º 10234", "10234"),
        ("nº10234", "10234"),
        ("order 10234", "10234"),
        ("ORDER#10234", "10234"),
        ("order number: #1002345", "1002345"),
        ("Bestellung 10234", "10234"),
        ("Bestellnummer: 100.234", "100234"),
        ("Auftragsnummer 100782", "100782"),
        ("pedido 100,234", "100234"),
        ("заказ 100 234", "100234"),
        ("заказом 100123", "100123"),
        ("order 10 234 please", "10234"),
        ("where is 100234?", "100234"),
        ("1234", "1234"),
        ("1234567890", "1234567890"),
        ("100234 100235", "100234"),
        ("order #100555 & #100556", "100555"),
        ("order 10234 2 kettles missing", "10234"),
    ],
)
def test_order_number_forms(text: str, number: str) -> None:
    assert understand(text).order_number == number


@pytest.mark.parametrize(
    "text",
    [
        "I ordered 2 kettles",
        "order 123",
        "12345678901",
        "my postcode is 10115, where is my order",
        "PLZ 10115",
        "mi código postal es 28013",
        "мой индекс 101000",
        "call me at +1 415 555 0134",
        "позвоните +7 916 123-45-67",
        "llámenme al 612 345 678",
        "I ordered in 2024 and nothing came",
        "ordered on 12.03.2024",
        "pedí el 15/03/2024",
        "is KAF-2031 in stock",
        "the 1500 € model",
        "order 1000 pieces",
        "I need 5000 units",
        "is model 3000 available",
    ],
)
def test_not_order_numbers(text: str) -> None:
    assert understand(text).order_number is None


def test_bare_number_is_order_status() -> None:
    u = understand("  100342 ")
    assert u == Understanding(Intent.ORDER_STATUS, "100342", None, None, u.confidence)
    assert u.confidence >= 0.8


# --- product words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent", "words"),
    [
        ("¿tienen la cafetera en stock?", Intent.STOCK, "cafetera"),
        ("Ist die Kaffeemaschine wieder da?", Intent.STOCK, "kaffeemaschine"),
        ("есть ли в наличии чайник", Intent.STOCK, "чайник"),
        ("is the Barista Pro coffee machine in stock?", Intent.STOCK, "barista pro coffee machine"),
        ("Kaffeemaschine Barista Pro", Intent.STOCK, "kaffeemaschine barista pro"),
        ("Gibt es die Kopfhörer noch?", Intent.STOCK, "kopfhörer"),
        ("is the Roomba 980 in stock", Intent.STOCK, "roomba 980"),
        ("¿Hay stock de KAF-2031?", Intent.STOCK, "kaf-2031"),
        ("Hi, Dyson V11?", Intent.STOCK, "dyson v11"),
        ("do you have something similar to the Barista Pro?", Intent.ALTERNATIVES, "barista pro"),
        ("какие есть аналоги этого чайника", Intent.ALTERNATIVES, "чайника"),
        ("¿tienen algo parecido?", Intent.ALTERNATIVES, None),
    ],
)
def test_product_words(text: str, intent: Intent, words: str | None) -> None:
    u = understand(text)
    assert (u.intent, u.product_words) == (intent, words)


def test_product_words_only_for_stock_and_alternatives() -> None:
    assert understand("where is my order for the kettle").product_words is None
    assert understand("cancel the kettle").product_words is None


# --- priorities, negation, typos -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("cancel order 10234", Intent.CANCEL),
        ("where is my order, I want to talk to a person", Intent.AGENT),
        ("stop sending me updates about my order", Intent.STOP_NOTIFICATIONS),
        ("cancel the notifications", Intent.STOP_NOTIFICATIONS),
        ("any alternatives to the kettle that ship now?", Intent.ALTERNATIVES),
        ("can i still order the kettle? is it available", Intent.STOCK),
        ("I ordered a kettle, it was out of stock, when will it ship?", Intent.ORDER_STATUS),
        ("hi, where is my order?", Intent.ORDER_STATUS),
        ("hi, what can you do?", Intent.HELP),
        ("thanks for your help", Intent.THANKS),
        ("Hallo", Intent.GREETING),
        ("👋", Intent.GREETING),
        ("🙏", Intent.THANKS),
        ("/start", Intent.GREETING),
        ("/help@backorder_bot", Intent.HELP),
    ],
)
def test_priority(text: str, intent: Intent) -> None:
    assert understand(text).intent == intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I don't want to cancel, just tell me when it ships", Intent.ORDER_STATUS),
        ("Ich will nicht stornieren, nur wissen wann es kommt", Intent.ORDER_STATUS),
        ("no quiero cancelar, solo saber cuándo llega", Intent.ORDER_STATUS),
        ("не хочу отменять, просто скажите когда привезут", Intent.ORDER_STATUS),
        # a negation alone leaves nothing to act on: the bot asks again rather than cancel
        ("I don't want to cancel", Intent.UNKNOWN),
        # a negation in an earlier clause does not reach the verb
        ("передумал, больше не нужно, отменяйте", Intent.CANCEL),
        # negation that *is* the request
        ("don't send me messages", Intent.STOP_NOTIFICATIONS),
        ("не присылайте мне больше уведомления", Intent.STOP_NOTIFICATIONS),
        ("ya no lo quiero, cancelen", Intent.CANCEL),
    ],
)
def test_negation(text: str, intent: Intent) -> None:
    assert understand(text).intent == intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("whre is my ordr", Intent.ORDER_STATUS),
        ("wo ist meine bestellug", Intent.ORDER_STATUS),
        ("bestelung 100234", Intent.ORDER_STATUS),
        ("cancle my order plz", Intent.CANCEL),
        ("cancelr mi pedido", Intent.CANCEL),
        ("закз 100321 не пришел", Intent.ORDER_STATUS),
        ("availabilty of standing desk", Intent.STOCK),
        ("cuando llega mi pedido", Intent.ORDER_STATUS),
        ("ГДЕ МОЙ ЗАКАЗ!!!", Intent.ORDER_STATUS),
        ("Где мой заказ??? 😡😡", Intent.ORDER_STATUS),
        ("<b>where is my order</b>", Intent.ORDER_STATUS),
    ],
)
def test_typos_case_and_noise(text: str, intent: Intent) -> None:
    assert understand(text).intent == intent


def test_typo_matching_does_not_swallow_near_words() -> None:
    # "Laser" is one letter from "Lager": it must stay the product
    u = understand("Ist der Laser auf Lager?")
    assert (u.intent, u.product_words) == (Intent.STOCK, "laser")


@pytest.mark.parametrize(
    "text",
    ["asdfghjkl", "zxcv bnm", "🤔🤔🤔", "", "   ", "ok", "tell me a joke", "???", " 1", "+1"],
)
def test_unknown(text: str) -> None:
    u = understand(text)
    assert u.intent == Intent.UNKNOWN
    assert u.confidence == 0.0


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("where is my order?", "en"),
        ("Wo bleibt meine Bestellung?", "de"),
        ("¿Dónde está mi pedido?", "es"),
        ("Где мой заказ?", "ru"),
        ("кофемашина Barista Pro", "ru"),
        ("verfügbarkeit mixer", "de"),
        ("100234", None),
        ("🙂", None),
        ("asdfghjkl", None),
    ],
)
def test_language(text: str, language: str | None) -> None:
    assert understand(text).language == language


# --- the labelled set ------------------------------------------------------------------------


def _report(name: str, hits: Counter[str], totals: Counter[str]) -> None:
    parts = [f"{key or '-'} {hits[key]}/{totals[key]}" for key in sorted(totals)]
    print(f"{name}: " + ", ".join(parts))


def test_labelled_set_accuracy() -> None:
    # The labelled set is also part of the intent model's training data (bot/intent_data/
    # labelled.tsv), so this checks that rules and model agree with it, not how well they
    # generalise: that is bench/bench_intent_model.py (grouped cross-validation) and
    # bench/bench_holdout.py (another shop's messages).
    rows = _rows()
    assert len(rows) >= 240
    intent_ok = number_ok = product_ok = language_ok = 0
    by_lang_hits: Counter[str] = Counter()
    by_lang: Counter[str] = Counter()
    by_intent_hits: Counter[str] = Counter()
    by_intent: Counter[str] = Counter()
    misses: list[str] = []
    for row in rows:
        u = understand(row["text"])
        ok = u.intent == row["intent"]
        intent_ok += ok
        by_lang[row["language"]] += 1
        by_lang_hits[row["language"]] += ok
        by_intent[row["intent"]] += 1
        by_intent_hits[row["intent"]] += ok
        number_ok += (u.order_number or "") == row["order_number"]
        product_ok += (u.product_words or "") == row["product_words"]
        language_ok += (u.language or "") == row["language"]
        if not ok or (u.order_number or "") != row["order_number"]:
            misses.append(
                f"  {row['text']!r}: expected {row['intent']}/{row['order_number']!r}, got {u}"
            )
    n = len(rows)
    print(
        f"\nlabelled set: {n} rows; intent {intent_ok / n:.3f}, order number {number_ok / n:.3f}, "
        f"product words {product_ok / n:.3f}, language {language_ok / n:.3f}"
    )
    _report("intent by language", by_lang_hits, by_lang)
    _report("intent by intent", by_intent_hits, by_intent)
    print("misclassified:\n" + ("\n".join(misses) or "  none"))
    assert intent_ok / n >= 0.90
    assert number_ok / n >= 0.95
    assert product_ok / n >= 0.85
    assert language_ok / n >= 0.90


def test_labelled_set_covers_every_intent_and_language() -> None:
    rows = _rows()
    assert {row["intent"] for row in rows} == {i.value for i in Intent}
    counts = Counter(row["language"] for row in rows)
    assert all(counts[lang] >= 55 for lang in LANGUAGES)


# --- robustness ------------------------------------------------------------------------------


def _check_bounds(u: Understanding) -> None:
    assert isinstance(u.intent, Intent)
    assert 0.0 <= u.confidence <= 1.0
    assert u.language is None or u.language in LANGUAGES
    if u.order_number is not None:
        assert u.order_number.isascii() and u.order_number.isdigit()
        assert 4 <= len(u.order_number) <= 10
    if u.product_words is not None:
        assert u.product_words.strip() == u.product_words != ""
        assert u.intent in (Intent.STOCK, Intent.ALTERNATIVES)
    if u.intent == Intent.UNKNOWN:
        assert u.confidence == 0.0


_PIECES = [
    "order", "#", "Nr.", "№", "n.º", "заказ", "Bestellung", "pedido", "10234", "100 234",
    "2024", "+49", "-", ".", ",", "!", "?", "¿", "&amp;", "<b>", "cancel", "stornieren",
    "отменить", "no", "не", "nicht", "in stock", "wieder da", "есть ли", "hola", "спасибо",
    "😀", "👍", "a\u0301", "ё", "ß", "İ", "\u200b", "\n", " ", "  ", "Kaffeemaschine",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=MAX_CHARS))
def test_any_text_is_safe(text: str) -> None:
    _check_bounds(understand(text))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=400).map("".join))
def test_keyword_soup_is_safe(text: str) -> None:
    _check_bounds(understand(text))


def test_longer_than_telegram_allows_is_cut() -> None:
    tail = " cancel my order"
    assert understand("x" * MAX_CHARS + tail).intent != Intent.CANCEL


@pytest.mark.parametrize(
    "text",
    [
        "1 " * 2048,
        "1." * 2048,
        "1 , " * 1024,
        "order no # " * 372,
        "no." * 1365,
        "#" * MAX_CHARS,
        "a" * MAX_CHARS,
        "a-" * 2048,
        "заказ" * 819,
        "a\u0301" * 2048,
        "&amp;" * 819,
        "qwertzuiop " * 372,
    ],
)
def test_pathological_input_stays_within_bounds(text: str) -> None:
    # Speed is measured by bench/bench_understanding.py, never asserted here: catastrophic
    # backtracking would not end at all, which fails this test anyway.
    _check_bounds(understand(text))


# --- issue #16: the way people really type in a chat app -------------------------------------
# Each kind of failure the second shop's messages showed, in every language. None of these
# messages is in the training data (bot/intent_data/) or in the hold-out (tests/data/holdout/).


@pytest.mark.parametrize(
    "text",
    [
        "heyy there",
        "yo yo",
        "moinsen",
        "tach auch",
        "hallo hallo",
        "holiii",
        "que onda amigo",
        "здорова бот",
        "privetik",
        "zdorovo rebyata",
    ],
)
def test_slang_and_transliterated_greetings_are_greetings_not_products(text: str) -> None:
    u = understand(text)
    assert (u.intent, u.product_words) == (Intent.GREETING, None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("when's the Aurora kettle coming back", "aurora kettle back"),
        ("will you have the toaster again", "toaster"),
        ("can I still get the Vento blender", "vento blender"),
        ("do you have the floor lamp", "floor lamp"),
        ("wann gibts den Wasserkocher wieder", "wasserkocher"),
        ("bekommt ihr den Toaster nochmal rein", "toaster"),
        ("kann ich den Mixer noch kaufen", "mixer"),
        ("habt ihr die Stehlampe", "stehlampe"),
        ("cuándo vuelve la tostadora", "tostadora"),
        ("¿vais a volver a tener la batidora?", "batidora"),
        ("¿todavía puedo comprar el hervidor?", "hervidor"),
        ("¿tienen la lámpara de pie?", "lámpara pie"),
        ("когда снова будет тостер", "тостер"),
        ("чайник ещё можно купить?", "чайник"),
        ("у вас есть торшер", "торшер"),
        ("блендер снова появится?", "блендер"),
    ],
)
def test_return_and_availability_questions_are_stock_questions(text: str, words: str) -> None:
    u = understand(text)
    assert (u.intent, u.product_words) == (Intent.STOCK, words)
    # a question, not a bare name: the bot answers "not found" rather than "not understood"
    assert u.confidence > 0.5


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("noise cancelling earbuds in stock?", "noise cancelling earbuds"),
        ("Kopfhörer mit Noise Cancelling lieferbar?", "kopfhörer noise cancelling"),
        ("¿tienen auriculares con cancelación de ruido?", "auriculares cancelación ruido"),
        ("подушка для поддержки спины есть в наличии?", "подушка для поддержки спины"),
    ],
)
def test_an_intent_word_inside_a_product_name_stays_part_of_the_name(text: str, words: str) -> None:
    u = understand(text)
    assert (u.intent, u.product_words) == (Intent.STOCK, words)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("not cancelling, just tell me where my parcel is", None),
        ("no need for a human, where is order 123456", "123456"),
        ("nicht stornieren, ich will nur wissen wo mein paket ist", None),
        ("kein Mitarbeiter nötig, wo ist Bestellung 123456", "123456"),
        ("no quiero hablar con nadie, solo dime dónde está mi pedido", None),
        ("no hace falta cancelar, ¿cuándo llega el pedido 123456?", "123456"),
        ("менеджера не надо, где мой заказ", None),
        ("отменять не нужно, где заказ 123456", "123456"),
    ],
)
def test_a_denied_request_leaves_the_order_question(text: str, number: str | None) -> None:
    u = understand(text)
    assert (u.intent, u.order_number) == (Intent.ORDER_STATUS, number)


@pytest.mark.parametrize(
    ("text", "intent", "number", "words"),
    [
        ("gde moj zakaz 123456", Intent.ORDER_STATUS, "123456", None),
        ("kogda privezut moyu posylku", Intent.ORDER_STATUS, None, None),
        ("est li v nalichii chajnik aurora", Intent.STOCK, None, "chajnik aurora"),
        ("hochu otmenit moj zakaz pozhalujsta", Intent.CANCEL, None, None),
        ("pozovite menedzhera pozhalujsta", Intent.AGENT, None, None),
        ("ne shlite mne bolshe soobscheniya", Intent.STOP_NOTIFICATIONS, None, None),
        ("spasibo bolshoe za pomosh", Intent.THANKS, None, None),
    ],
)
def test_russian_in_latin_letters(
    text: str, intent: Intent, number: str | None, words: str | None
) -> None:
    u = understand(text)
    assert (u.intent, u.order_number, u.product_words) == (intent, number, words)
    assert u.language == "ru"


@pytest.mark.parametrize(
    ("text", "intent", "number", "words"),
    [
        ("privet, where is my order 123456", Intent.ORDER_STATUS, "123456", None),
        ("hola, habt ihr den Toaster auf Lager", Intent.STOCK, None, "toaster"),
        ("hi quiero cancelar mi pedido", Intent.CANCEL, None, None),
        ("hi, есть чайник в наличии?", Intent.STOCK, None, "чайник"),
    ],
)
def test_code_switched_messages(
    text: str, intent: Intent, number: str | None, words: str | None
) -> None:
    u = understand(text)
    assert (u.intent, u.order_number, u.product_words) == (intent, number, words)


@pytest.mark.parametrize(
    "text",
    [
        "what can I ask here",
        "which commands do you understand",
        "welche befehle verstehst du",
        "was kann ich hier fragen",
        "¿qué cosas le puedo preguntar?",
        "¿qué comandos entiendes?",
        "что можно у тебя спросить",
        "какие команды ты понимаешь",
    ],
)
def test_help_asked_as_a_question(text: str) -> None:
    assert understand(text).intent == Intent.HELP


@pytest.mark.parametrize(
    "text",
    [
        "can I talk to somebody at the store",
        "put me through to your staff",
        "kann ich mit jemandem vom laden sprechen",
        "quiero hablar con alguien de la tienda",
        "хочу поговорить с кем-нибудь из магазина",
    ],
)
def test_the_support_team_in_everyday_words(text: str) -> None:
    assert understand(text).intent == Intent.AGENT


@pytest.mark.parametrize(
    ("text", "intent", "number"),
    [
        ("where's my order? also I want to speak to someone", Intent.AGENT, None),
        ("cancel order 123456 and do you have the blender", Intent.CANCEL, "123456"),
        ("wo ist mein paket, und ich will einen mitarbeiter sprechen", Intent.AGENT, None),
        ("bitte bestellung 123456 stornieren und habt ihr den toaster", Intent.CANCEL, "123456"),
        ("¿dónde está mi pedido? quiero hablar con una persona", Intent.AGENT, None),
        ("cancelen el pedido 123456 y tienen la batidora?", Intent.CANCEL, "123456"),
        ("где заказ? соедините с оператором", Intent.AGENT, None),
        ("отмените заказ 123456, а чайник есть?", Intent.CANCEL, "123456"),
    ],
)
def test_two_requests_in_one_message_answer_the_weightier(
    text: str, intent: Intent, number: str | None
) -> None:
    u = understand(text)
    assert (u.intent, u.order_number) == (intent, number)


def test_digits_inside_a_model_name_are_not_an_order_number() -> None:
    u = understand("is the aurora x500s in stock?")
    assert (u.intent, u.order_number, u.product_words) == (Intent.STOCK, None, "aurora x500s")


def test_a_bare_name_is_only_a_guess_the_catalog_must_confirm() -> None:
    # the handler answers a guess only when the catalog knows the name
    u = understand("Kaskad 7 Rucksack")
    assert (u.intent, u.product_words, u.confidence) == (
        Intent.STOCK,
        "kaskad 7 rucksack",
        0.5,
    )


# --- the intent model ------------------------------------------------------------------------


def test_training_set_is_large_deterministic_and_in_every_language() -> None:
    rows = intent_model.training_set()
    assert len(rows) >= 3000
    assert rows == intent_model.training_set()
    counts = Counter(row.language for row in rows)
    assert all(counts[lang] >= 750 for lang in LANGUAGES)
    assert {row.intent for row in rows} == {i.value for i in Intent}
    assert {row.intent for row in rows} == set(intent_model.INTENTS)
    # Russian typed in Latin letters is part of it
    latin_ru = [r for r in rows if r.language == "ru" and r.text.isascii()]
    assert len(latin_ru) >= 100


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("где мой заказ", "gde moj zakaz"),
        ("где мой заказ", "GDE MOY ZAKAZ!!!"),
        ("щётка", "schetka"),
        ("Kopfhörer", "kopfhorer"),
        ("¿Dónde está?", "donde esta"),
        ("heyyyyy", "heyy"),
        ("order 100234", "order 999999"),
    ],
)
def test_normalise_folds_spellings_together(a: str, b: str) -> None:
    assert intent_model.normalise(a) == intent_model.normalise(b)


def test_the_model_ranks_intents_and_knows_when_it_knows_nothing() -> None:
    model = intent_model.model()
    probabilities = model.probabilities("gde moy zakaz")
    assert set(probabilities) == set(intent_model.INTENTS)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert max(probabilities, key=probabilities.__getitem__) == "order_status"
    assert set(model.probabilities("🤔🤔🤔").values()) == {1 / len(intent_model.INTENTS)}


def test_the_model_alone_never_makes_the_account_step_drop_its_question() -> None:
    # no rule knows these words; account.py treats only >= 0.99 as certain
    u = understand("kann ich mit jemandem vom laden sprechen")
    assert u.intent == Intent.AGENT
    assert 0.5 < u.confidence < 0.99


def test_the_fitted_arrays_survive_the_trip_from_the_child() -> None:
    model = intent_model.model()
    again = intent_model._load(intent_model._dump(model))
    assert again.vocabulary == model.vocabulary
    assert again.intents == model.intents
    text = "gde moj zakaz"
    assert again.probabilities(text) == model.probabilities(text)


def test_a_damaged_cached_model_is_fitted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = intent_model._cache_path()
    assert path is not None and path.is_relative_to(tmp_path)
    path.parent.mkdir(parents=True)
    whole = intent_model._dump(intent_model.model())
    path.write_bytes(whole[: len(whole) // 2])  # a process killed while writing
    fitted = intent_model.model.__wrapped__()  # not the process's cached answer
    assert fitted.vocabulary == intent_model.model().vocabulary
    assert intent_model._load(path.read_bytes()).vocabulary == fitted.vocabulary


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # the menu's words typed, and a question no rule knows: the bot's own tests send these
        ("/ orders", Intent.ORDER_STATUS),
        ("Your orders", Intent.ORDER_STATUS),
        ("Is anybody there?", Intent.AGENT),
        ("No, keep it", Intent.UNKNOWN),
        ("12 декабря", Intent.UNKNOWN),
    ],
)
def test_menu_words_and_short_answers(text: str, intent: Intent) -> None:
    assert understand(text).intent == intent


@pytest.mark.parametrize("text", ["wo ist meine Bestellung?", "gde moj zakaz", "a", "Ёлка 2 шт"])
def test_prediction_reads_the_features_the_model_was_fitted_on(text: str) -> None:
    # understand() looks features up per word (cached); the fit took them from features()
    model = intent_model.model()
    fitted = {model.vocabulary[f] for f in intent_model.features(text) if f in model.vocabulary}
    looked_up: set[int] = set()
    for word in intent_model.normalise(text).split():
        looked_up |= model._word_ids(word)
    assert looked_up == fitted


# --- two questions in one message -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "where is my order 123456 and is the hoodie back in stock?",
            [(Intent.ORDER_STATUS, "123456", None), (Intent.STOCK, None, "hoodie")],
        ),
        (
            "is the kettle in stock? and where is my order 100004",
            [(Intent.STOCK, None, "kettle"), (Intent.ORDER_STATUS, "100004", None)],
        ),
        (
            "wo ist meine bestellung 100004 und ist der wasserkocher auf lager?",
            [(Intent.ORDER_STATUS, "100004", None), (Intent.STOCK, None, "wasserkocher")],
        ),
        (
            "dónde está mi pedido 100004 y hay hervidor en stock?",
            [(Intent.ORDER_STATUS, "100004", None), (Intent.STOCK, None, "hervidor")],
        ),
        (
            "где мой заказ 100004 и есть ли чайник в наличии?",
            [(Intent.ORDER_STATUS, "100004", None), (Intent.STOCK, None, "чайник")],
        ),
        # one question with an "and" in it, or a question and a remark: one answer
        ("do you have salt and pepper grinders?", [(Intent.STOCK, None, "salt pepper grinders")]),
        ("is the black and white kettle in stock", [(Intent.STOCK, None, "black white kettle")]),
        ("where is order 100004? it has the kettle", [(Intent.ORDER_STATUS, "100004", None)]),
        ("hi and where is my order", [(Intent.ORDER_STATUS, None, None)]),
        (
            "I want to cancel order 100004 and is the kettle in stock?",
            [(Intent.CANCEL, "100004", None)],
        ),
    ],
)
def test_two_questions_in_one_message_in_the_order_asked(
    text: str, expected: list[tuple[Intent, str | None, str | None]]
) -> None:
    got = [(u.intent, u.order_number, u.product_words) for u in understand_all(text)]
    assert got == expected


# --- the catalog decides what a product is ---------------------------------------------------

SHOP = {
    "BIK-0007": {
        "en": "Trek Marlin 7 Mountain Bike",
        "de": "Trek Marlin 7 Mountainbike",
        "es": "Bicicleta de montaña Trek Marlin 7",
        "ru": "Горный велосипед Trek Marlin 7",
    },
    "TOY-0193": {
        "en": "Playmobil 71193 Police Station",
        "de": "Playmobil 71193 Polizeistation",
        "es": "Playmobil 71193 Comisaría de policía",
        "ru": "Playmobil 71193 Полицейский участок",
    },
    "EAR-0002": {
        "en": "Jabra Elite Noise Cancelling Earbuds",
        "de": "Jabra Elite Ohrhörer mit Geräuschunterdrückung",
        "es": "Auriculares Jabra Elite con cancelación de ruido",
        "ru": "Наушники Jabra Elite с шумоподавлением",
    },
    "GRI-0040": {
        "en": "Comandante C40 Coffee Grinder",
        "de": "Comandante C40 Kaffeemühle",
        "es": "Molinillo de café Comandante C40",
        "ru": "Кофемолка Comandante C40",
    },
    "TNT-0002": {
        "en": "2 Person Tent",
        "de": "2-Personen-Zelt",
        "es": "Tienda de campaña para 2 personas",
        "ru": "Палатка на 2 человека",
    },
    "CAS-0008": {
        "en": "Pixel 8 Case",
        "de": "Hülle für Pixel 8",
        "es": "Funda para Pixel 8",
        "ru": "Чехол для Pixel 8",
    },
}
SHOP_WORDS = ProductWords.of_names(
    [text for sku, names in SHOP.items() for text in (sku, *names.values())]
)


@pytest.mark.parametrize(
    ("text", "intent", "number", "words"),
    [
        # a model number of the catalog is no order number, and the name is no order question
        ("playmobil 71193", Intent.STOCK, None, "playmobil 71193"),
        ("playmobil 71193 noch zu haben?", Intent.STOCK, None, "playmobil 71193"),
        ("wann kommt die comandante c40 wieder", Intent.STOCK, None, "comandante c40"),
        ("habt ihr die trek marlin 7 da", Intent.STOCK, None, "trek marlin 7"),
        ("¿tienen la funda para pixel 8?", Intent.STOCK, None, "funda para pixel 8"),
        ("есть чехол для pixel 8?", Intent.STOCK, None, "чехол для pixel 8"),
        ("kofemolka comandante est?", Intent.STOCK, None, "kofemolka comandante"),
        ("jabra noise cancelling earbuds back yet?", Intent.STOCK, None, None),
        # "person", "человека" are a person asked for, except in a name
        ("do you have the 2 person tent", Intent.STOCK, None, "2 person tent"),
        ("est li palatka na 2 cheloveka", Intent.STOCK, None, "palatka na 2 cheloveka"),
        ("habt ihr das 2 personen zelt", Intent.STOCK, None, "2 personen zelt"),
        # the intent words of a message stay its intent: the catalog only claims its names
        ("cancel my order 100234", Intent.CANCEL, "100234", None),
        ("where is my trek marlin 7 order", Intent.ORDER_STATUS, None, None),
        ("order 100234 with playmobil 71193 where is it", Intent.ORDER_STATUS, "100234", None),
        ("hi", Intent.GREETING, None, None),
    ],
)
def test_the_catalog_decides_which_words_are_a_product(
    text: str, intent: Intent, number: str | None, words: str | None
) -> None:
    u = understand(text, SHOP_WORDS)
    assert (u.intent, u.order_number) == (intent, number)
    if words is not None:
        assert u.product_words == words


def test_without_the_catalog_a_model_number_reads_as_an_order_number() -> None:
    # what the catalog's words change (the test above fails without them)
    assert understand("playmobil 71193").order_number == "71193"
    assert understand("playmobil 71193", SHOP_WORDS).order_number is None


MODEL_WORDS = ProductWords.of_names(
    ["HPH-0001", "Sony WH-1000XM5 Kopfhörer", "Наушники Sony WH-1000XM5", "Galaxy S24 Smartphone"]
)


@pytest.mark.parametrize(
    ("text", "intent", "words"),
    [
        # a model number in other pieces than the catalog's is the product, no order number,
        # and no keyboard mash for want of vowels
        ("wh1000xm5", Intent.STOCK, "wh1000xm5"),
        ("wh 1000 xm5 lieferbar?", Intent.STOCK, "wh 1000 xm5"),
        ("ist der sony wh 1000 xm5 wieder da", Intent.STOCK, "sony wh 1000 xm5"),
        ("galaxy s 24 da?", Intent.STOCK, "galaxy s 24"),
        # a long story around a name: the name is what the search gets
        (
            "hab letztes jahr den sony kopfhörer bei euch gekauft und wollte jetzt noch einen für"
            " meine frau aber auf der seite steht ausverkauft wisst ihr wann der wieder kommt",
            Intent.STOCK,
            "sony kopfhörer",
        ),
    ],
)
def test_a_name_in_other_pieces_or_inside_a_story(text: str, intent: Intent, words: str) -> None:
    u = understand(text, MODEL_WORDS)
    assert (u.intent, u.order_number, u.product_words) == (intent, None, words)


def test_a_letter_prefix_before_a_marked_number_is_part_of_the_order_number() -> None:
    assert understand("can i get tracking for order ORD-734412").order_number == "734412"
    assert understand("is KAF-2031 in stock").order_number is None


def test_catalog_words_fold_case_accents_and_script() -> None:
    words = ProductWords.of_names(["Kaffeemühle", "Кофемолка Comandante"])
    assert {"kaffeemuhle", "kofemolka", "comandante"} <= words.words
    assert ("kofemolka", "comandante") in words.pairs


@pytest.mark.parametrize(
    "text",
    [
        "any other grinders in stock?",
        "got another comandante that ships faster",
        "habt ihr andere kaffeemühlen auf lager",
        "hay otros molinillos disponibles?",
        "есть другие кофемолки в наличии?",
        "drugie kofemolki est?",
    ],
)
def test_another_product_is_an_alternative(text: str) -> None:
    assert understand(text, SHOP_WORDS).intent is Intent.ALTERNATIVES


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("the other day i ordered the comandante c40, where is it?", Intent.ORDER_STATUS),
        ("ich hab noch eine andere frage", Intent.UNKNOWN),
    ],
)
def test_other_without_a_product_is_no_alternative(text: str, intent: Intent) -> None:
    assert understand(text, SHOP_WORDS).intent is intent


@pytest.mark.parametrize(
    ("text", "alone", "with_catalog"),
    [
        # words of no name: a guess without the catalog, nothing with it
        ("dyson v11", Intent.STOCK, Intent.UNKNOWN),
        ("blaue stunde", Intent.STOCK, Intent.UNKNOWN),
        ("lampe omega", Intent.STOCK, Intent.UNKNOWN),
        # a word of a name, or one typo from one, is the catalog's guess
        ("trek marlen 7", Intent.ORDER_STATUS, Intent.STOCK),
        ("kaffeemühle comandnte", Intent.STOCK, Intent.STOCK),
        ("кофемолка комманданте", Intent.STOCK, Intent.STOCK),
    ],
)
def test_a_bare_name_is_a_guess_only_when_the_catalog_knows_its_words(
    text: str, alone: Intent, with_catalog: Intent
) -> None:
    assert understand(text).intent is alone
    assert understand(text, SHOP_WORDS).intent is with_catalog
