"""Writes the small data files of the agentic tasks (math-tools, docqa, sql, code).

Run from the repository root: ``python tasks/data/make_agentic.py``. Every fact in the docqa
corpus is invented, so a model cannot answer from memory; math answers are computed here;
the SQL database is built from sql_shop.sql by the task itself.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write(name, rows):
    (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


MATH = [  # (question, program printing the answer)
    ("What is the sum of the squares of the integers from 1 to 37?", "print(sum(i * i for i in range(1, 38)))"),
    (
        "How many integers between 1 and 5000 inclusive are divisible by 7 but not by 11?",
        "print(sum(1 for n in range(1, 5001) if n % 7 == 0 and n % 11 != 0))",
    ),
    ("What is the remainder when 3^200 is divided by 1013?", "print(pow(3, 200, 1013))"),
    ("What is the sum of the digits of 2^100?", "print(sum(int(d) for d in str(2 ** 100)))"),
    (
        "How many primes are there below 2000?",
        "print(sum(1 for n in range(2, 2000) if all(n % p for p in range(2, int(n ** 0.5) + 1))))",
    ),
    (
        "What is the 30th Fibonacci number, with F(1) = F(2) = 1?",
        "a, b = 1, 1\nfor _ in range(28):\n    a, b = b, a + b\nprint(b)",
    ),
    ("What is the product of 4817 and 9273, minus 123456?", "print(4817 * 9273 - 123456)"),
    ("How many positive divisors does 720720 have?", "print(sum(1 for d in range(1, 720721) if 720720 % d == 0))"),
    (
        "What is the sum of all multiples of 3 or 5 below 2500?",
        "print(sum(n for n in range(2500) if n % 3 == 0 or n % 5 == 0))",
    ),
    ("What is 17! divided by 13!?", "import math\nprint(math.factorial(17) // math.factorial(13))"),
    (
        "What is the least common multiple of the integers from 1 to 16?",
        "import math\nfrom functools import reduce\nprint(reduce(lambda a, b: a * b // math.gcd(a, b), range(1, 17)))",
    ),
    (
        "How many of the integers from 1 to 3000 have digits that sum to 12?",
        "print(sum(1 for n in range(1, 3001) if sum(map(int, str(n))) == 12))",
    ),
]

DOCS = [
    (
        "harlow-bridge",
        "Harlow Bridge",
        "The Harlow Bridge spans the river Tessel at Mirefield. Its iron arches were completed in 1897 by the engineer Odile Varga, and it carried trams until 1961.",
    ),
    (
        "mirefield",
        "Mirefield",
        "Mirefield is a market town on the river Tessel with about 14,000 inhabitants. Its weekly cheese market is held on Thursdays in Corn Square.",
    ),
    (
        "odile-varga",
        "Odile Varga",
        "Odile Varga (1851-1929) was a civil engineer known for iron bridges. She trained in Liege and later taught at the Polytechnic of Brenmoor.",
    ),
    (
        "brenmoor-poly",
        "Polytechnic of Brenmoor",
        "The Polytechnic of Brenmoor was founded in 1868. Its library holds the Varga collection of 312 bridge drawings.",
    ),
    (
        "tessel",
        "River Tessel",
        "The Tessel rises in the Kallen hills and flows 212 kilometres to the sea at Port Anselm. Its main tributary is the Lura.",
    ),
    (
        "port-anselm",
        "Port Anselm",
        "Port Anselm lies at the mouth of the Tessel. Its lighthouse, the Grey Needle, is 41 metres tall and was first lit in 1872.",
    ),
    (
        "kallen-hills",
        "Kallen Hills",
        "The Kallen hills reach 1,284 metres at Mount Orra. The hills are home to the rare blue-winged Kallen moth.",
    ),
    (
        "lura",
        "River Lura",
        "The Lura joins the Tessel at the village of Dunmere. A stone mill at Dunmere has ground flour since 1743.",
    ),
    (
        "corn-square",
        "Corn Square",
        "Corn Square is the centre of Mirefield. The town hall on its north side has a clock made by the Pellam workshop in 1820.",
    ),
    (
        "pellam",
        "Pellam workshop",
        "The Pellam workshop built tower clocks from 1790 to 1884. Its founder, Ansel Pellam, was born in Dunmere.",
    ),
    (
        "grey-needle",
        "Grey Needle lighthouse",
        "The Grey Needle at Port Anselm was automated in 1988. Its light can be seen from 22 nautical miles.",
    ),
    (
        "orra",
        "Mount Orra",
        "Mount Orra is the highest summit of the Kallen hills. The first recorded ascent was made by the surveyor Ida Fenn in 1803.",
    ),
]

DOCQA = [  # (question, answer, precise query)
    ("In what year were the iron arches of the Harlow Bridge completed?", "1897", "Harlow Bridge completed"),
    ("Who was the engineer of the Harlow Bridge?", "Odile Varga", "Harlow Bridge engineer"),
    ("On which day of the week is the Mirefield cheese market held?", "Thursday", "Mirefield cheese market"),
    ("How many bridge drawings are in the Varga collection?", "312", "Varga collection drawings"),
    ("How long is the river Tessel, in kilometres?", "212", "Tessel kilometres"),
    ("How tall is the Grey Needle lighthouse, in metres?", "41", "Grey Needle lighthouse metres tall"),
    ("What is the highest summit of the Kallen hills?", "Mount Orra", "highest summit Kallen hills"),
    ("Since what year has the stone mill at Dunmere ground flour?", "1743", "stone mill Dunmere flour"),
    ("Which workshop made the clock of the Mirefield town hall?", "Pellam", "town hall clock workshop"),
    ("In what year was the Grey Needle lighthouse automated?", "1988", "Grey Needle automated"),
    ("Who made the first recorded ascent of Mount Orra?", "Ida Fenn", "first recorded ascent Mount Orra"),
    ("Where did Odile Varga train?", "Liege", "Odile Varga trained"),
]

SQL = [  # (question, gold query, plausible wrong query)
    (
        "How many customers live in Lyon?",
        "SELECT COUNT(*) FROM customers WHERE city = 'Lyon'",
        "SELECT COUNT(*) FROM customers",
    ),
    (
        "What is the name of the most expensive product?",
        "SELECT name FROM products ORDER BY price DESC LIMIT 1",
        "SELECT name FROM products ORDER BY price LIMIT 1",
    ),
    (
        "What is the total quantity ordered of the product 'Desk lamp'?",
        "SELECT SUM(o.quantity) FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name = 'Desk lamp'",
        "SELECT COUNT(*) FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name = 'Desk lamp'",
    ),
    (
        "Which customers (names) have placed at least one order?",
        "SELECT DISTINCT c.name FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT name FROM customers",
    ),
    (
        "What is the total revenue (quantity times price) of all orders?",
        "SELECT SUM(o.quantity * p.price) FROM orders o JOIN products p ON p.id = o.product_id",
        "SELECT SUM(p.price) FROM orders o JOIN products p ON p.id = o.product_id",
    ),
    (
        "How many products are in the category 'garden'?",
        "SELECT COUNT(*) FROM products WHERE category = 'garden'",
        "SELECT COUNT(DISTINCT category) FROM products",
    ),
    (
        "What is the average price of products in the category 'office'?",
        "SELECT AVG(price) FROM products WHERE category = 'office'",
        "SELECT AVG(price) FROM products",
    ),
    (
        "Which city has the most customers?",
        "SELECT city FROM customers GROUP BY city ORDER BY COUNT(*) DESC LIMIT 1",
        "SELECT city FROM customers LIMIT 1",
    ),
    (
        "How many orders were placed on day 3?",
        "SELECT COUNT(*) FROM orders WHERE day = 3",
        "SELECT COUNT(*) FROM orders WHERE day <= 3",
    ),
    (
        "What is the name of the customer who ordered the largest single quantity?",
        "SELECT c.name FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.quantity DESC LIMIT 1",
        "SELECT c.name FROM orders o JOIN customers c ON c.id = o.customer_id LIMIT 1",
    ),
    (
        "List the names of products that were never ordered.",
        "SELECT name FROM products WHERE id NOT IN (SELECT product_id FROM orders)",
        "SELECT name FROM products WHERE id IN (SELECT product_id FROM orders)",
    ),
    (
        "How much did customer 'Ines' spend in total?",
        "SELECT SUM(o.quantity * p.price) FROM orders o JOIN products p ON p.id = o.product_id JOIN customers c ON c.id = o.customer_id WHERE c.name = 'Ines'",
        "SELECT SUM(o.quantity) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.name = 'Ines'",
    ),
]

CODE = [  # (function spec, tests, right solution, buggy solution)
    (
        "Write a Python function `second_largest(xs)` that returns the second largest distinct value of a list of integers, or None when there is none.",
        "assert second_largest([3, 1, 4, 4]) == 3\nassert second_largest([5, 5]) is None\nassert second_largest([-1, -7, -3]) == -3",
        "def second_largest(xs):\n    values = sorted(set(xs))\n    return values[-2] if len(values) > 1 else None",
        "def second_largest(xs):\n    values = sorted(xs)\n    return values[-2] if len(values) > 1 else None",
    ),
    (
        "Write a Python function `is_palindrome(s)` that tells whether a string reads the same backwards, ignoring case and any character that is not a letter or digit.",
        "assert is_palindrome('A man, a plan, a canal: Panama')\nassert not is_palindrome('race a car')\nassert is_palindrome('')",
        "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]",
        "def is_palindrome(s):\n    return s.lower() == s.lower()[::-1]",
    ),
    (
        "Write a Python function `run_lengths(s)` that returns the run-length encoding of a string as a list of (character, count) pairs.",
        "assert run_lengths('aaabcc') == [('a', 3), ('b', 1), ('c', 2)]\nassert run_lengths('') == []\nassert run_lengths('x') == [('x', 1)]",
        "def run_lengths(s):\n    out = []\n    for c in s:\n        if out and out[-1][0] == c:\n            out[-1] = (c, out[-1][1] + 1)\n        else:\n            out.append((c, 1))\n    return out",
        "def run_lengths(s):\n    return [(c, s.count(c)) for c in sorted(set(s))]",
    ),
    (
        "Write a Python function `merge_intervals(xs)` that merges overlapping closed intervals given as (start, end) pairs and returns them sorted.",
        "assert merge_intervals([(1, 3), (2, 6), (8, 10)]) == [(1, 6), (8, 10)]\nassert merge_intervals([(5, 7), (1, 2), (2, 4)]) == [(1, 4), (5, 7)]\nassert merge_intervals([]) == []",
        "def merge_intervals(xs):\n    out = []\n    for a, b in sorted(xs):\n        if out and a <= out[-1][1]:\n            out[-1] = (out[-1][0], max(out[-1][1], b))\n        else:\n            out.append((a, b))\n    return out",
        "def merge_intervals(xs):\n    out = []\n    for a, b in xs:\n        if out and a <= out[-1][1]:\n            out[-1] = (out[-1][0], max(out[-1][1], b))\n        else:\n            out.append((a, b))\n    return out",
    ),
    (
        "Write a Python function `count_words(text)` that returns a dict mapping each lower-cased word (letters only) to how often it occurs.",
        "assert count_words('The cat, the hat.') == {'the': 2, 'cat': 1, 'hat': 1}\nassert count_words('') == {}",
        "import re\n\ndef count_words(text):\n    out = {}\n    for w in re.findall(r'[a-z]+', text.lower()):\n        out[w] = out.get(w, 0) + 1\n    return out",
        "def count_words(text):\n    out = {}\n    for w in text.split():\n        out[w] = out.get(w, 0) + 1\n    return out",
    ),
    (
        "Write a Python function `flatten(xs)` that flattens arbitrarily nested lists into one list, keeping the order.",
        "assert flatten([1, [2, [3, [4]]], 5]) == [1, 2, 3, 4, 5]\nassert flatten([]) == []\nassert flatten([[[]]]) == []",
        "def flatten(xs):\n    out = []\n    for x in xs:\n        out.extend(flatten(x) if isinstance(x, list) else [x])\n    return out",
        "def flatten(xs):\n    out = []\n    for x in xs:\n        out.extend(x if isinstance(x, list) else [x])\n    return out",
    ),
]


def split(i):
    return "train" if i % 2 == 0 else "test"


def main():
    import io
    from contextlib import redirect_stdout

    rows = []
    for i, (q, code) in enumerate(MATH):
        buf = io.StringIO()
        with redirect_stdout(buf):
            exec(code, {})
        rows.append(
            {"id": f"mt{i + 1}", "split": split(i), "question": q, "answer": buf.getvalue().strip(), "code": code}
        )
    write("math_tools.jsonl", rows)
    write("docqa_corpus.jsonl", [{"id": d, "title": t, "text": x} for d, t, x in DOCS])
    write(
        "docqa.jsonl",
        [
            {"id": f"dq{i + 1}", "split": split(i), "question": q, "answer": a, "query": k}
            for i, (q, a, k) in enumerate(DOCQA)
        ],
    )
    write(
        "sql.jsonl",
        [
            {"id": f"sq{i + 1}", "split": split(i), "question": q, "sql": s, "wrong_sql": w}
            for i, (q, s, w) in enumerate(SQL)
        ],
    )
    write(
        "code.jsonl",
        [
            {"id": f"cd{i + 1}", "split": split(i), "question": q, "tests": t, "solution": s, "buggy": b}
            for i, (q, t, s, b) in enumerate(CODE)
        ],
    )


if __name__ == "__main__":
    main()
