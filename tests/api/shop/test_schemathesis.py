"""Every endpoint of /api/openapi.json with input generated from the document itself
(schemathesis): valid input never meets a 5xx and every answer is one the document declares,
with its schema; invalid input is refused with a 4xx and writes nothing at all.

The server runs on a thread of its own (schemathesis calls it synchronously over HTTP). A dump
of every table is the same after all the invalid requests as before them."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from shopapi.server import OPENAPI_PATH, build_web_app, start_server
from store import Store, open_store
from tests.api.shop.conftest import AUTH, api_settings, dump
from tests.conftest import START

T = TypeVar("T")
# Examples per operation: 13 operations x 2 modes x 3 took 11 s on SQLite on a quiet machine
# (most of it hypothesis making the cases from the schemas), 6 took 21 s. Valid input's store
# work is test_endpoints.py's; here it is the no-5xx and the documented answers.
EXAMPLES = {GenerationMode.NEGATIVE: 2, GenerationMode.POSITIVE: 1}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class LiveApi:
    url: str
    store: Store
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


@pytest.fixture
def live_api(db_url: str) -> Iterator[LiveApi]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api", daemon=True)
    thread.start()
    live = LiveApi("", None, loop)  # type: ignore[arg-type]
    live.store = live.run(open_store(db_url))

    async def start() -> Any:
        app = build_web_app(api_settings(db_url), live.store, now=lambda: START)
        return await start_server(app, "127.0.0.1", 0)

    runner = live.run(start())
    host, port = runner.addresses[0][:2]
    live.url = f"http://{host}:{port}"
    try:
        yield live
    finally:
        live.run(runner.cleanup())
        live.run(live.store.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _schema(live: LiveApi) -> Any:
    with urllib.request.urlopen(live.url + OPENAPI_PATH, timeout=10) as r:
        doc = json.load(r)
    return schemathesis.openapi.from_dict(doc)


def _fuzz(live: LiveApi, operation: Any, mode: GenerationMode) -> int:
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        nonlocal calls
        response = case.call(base_url=live.url, headers=AUTH)
        calls += 1
        case.validate_response(response, checks=CHECKS)
        if mode is GenerationMode.NEGATIVE:
            assert 400 <= response.status_code < 500, (case.as_curl_command(), response.text)

    run()
    return calls


@pytest.mark.sqlite_only(
    "time: a request is validated before the store is touched, and tests/api/shop/test_endpoints.py"
    " and test_auth_limits.py cover each endpoint's store work and refusals on PostgreSQL"
)
def test_every_endpoint_with_generated_valid_and_invalid_input(live_api: LiveApi) -> None:
    schema = _schema(live_api)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 13
    before = live_api.run(dump(live_api.store))
    negative = sum(_fuzz(live_api, op, GenerationMode.NEGATIVE) for op in operations)
    assert live_api.run(dump(live_api.store)) == before
    positive = sum(_fuzz(live_api, op, GenerationMode.POSITIVE) for op in operations)
    assert negative >= len(operations) and positive >= len(operations)
