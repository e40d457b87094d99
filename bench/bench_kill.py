# ruff: noqa: E501  (a hand-run script: long report lines)
"""Kill -9 one of two bot processes at full load (issue #15). Run by hand; prints figures,
asserts nothing.

    .venv/bin/python bench/bench_kill.py --database-url postgresql+asyncpg://USER@HOST/postgres
        [--pg-template bench_demo_large] [--chats 2000] [--updates 8000] [--kill-at 0.4]
        [--victim poller|other] [--lease 15] [--concurrent 64]

Two runs of the same updates (bench_e2e's realistic text mix, in the same order per chat) on
two fresh copies of ``--pg-template`` (CREATE DATABASE ... TEMPLATE), each against its own
sandbox (bench_e2e's driver and bot start):

1. The reference: one bot process answers them all. Each chat's transcript (every message
   the bot sent it: method, text, keyboard) is what the customer must see.
2. The kill: two processes (WORKER_NAME kill1, kill2). Once ``--kill-at`` of the reference's
   answers are out, the victim (the process holding the poller's lease, or the other one) is
   frozen (SIGSTOP; what it sent before reaches the sandbox), the chats it claims and their
   unanswered updates are read from the database, and it is killed (SIGKILL).

Each chat's transcript of run 2 is aligned with run 1's, answer by answer:
- lost: an answer of run 1 missing in run 2;
- crash replays (allowed: the customer cannot tell): an answer again, the same as one of the
  two answers just before it, in a chat the victim held at the kill;
- doubled: any other extra answer; out of order: a chat whose answers differ otherwise.
The victim's updates (the unanswered updates of the chats it claimed at the kill) must all be
answered by the survivor, and only after the victim's claim on their chat ran out (the
claim's ``until`` on the database's clock against the inbox's ``answered_at`` and the
sandbox's time of the first answer in that chat after the kill; one machine, one clock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_e2e import (  # noqa: E402
    LANGS,
    LINKED_BASE,
    REPLY_METHODS,
    RESULTS,
    STRANGER_BASE,
    TEXTS,
    Group,
    _free_port,
    _item,
    _link_chats,
    _pg_copy,
    _start_bot,
    _start_sandbox,
    add_users,
)
from sqlalchemy import func, select  # noqa: E402

from sandbox.client import SandboxClient  # noqa: E402
from store import Store, open_store  # noqa: E402
from store.schema import chat_claims, update_inbox, worker_leases  # noqa: E402


@dataclass
class Run:
    transcripts: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    seconds: float = 0.0
    replies: int = 0
    # Kill run only.
    victim: str = ""
    survivor: str = ""
    killed_at: float = 0.0
    replies_at_kill: int = 0
    held: dict[int, float] = field(default_factory=dict)  # chat -> its claim's until
    held_updates: dict[int, int] = field(default_factory=dict)  # update_id -> chat
    answered_at: dict[int, float | None] = field(default_factory=dict)  # update_id -> when
    poller_after: str | None = None
    drained_at: float = 0.0


def _reply_key(call: dict[str, Any]) -> str:
    p = call["params"]
    markup = p.get("reply_markup")
    if isinstance(markup, str):
        with contextlib.suppress(ValueError):
            markup = json.loads(markup)
    return json.dumps([call["method"], p.get("text"), markup], sort_keys=True, ensure_ascii=False)


async def _transcripts(
    client: SandboxClient, since: int, chats: set[int]
) -> dict[int, list[tuple[float, str]]]:
    out: dict[int, list[tuple[float, str]]] = {c: [] for c in chats}
    for c in await client.calls(since=since):
        p = c["params"]
        if c["status"] != 200 or c["method"] not in REPLY_METHODS or "chat_id" not in p:
            continue
        chat = int(p["chat_id"])
        if chat in out:
            out[chat].append((float(c["time"]), _reply_key(c)))
    return out


async def _sent_so_far(client: SandboxClient) -> int:
    stats = await client.stats()
    return int(sum(n for m, n in stats["by_method"].items() if m in REPLY_METHODS))


async def _unanswered(store: Store) -> int:
    async with store.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(update_inbox)
                .where(update_inbox.c.answered_at.is_(None))
            )
            or 0
        )


async def _settle(client: SandboxClient, store: Store, group: Group, within: float = 900) -> None:
    """Until no update waits at the sandbox or in the inbox and the bot was quiet for 2 s."""
    deadline = time.monotonic() + within
    last, quiet = -1, time.monotonic()
    while time.monotonic() < deadline:
        if all(p.popen.poll() is not None for p in group.procs):
            raise RuntimeError("every bot process ended; see bench/results/kill-*.log")
        stats = await client.stats()
        if stats["calls"] != last:
            last, quiet = stats["calls"], time.monotonic()
        elif (
            stats["pending_updates"] == 0
            and time.monotonic() - quiet > 2.0
            and await _unanswered(store) == 0
        ):
            return
        await asyncio.sleep(0.25)
    raise RuntimeError("the bot did not answer everything in time")


async def _copy(args: argparse.Namespace, label: str) -> tuple[str, dict[int, list[str]]]:
    """A fresh copy of the template with the first --chats/2 customers linked to chats
    LINKED_BASE+i (deterministic: the same in every copy)."""
    url = await _pg_copy(args.database_url, args.pg_template, f"bench_kill_{label}")
    return url, await _link_chats(url, args.chats // 2)


async def _run(
    label: str,
    url: str,
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    chats: list[int],
    processes: int,
    kill_after: int | None,
) -> Run:
    store = await open_store(url)
    port = _free_port()
    sandbox = _start_sandbox(port, RESULTS / f"kill-sandbox-{label}.log")
    names = [f"kill{n}" for n in range(1, processes + 1)]
    group = Group([])
    run = Run()
    try:
        async with SandboxClient(f"http://127.0.0.1:{port}", timeout=120) as client:
            await add_users(client, chats)
            group.procs.extend(
                _start_bot("bot", port, url, RESULTS / f"kill-{label}-{name}.log", worker=name)
                for name in names
            )
            deadline = time.monotonic() + 180
            while not (await client.stats())["by_method"].get("getUpdates"):
                if time.monotonic() > deadline or any(
                    p.popen.poll() is not None for p in group.procs
                ):
                    raise RuntimeError(
                        f"the bot did not start; see bench/results/kill-{label}-*.log"
                    )
                await asyncio.sleep(0.2)
            # Warm-up, as bench_e2e: every chat says hello once.
            await client.bulk(
                messages=[{"user_id": c, "text": TEXTS[LANGS[c % 4]][4]} for c in chats]
            )
            await _settle(client, store, group)
            since_calls = (await client.stats())["calls"]
            since_sent = await _sent_so_far(client)
            started = time.time()
            for start in range(0, len(items), 2000):
                await client.bulk(messages=items[start : start + 2000])
            watch: asyncio.Future[None] | None = None
            if kill_after is not None:
                watch = await _kill(
                    client, store, group, names, run, since_sent, kill_after, args.victim
                )
            await _settle(client, store, group)
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            run.drained_at = time.time()
            run.seconds = run.drained_at - started
            run.transcripts = await _transcripts(client, since_calls, set(chats))
            run.replies = sum(len(t) for t in run.transcripts.values())
            if kill_after is not None:
                async with store.connect() as conn:
                    run.poller_after = await conn.scalar(
                        select(worker_leases.c.worker).where(worker_leases.c.name == "poller")
                    )
                await _answered(store, run, final=True)
    finally:
        group.stop()
        sandbox.stop()
        await store.close()
    return run


async def _answered(store: Store, run: Run, final: bool = False) -> None:
    """The inbox's answered_at of the victim's updates, as soon as it is written (the inbox
    keeps only the newest answered rows: one gone was answered)."""
    waiting = [u for u in run.held_updates if run.answered_at.get(u) is None]
    if not waiting:
        return
    async with store.connect() as conn:
        rows = dict(
            (
                await conn.execute(
                    select(update_inbox.c.update_id, update_inbox.c.answered_at).where(
                        update_inbox.c.update_id.in_(waiting)
                    )
                )
            ).all()
        )
    for u in waiting:
        if u not in rows:
            run.answered_at[u] = float("nan")  # pruned: answered, time unknown
        elif rows[u] is not None:
            run.answered_at[u] = rows[u].timestamp()
        elif final:
            run.answered_at[u] = None


async def _kill(
    client: SandboxClient,
    store: Store,
    group: Group,
    names: list[str],
    run: Run,
    since_sent: int,
    after: int,
    which: str,
) -> asyncio.Future[None]:
    async with store.connect() as conn:
        deadline = time.monotonic() + 120
        poller = None
        while poller is None and time.monotonic() < deadline:
            poller = await conn.scalar(
                select(worker_leases.c.worker).where(worker_leases.c.name == "poller")
            )
            await asyncio.sleep(0.05)
    assert poller in names, poller
    victim = poller if which == "poller" else next(n for n in names if n != poller)
    run.victim = victim
    run.survivor = next(n for n in names if n != victim)
    proc = group.procs[names.index(victim)].popen
    while True:
        while await _sent_so_far(client) - since_sent < after:
            if proc.poll() is not None:
                raise RuntimeError("the victim ended before the kill")
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.3)  # what it sent before reaches the sandbox
        async with store.connect() as conn:
            run.held = {
                int(k): float(u)
                for k, u in (
                    await conn.execute(
                        select(chat_claims.c.chat_key, chat_claims.c.until).where(
                            chat_claims.c.worker == victim
                        )
                    )
                ).all()
            }
            if run.held:
                run.held_updates = {
                    int(u): int(k)
                    for u, k in (
                        await conn.execute(
                            select(update_inbox.c.update_id, update_inbox.c.chat_key).where(
                                update_inbox.c.chat_key.in_([str(c) for c in run.held]),
                                update_inbox.c.answered_at.is_(None),
                            )
                        )
                    ).all()
                }
        if run.held:
            break
        # It had just let its last chat go: let it run on, catch it again.
        proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run.killed_at = time.time()
    run.replies_at_kill = await _sent_so_far(client) - since_sent
    print(
        f"  killed {victim} (the {'poller' if victim == poller else 'other process'}) after {run.replies_at_kill:,} answers;"
        f" it held {len(run.held)} chats with {len(run.held_updates)} unanswered updates",
        flush=True,
    )

    async def watch() -> None:
        while any(run.answered_at.get(u) is None for u in run.held_updates):
            await _answered(store, run)
            await asyncio.sleep(0.1)

    return asyncio.ensure_future(watch())


@dataclass
class Tally:
    chats: int = 0
    lost: int = 0
    doubled: int = 0
    replays: int = 0
    replays_outside_held: int = 0
    out_of_order: int = 0  # chats
    differ: int = 0  # answers other than the reference's at their place
    differ_chats: set[int] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)


def _short(key: str) -> str:
    method, text, _ = json.loads(key)
    return f"{method}:{(text or '')[:50]!r}"


def _compare(ref: Run, got: Run) -> Tally:
    """Each chat's answers against the reference's, aligned (difflib): an answer missing is
    lost; an extra answer equal to one of the two before it, in a chat the victim held, is a
    crash replay; any other extra is doubled; a block answered in another order is out of
    order; an answer in place of another is a different answer (the same update answered
    otherwise: state its first, unfinished handling left behind)."""
    tally = Tally(chats=len(ref.transcripts))
    for chat, want_timed in ref.transcripts.items():
        want = [k for _, k in want_timed]
        have = [k for _, k in got.transcripts.get(chat, [])]
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(
            a=want, b=have, autojunk=False
        ).get_opcodes():
            if op == "equal":
                continue
            lost, extra = want[i1:i2], have[j1:j2]
            if op == "replace" and sorted(lost) == sorted(extra):
                tally.out_of_order += 1
                note = "out of order"
            elif op == "replace":
                n = min(len(lost), len(extra))
                tally.differ += n
                tally.differ_chats.add(chat)
                tally.lost += len(lost) - n
                tally.doubled += len(extra) - n
                note = "answered otherwise"
            else:
                tally.lost += len(lost)
                # The same answer as one beside it (difflib may put a repeat before its
                # original as well as after it).
                beside = want[max(0, i1 - 2) : i1 + 2]
                for k in extra:
                    if chat in got.held and k in beside:
                        tally.replays += 1
                    elif k in beside:
                        tally.replays += 1
                        tally.replays_outside_held += 1
                    else:
                        tally.doubled += 1
                note = "lost" if lost else "again"
                if extra and all(k not in beside for k in extra):
                    note = "doubled"
            if note != "again" and len(tally.examples) < 8:
                held = "held by the victim" if chat in got.held else "not the victim's"
                tally.examples.append(
                    f"chat {chat} ({held}), {note} at answer {i1 + 1}: want {[_short(k) for k in lost]} got {[_short(k) for k in extra]}"
                    f" after {[_short(k) for k in want[max(0, i1 - 2) : i1]]}"
                )
    return tally


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--database-url",
        required=True,
        help="a PostgreSQL server (postgresql+asyncpg://.../postgres)",
    )
    ap.add_argument(
        "--pg-template",
        default="bench_demo_large",
        help="a filled demo database on it (bench_store.py --postgresql builds bench_demo_large)",
    )
    ap.add_argument("--chats", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=8000)
    ap.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="share of the reference's answers out before the kill",
    )
    ap.add_argument("--victim", choices=("poller", "other"), default="poller")
    ap.add_argument("--lease", type=float, default=15.0, help="UPDATE_LEASE_SECONDS")
    ap.add_argument("--concurrent", type=int, default=64, help="CONCURRENT_UPDATES")
    args = ap.parse_args()
    os.environ["UPDATE_LEASE_SECONDS"] = str(args.lease)
    os.environ["CONCURRENT_UPDATES"] = str(args.concurrent)
    RESULTS.mkdir(parents=True, exist_ok=True)

    # The same chats, numbers and updates in both runs: the linking is deterministic.
    ref_url, numbers = await _copy(args, "ref")
    chats = [LINKED_BASE + i for i in range(len(numbers))] + [
        STRANGER_BASE + i for i in range(args.chats - len(numbers))
    ]
    random.Random(3).shuffle(chats)
    rng = random.Random(7)
    items = [_item(rng, chats[i % len(chats)], numbers, False) for i in range(args.updates)]
    print(
        f"load {os.getloadavg()}; {len(chats):,} chats ({len(numbers):,} linked), {len(items):,} updates at once; lease {args.lease:g} s, {args.concurrent} chats per process",
        flush=True,
    )

    cpu0 = time.process_time()
    ref = await _run("ref", ref_url, args, items, chats, processes=1, kill_after=None)
    print(
        f"  reference (1 process): {ref.replies:,} answers in {ref.seconds:.1f} s ({len(items) / ref.seconds:.0f} updates/s); load {os.getloadavg()}",
        flush=True,
    )
    await _drop(args.database_url, "ref")
    kill_url, _ = await _copy(args, "kill")
    got = await _run(
        "kill",
        kill_url,
        args,
        items,
        chats,
        processes=2,
        kill_after=int(args.kill_at * ref.replies),
    )
    tally = _compare(ref, got)

    after_lease = [
        got.answered_at[u] - got.held[c]
        for u, c in got.held_updates.items()
        if got.answered_at.get(u) is not None and got.answered_at[u] == got.answered_at[u]
    ]
    unanswered = [u for u in got.held_updates if got.answered_at.get(u) is None]
    first_after: list[float] = []
    for chat, until in got.held.items():
        later = [t for t, _ in got.transcripts.get(chat, []) if t > got.killed_at]
        if later:
            first_after.append(min(later) - until)
    lines = [
        f"bench_kill  {time.strftime('%Y-%m-%d %H:%M')}  template {args.pg_template}  {len(chats):,} chats  {len(items):,} updates at once  lease {args.lease:g} s  {args.concurrent} chats/process  {os.cpu_count()} CPUs",
        f"reference, 1 process: {ref.replies:,} answers in {ref.seconds:.1f} s ({len(items) / ref.seconds:.0f} updates/s)",
        f"kill run, 2 processes: {got.victim} ({'the poller' if args.victim == 'poller' else 'not the poller'}) killed -9 after {got.replies_at_kill:,} of {ref.replies:,} answers;"
        f" all answered {got.drained_at - got.killed_at:.1f} s after the kill, {got.seconds:.1f} s in all; poller afterwards: {got.poller_after}",
        f"  the victim held {len(got.held)} chats with {len(got.held_updates)} unanswered updates:"
        f" {len(got.held_updates) - len(unanswered)} answered by {got.survivor}, {len(unanswered)} not",
        f"  answered after the victim's claim ran out: {sum(1 for d in after_lease if d >= 0)} of {len(after_lease)} with a time"
        f" (answered_at - until: min {min(after_lease, default=float('nan')):.2f} s, max {max(after_lease, default=float('nan')):.2f} s);"
        f" {sum(1 for u in got.held_updates if got.answered_at.get(u) != got.answered_at.get(u))} pruned from the inbox before read",
        f"  first answer in a held chat after the kill - its claim's until: min {min(first_after, default=float('nan')):.2f} s, p50 {_pct(first_after, 0.5):.2f} s, max {max(first_after, default=float('nan')):.2f} s ({len(first_after)} chats)",
        f"  transcripts against the reference ({tally.chats:,} chats): lost {tally.lost}, doubled {tally.doubled}, out of order {tally.out_of_order};"
        f" crash replays (the same answer again) {tally.replays}, {tally.replays_outside_held} of them outside the victim's chats;"
        f" answered otherwise {tally.differ} in {len(tally.differ_chats)} chats ({len(tally.differ_chats & set(got.held))} of them held by the victim)",
        f"  load {os.getloadavg()}; this driver's CPU {time.process_time() - cpu0:.1f} s",
    ]
    lines += [f"  e.g. {e}" for e in tally.examples]
    text = "\n".join(lines)
    print("\n" + text)
    (RESULTS / "kill.txt").write_text(text + "\n")
    (RESULTS / "kill-transcripts.json").write_text(
        json.dumps(
            {
                str(chat): {
                    "reference": [k for _, k in ref.transcripts[chat]],
                    "kill": [k for _, k in got.transcripts.get(chat, [])],
                    "held": chat in got.held,
                }
                for chat in ref.transcripts
            },
            ensure_ascii=False,
        )
    )
    await _drop(args.database_url, "kill")


async def _drop(server: str, label: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    plain = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS bench_kill_{label} WITH (FORCE)")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
