"""The HTTP API for shop systems: JSON over aiohttp, in the bot's process when API_PORT is set
or on its own (``python -m shopapi``).

Every endpoint validates its request with the pydantic models in ``shopapi.models`` (which
also make the OpenAPI document, ``shopapi.openapi``), applies it with the same store
functions the CSV imports and ``backorder-admin`` use, in one transaction, and then runs the
same follow-on work (``store.cli.follow_on``). ``shopapi.server.build_web_app`` assembles the
server; other route groups (webhooks, operators' endpoints) are added to it there.
"""
