"""A process that takes the check-then-write steps of tests/store/races.py many at once, for
the test with two real processes (tests/store/test_races_processes.py).

    python -m tests.store.race_proc DB_URL --base N --tasks K
        opens the store, prints {"ready": true}, waits for a line on stdin, then runs K tasks
        of each step at once: wrong proofs of chat 77 (numbers 3N+i), wrong proofs for
        number 100001 (chats N+i), orders for the last units (numbers 2N+i), orders the bot
        numbers itself, escalations of customer 1. Prints one JSON line: per step, how many
        tasks it let through (recorded, allocated, started) and the errors' text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from tests.store.races import (
    at_once,
    bot_order,
    close_stores,
    escalate,
    failures,
    open_stores,
    order_last_unit,
    wrong_proof,
)


async def main(args: argparse.Namespace) -> dict[str, object]:
    base, n = args.base, args.tasks
    stores = await open_stores(args.url, 2)
    steps: dict[str, Callable[[AsyncConnection, int], Awaitable[object]]] = {
        "chat_proofs": lambda conn, i: wrong_proof(conn, 77, f"3{base + i}"),
        "number_proofs": lambda conn, i: wrong_proof(conn, base + i, "100001"),
        "last_unit": lambda conn, i: order_last_unit(conn, f"2{base + i}", i),
        "bot_orders": bot_order,
        "escalations": escalate,
    }
    try:
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        runs = await asyncio.gather(*(at_once(stores, n, step) for step in steps.values()))
    finally:
        await close_stores(stores)
    out: dict[str, object] = {}
    for name, results in zip(steps, runs, strict=True):
        out[name] = sum(1 for r in results if r is True)
        out[f"{name}_errors"] = [repr(e) for e in failures(results)]
    out["bot_numbers"] = [r for r in runs[3] if isinstance(r, str)]
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--base", type=int, required=True)
    p.add_argument("--tasks", type=int, default=8)
    print(json.dumps(asyncio.run(main(p.parse_args()))), flush=True)
