"""Tools: schemas from typed functions, and every way a call can go wrong reaching the model as text."""

import asyncio
import json
import time

import pytest

from tfgrpo.tools import BM25Corpus, call_tool, search_tool, sql_tool, tool, toolset
from tfgrpo.tools.base import DEFAULT_MAX_RESULT_CHARS


@tool(timeout_s=0.5)
def lookup(city: str, limit: int = 3, exact: bool = False) -> str:
    """Look up a city.

    Args:
        city: Name of the city.
        limit: Most results
            to return.
    """
    if city == "boom":
        raise RuntimeError("the city index is down")
    if city == "slow":
        time.sleep(2)
    if city == "loud":
        return "x" * 1_000_000
    return f"{city}:{limit}:{exact}"


def call(name, raw, tools=None):
    return asyncio.run(call_tool(tools or toolset([lookup]), name, raw))


def test_schema_comes_from_signature_and_docstring():
    fn = lookup.schema()["function"]
    assert fn["name"] == "lookup" and fn["description"] == "Look up a city."
    props = fn["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "Name of the city."}
    assert props["limit"]["type"] == "integer" and props["limit"]["default"] == 3
    assert props["limit"]["description"] == "Most results to return."
    assert props["exact"]["type"] == "boolean"
    assert fn["parameters"]["required"] == ["city"]


def test_untyped_parameter_is_refused():
    with pytest.raises(TypeError, match="type hint"):
        tool(lambda x: x)


def test_good_call():
    out = call("lookup", json.dumps({"city": "Lyon", "limit": 2}))
    assert out.error is None and out.content == "Lyon:2:False"


@pytest.mark.parametrize(
    "raw,kind,says",
    [
        ('{"city": "Lyon"', "malformed_arguments", "not a valid JSON object"),
        ('["Lyon"]', "malformed_arguments", "not a valid JSON object"),
        ('{"town": "Lyon"}', "invalid_arguments", "city"),
        ('{"city": "boom"}', "exception", "RuntimeError: the city index is down"),
        ('{"city": "slow"}', "timeout", "did not finish within 0.5 seconds"),
    ],
)
def test_failures_come_back_as_text(raw, kind, says):
    out = call("lookup", raw)
    assert out.error == kind and says in out.content


def test_unknown_tool():
    out = call("nope", "{}")
    assert out.error == "unknown_tool" and "lookup" in out.content


def test_megabytes_of_result_are_truncated_and_say_so():
    out = call("lookup", '{"city": "loud"}')
    assert out.error is None and out.truncated
    assert len(out.content) < DEFAULT_MAX_RESULT_CHARS + 200 and "truncated" in out.content


def test_sql_is_read_only(tmp_path):
    import sqlite3

    db = tmp_path / "t.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
        con.execute("INSERT INTO t VALUES (1), (2)")
    tools = toolset([sql_tool(db)])
    assert "(2 rows)" in call("sql", '{"query": "SELECT x FROM t"}', tools).content
    for stmt in ("DELETE FROM t", "DROP TABLE t", "CREATE TABLE u (y)"):
        assert "readonly" in call("sql", json.dumps({"query": stmt}), tools).content
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2
    assert call("sql", '{"query": "SELEC nonsense"}', tools).content.startswith("SQL error")


def test_search_ranks_the_matching_passage_first():
    corpus = BM25Corpus(
        [
            {"id": "a", "title": "Harlow Bridge", "text": "Completed in 1897."},
            {"id": "b", "title": "Mirefield", "text": "A market town."},
        ]
    )
    out = call("search", '{"query": "when was the Harlow Bridge completed"}', toolset([search_tool(corpus, k=1)]))
    assert out.content.startswith("[1] Harlow Bridge") and "Mirefield" not in out.content


def test_search_takes_any_backend():
    class Api:
        def search(self, query, k):
            from tfgrpo.tools import Hit

            return [Hit("u1", "Result for " + query, "snippet", 1.0)]

    out = call("search", '{"query": "q"}', toolset([search_tool(Api())]))
    assert "Result for q" in out.content
