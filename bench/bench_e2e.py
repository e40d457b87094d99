# ruff: noqa: E501, ASYNC240  (a hand-run script: long report lines, blocking file setup)
"""End-to-end benchmark: the real bot (``python run_bot.py``) against the sandbox (``python -m
sandbox --no-limits``), each in its own process, on the 1M-order store; the same driver against
a bare PTB echo bot (bench/echo_bot.py, PTB defaults) for a ratio on the same machine; with
``--floor`` also that echo on the bot's own request layer and concurrency (what PTB itself costs
there). The bot's and the sandbox's CPU per update at full speed are reported too. Run by hand;
prints figures, asserts nothing.

    .venv/bin/python bench/bench_e2e.py [--chats 10000] [--updates 20000] [--rates 50,100,200,400]
                                        [--seconds 8] [--backlog 0] [--skip-echo] [--floor]

The store: a copy of ``--sqlite-store FILE``, else bench/results/demo-large.sqlite3 (1,000,000
orders) copied to a scratch file if it exists, else a ``medium`` demo store generated into bench/results/demo-medium.sqlite3 once.
Half the chats are linked to demo customers (languages mixed), half are strangers.

The driver enqueues updates through the sandbox's bulk control call, which answers with the
moment they became available; a reply's moment is the sandbox's log time of the bot's first
call for that chat (sendMessage, editMessageText ...; answerCallbackQuery for a press) after
it. Phases, per bot: warm-up (every chat says hello, not measured), full speed (``--updates``
at once, two per chat in turn: updates/s from the first available to the last reply), then
each offered rate for ``--seconds`` (one update per chat at most, so every reply is matched
exactly): p50/p95/p99 latency. The full bot gets the realistic mix (orders with and without
numbers, stock questions, menu presses, language switches, gibberish); the echo bot, which
answers only text, gets the mix's texts. Order check (after full speed): two messages for each
of up to 2,000 chats at once whose replies tell apart in any language; the chats answered in
another order are counted. RSS: the bot process's peak (VmHWM). With
``--backlog N``: N updates queued before the bot reads any, then drained; peak RSS reported.

Results: a table on the terminal and in bench/results/e2e.txt; bench/results/e2e.png (latency
against offered load) if matplotlib is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.client import SandboxClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PY = sys.executable
TOKEN = "123456:SANDBOX-TOKEN"
# A bot with a token needs a LINK_SECRET that passes store.links.secret_problem.
LINK_SECRET = "bench-link-secret-never-used-in-production"
LINKED_BASE = 1_000_000
STRANGER_BASE = 2_000_000
REPLY_METHODS = {"sendMessage", "editMessageText", "sendPhoto", "sendDocument"}
LANGS = ("en", "de", "es", "ru")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the store ---------------------------------------------------------------------------


def _store_file(scratch: Path, given: str | None = None) -> tuple[Path, str]:
    large = RESULTS / "demo-large.sqlite3"
    if given:
        source, size = Path(given), f"{Path(given).name} (copied)"
    elif large.exists():
        source, size = large, "large (1,000,000 orders)"
    else:
        source, size = RESULTS / "demo-medium.sqlite3", "medium (100,000 orders)"
        if not source.exists():
            print("generating the medium demo store (once) ...", flush=True)
            code = (
                "import asyncio,sys; from store import open_store; from store.demo import fill_demo\n"
                "async def m():\n s=await open_store(sys.argv[1])\n try: await fill_demo(s,'medium')\n finally: await s.close()\n"
                "asyncio.run(m())"
            )
            subprocess.run([PY, "-c", code, f"sqlite+aiosqlite:///{source}"], cwd=ROOT, check=True)
    target = scratch / "bench-e2e.sqlite3"
    shutil.copyfile(source, target)
    return target, size


async def _link_chats(db: Path | str, linked: int) -> dict[int, list[str]]:
    """Link chats LINKED_BASE+i to customers; their order numbers by chat."""
    from sqlalchemy import select

    from store import open_store
    from store.chats import link_chat, set_chat_language, touch_chat
    from store.schema import orders

    store = await open_store(db if isinstance(db, str) else f"sqlite+aiosqlite:///{db}")
    numbers: dict[int, list[str]] = {}
    try:
        async with store.connect() as conn:
            rows = (
                await conn.execute(
                    select(orders.c.customer_id, orders.c.order_number).where(
                        orders.c.customer_id <= linked
                    )
                )
            ).all()
        by_customer: dict[int, list[str]] = {}
        for customer, number in rows:
            by_customer.setdefault(customer, []).append(number)
        customers = sorted(by_customer)[:linked]
        async with store.begin() as conn:
            for i, customer in enumerate(customers):
                chat = LINKED_BASE + i
                await touch_chat(conn, chat)
                await link_chat(conn, chat, customer)
                await set_chat_language(conn, chat, LANGS[i % 4])
                numbers[chat] = by_customer[customer]
    finally:
        await store.close()
    return numbers


# --- the mix -----------------------------------------------------------------------------

TEXTS = {
    "en": (
        "where is my order?",
        "where is my order {n}?",
        "is the kettle in stock?",
        "do you have coffee grinders",
        "hello",
    ),
    "de": (
        "wo bleibt meine Bestellung?",
        "wo bleibt meine Bestellung {n}?",
        "ist der Wasserkocher lieferbar?",
        "habt ihr Kaffeemühlen",
        "hallo",
    ),
    "es": (
        "¿dónde está mi pedido?",
        "¿dónde está mi pedido {n}?",
        "¿tienen la tetera en stock?",
        "molinillo de café",
        "hola",
    ),
    "ru": ("где мой заказ?", "где мой заказ {n}?", "чайник есть в наличии?", "кофемолка", "привет"),
}
GIBBERISH = ("xq zzv plo", "asdfgh", "???", "🙂🙂", "lorem ipsum dolor", "1234567890123")


def _item(
    rng: random.Random, chat: int, numbers: dict[int, list[str]], presses: bool
) -> dict[str, Any]:
    lang = LANGS[chat % 4]
    texts = TEXTS[lang]
    roll = rng.random()
    if presses and roll < 0.20:
        return {
            "user_id": chat,
            "press": rng.choice(
                ("m:orders", "m:stock", "m:help", "m:lang", f"lang:{rng.choice(LANGS)}")
            ),
        }
    if roll < 0.25:
        return {"user_id": chat, "text": "/language" if presses else "language"}
    if roll < 0.40:
        return {"user_id": chat, "text": texts[0]}
    if roll < 0.60:
        mine = numbers.get(chat)
        n = rng.choice(mine) if mine and rng.random() < 0.8 else str(rng.randint(100001, 1999999))
        return {"user_id": chat, "text": texts[1].format(n=n)}
    if roll < 0.80:
        return {"user_id": chat, "text": texts[rng.choice((2, 3))]}
    if roll < 0.90:
        return {"user_id": chat, "text": rng.choice(GIBBERISH)}
    return {"user_id": chat, "text": texts[4]}


# --- processes ---------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    peak_rss_mb: float = 0.0

    def rss(self) -> tuple[float, float]:
        rss = hwm = 0.0
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        except OSError:
            pass
        self.peak_rss_mb = max(self.peak_rss_mb, hwm)
        return rss, hwm

    def cpu(self) -> float:
        """CPU seconds the process has used so far (user + system)."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _start_sandbox(port: int, log: Path) -> Proc:
    args = [
        PY,
        "-m",
        "sandbox",
        "--port",
        str(port),
        "--no-limits",
        "--token",
        TOKEN,
        "--update-queue-cap",
        "1000000",
        "--call-log-cap",
        "2000000",
    ]
    return Proc(subprocess.Popen(args, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT))


def _start_bot(
    kind: str, port: int, db: Path | str, log: Path, worker: str = "", replies: int = 0
) -> Proc:
    env = {
        **os.environ,
        "BOT_TOKEN": TOKEN,
        "LINK_SECRET": LINK_SECRET,
        "BOT_API_BASE_URL": f"http://127.0.0.1:{port}/bot",
        "BOT_API_FILE_URL": f"http://127.0.0.1:{port}/file/bot",
        "PYTHONUNBUFFERED": "1",
    }
    if kind not in ("echo", "floor"):
        env.update(
            DATABASE_URL=db if isinstance(db, str) else f"sqlite+aiosqlite:///{db}",
            LOG_LEVEL="WARNING",
            NOTICE_JOB_INTERVAL_SECONDS="0",
            # The echo bot has no cap and the sandbox runs without limits: compare like with
            # like (with the default 30/s cap the bot could never answer faster than 30/s).
            REPLIES_PER_SECOND=str(replies),
            SHOP_NAME="Bench Shop",
        )
        if worker:
            env["WORKER_NAME"] = worker
        args = [PY, "run_bot.py"]
    else:
        if kind == "floor":
            env["ECHO_FLOOR"] = "1"
        args = [PY, "bench/echo_bot.py"]
    return Proc(
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    )


@dataclass
class Group:
    """The bot's processes (several on PostgreSQL, bot/shared.py): CPU summed, RSS the
    largest."""

    procs: list[Proc]

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        dead = [p.popen for p in self.procs if p.popen.poll() is not None]
        return dead[0] if dead else self.procs[0].popen

    def rss(self) -> tuple[float, float]:
        pairs = [p.rss() for p in self.procs]
        return max(r for r, _ in pairs), max(h for _, h in pairs)

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.stop()


async def add_users(client: SandboxClient, chats: list[int]) -> None:
    """Wait for the sandbox to answer, then give it the chats' users (LANGS in turn)."""
    for _ in range(100):
        try:
            await client.stats()
            break
        except Exception:
            await asyncio.sleep(0.1)
    for start in range(0, len(chats), 2000):
        await client.bulk(
            users=[
                {"id": c, "first_name": f"C{c}", "language_code": LANGS[c % 4]}
                for c in chats[start : start + 2000]
            ]
        )


async def _wait_ready(client: SandboxClient, bot: Proc | Group, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if bot.popen.poll() is not None:
            raise RuntimeError("the bot ended early; see its log in bench/results/")
        try:
            stats = await client.stats()
            if stats["by_method"].get("getUpdates"):
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the bot did not start polling in time")


# --- the driver --------------------------------------------------------------------------


@dataclass
class Sent:
    chat: int
    at: float
    query: str | None = None


@dataclass
class Phase:
    name: str
    offered: float | None  # updates/s offered; None: as fast as possible
    sent: list[Sent] = field(default_factory=list)
    since_seq: int = 0
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    rate: float = 0.0


async def _enqueue(client: SandboxClient, items: list[dict[str, Any]], phase: Phase) -> None:
    for start in range(0, len(items), 2000):
        batch = items[start : start + 2000]
        made = await client.bulk(messages=batch)
        for m in made["messages"]:
            phase.sent.append(Sent(m["chat_id"], made["time"], m.get("query_id")))


async def _drain(client: SandboxClient, expect_calls_from: int, within: float = 600) -> None:
    """Until no update is pending and the bot has been quiet for a second."""
    deadline = time.monotonic() + within
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = await client.stats()
        if stats["calls"] != last:
            last, quiet_since = stats["calls"], time.monotonic()
        elif stats["pending_updates"] == 0 and time.monotonic() - quiet_since > 1.0:
            return
        await asyncio.sleep(0.2)


async def _match(client: SandboxClient, phase: Phase) -> None:
    calls = await client.calls(since=phase.since_seq)
    by_chat: dict[int, list[float]] = {}
    by_query: dict[str, float] = {}
    for c in calls:
        if c["status"] != 200:
            continue
        p = c["params"]
        if c["method"] == "answerCallbackQuery":
            by_query.setdefault(str(p.get("callback_query_id")), c["time"])
        elif c["method"] in REPLY_METHODS and "chat_id" in p:
            by_chat.setdefault(int(p["chat_id"]), []).append(c["time"])
    used: dict[int, int] = {}
    ends = []
    for s in phase.sent:
        if s.query is not None and s.query in by_query:
            t: float | None = by_query[s.query]
        else:
            times = by_chat.get(s.chat, [])
            i = used.get(s.chat, 0)
            while i < len(times) and times[i] < s.at:
                i += 1
            t = times[i] if i < len(times) else None
            used[s.chat] = i + 1
        if t is None:
            phase.missing += 1
            continue
        phase.latencies.append(max(0.0, t - s.at))
        ends.append(t)
    if ends and phase.sent:
        span = max(ends) - min(s.at for s in phase.sent)
        phase.rate = len(phase.latencies) / span if span > 0 else 0.0


async def _order_check(client: SandboxClient, kind: str, chats: list[int]) -> tuple[int, int, int]:
    """Two messages per chat at full speed whose replies tell apart in any language: for the
    bot, /language (its keyboard has "lang:" buttons) and /help, in either order by chat; for
    the echo bot, two texts. Counts the chats whose replies came in another order."""
    since = (await client.stats())["calls"]
    firsts: dict[int, bool] = {}
    items = []
    for i, chat in enumerate(chats):
        language_first = i % 2 == 0
        firsts[chat] = language_first
        pair = ("first", "second") if kind in ("echo", "floor") else ("/language", "/help")
        if not language_first:
            pair = (pair[1], pair[0])
        items += [{"user_id": chat, "text": pair[0]}, {"user_id": chat, "text": pair[1]}]
    for start in range(0, len(items), 2000):
        await client.bulk(messages=items[start : start + 2000])
    await _drain(client, 0)
    seen: dict[int, list[bool]] = {}
    for c in await client.calls(since=since):
        p = c["params"]
        if c["status"] != 200 or c["method"] not in REPLY_METHODS or "chat_id" not in p:
            continue
        if kind not in ("echo", "floor"):
            is_first_kind = "lang:" in str(p.get("reply_markup", ""))
        else:
            is_first_kind = p.get("text") == "first"
        seen.setdefault(int(p["chat_id"]), []).append(is_first_kind)
    wrong = lost = doubled = 0
    for chat, language_first in firsts.items():
        got = seen.get(chat, [])
        if got[:2] != [language_first, not language_first]:
            wrong += 1
        lost += max(0, 2 - len(got))
        doubled += max(0, len(got) - 2)
    return wrong, lost, doubled


async def _max_per_second(client: SandboxClient, since: int) -> int:
    """The most messages the sandbox took in any second (by its clock, whole seconds)."""
    per: dict[int, int] = {}
    for c in await client.calls(since=since):
        if c["status"] == 200 and c["method"] in REPLY_METHODS:
            per[int(c["time"])] = per.get(int(c["time"]), 0) + 1
    return max(per.values(), default=0)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _run_bot(
    kind: str,
    args: argparse.Namespace,
    db: Path | str,
    numbers: dict[int, list[str]],
    chats: list[int],
    processes: int = 1,
) -> dict[str, Any]:
    port = _free_port()
    sandbox = _start_sandbox(port, RESULTS / f"e2e-sandbox-{kind}.log")
    bot: Proc | Group | None = None
    result: dict[str, Any] = {"kind": kind, "phases": []}
    presses = kind not in ("echo", "floor")
    rng = random.Random(7)
    try:
        async with SandboxClient(f"http://127.0.0.1:{port}", timeout=120) as client:
            await add_users(client, chats)
            if args.backlog:
                backlog = [
                    _item(rng, chats[i % len(chats)], numbers, False) for i in range(args.backlog)
                ]
                for start in range(0, len(backlog), 5000):
                    await client.bulk(messages=backlog[start : start + 5000])
            if processes > 1 or isinstance(db, str):
                bot = Group(
                    [
                        _start_bot(
                            kind,
                            port,
                            db,
                            RESULTS / f"e2e-{kind}-{n}.log",
                            worker=f"bench{n}",
                            replies=args.replies_per_second,
                        )
                        for n in range(1, processes + 1)
                    ]
                )
            else:
                bot = _start_bot(
                    kind, port, db, RESULTS / f"e2e-{kind}.log", replies=args.replies_per_second
                )
            await _wait_ready(client, bot)
            if args.backlog:
                t0 = time.monotonic()
                while (await client.stats())["pending_updates"] > 0:
                    bot.rss()
                    await asyncio.sleep(0.5)
                await _drain(client, 0)
                result["backlog_s"] = time.monotonic() - t0
                result["backlog_rss"] = bot.rss()[1]
                print(
                    f"  {kind}: backlog of {args.backlog:,} drained in {result['backlog_s']:.1f} s, peak RSS {result['backlog_rss']:.0f} MB",
                    flush=True,
                )
            # Warm-up: every chat says hello once (and gets a bot message to press on).
            warm = Phase("warm-up", None)
            await _enqueue(
                client, [{"user_id": c, "text": TEXTS[LANGS[c % 4]][4]} for c in chats], warm
            )
            await _drain(client, 0)
            bot.rss()
            # Full speed.
            full = Phase("full speed", None, since_seq=(await client.stats())["calls"])
            cpu_before = bot.cpu(), sandbox.cpu()
            items = [
                _item(rng, chats[i % len(chats)], numbers, presses) for i in range(args.updates)
            ]
            await _enqueue(client, items, full)
            await _drain(client, 0)
            cpu_after = bot.cpu(), sandbox.cpu()
            await _match(client, full)
            result["max_per_second"] = await _max_per_second(client, full.since_seq)
            bot.rss()
            result["cpu_ms"] = tuple(
                (after - before) * 1000 / max(1, args.updates)
                for before, after in zip(cpu_before, cpu_after, strict=True)
            )
            result["phases"].append(full)
            print(
                f"  {kind}: full speed {full.rate:,.0f} updates/s ({len(full.latencies):,} answered, {full.missing} unanswered);"
                f" CPU per update: {result['cpu_ms'][0]:.2f} ms in the bot, {result['cpu_ms'][1]:.2f} ms in the sandbox",
                flush=True,
            )
            wrong, lost, doubled = await _order_check(client, kind, chats[:2000])
            result["out_of_order"], result["lost"], result["doubled"] = wrong, lost, doubled
            print(
                f"  {kind}: order check: {wrong} of {len(chats[:2000]):,} chats answered out of order,"
                f" {lost} answers lost, {doubled} doubled; at full speed at most"
                f" {result['max_per_second']} sends in a second of the sandbox's clock",
                flush=True,
            )
            # Offered rates.
            cursor = 0
            for rate in args.rates:
                phase = Phase(f"{rate:g}/s", rate, since_seq=(await client.stats())["calls"])
                total = int(rate * args.seconds)
                started = time.monotonic()
                done = 0
                while done < total:
                    due = min(total, int((time.monotonic() - started) * rate) + 1)
                    if due > done:
                        batch = []
                        for _ in range(due - done):
                            batch.append(_item(rng, chats[cursor % len(chats)], numbers, presses))
                            cursor += 1
                        await _enqueue(client, batch, phase)
                        done = due
                    await asyncio.sleep(0.005)
                await _drain(client, 0)
                await _match(client, phase)
                bot.rss()
                result["phases"].append(phase)
                print(
                    f"  {kind}: {rate:g}/s offered: p50 {_pct(phase.latencies, 0.5):.1f} ms, p95 {_pct(phase.latencies, 0.95):.1f} ms, p99 {_pct(phase.latencies, 0.99):.1f} ms",
                    flush=True,
                )
            result["rss"] = bot.rss()[1]
    finally:
        if bot is not None:
            bot.stop()
        sandbox.stop()
    return result


def _table(results: list[dict[str, Any]], store: str, args: argparse.Namespace) -> str:
    lines = [
        f"bench_e2e  {time.strftime('%Y-%m-%d %H:%M')}  store: {store}  chats: {args.chats:,}  "
        f"full-speed updates: {args.updates:,}  {os.cpu_count()} CPUs",
        "",
        f"{'bot':<6} {'phase':<11} {'offered/s':>9} {'answered':>9} {'missing':>7} {'updates/s':>10} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
    ]
    for r in results:
        for p in r["phases"]:
            offered = "max" if p.offered is None else f"{p.offered:g}"
            lines.append(
                f"{r['kind']:<6} {p.name:<11} {offered:>9} {len(p.latencies):>9,} {p.missing:>7} {p.rate:>10,.0f} "
                f"{_pct(p.latencies, 0.5):>8.1f} {_pct(p.latencies, 0.95):>8.1f} {_pct(p.latencies, 0.99):>8.1f}"
            )
    lines.append("")
    for r in results:
        extra = ""
        if "backlog_rss" in r:
            extra = f"; with a backlog of {args.backlog:,}: drained in {r['backlog_s']:.1f} s"
        lines.append(f"{r['kind']}: peak RSS {r.get('rss', float('nan')):.0f} MB{extra}")
        if "cpu_ms" in r:
            lines.append(
                f"{r['kind']}: CPU per update at full speed: {r['cpu_ms'][0]:.2f} ms in the bot, {r['cpu_ms'][1]:.2f} ms in the sandbox"
            )
        if "out_of_order" in r:
            lines.append(
                f"{r['kind']}: order check: {r['out_of_order']} chats answered out of order,"
                f" {r['lost']} answers lost, {r['doubled']} doubled; at full speed at most"
                f" {r['max_per_second']} sends in one second"
            )
    by = {r["kind"]: r["phases"][0].rate for r in results if r["phases"]}
    if "bot" in by and by.get("echo"):
        lines.append(f"full bot / bare PTB echo (full speed): {by['bot'] / by['echo']:.2f}x")
    # PostgreSQL against SQLite, one process: updates/s at full speed and p99 at each rate.
    runs = {r["kind"]: r for r in results}
    if "bot" in runs and "pg1" in runs:
        sq, pg = runs["bot"]["phases"], runs["pg1"]["phases"]
        ratio = pg[0].rate / sq[0].rate if sq[0].rate else float("nan")
        lines.append(f"PostgreSQL / SQLite, one process, full speed updates/s: {ratio:.2f}x")
        for a, b in zip(sq[1:], pg[1:], strict=False):
            lines.append(
                f"  p99 at {a.name}: PostgreSQL {_pct(b.latencies, 0.99):.1f} ms,"
                f" SQLite {_pct(a.latencies, 0.99):.1f} ms"
            )
    return "\n".join(lines)


def _plot(results: list[dict[str, Any]]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        rated = [p for p in r["phases"] if p.offered is not None and p.latencies]
        for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
            ax.plot(
                [p.offered for p in rated],
                [_pct(p.latencies, q) for p in rated],
                style,
                marker="o",
                label=f"{r['kind']} p{int(q * 100)}",
            )
    ax.set_xlabel("offered load (updates/s)")
    ax.set_ylabel("latency, available -> reply (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("backorder-bot vs bare PTB echo, end to end")
    path = RESULTS / "e2e.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


async def _pg_copy(server: str, template: str, name: str) -> str:
    """A fresh copy of ``template`` on the server; returns its URL."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(server)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--rates", default="50,100,200,400")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--backlog", type=int, default=0)
    parser.add_argument("--skip-echo", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true", help="no run on the SQLite store")
    parser.add_argument(
        "--sqlite-store",
        metavar="FILE",
        help="the SQLite store to copy for the run (e.g. /work/stores/large-passed.sqlite3)",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (postgresql+asyncpg://.../postgres): the bot also runs on a"
        " copy of --pg-template there, with each of --processes bot processes",
    )
    parser.add_argument(
        "--pg-template", default="bench_medium", help="a filled demo database on that server"
    )
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--replies-per-second", type=int, default=0)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also the echo bot on the bot's request layer and concurrency (bench/echo_bot.py)",
    )
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    RESULTS.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    db, store = _store_file(scratch, args.sqlite_store)
    linked = args.chats // 2
    numbers = await _link_chats(db, linked)
    chats = [LINKED_BASE + i for i in range(len(numbers))] + [
        STRANGER_BASE + i for i in range(args.chats - len(numbers))
    ]
    random.Random(3).shuffle(chats)
    print(
        f"store: {store}; {len(numbers):,} linked chats, {args.chats - len(numbers):,} strangers",
        flush=True,
    )
    results = [] if args.skip_sqlite else [await _run_bot("bot", args, db, numbers, chats)]
    if args.database_url:
        for n in [int(p) for p in args.processes.split(",") if p]:
            url = await _pg_copy(args.database_url, args.pg_template, "bench_e2e_run")
            await _link_chats(url, linked)
            results.append(await _run_bot(f"pg{n}", args, url, numbers, chats, processes=n))
    if not args.skip_echo:
        results.append(await _run_bot("echo", args, db, numbers, chats))
    if args.floor:
        results.append(await _run_bot("floor", args, db, numbers, chats))
    table = _table(results, store, args)
    print("\n" + table)
    (RESULTS / "e2e.txt").write_text(table + "\n")
    plot = _plot(results)
    print(
        f"\nwritten: {RESULTS / 'e2e.txt'}" + (f", {plot}" if plot else " (no matplotlib: no plot)")
    )
    for suffix in ("", "-wal", "-shm", ".bot-lock"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    asyncio.run(main())
