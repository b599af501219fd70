"""tfgrpo.nesting: JSON and YAML from outside parsed with their nesting bounded (deep input is a
ValueError or a YAMLError, never a RecursionError), and its twin in the experience store."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from experience_store.pack_format import json_depth as store_json_depth
from tfgrpo.nesting import MAX_DEPTH, TooDeep, json_depth, json_loads, yaml_load


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_depth_is_measured_without_parsing_and_ignores_brackets_in_strings():
    rnd = random.Random(0)
    atoms = ['a"b\\', "[{", '\\"]', "}\\\\", 1, None, "\u2028", 2.5]

    def value(level: int):
        r = rnd.random()
        if level > 7 or r < 0.3:
            return rnd.choice(atoms)
        if r < 0.65:
            return [value(level + 1) for _ in range(rnd.randint(0, 3))]
        return {rnd.choice(["k", "[", '"\\']) + str(i): value(level + 1) for i in range(rnd.randint(0, 3))}

    for _ in range(500):
        v = value(0)
        text = json.dumps(v, ensure_ascii=rnd.random() < 0.5)
        assert json_depth(text) == json_depth(text.encode()) == store_json_depth(text) == _depth(v), text


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "[" * 100_000 + "]" * 100_000, b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
)
def test_deep_json_is_a_value_error(text):
    with pytest.raises(TooDeep, match=f"nested deeper than {MAX_DEPTH} levels"):
        json_loads(text)
    assert issubclass(TooDeep, ValueError)


def test_json_within_the_bound_parses_as_json_loads_does():
    text = '{"a":' * MAX_DEPTH + '"[[[{"' + "}" * MAX_DEPTH
    assert json_loads(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        json_loads('{"cut": ')


def test_deep_yaml_is_a_yaml_error_with_its_line():
    with pytest.raises(yaml.YAMLError, match=f"nested deeper than {MAX_DEPTH} levels") as e:
        yaml_load("k: " + "[" * 5000 + "]" * 5000)
    assert e.value.problem_mark.line == 0
    block = "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 150))
    with pytest.raises(yaml.YAMLError, match="nested deeper"):
        yaml_load(block)
    assert yaml_load("k: " + "[" * 50 + "1" + "]" * 50)["k"] is not None


async def test_deeply_nested_tool_arguments_are_malformed_not_a_crash():
    from tfgrpo.tools.base import call_tool, tool, toolset

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    out = await call_tool(toolset([add]), "add", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert out.error == "malformed_arguments" and "nested deeper" in out.content
