"""Telegram's HTML parse mode, reproduced closely enough to reject what Telegram rejects.

The error texts and byte offsets follow tdlib's ``parse_html`` because bot code and tests
match on them. Like Telegram, a bare ``&`` or ``>`` is tolerated; a bare ``<`` is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_ALLOWED = {*_SIMPLE_TAGS, "a", "span", "tg-emoji"}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY_RE = re.compile(r"&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|(lt|gt|amp|quot));")


class HtmlError(Exception):
    """The HTML cannot be parsed; ``str(err)`` is the part after "can't parse entities: "."""


@dataclass
class _Open:
    tag: str
    offset: int  # UTF-16 offset in the plain text where the entity starts
    attr: str


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Return the plain text and its Bot API entities (UTF-16 offsets)."""
    out: list[str] = []
    out_len = 0  # UTF-16 length of the output so far
    entities: list[dict[str, Any]] = []
    stack: list[_Open] = []
    i = 0
    n = len(text)

    def byte_offset(pos: int) -> int:
        return len(text[:pos].encode("utf-8"))

    while i < n:
        ch = text[i]
        if ch == "&":
            m = _ENTITY_RE.match(text, i)
            if m is not None:
                decoded = _decode_entity(m)
                if decoded is not None:
                    out.append(decoded)
                    out_len += utf16_len(decoded)
                    i = m.end()
                    continue
        if ch != "<":
            out.append(ch)
            out_len += utf16_len(ch)
            i += 1
            continue
        begin = i
        i += 1
        if i < n and text[i] == "/":
            if not stack:
                raise HtmlError(f"Unexpected end tag at byte offset {byte_offset(begin)}")
            i += 1
            while i < n and not text[i].isspace() and text[i] != ">":
                i += 1
            end_name = text[begin + 2 : i].lower()
            while i < n and text[i].isspace():
                i += 1
            if i >= n or text[i] != ">":
                raise HtmlError(f"Unclosed end tag at byte offset {byte_offset(begin)}")
            i += 1
            top = stack.pop()
            if end_name and end_name != top.tag:
                raise HtmlError(
                    f"Unmatched end tag at byte offset {byte_offset(begin)}, "
                    f'expected "</{top.tag}>", found "</{end_name}>"'
                )
            entity = _entity_for(top, out_len)
            if entity is not None:
                entities.append(entity)
            continue
        while i < n and not text[i].isspace() and text[i] != ">":
            i += 1
        if i >= n:
            raise HtmlError(f"Unclosed start tag at byte offset {byte_offset(begin)}")
        tag = text[begin + 1 : i].lower()
        if tag not in _ALLOWED:
            raise HtmlError(f'Unsupported start tag "{tag}" at byte offset {byte_offset(begin)}')
        attr = ""
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {byte_offset(begin)}')
            if text[i] == ">":
                i += 1
                break
            name_start = i
            while i < n and not text[i].isspace() and text[i] not in "=>":
                i += 1
            attr_name = text[name_start:i].lower()
            if not attr_name:
                raise HtmlError(
                    f'Empty attribute name in the tag "{tag}" at byte offset {byte_offset(begin)}'
                )
            while i < n and text[i].isspace():
                i += 1
            if i >= n or text[i] != "=":
                # Telegram allows a value-less attribute only for blockquote's "expandable".
                if tag == "blockquote" and attr_name == "expandable":
                    continue
                raise HtmlError(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                    f"at byte offset {byte_offset(begin)}"
                )
            i += 1
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {byte_offset(begin)}')
            if text[i] in "\"'":
                quote = text[i]
                end = text.find(quote, i + 1)
                if end < 0:
                    raise HtmlError(
                        f'Unclosed start tag "{tag}" at byte offset {byte_offset(begin)}'
                    )
                raw_value = text[i + 1 : end]
                i = end + 1
            else:
                v_start = i
                while i < n and not text[i].isspace() and text[i] != ">":
                    i += 1
                raw_value = text[v_start:i]
            value = _ENTITY_RE.sub(lambda m: _decode_entity(m) or m.group(0), raw_value)
            if (
                (tag == "a" and attr_name == "href")
                or (tag == "span" and attr_name == "class")
                or (tag == "code" and attr_name == "class")
                or (tag == "tg-emoji" and attr_name == "emoji-id")
            ):
                attr = value
        if tag == "span" and attr != "tg-spoiler":
            raise HtmlError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {byte_offset(begin)}'
            )
        stack.append(_Open(tag=tag, offset=out_len, attr=attr))
    if stack:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _decode_entity(m: re.Match[str]) -> str | None:
    if m.group(3):
        return _NAMED_ENTITIES[m.group(3)]
    code = int(m.group(1)) if m.group(1) else int(m.group(2), 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _entity_for(top: _Open, end: int) -> dict[str, Any] | None:
    length = end - top.offset
    if length <= 0:
        return None
    entity: dict[str, Any] = {"offset": top.offset, "length": length}
    if top.tag == "a":
        if not top.attr:
            return None
        entity.update(type="text_link", url=top.attr)
    elif top.tag == "span":
        entity["type"] = "spoiler"
    elif top.tag == "tg-emoji":
        entity.update(type="custom_emoji", custom_emoji_id=top.attr or "0")
    else:
        entity["type"] = _SIMPLE_TAGS[top.tag]
        if top.tag == "pre" and top.attr.startswith("language-"):
            entity["language"] = top.attr.removeprefix("language-")
    return entity
