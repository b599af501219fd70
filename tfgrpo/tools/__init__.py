"""Tools for agentic rollouts: typed Python functions the model calls through the OpenAI tools
API, and the built-in ``python`` (sandboxed), ``search`` (BM25 or any backend) and ``sql``
(SQLite, read-only) tools."""

from tfgrpo.tools.base import Tool, ToolOutcome, call_tool, tool, toolset
from tfgrpo.tools.python import python_tool
from tfgrpo.tools.sandbox import Limits, SandboxResult, isolation, run_python
from tfgrpo.tools.search import BM25Corpus, Hit, SearchBackend, search_tool
from tfgrpo.tools.sql import run_query, sql_tool

__all__ = [
    "BM25Corpus",
    "Hit",
    "Limits",
    "SandboxResult",
    "SearchBackend",
    "Tool",
    "ToolOutcome",
    "call_tool",
    "isolation",
    "python_tool",
    "run_python",
    "run_query",
    "search_tool",
    "sql_tool",
    "tool",
    "toolset",
]
