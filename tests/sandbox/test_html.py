"""Telegram's HTML parse mode: what it accepts, what it refuses and the exact error texts."""

import pytest

from sandbox._html import HtmlError, parse_html
from tests.sandbox.conftest import Api


@pytest.mark.parametrize(
    ("html", "text", "entities"),
    [
        ("<b>bold</b> and <strong>s</strong>", "bold and s", [("bold", 0, 4), ("bold", 9, 1)]),
        (
            "<i>a</i><em>b</em><u>c</u><ins>d</ins>",
            "abcd",
            [("italic", 0, 1), ("italic", 1, 1), ("underline", 2, 1), ("underline", 3, 1)],
        ),
        (
            "<s>a</s><strike>b</strike><del>c</del>",
            "abc",
            [("strikethrough", 0, 1), ("strikethrough", 1, 1), ("strikethrough", 2, 1)],
        ),
        (
            '<span class="tg-spoiler">x</span><tg-spoiler>y</tg-spoiler>',
            "xy",
            [("spoiler", 0, 1), ("spoiler", 1, 1)],
        ),
        ('<a href="https://e.com/?a=1&amp;b=2">link</a>', "link", [("text_link", 0, 4)]),
        (
            "<code>x</code><pre>y</pre><blockquote>z</blockquote>",
            "xyz",
            [("code", 0, 1), ("pre", 1, 1), ("blockquote", 2, 1)],
        ),
        ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍", [("custom_emoji", 0, 2)]),
        ("1 &lt; 2 &gt; 0 &amp; &quot;q&quot; &#65;&#x42;", '1 < 2 > 0 & "q" AB', []),
        ("<B>caps</B>", "caps", [("bold", 0, 4)]),
        ("<b>👍 <i>ü</i></b>", "👍 ü", [("bold", 0, 4), ("italic", 3, 1)]),
        ("Tom & Jerry > cats", "Tom & Jerry > cats", []),  # Telegram tolerates these
        ("<b></b>empty", "empty", []),
    ],
)
def test_valid_html(html: str, text: str, entities: list[tuple[str, int, int]]) -> None:
    plain, found = parse_html(html)
    assert plain == text
    assert [(e["type"], e["offset"], e["length"]) for e in found] == entities


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("<foo>x</foo>", 'Unsupported start tag "foo" at byte offset 0'),
        ("ab<br>", 'Unsupported start tag "br" at byte offset 2'),
        ("ü<p>", 'Unsupported start tag "p" at byte offset 2'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("<b>x</b", "Unclosed end tag at byte offset 4"),
        ('<span class="x">y</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<a href="x>y</a>', 'Unclosed start tag "a" at byte offset 0'),
    ],
)
def test_invalid_html(html: str, error: str) -> None:
    with pytest.raises(HtmlError) as caught:
        parse_html(html)
    assert str(caught.value) == error


async def test_bad_html_over_http(api: Api, client: object) -> None:
    await client.create_user(5, first_name="A")  # type: ignore[attr-defined]
    body = await api.err("sendMessage", chat_id=5, text="<foo>", parse_mode="HTML")
    assert body == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: can't parse entities: "
        'Unsupported start tag "foo" at byte offset 0',
    }
    # Without a parse mode the same text is sent literally.
    sent = await api.ok("sendMessage", chat_id=5, text="<foo>")
    assert sent["text"] == "<foo>"
