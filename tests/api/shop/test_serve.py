"""The API served for real: beside the bot (``attach_to_bot``, the bot's username in the deep
links, stopped before the store closes) and on its own (``python -m shopapi``'s refusals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from shopapi.__main__ import main as shopapi_main
from shopapi.server import attach_to_bot
from store import Store
from tests.api.shop.conftest import AUTH, api_settings


@dataclass
class _Bot:
    username: str


class _BotApp:
    """What attach_to_bot uses of PTB's Application: its two hooks and the bot's name."""

    def __init__(self) -> None:
        self.bot = _Bot("real_shop_bot")
        self.calls: list[str] = []
        self.post_init: Any = self._init
        self.post_shutdown: Any = self._shutdown

    async def _init(self, app: Any) -> None:
        self.calls.append("bot's post_init")

    async def _shutdown(self, app: Any) -> None:
        self.calls.append("bot's post_shutdown")


async def test_the_api_runs_beside_the_bot_with_the_bots_username(
    store: Store, db_url: str, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def reachable() -> bool:
        return True

    # The fake bot is no PTB Bot for getMe: the probe's own check is shopapi.ops's (test_ops).
    monkeypatch.setattr("shopapi.ops.bot_api_check", lambda bot: reachable)
    settings = api_settings(db_url, API_PORT=str(unused_tcp_port))
    bot_app = _BotApp()
    attach_to_bot(bot_app, settings, store)
    await bot_app.post_init(bot_app)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{unused_tcp_port}/api/links",
                json={"customer_id": 1},
                headers=AUTH,
            ) as r,
        ):
            answer = await r.json()
        assert r.status == 200
        assert answer["url"] == f"https://t.me/real_shop_bot?start={answer['code']}"
        # The operators' probes on the same port (shopapi.ops), the API's requests counted.
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{unused_tcp_port}"
            async with session.get(base + "/healthz") as r:
                assert (r.status, await r.json()) == (200, {"status": "ok"})
            async with session.get(base + "/metrics") as r:
                page = await r.text()
            assert 'endpoint="/api/links",method="POST",status="200"} ' in page, page[:2000]
    finally:
        await bot_app.post_shutdown(bot_app)
    assert bot_app.calls == ["bot's post_init", "bot's post_shutdown"]
    async with aiohttp.ClientSession() as session:
        try:
            await session.get(f"http://127.0.0.1:{unused_tcp_port}/api/openapi.json")
            raise AssertionError("the server still answers after the bot's shutdown")
        except aiohttp.ClientConnectionError:
            pass


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        (
            {"API_TOKENS": "erp:" + "t" * 40},
            "shopapi: invalid setting API_PORT: must be set to run the API\n",
        ),
        (
            {"API_PORT": "8099", "API_TOKENS": "erp:short"},
            "shopapi: invalid setting API_TOKENS: the token of erp must be at least 32"
            " characters without spaces, e.g. from python3 -c 'import secrets;"
            " print(secrets.token_urlsafe(32))'\n",
        ),
    ],
)
def test_python_m_shopapi_refuses_bad_settings_in_one_line(
    environ: dict[str, str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("API_PORT", "API_TOKENS", "BACKORDER_SETTINGS_FILE", "BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert shopapi_main() == 2
    assert capsys.readouterr() == ("", line)
