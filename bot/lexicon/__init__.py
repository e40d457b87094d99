"""The rules' lexicon as data: one TOML file per language here, and a shop's own file on top.

``load(paths, intents)`` reads the files in order, checks every entry and compiles the tables
``bot.understanding`` matches against: exact words, stems (``заказ*``), the keywords worth a typo
match, stop-words and the rest. It is the only place that reads files; matching stays pure.
A mistake raises ``LexiconError`` with ``file:line: reason``: the bot does not start on a
lexicon it would misread. The format is described in ``bot/lexicon/README.md``.

A later file adds to the earlier ones (phrases, words, synonyms); it cannot take anything away.
"""

from __future__ import annotations

import math
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Generic, TypeVar

__all__ = [
    "BUILTIN",
    "INTENT_NAMES",
    "LANGUAGES",
    "Lexicon",
    "LexiconError",
    "Phrase",
    "check_file",
    "fold",
    "load",
]

HERE = Path(__file__).parent
LANGUAGES = ("en", "de", "es", "ru")
BUILTIN: tuple[Path, ...] = tuple(HERE / f"{lang}.toml" for lang in LANGUAGES)
# The values of bot.understanding.Intent a phrase can stand for (understanding checks they agree).
INTENT_NAMES = (
    "order_status",
    "stock",
    "cancel",
    "alternatives",
    "agent",
    "stop_notifications",
    "greeting",
    "help",
    "thanks",
)
_WORD_LISTS = (
    "stopwords",
    "negations",
    "not_needed",
    "not_needed_alone",
    "product_glue",
    "no_typos",
    "other",
)
_KEYS = frozenset({"phrases", "synonyms", *_WORD_LISTS})
_MAX_WEIGHT = 10.0
_MIN_STEM = 3  # "ab*" would take every word that starts with it
_ALTERNATIVE_RE = re.compile(r"[^\W_]+(?:-[^\W_]+)*\*?")
_TOML_AT_RE = re.compile(r"^(.*?)\s*\(at line (\d+), column \d+\)$")
_COMBINING_RE = re.compile(r"[\u0300-\u036f]")

I = TypeVar("I")  # noqa: E741 - the caller's intent type


class LexiconError(ValueError):
    """A lexicon file that cannot be read as written; the message is ``file:line: reason``."""


@lru_cache(maxsize=16384)
def fold(token: str) -> str:
    """Matching form: accents stripped, casefolded, ё -> е, й kept (it is a letter of its own)."""
    token = token.replace("й", "\x00").replace("Й", "\x00")
    token = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", token)).casefold()
    return token.replace("\x00", "й").replace("ё", "е")


@dataclass(frozen=True)
class Phrase(Generic[I]):
    intent: I
    langs: tuple[str, ...]  # a phrase written the same in several languages counts once
    atoms: tuple[int, ...]
    weight: float
    negation_proof: bool


@dataclass(frozen=True)
class Lexicon(Generic[I]):
    phrases: list[Phrase[I]]
    by_first_atom: dict[int, list[Phrase[I]]]
    exact: dict[str, set[int]]
    stems: dict[str, set[int]]
    fuzzy: dict[str, list[tuple[str, bool]]]  # first letter -> (word or stem, is_stem)
    stem_lengths: tuple[int, ...]
    synonyms: dict[str, str]  # a shop's word -> the lexicon's word it stands for
    stopwords: dict[str, frozenset[str]]
    all_stopwords: frozenset[str]
    negations: frozenset[str]
    not_needed: frozenset[str]
    not_needed_alone: frozenset[str]
    product_glue: frozenset[str]
    other: frozenset[str]


@dataclass(frozen=True)
class _Entry:
    intent: str
    lang: str
    body: str  # folded, without weight and "!"
    weight: float
    negation_proof: bool


@dataclass
class _Raw:
    entries: list[_Entry]
    words: dict[str, dict[str, set[str]]]  # list name -> language -> folded words
    synonyms: dict[str, tuple[str, str]]  # folded word -> (folded target, "file:line")


class _File:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LexiconError(f"{path}:1: cannot be read: {exc}") from None
        self.lines = self.text.splitlines()

    def error(self, line: int, reason: str) -> LexiconError:
        return LexiconError(f"{self.path}:{line}: {reason}")

    def line_of(self, needle: str, after: int = 1) -> int:
        """The first line at or after ``after`` holding ``needle`` (tomllib keeps no lines)."""
        for n in range(max(after, 1), len(self.lines) + 1):
            if needle in self.lines[n - 1]:
                return n
        return after

    def key_line(self, key: str, after: int = 1) -> int:
        pattern = re.compile(rf"^\s*(?:\[\s*)?[\"']?{re.escape(key)}[\"']?\s*(?:=|\])")
        for n in range(max(after, 1), len(self.lines) + 1):
            if pattern.match(self.lines[n - 1]):
                return n
        return after


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_entry(source: _File, line: int, entry: object) -> tuple[str, float, bool]:
    if not isinstance(entry, str):
        raise source.error(line, f"a phrase must be a string, not {entry!r}")
    body, sep, weight_text = entry.partition(" :")
    weight = 1.0
    if sep:
        try:
            weight = float(weight_text)
        except ValueError:
            raise source.error(line, f"bad weight {weight_text!r} in {entry!r}") from None
        if not math.isfinite(weight) or not 0 < weight <= _MAX_WEIGHT:
            raise source.error(
                line, f"weight {weight_text!r} in {entry!r} is not above 0 and at most 10"
            )
    negation_proof = body.startswith("!")
    body = fold(body.removeprefix("!").strip())
    if not body:
        raise source.error(line, f"empty phrase {entry!r}")
    for atom in body.split():
        for alternative in atom.split("|"):
            if not _ALTERNATIVE_RE.fullmatch(alternative):
                raise source.error(
                    line, f"{alternative!r} in {entry!r} is not a word or a stem (word*)"
                )
            if alternative.endswith("*") and len(alternative) - 1 < _MIN_STEM:
                raise source.error(line, f"stem {alternative!r} in {entry!r} is too short")
    return " ".join(body.split()), weight, negation_proof


def _read(source: _File, raw: _Raw) -> None:
    try:
        data = tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_AT_RE.match(str(exc))
        if found:
            raise source.error(int(found.group(2)), found.group(1)) from None
        reason = str(exc).removesuffix(" (at end of document)")
        raise source.error(max(1, len(source.lines)), reason) from None
    for lang, table in data.items():
        line = source.key_line(lang)
        if lang not in LANGUAGES:
            raise source.error(line, f"unknown language {lang!r} (one of {', '.join(LANGUAGES)})")
        if not isinstance(table, dict):
            raise source.error(line, f"{lang} must be a table: [{lang}]")
        _read_language(source, raw, lang, table)


def _read_language(source: _File, raw: _Raw, lang: str, data: dict[str, object]) -> None:
    lang_line = source.key_line(lang)
    for key in data:
        if key not in _KEYS:
            raise source.error(source.key_line(key, lang_line), f"unknown key {key!r} in [{lang}]")
    for name in _WORD_LISTS:
        value = data.get(name, "")
        if not isinstance(value, str):
            line = source.key_line(name, lang_line)
            raise source.error(line, f"{name} must be a string of words")
        raw.words[name].setdefault(lang, set()).update(fold(w) for w in value.split())
    phrases = data.get("phrases", {})
    table_line = source.key_line(f"{lang}.phrases")
    if not isinstance(phrases, dict):
        raise source.error(table_line, "phrases must be a table")
    for intent, entries in phrases.items():
        line = source.key_line(intent, table_line)
        if intent not in INTENT_NAMES:
            raise source.error(
                line, f"unknown intent {intent!r} (one of {', '.join(INTENT_NAMES)})"
            )
        if not isinstance(entries, list):
            raise source.error(line, f"{intent} must be a list of phrases")
        for entry in entries:
            at = source.line_of(_toml_string(entry), line) if isinstance(entry, str) else line
            body, weight, proof = _parse_entry(source, at, entry)
            raw.entries.append(_Entry(intent, lang, body, weight, proof))
    synonyms = data.get("synonyms", {})
    synonyms_line = source.key_line(f"{lang}.synonyms")
    if not isinstance(synonyms, dict):
        raise source.error(synonyms_line, "synonyms must be a table")
    for word, target in synonyms.items():
        line = source.key_line(word, synonyms_line)
        if not isinstance(target, str) or len(target.split()) != 1 or len(word.split()) != 1:
            raise source.error(line, f"a synonym is one word for one word: {word!r}")
        raw.synonyms[fold(word)] = (fold(target), f"{source.path}:{line}")


def check_file(path: Path) -> None:
    """Raise LexiconError if ``path`` is not a lexicon the bot can load on top of its own."""
    load([*BUILTIN, path], {name: name for name in INTENT_NAMES})


def load(paths: Sequence[Path], intents: Mapping[str, I]) -> Lexicon[I]:
    """Read and compile the files in order; ``intents`` maps intent names to the caller's."""
    raw = _Raw([], {name: {} for name in _WORD_LISTS}, {})
    for path in paths:
        _read(_File(Path(path)), raw)
    return _compile(raw, intents)


def _union(by_lang: Mapping[str, set[str]]) -> frozenset[str]:
    return frozenset().union(*by_lang.values()) if by_lang else frozenset()


def _compile(raw: _Raw, intents: Mapping[str, I]) -> Lexicon[I]:
    atom_ids: dict[str, int] = {}
    exact: dict[str, set[int]] = {}
    stems: dict[str, set[int]] = {}
    # By intent, then by file: the order phrases are tried in, whichever file they came from.
    order = {name: n for n, name in enumerate(INTENT_NAMES)}
    entries = sorted(raw.entries, key=lambda e: order[e.intent])
    for entry in entries:
        for atom in entry.body.split():
            if atom in atom_ids:
                continue
            atom_id = atom_ids[atom] = len(atom_ids)
            for alt in atom.split("|"):
                table = stems if alt.endswith("*") else exact
                table.setdefault(alt.rstrip("*"), set()).add(atom_id)
    langs_of: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        langs = langs_of.setdefault((entry.intent, entry.body), [])
        if entry.lang not in langs:
            langs.append(entry.lang)
    phrases: list[Phrase[I]] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        key = (entry.intent, entry.body)
        if key in seen:
            continue  # the same phrase in another language (or file) counts once
        seen.add(key)
        atoms = tuple(atom_ids[a] for a in entry.body.split())
        phrases.append(
            Phrase(
                intents[entry.intent],
                tuple(langs_of[key]),
                atoms,
                entry.weight,
                entry.negation_proof,
            )
        )
    by_first: dict[int, list[Phrase[I]]] = {}
    for phrase in phrases:
        by_first.setdefault(phrase.atoms[0], []).append(phrase)
    synonyms: dict[str, str] = {}
    for word, (target, where) in raw.synonyms.items():
        if not _known(target, exact, stems):
            raise LexiconError(f"{where}: synonym {word!r}: {target!r} is no word of a phrase")
        synonyms[word] = target
    stopwords = {lang: frozenset(words) for lang, words in raw.words["stopwords"].items()}
    no_typos = _union(raw.words["no_typos"])
    fuzzy: dict[str, list[tuple[str, bool]]] = {}
    for table, is_stem in ((exact, False), (stems, True)):
        for word in table:
            if len(word) >= 5 and word not in no_typos:
                fuzzy.setdefault(word[0], []).append((word, is_stem))
    return Lexicon(
        phrases=phrases,
        by_first_atom=by_first,
        exact=exact,
        stems=stems,
        fuzzy=fuzzy,
        stem_lengths=tuple(sorted({len(s) for s in stems})),
        synonyms=synonyms,
        stopwords=stopwords,
        all_stopwords=_union(raw.words["stopwords"]),
        negations=_union(raw.words["negations"]),
        not_needed=_union(raw.words["not_needed"]),
        not_needed_alone=_union(raw.words["not_needed_alone"]),
        product_glue=_union(raw.words["product_glue"]),
        other=_union(raw.words["other"]),
    )


def _known(word: str, exact: Mapping[str, object], stems: Iterable[str]) -> bool:
    return word in exact or any(word.startswith(stem) for stem in stems)
