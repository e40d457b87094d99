"""Deterministic demo data, from a small demo shop to a 1,000,000-order benchmark.

The whole shop is simulated in memory (orders take free stock, received restocks fill
waiting lines first come first served, some orders ship) and then written with bulk inserts,
so the large size loads in minutes instead of hours. Dates are relative to ``today``
(default: the current date), everything else depends only on the seed.

Predictable customers (all sizes, any seed), for the bot's demo and tests:

=== ================ ============================ ========= ==== ===========================
id  name             email                        postcode  lang orders
=== ================ ============================ ========= ==== ===========================
1   Anna Schmidt     anna.schmidt@example.com     10115     de   100001 shipped (DHL, tracking
                                                                 JD014600003828), 100002
                                                                 waiting dated (COF-0001,
                                                                 its restock slipped: date
                                                                 moved since told), 100003
                                                                 PRM-0001 waiting undated +
                                                                 KET-0001 ready
2   John Smith       john.smith@example.com       SW1A 1AA  en   100004 ready (KET-0001),
                                                                 100005 waiting dated
                                                                 (COF-0001)
3   María García     maria.garcia@example.com     28013     es   100006 waiting dated
                                                                 (COF-0001, 2 units)
4   Иван Петров      ivan.petrov@example.com      101000    ru   100007 shipped (UPS)
=== ================ ============================ ========= ==== ===========================

Showcase products, one per stock answer: KET-0001 in stock; COF-0001 backorder dated
(restock PO-000001, 4 units, slipped twice; PO-000002, 30 units, later); PRM-0001 backorder
undated; BIK-0001 out of stock (not sold on backorder); SOF-0001 discontinued.
Alternatives: COF-0001 -> COF-0002, PRM-0001 -> PRM-0002, BIK-0001 -> BIK-0002,
SOF-0001 -> SOF-0002 (all in stock). At size "large", KET-0002 is the hot SKU with ~100,000
waiting lines (restocks of 10,000 and 60,000 units) for the benchmark.
"""

from __future__ import annotations

import random
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import mark_queues
from store.db import Store, sync_sequences
from store.schema import (
    customers,
    order_lines,
    orders,
    product_alternatives,
    products,
    restock_date_changes,
    restocks,
    shipment_lines,
    shipments,
    stock,
    suppliers,
)

SIZES: dict[str, tuple[int, int, int]] = {  # products, customers, orders
    "small": (200, 500, 2_000),
    "medium": (2_000, 20_000, 100_000),
    "large": (20_000, 250_000, 1_000_000),
}

# category code -> (en, de, es, ru, price range in cents)
CATEGORIES: dict[str, tuple[str, str, str, str, int, int]] = {
    "COF": ("Coffee Machine", "Kaffeemaschine", "Cafetera", "Кофемашина", 9_900, 149_900),
    "KET": ("Kettle", "Wasserkocher", "Hervidor", "Чайник", 1_990, 12_900),
    "BIK": ("Bike", "Fahrrad", "Bicicleta", "Велосипед", 29_900, 399_900),
    "PRM": ("Pram", "Kinderwagen", "Cochecito", "Коляска", 19_900, 129_900),
    "SOF": ("Sofa", "Sofa", "Sofá", "Диван", 39_900, 299_900),
    "TOA": ("Toaster", "Toaster", "Tostadora", "Тостер", 1_990, 9_900),
    "LMP": ("Floor Lamp", "Stehlampe", "Lámpara de pie", "Торшер", 2_990, 29_900),
    "BLN": ("Blender", "Mixer", "Batidora", "Блендер", 2_990, 39_900),
}
SERIES = [
    "Aurora",
    "Nordic",
    "Vento",
    "Milano",
    "Orion",
    "Kaskad",
    "Solara",
    "Baltic",
    "Tundra",
    "Riva",
    "Lumen",
    "Bravo",
    "Castell",
    "Delta",
    "Fjord",
    "Granada",
]
CARRIERS = ["DHL", "UPS", "DPD", "GLS", "Hermes"]
FIRST = {
    "en": ["Oliver", "Emma", "Harry", "Grace", "Jack", "Lily", "George", "Amelia"],
    "de": ["Lukas", "Mia", "Leon", "Hannah", "Felix", "Lea", "Jonas", "Laura"],
    "es": ["Pablo", "Lucía", "Hugo", "Sofía", "Diego", "Carmen", "Javier", "Elena"],
    "ru": ["Алексей", "Мария", "Дмитрий", "Анна", "Сергей", "Ольга", "Никита", "Елена"],
}
LAST = {
    "en": ["Brown", "Taylor", "Wilson", "Evans", "Walker", "Wright", "Green", "Hall"],
    "de": ["Müller", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Koch"],
    "es": ["López", "Martínez", "Sánchez", "Pérez", "Gómez", "Ruiz", "Díaz", "Moreno"],
    "ru": ["Иванов", "Смирнов", "Кузнецов", "Попов", "Соколов", "Лебедев", "Козлов", "Новиков"],
}
# Each supplier's habit, SUP-01 first: (share of deliveries that come late, fewest and most
# days late); the others come on their date or up to 2 days early. So the track records
# (store.insights) differ: a punctual supplier states a single date, a slow one a range.
HABITS = [
    (0.10, 1, 2),
    (0.30, 1, 4),
    (0.60, 2, 9),
    (0.90, 5, 18),
    (0.50, 8, 30),
    (0.20, 1, 3),
    (0.70, 3, 12),
    (0.05, 1, 1),
    (0.40, 2, 6),
    (0.80, 4, 14),
    (0.25, 2, 20),
    (0.15, 1, 5),
]
TRANSLIT = str.maketrans("ÄÖÜäöüßáéíóúñ", "AOUaousaeioun")

SHOWCASE_CUSTOMERS = [
    (1, "Anna Schmidt", "anna.schmidt@example.com", "10115", "de", "+49 30 1234567"),
    (2, "John Smith", "john.smith@example.com", "SW1A 1AA", "en", "+44 20 7946 0000"),
    (3, "María García", "maria.garcia@example.com", "28013", "es", None),
    (4, "Иван Петров", "ivan.petrov@example.com", "101000", "ru", None),
]


@dataclass(frozen=True)
class DemoSummary:
    size: str
    seed: int
    products: int
    customers: int
    orders: int
    lines: int
    restocks: int
    shipments: int
    waiting_lines: int
    hot_sku: str | None = None
    showcase: dict[str, str] = field(default_factory=dict, hash=False)


async def is_empty(conn: AsyncConnection) -> bool:
    """True when the store has no products and no orders (safe to fill)."""
    n = await conn.scalar(select(func.count()).select_from(products))
    m = await conn.scalar(select(func.count()).select_from(orders))
    return not n and not m


@dataclass
class _Sim:
    today: date
    rng: random.Random
    skus: list[str] = field(default_factory=list)
    prod: list[dict[str, Any]] = field(default_factory=list)
    on_hand: list[int] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    restocks: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    o_number: list[str] = field(default_factory=list)
    o_customer: array[int] = field(default_factory=lambda: array("i"))
    o_placed: array[int] = field(default_factory=lambda: array("q"))
    l_order: array[int] = field(default_factory=lambda: array("i"))
    l_sku: array[int] = field(default_factory=lambda: array("i"))
    l_qty: array[int] = field(default_factory=lambda: array("i"))
    l_alloc: array[int] = field(default_factory=lambda: array("i"))
    l_ship: array[int] = field(default_factory=lambda: array("i"))
    l_cancel: array[int] = field(default_factory=lambda: array("i"))
    shipments: list[tuple[str, int, str, str, date, list[tuple[int, int]]]] = field(
        default_factory=list
    )

    def add_line(self, order: int, sku: int, qty: int) -> int:
        take = min(self.free[sku], qty)
        self.free[sku] -= take
        self.l_order.append(order)
        self.l_sku.append(sku)
        self.l_qty.append(qty)
        self.l_alloc.append(take)
        self.l_ship.append(0)
        self.l_cancel.append(0)
        return len(self.l_qty) - 1

    def add_order(self, customer: int, placed: datetime, lines: list[tuple[int, int]]) -> int:
        self.o_number.append(str(100_001 + len(self.o_number)))
        self.o_customer.append(customer)
        self.o_placed.append(int(placed.timestamp()))
        o = len(self.o_number) - 1
        for sku, qty in lines:
            self.add_line(o, sku, qty)
        return o


def _product_names(rng: random.Random, cat: str, n: int) -> tuple[str, str, str, str]:
    en, de, es, ru, _, _ = CATEGORIES[cat]
    series = SERIES[n % len(SERIES)]
    model = f"{series} {100 + (n * 37) % 900}"
    return f"{model} {en}", f"{model} {de}", f"{es} {model}", f"{ru} {model}"


def _simulate(size: str, seed: int, today: date) -> _Sim:
    n_products, n_customers, n_orders = SIZES[size]
    rng = random.Random(seed)
    sim = _Sim(today=today, rng=rng)
    cats = list(CATEGORIES)
    counters: dict[str, int] = defaultdict(int)
    sku_index: dict[str, int] = {}
    for i in range(n_products):
        cat = cats[i % len(cats)]
        counters[cat] += 1
        k = counters[cat]
        sku = f"{cat}-{k:04d}"
        en, de, es, ru = _product_names(rng, cat, k + i)
        lo, hi = CATEGORIES[cat][4:]
        price = rng.randrange(lo, hi, 100) - 1
        roll = rng.random()
        active = not (k > 2 and roll < 0.04)
        backorderable = not (k > 2 and 0.04 <= roll < 0.12)
        sim.skus.append(sku)
        sku_index[sku] = i
        sim.prod.append(
            dict(
                sku=sku,
                name_en=en,
                name_de=de,
                name_es=es,
                name_ru=ru,
                category=cat,
                price_minor=price,
                currency="EUR",
                active=active,
                backorderable=backorderable,
            )
        )
        stock_roll = rng.random()
        units = 0 if stock_roll < 0.55 else rng.randint(1, 40)
        sim.on_hand.append(units)
        sim.free.append(units)

    # Showcase products: fixed names and states.
    def show(sku: str, en: str, de: str, es: str, ru: str, **kw: Any) -> int:
        i = sku_index[sku]
        sim.prod[i].update(
            name_en=en, name_de=de, name_es=es, name_ru=ru, active=True, backorderable=True
        )
        sim.prod[i].update(kw)
        return i

    ket = show(
        "KET-0001",
        "Steel Kettle 1.7 l",
        "Wasserkocher Edelstahl 1,7 l",
        "Hervidor de acero 1,7 l",
        "Чайник стальной 1,7 л",
    )
    cof = show(
        "COF-0001",
        "Barista Pro Coffee Machine",
        "Barista Pro Kaffeemaschine",
        "Cafetera Barista Pro",
        "Кофемашина Barista Pro",
    )
    prm = show(
        "PRM-0001", "City Pram", "Stadt-Kinderwagen", "Cochecito urbano", "Городская коляска"
    )
    bik = show(
        "BIK-0001",
        "Trekking Bike 28",
        "Trekkingrad 28",
        "Bicicleta de trekking 28",
        "Треккинговый велосипед 28",
        backorderable=False,
    )
    sof = show(
        "SOF-0001",
        "Corner Sofa Oslo",
        "Ecksofa Oslo",
        "Sofá rinconero Oslo",
        "Угловой диван Осло",
        active=False,
    )
    showcase_idx = {ket, cof, prm, bik, sof}
    for i, units in ((ket, 25), (cof, 0), (prm, 0), (bik, 0), (sof, 0)):
        sim.on_hand[i] = sim.free[i] = units
    alternatives = [
        ("COF-0001", "COF-0002"),
        ("PRM-0001", "PRM-0002"),
        ("BIK-0001", "BIK-0002"),
        ("SOF-0001", "SOF-0002"),
    ]
    for _, alt in alternatives:
        j = sku_index[alt]
        sim.prod[j].update(active=True, backorderable=True)
        sim.on_hand[j] = sim.free[j] = 30
        showcase_idx.add(j)
    sim.prod[sku_index["SOF-0001"]]["alternatives"] = None

    # Restocks: ids PO-000001.. ; the showcase coffee machine's come first.
    def restock(
        sku_i: int,
        qty: int,
        expected: date,
        status: str = "open",
        slips: list[tuple[date, str]] | None = None,
    ) -> None:
        rid = f"PO-{len(sim.restocks) + 1:06d}"
        sim.restocks.append(
            dict(
                restock_id=rid,
                supplier_id=f"SUP-{sku_i % 12 + 1:02d}",
                sku_i=sku_i,
                qty=qty,
                expected_date=expected,
                status=status,
            )
        )
        prev = None
        for old, reason in slips or []:
            if prev is not None:
                sim.changes.append(dict(restock_id=rid, old_date=prev, new_date=old, reason=reason))
            prev = old
        if prev is not None:
            sim.changes.append(
                dict(restock_id=rid, old_date=prev, new_date=expected, reason=(slips or [])[-1][1])
            )

    restock(
        cof,
        4,
        today + timedelta(days=24),
        slips=[
            (today + timedelta(days=6), "initial"),
            (today + timedelta(days=13), "supplier delay: port congestion"),
        ],
    )
    restock(cof, 30, today + timedelta(days=45))

    n_skus = len(sim.skus)
    for i in range(n_skus):
        p = sim.prod[i]
        if i in showcase_idx or not p["active"] or not p["backorderable"]:
            continue
        r = rng.random()
        if r < 0.15:
            continue  # backorder undated: nothing on order
        for _ in range(rng.randint(1, 3)):
            due = today + timedelta(days=rng.randint(3, 75))
            slips = None
            if rng.random() < 0.25:
                first = due - timedelta(days=rng.randint(5, 20))
                slips = [
                    (first, "initial"),
                    (
                        first,
                        rng.choice(
                            [
                                "supplier delay",
                                "customs hold",
                                "production issue",
                                "carrier capacity",
                            ]
                        ),
                    ),
                ]
                slips = slips[1:] if rng.random() < 0.5 else slips
                slips = [(first, slips[-1][1])]
            restock(i, rng.choice([5, 10, 20, 50, 100]), due, slips=slips)

    hot: int | None = None
    if size == "large":
        hot = sku_index["KET-0002"]
        restock(hot, 10_000, today + timedelta(days=20))
        restock(hot, 60_000, today + timedelta(days=50))

    # Showcase orders, oldest first so they head their queues.
    start = datetime.combine(today - timedelta(days=90), time(9), tzinfo=UTC)
    o1 = sim.add_order(1, start, [(ket, 1)])
    sim.add_order(1, start + timedelta(days=1), [(cof, 1)])
    sim.add_order(1, start + timedelta(days=2), [(prm, 1), (ket, 1)])
    sim.add_order(2, start + timedelta(days=3), [(ket, 2)])
    sim.add_order(2, start + timedelta(days=4), [(cof, 1)])
    sim.add_order(3, start + timedelta(days=5), [(cof, 2)])
    o7 = sim.add_order(4, start + timedelta(days=6), [(ket, 1)])
    scripted_ships = {o1: ("DHL", "JD014600003828"), o7: ("UPS", "1Z999AA10123456784")}

    # Random orders from customers 5.., most lines on SKUs with nothing free.
    pickable = [i for i in range(n_skus) if i not in showcase_idx and sim.prod[i]["active"]]
    weights = [rng.paretovariate(1.2) for _ in pickable]
    fallback_skus = [i for i in pickable if sim.prod[i]["backorderable"]]
    span = 88 * 86_400
    remaining = n_orders - len(sim.o_number)
    hot_share = 100_000 / max(1, remaining * 2) if hot is not None else 0.0
    batch = 50_000
    done = 0
    while done < remaining:
        k = min(batch, remaining - done)
        picks = rng.choices(pickable, weights=weights, k=k * 3)
        for j in range(k):
            placed = start + timedelta(days=6, seconds=int(span * (done + j) / remaining))
            cust = rng.randint(5, n_customers)
            n_lines = 1 if rng.random() < 0.1 else (2 if rng.random() < 0.78 else 3)
            lines = []
            for t in range(n_lines):
                s = hot if hot is not None and rng.random() < hot_share else picks[j * 3 + t]
                qty = 1 if rng.random() < 0.8 else rng.randint(2, 4)
                if not sim.prod[s]["backorderable"] and sim.free[s] < qty:
                    continue
                lines.append((s, qty))
            if not lines:
                lines = [(fallback_skus[j % len(fallback_skus)], 1)]
            sim.add_order(cust, placed, lines)
        done += k

    # Some customers cancel a waiting line.
    for li in range(7 * 3, len(sim.l_qty)):
        if sim.l_alloc[li] == 0 and rng.random() < 0.03:
            sim.l_cancel[li] = sim.l_qty[li]

    # Restocks already received (due in the past) fill the oldest waiting lines.
    waiting: dict[int, list[int]] = defaultdict(list)
    for li in range(len(sim.l_qty)):
        if sim.l_qty[li] - sim.l_alloc[li] - sim.l_cancel[li] > 0:
            waiting[sim.l_sku[li]].append(li)
    for s_i, lis in waiting.items():
        p = sim.prod[s_i]
        if s_i in showcase_idx or s_i == hot or not p["backorderable"] or rng.random() > 0.5:
            continue
        got = rng.choice([5, 10, 20])
        restock(s_i, got, today - timedelta(days=rng.randint(5, 40)), status="received")
        sim.on_hand[s_i] += got
        sim.free[s_i] += got
        for li in lis:
            need = sim.l_qty[li] - sim.l_alloc[li] - sim.l_cancel[li]
            take = min(need, sim.free[s_i])
            sim.l_alloc[li] += take
            sim.free[s_i] -= take
            if sim.free[s_i] == 0:
                break

    # Ship most orders that are complete and not too recent.
    order_lines_of: dict[int, list[int]] = defaultdict(list)
    for li in range(len(sim.l_qty)):
        order_lines_of[sim.l_order[li]].append(li)
    cutoff = int((datetime.combine(today, time(0), tzinfo=UTC) - timedelta(days=7)).timestamp())
    for o, lis in order_lines_of.items():
        scripted = scripted_ships.get(o)
        if o < 7 and scripted is None:
            continue
        complete = all(sim.l_alloc[li] + sim.l_cancel[li] == sim.l_qty[li] for li in lis)
        if not complete or any(sim.l_alloc[li] for li in lis) is False:
            continue
        if scripted is None and (sim.o_placed[o] > cutoff or rng.random() < 0.2):
            continue
        carrier, tracking = scripted or (rng.choice(CARRIERS), f"{rng.randrange(10**11, 10**12)}")
        shipped_lines = []
        for li in lis:
            q = sim.l_alloc[li]
            if q:
                sim.l_alloc[li] = 0
                sim.l_ship[li] = q
                sim.on_hand[sim.l_sku[li]] -= q
                shipped_lines.append((li, q))
        when = datetime.fromtimestamp(sim.o_placed[o], UTC).date() + timedelta(days=2)
        sim.shipments.append(
            (f"SH-{len(sim.shipments) + 1:07d}", o, carrier, tracking, when, shipped_lines)
        )
    _supplier_history(sim, seed, showcase_idx)
    return sim


def _slip(rng: random.Random, supplier: int) -> int:
    late, lo, hi = HABITS[(supplier - 1) % len(HABITS)]
    return rng.randint(lo, hi) if rng.random() < late else -rng.choice((0, 0, 0, 0, 1, 2))


def _supplier_history(sim: _Sim, seed: int, showcase: set[int]) -> None:
    """Past deliveries by each supplier's habit, for their track records: the restocks
    received already (the simulation's) keep their day of arrival and get a first date that
    habit made them miss; older ones are added, every supplier's on its own SKUs (the SKU's
    supplier is SUP-(index % 12 + 1)). A random stream of its own, so that the rest of the
    demo (customers, orders, queues) is the same as without it."""
    rng = random.Random(seed + 18)
    today = sim.today

    def moved(rid: str, first: date, arrived: date, created: date) -> None:
        # Most late deliveries were announced: the date moved once before they came.
        if arrived > first and rng.random() < 0.7:
            when = max(created + timedelta(days=1), first - timedelta(days=rng.randint(1, 5)))
            sim.changes.append(
                dict(
                    restock_id=rid,
                    old_date=first,
                    new_date=arrived,
                    reason="supplier delay",
                    changed_at=datetime.combine(when, time(8), tzinfo=UTC),
                )
            )

    for r in sim.restocks:
        if r["status"] != "received":
            continue
        supplier = int(r["supplier_id"][4:])
        arrived = r["expected_date"]
        first = arrived - timedelta(days=_slip(rng, supplier))
        created = first - timedelta(days=14 + supplier)
        r.update(
            received_at=datetime.combine(arrived, time(10), tzinfo=UTC),
            created_at=datetime.combine(created, time(9), tzinfo=UTC),
        )
        moved(r["restock_id"], first, arrived, created)
    by_supplier: dict[int, list[int]] = defaultdict(list)
    for i in range(len(sim.skus)):
        if i not in showcase:
            by_supplier[i % 12 + 1].append(i)
    per_supplier = max(10, len(sim.skus) // 40)
    for supplier in sorted(by_supplier):
        skus = by_supplier[supplier]
        for _ in range(per_supplier):
            first = today - timedelta(days=rng.randint(60, 400))
            arrived = first + timedelta(days=_slip(rng, supplier))
            created = first - timedelta(days=14 + supplier)
            sim.restocks.append(
                dict(
                    restock_id=f"PO-{len(sim.restocks) + 1:06d}",
                    supplier_id=f"SUP-{supplier:02d}",
                    sku_i=rng.choice(skus),
                    qty=rng.choice([5, 10, 20, 50]),
                    expected_date=arrived,
                    status="received",
                    received_at=datetime.combine(arrived, time(10), tzinfo=UTC),
                    created_at=datetime.combine(created, time(9), tzinfo=UTC),
                )
            )
            moved(sim.restocks[-1]["restock_id"], first, arrived, created)


def _chunks(rows: list[dict[str, Any]], n: int = 20_000) -> list[list[dict[str, Any]]]:
    return [rows[i : i + n] for i in range(0, len(rows), n)]


async def fill_demo(
    store: Store, size: str = "small", seed: int = 7, today: date | None = None
) -> DemoSummary:
    """Fill the store with demo data (see the module docstring). Meant for an empty store."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r} (one of {', '.join(SIZES)})")
    today = today or date.today()
    sim = _simulate(size, seed, today)
    now = datetime.now(UTC)
    rng = random.Random(seed + 1)
    _, n_customers, _ = SIZES[size]

    # Projection in memory, same rule as store.backorders.project_dates.
    open_by_sku: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in sim.restocks:
        if r["status"] == "open":
            open_by_sku[r["sku_i"]].append(r)
    for lst in open_by_sku.values():
        lst.sort(key=lambda r: (r["expected_date"], r["restock_id"]))
    slipped_first: dict[str, date] = {}
    for ch in sim.changes:
        slipped_first.setdefault(ch["restock_id"], ch["old_date"])
    need: dict[int, int] = defaultdict(int)
    n_lines = len(sim.l_qty)
    proj: list[tuple[date | None, str | None]] = [(None, None)] * n_lines
    waiting_count = 0
    for li in range(n_lines):
        w = sim.l_qty[li] - sim.l_alloc[li] - sim.l_ship[li] - sim.l_cancel[li]
        if w <= 0:
            continue
        s = sim.l_sku[li]
        need[s] += w
        waiting_count += 1
        cum = sim.free[s]
        hit = None
        for r in open_by_sku.get(s, ()):
            cum += r["qty"]
            if cum >= need[s]:
                hit = r
                break
        proj[li] = (hit["expected_date"], hit["restock_id"]) if hit else (None, None)

    async with store.begin() as conn:
        await conn.execute(
            insert(products),
            [
                {k: v for k, v in p.items() if k != "alternatives"}
                | {"created_at": now, "updated_at": now}
                for p in sim.prod
            ],
        )
        await conn.execute(
            insert(product_alternatives),
            [
                dict(sku=a, alt_sku=b, rank=0)
                for a, b in [
                    ("COF-0001", "COF-0002"),
                    ("PRM-0001", "PRM-0002"),
                    ("BIK-0001", "BIK-0002"),
                    ("SOF-0001", "SOF-0002"),
                ]
            ],
        )
        allocated: dict[int, int] = defaultdict(int)
        for li in range(n_lines):
            allocated[sim.l_sku[li]] += sim.l_alloc[li]
        await conn.execute(
            insert(stock),
            [
                dict(sku=s, on_hand=sim.on_hand[i], allocated=allocated[i], updated_at=now)
                for i, s in enumerate(sim.skus)
            ],
        )
        await conn.execute(
            insert(suppliers),
            [
                dict(
                    supplier_id=f"SUP-{i:02d}",
                    name=f"{SERIES[i % len(SERIES)]} Manufacturing",
                    email=f"orders@supplier{i:02d}.example",
                    lead_days=14 + i,
                    created_at=now,
                )
                for i in range(1, 13)
            ],
        )
        for chunk in _chunks(
            [
                dict(
                    restock_id=r["restock_id"],
                    supplier_id=r["supplier_id"],
                    sku=sim.skus[r["sku_i"]],
                    qty=r["qty"],
                    expected_date=r["expected_date"],
                    status=r["status"],
                    qty_received=r["qty"] if r["status"] == "received" else 0,
                    received_at=r.get("received_at"),
                    created_at=r.get("created_at", now),
                    updated_at=now,
                )
                for r in sim.restocks
            ]
        ):
            await conn.execute(insert(restocks), chunk)
        if sim.changes:
            await conn.execute(
                insert(restock_date_changes),
                [dict(c, changed_at=c.get("changed_at", now)) for c in sim.changes],
            )

        cust_rows = [
            dict(
                customer_id=cid,
                name=name,
                email=email,
                postcode=pc,
                language=lang,
                phone=phone,
                notify_delays=True,
                notify_back_in_stock=True,
                created_at=now,
            )
            for cid, name, email, pc, lang, phone in SHOWCASE_CUSTOMERS
        ]
        langs = ["en", "de", "es", "ru"]
        for cid in range(5, n_customers + 1):
            lang = langs[rng.randrange(4)] if rng.random() < 0.6 else "en"
            first, last = rng.choice(FIRST[lang]), rng.choice(LAST[lang])
            local = f"{first}.{last}".lower().translate(TRANSLIT) if lang != "ru" else f"user{cid}"
            cust_rows.append(
                dict(
                    customer_id=cid,
                    name=f"{first} {last}",
                    email=f"{local}.{cid}@example.com",
                    postcode=f"{rng.randint(10000, 99999)}",
                    language=lang,
                    phone=None,
                    notify_delays=True,
                    notify_back_in_stock=True,
                    created_at=now,
                )
            )
            if len(cust_rows) >= 20_000:
                await conn.execute(insert(customers), cust_rows)
                cust_rows = []
        if cust_rows:
            await conn.execute(insert(customers), cust_rows)

        n_orders = len(sim.o_number)
        for a in range(0, n_orders, 20_000):
            await conn.execute(
                insert(orders),
                [
                    dict(
                        order_id=o + 1,
                        order_number=sim.o_number[o],
                        customer_id=sim.o_customer[o],
                        placed_at=datetime.fromtimestamp(sim.o_placed[o], UTC),
                        priority=0,
                        currency="EUR",
                    )
                    for o in range(a, min(n_orders, a + 20_000))
                ],
            )
        line_no: dict[int, int] = defaultdict(int)
        rows: list[dict[str, Any]] = []
        for li in range(n_lines):
            o = sim.l_order[li]
            line_no[o] += 1
            s = sim.l_sku[li]
            w = sim.l_qty[li] - sim.l_alloc[li] - sim.l_ship[li] - sim.l_cancel[li]
            pdate, prs = proj[li]
            promised = slipped_first.get(prs, pdate) if prs else pdate
            rows.append(
                dict(
                    line_id=li + 1,
                    order_id=o + 1,
                    line_no=line_no[o],
                    sku=sim.skus[s],
                    qty_ordered=sim.l_qty[li],
                    qty_allocated=sim.l_alloc[li],
                    qty_shipped=sim.l_ship[li],
                    qty_cancelled=sim.l_cancel[li],
                    qty_waiting=w,
                    unit_price_minor=sim.prod[s]["price_minor"],
                    queue_rank=0,
                    queued_at=datetime.fromtimestamp(sim.o_placed[o], UTC),
                    promised_date=promised,
                    projected_date=pdate,
                    previous_projected_date=promised if promised != pdate else None,
                    projected_changed_at=now if promised != pdate else None,
                    waits_for_restock_id=prs,
                    last_told_date=promised,
                    last_told_at=now,
                    delay_consent=None,
                    # The demo's history happened before the bot was there to tell it.
                    told_ready_qty=sim.l_alloc[li] + sim.l_ship[li],
                    told_shipped_qty=sim.l_ship[li],
                    told_cancelled_qty=sim.l_cancel[li],
                )
            )
            if len(rows) >= 20_000:
                await conn.execute(insert(order_lines), rows)
                rows = []
        if rows:
            await conn.execute(insert(order_lines), rows)
        await mark_queues(conn)
        if sim.shipments:
            for part in range(0, len(sim.shipments), 20_000):
                ship_chunk = sim.shipments[part : part + 20_000]
                await conn.execute(
                    insert(shipments),
                    [
                        dict(
                            shipment_id=sid,
                            order_id=o + 1,
                            carrier=c,
                            tracking_number=t,
                            shipped_on=d,
                            created_at=now,
                        )
                        for sid, o, c, t, d, _ in ship_chunk
                    ],
                )
                await conn.execute(
                    insert(shipment_lines),
                    [
                        dict(shipment_id=sid, line_id=li + 1, qty=q)
                        for sid, _, _, _, _, ls in ship_chunk
                        for li, q in ls
                    ],
                )
        # The rows above carry their ids: PostgreSQL's sequences must move past them.
        await sync_sequences(conn)
    return DemoSummary(
        size=size,
        seed=seed,
        products=len(sim.skus),
        customers=n_customers,
        orders=len(sim.o_number),
        lines=n_lines,
        restocks=len(sim.restocks),
        shipments=len(sim.shipments),
        waiting_lines=waiting_count,
        hot_sku="KET-0002" if size == "large" else None,
        showcase={
            "in_stock": "KET-0001",
            "backorder_dated": "COF-0001",
            "backorder_undated": "PRM-0001",
            "out_of_stock": "BIK-0001",
            "discontinued": "SOF-0001",
        },
    )
