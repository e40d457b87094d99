"""The control API's bulk call: many users and updates at once, for load drivers."""

from __future__ import annotations

import time

import pytest

from sandbox.client import SandboxClient, SandboxError
from tests.sandbox.conftest import Api


async def test_bulk_creates_users_and_enqueues_messages_and_presses_in_order(
    api: Api, client: SandboxClient
) -> None:
    before = time.time()
    made = await client.bulk(
        users=[{"id": 11, "language_code": "de"}, {"id": 12}],
        messages=[{"user_id": 11, "text": "eins"}, {"user_id": 12, "text": "two"}],
    )
    assert made["users"] == 2 and before <= made["time"] <= time.time()
    assert [m["chat_id"] for m in made["messages"]] == [11, 12]
    resp = await api("sendMessage", chat_id=11, text="menu")
    assert resp.status_code == 200
    pressed = await client.bulk(
        messages=[{"user_id": 11, "press": "m:help"}, {"user_id": 11, "text": "zwei"}]
    )
    query_id = pressed["messages"][0]["query_id"]
    updates = (await api("getUpdates")).json()["result"]
    kinds = [
        u["message"]["text"] if "message" in u else u["callback_query"]["data"] for u in updates
    ]
    assert kinds == ["eins", "two", "m:help", "zwei"]
    assert updates[0]["message"]["from"]["language_code"] == "de"
    assert updates[2]["callback_query"]["id"] == query_id
    assert updates[2]["callback_query"]["message"]["text"] == "menu"


async def test_a_bad_item_is_named_and_stops_the_batch(client: SandboxClient) -> None:
    with pytest.raises(SandboxError, match="item 1: no user 99"):
        await client.bulk(users=[{"id": 5}], messages=[{"user_id": 99, "text": "x"}])
    with pytest.raises(SandboxError, match="no bot message"):
        await client.bulk(messages=[{"user_id": 5, "press": "m:help"}])
