"""``python -m sandbox --port 8081``: run the sandbox alone until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from sandbox._server import Sandbox
from sandbox._world import Settings


async def _serve(args: argparse.Namespace) -> None:
    settings = Settings(update_queue_cap=args.update_queue_cap, call_log_cap=args.call_log_cap)
    sb = Sandbox(token=args.token, bot_username=args.bot_username, settings=settings)
    if args.no_limits:
        sb.limits.enabled = False
    await sb.start(host=args.host, port=args.port)
    print(f"Sandbox playground: {sb.url}/", flush=True)
    print(f"Bot API base_url:   {sb.api_base}   token: {sb.token}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default="123456:SANDBOX-TOKEN")
    parser.add_argument("--bot-username", default="backorder_demo_bot")
    parser.add_argument("--no-limits", action="store_true", help="switch the flood limits off")
    parser.add_argument(
        "--update-queue-cap", type=int, default=10_000, help="undelivered updates kept"
    )
    parser.add_argument(
        "--call-log-cap", type=int, default=5_000, help="Bot API calls kept in the log"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
