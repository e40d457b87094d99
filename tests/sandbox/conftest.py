from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox import Limits, Sandbox
from sandbox.client import SandboxClient


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    # Flood limits are tested on their own; elsewhere they would only slow tests down.
    sandbox = Sandbox(limits=Limits(enabled=False))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()


@pytest.fixture
async def client(sb: Sandbox) -> AsyncIterator[SandboxClient]:
    async with SandboxClient(sb.url) as c:
        yield c


class Api:
    """Calls the Bot API like a bot would, as form fields (what PTB sends) or JSON."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http = http
        self.base = base

    async def __call__(self, method: str, json: bool = False, **params: object) -> httpx.Response:
        url = f"{self.base}/{method}"
        if json:
            return await self.http.post(url, json=params)
        data = {k: v if isinstance(v, str) else _dump(v) for k, v in params.items()}
        return await self.http.post(url, data=data)

    async def ok(self, method: str, **params: object) -> object:
        resp = await self(method, **params)
        body = resp.json()
        assert resp.status_code == 200 and body["ok"], body
        return body["result"]

    async def err(self, method: str, **params: object) -> dict:
        resp = await self(method, **params)
        body = resp.json()
        assert not body["ok"], body
        assert resp.status_code == body["error_code"]
        return body


def _dump(value: object) -> str:
    import json

    return json.dumps(value)


@pytest.fixture
async def api(sb: Sandbox) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield Api(http, f"{sb.api_base}{sb.token}")
