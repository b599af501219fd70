"""Regenerate ``demo.jsonl`` (deterministic): ``python tasks/data/make_demo.py``.

Eight skills, eight short word problems each (four train, four test). Every answer is
computed here, not written by hand. No question may contain a skill keyword: the simulated
model must learn the skill from an injected experience, not from the question.
"""

from __future__ import annotations

import json
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

SEED = 20251121
PER_SKILL = 8  # the first half of each skill's problems is train, the rest test
KEYWORDS = (
    "unit conversion",
    "percentage",
    "fence-post",
    "order of operations",
    "remainder",
    "rounding",
    "average",
    "clock arithmetic",
)


def fmt(x: float | Decimal) -> str:
    d = Decimal(str(x)).normalize()
    return format(d, "f")


def unit_conversion(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(4)
    if kind == 0:
        m = r.choice([1.5, 2.25, 3.4, 4.75, 0.8])
        return f"A ribbon is {m} meters long. How many centimeters long is it?", fmt(Decimal(str(m)) * 100)
    if kind == 1:
        g = r.choice([250, 400, 750, 1200])
        n = r.randint(3, 8)
        return (
            f"A baker uses {g} grams of flour per loaf and bakes {n} loaves. How many kilograms of flour does she use?",
            fmt(Decimal(g * n) / 1000),
        )
    if kind == 2:
        h = r.choice([1.5, 2.5, 0.75, 3.25])
        return f"A film lasts {h} hours. How many minutes is that?", fmt(Decimal(str(h)) * 60)
    km = r.choice([2, 3, 5, 7])
    lap = r.choice([200, 250, 500])
    return f"A runner covers {km} kilometers on a track whose lap is {lap} meters. How many laps does she run?", fmt(
        Decimal(km * 1000) / lap
    )


def percentage(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    price = r.choice([40, 60, 80, 120, 150, 200, 250])
    p = r.choice([10, 15, 20, 25, 30, 40])
    if kind == 0:
        return f"A jacket costs ${price} and is sold at {p}% off. What is the sale price in dollars?", fmt(
            Decimal(price) * (100 - p) / 100
        )
    if kind == 1:
        return (
            f"A town of {price * 10} people grows by {p}% in a year. How many people live there after the year?",
            fmt(Decimal(price * 10) * (100 + p) / 100),
        )
    size = r.choice([20, 40, 60, 80, 100, 200])
    return f"In a class of {size} pupils, {p}% walk to school. How many pupils walk to school?", fmt(
        Decimal(size) * p / 100
    )


def fence_post(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    gap = r.choice([2, 3, 4, 5, 6, 10])
    n = r.randint(5, 15)
    if kind == 0:
        return (
            f"Posts are placed every {gap} meters along a straight fence {gap * n} meters long, with a post at each end. How many posts are there?",
            str(n + 1),
        )
    if kind == 1:
        return (
            f"Trees are planted {gap} meters apart along one side of a {gap * n}-meter path, starting at one end and finishing at the other. How many trees are planted?",
            str(n + 1),
        )
    return (
        f"A book's chapter runs from page {gap * 3} to page {gap * 3 + n} inclusive. How many pages does the chapter have?",
        str(n + 1),
    )


def order_of_operations(r: random.Random) -> tuple[str, str]:
    a, b, c, d = r.randint(2, 9), r.randint(2, 9), r.randint(2, 9), r.randint(2, 6)
    kind = r.randrange(3)
    if kind == 0:
        return f"What is {a} + {b} × {c}?", str(a + b * c)
    if kind == 1:
        e = d * r.randint(2, 5)
        return f"What is {a} × {b} - {e} ÷ {d}?", str(a * b - e // d)
    return f"What is {a * b} - {c} × {d} + {a}?", str(a * b - c * d + a)


def remainder(r: random.Random) -> tuple[str, str]:
    size = r.randint(4, 12)
    total = size * r.randint(5, 15) + r.randint(1, size - 1)
    kind = r.randrange(3)
    if kind == 0:
        return (
            f"{total} sweets are shared equally among {size} children, each getting as many as possible. How many sweets are left over?",
            str(total % size),
        )
    if kind == 1:
        return (
            f"Eggs are packed into boxes of {size}. From {total} eggs, only full boxes are shipped. How many eggs are not shipped?",
            str(total % size),
        )
    return (
        f"{total} chairs are arranged in rows of {size}, filling as many complete rows as possible. How many chairs are in the incomplete row?",
        str(total % size),
    )


def rounding(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    if kind == 0:
        x = Decimal(r.randint(10000, 99999)) / 1000
        return f"Round {x} to one decimal place.", fmt(x.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    if kind == 1:
        a, b = r.choice([(10, 3), (20, 7), (50, 6), (100, 9), (25, 7)])
        q = (Decimal(a) / Decimal(b)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return f"Divide {a} by {b} and give the result to two decimal places.", fmt(q)
    x = r.randint(1000, 9999) + Decimal(r.randint(1, 99)) / 100
    return f"A car costs ${x:.2f}. What is its price to the nearest hundred dollars?", fmt(
        (x / 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP) * 100
    )


def average(r: random.Random) -> tuple[str, str]:
    n = r.randint(3, 5)
    known = [r.randint(10, 30) for _ in range(n - 1)]
    missing = r.randint(10, 30)
    mean = Decimal(sum(known) + missing) / n
    while mean != mean.to_integral_value():
        missing += 1
        mean = Decimal(sum(known) + missing) / n
    listed = ", ".join(str(k) for k in known)
    if r.randrange(2) == 0:
        return f"The mean of {n} numbers is {fmt(mean)}. {n - 1} of them are {listed}. What is the last number?", str(
            missing
        )
    return (
        f"A player's mean score over {n} games is {fmt(mean)}. The first {n - 1} scores were {listed}. What did she score in the last game?",
        str(missing),
    )


def clock(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    h, m = r.randint(6, 11), r.choice([5, 15, 20, 40, 45, 50])
    dur = r.randint(70, 200)
    if kind == 0:
        end = h * 60 + m + dur
        return (
            f"A meeting starts at {h}:{m:02d} and ends at {end // 60}:{end % 60:02d} the same day. How many minutes does it last?",
            str(dur),
        )
    if kind == 1:
        start = 22 * 60 + m
        dur = r.randint(24 * 60 - start + 10, 300)  # crosses midnight
        end = (start + dur) % (24 * 60)
        return (
            f"A night shift starts at 22:{m:02d} and ends at {end // 60:02d}:{end % 60:02d} the next morning. How many minutes long is the shift?",
            str(dur),
        )
    end = h * 60 + m + dur
    return (
        f"A train leaves at {h}:{m:02d} and the trip takes {dur} minutes. At what minute past the hour does it arrive?",
        str(end % 60),
    )


GENERATORS = {
    "unit_conversion": unit_conversion,
    "percentage": percentage,
    "fence_post": fence_post,
    "order_of_operations": order_of_operations,
    "remainder": remainder,
    "rounding": rounding,
    "average": average,
    "clock": clock,
}


def build() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for skill, gen in GENERATORS.items():
        made = 0
        while made < PER_SKILL:
            question, answer = gen(rng)
            if question in seen:
                continue
            assert not any(k in question.lower() for k in KEYWORDS), question
            seen.add(question)
            split = "train" if made < PER_SKILL // 2 else "test"
            rows.append(
                {"id": f"{skill}-{made:02d}", "split": split, "skill": skill, "question": question, "answer": answer}
            )
            made += 1
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("demo.jsonl")
    rows = build()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {out}")
