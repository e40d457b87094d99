"""A shop's own words (LEXICON_FILE) through the real bot: read before the first message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.understanding import load_lexicon
from sandbox.client import SandboxClient

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
USER = 811


@pytest.fixture
def bot_environ(tmp_path: Path) -> Iterator[dict[str, str]]:
    path = tmp_path / "shop.toml"
    path.write_text('[en.phrases]\norder_status = ["preorder*"]\n', encoding="utf-8")
    yield {"LEXICON_FILE": str(path)}
    load_lexicon(None)  # the next module's bot starts from the built-in lexicon


async def test_a_word_of_the_shops_file_is_understood(tg: SandboxClient) -> None:
    await tg.create_user(USER, first_name="Eve", language_code="en")
    [reply] = await tg.say(USER, "preorder?", quiet=QUIET)
    # an order question from a chat not linked yet; without the file: "Sorry, I didn't ..."
    assert reply["text"] == (
        "Let's link your customer account to this chat.\n"
        "What is your order number? You'll find it in your order confirmation e-mail."
    )
