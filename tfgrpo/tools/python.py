"""The ``python`` tool: model-written code run in the sandbox, one fresh process per call."""

from __future__ import annotations

import asyncio
import weakref

from tfgrpo.tools.base import Tool, tool
from tfgrpo.tools.sandbox import Limits, SandboxResult, run_python

# At most this many sandboxes at once per event loop: a batch of agents must not start
# forty interpreters on a two-core machine.
_SLOTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def _slot(concurrency: int) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _SLOTS:
        _SLOTS[loop] = asyncio.Semaphore(concurrency)
    return _SLOTS[loop]


def describe(result: SandboxResult) -> str:
    """The tool result the model reads."""
    parts = []
    if result.limit:
        parts.append(f"Stopped: the sandbox's {result.limit} limit was hit.")
    parts.append(f"exit status: {result.exit_code if result.exit_code is not None else 'killed'}")
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout.rstrip()}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr.rstrip()}")
    if result.truncated:
        parts.append("[output truncated: the program printed more than the sandbox keeps]")
    if not result.stdout and not result.stderr:
        parts.append("(no output: print the values you need)")
    return "\n".join(parts)


def python_tool(limits: Limits | None = None, *, concurrency: int = 4, max_result_chars: int = 4000) -> Tool:
    """A ``python`` tool running each call in a fresh sandbox with ``limits``."""
    limits = limits or Limits()

    async def python(code: str) -> str:
        """Run a Python 3 program in a sandbox (no network, no files outside its own empty
        directory) and return its exit status, stdout and stderr. Print what you need to see.

        Args:
            code: The complete program to run.
        """
        async with _slot(concurrency):
            return describe(await run_python(code, limits))

    return tool(python, timeout_s=limits.wall_s + 10, max_result_chars=max_result_chars)
