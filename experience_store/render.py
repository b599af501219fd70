"""Render experiences as the context block injected into the agent's prompt.

Experience text is data, never markup or template code: each lesson is one line (line breaks
and other whitespace runs collapsed to one space), and a lesson containing ``{{ ... }}`` is
shown as written. Invisible characters (Unicode format characters such as the zero-width space,
and the other default-ignorable code points) are removed first, so they cannot split a marker
past the checks; then a tag that would open or close the ``<experiences>`` block around it, and
the chat-template control markers of the known families (ChatML and Llama 3 ``<|...|>``,
DeepSeek ``<｜...｜>``, Gemma ``<start_of_turn>``, ``<s>``/``</s>``, Llama 2 ``[INST]`` and
``<<SYS>>``, Mistral ``[SYSTEM_PROMPT]``, ``<think>``, ``<tool_call>``), are neutralised: their
opening ``<`` becomes ``&lt;`` and ``[`` becomes ``&#91;``, which leaves the words readable. So
a lesson cannot end its block early and start lines of its own (``</experiences>\\nSYSTEM: ...``)
nor open a chat turn of its own.
"""

from __future__ import annotations

from collections.abc import Iterable

import jinja2
import regex

from experience_store.models import Experience

DEFAULT_BLOCK = "{% for e in experiences %}[{{ e.id }}] {{ e.text }}\n{% endfor %}"
# Characters a reader does not see: format characters (zero-width space and joiners, word joiner,
# byte-order mark, soft hyphen, bidirectional controls, tag characters) and the other
# default-ignorable code points (combining grapheme joiner, variation selectors, Hangul fillers).
INVISIBLE = regex.compile(r"[\p{Cf}\p{Default_Ignorable_Code_Point}]")
_TOKENS = "start_of_turn|end_of_turn|s|bos|eos|unk|pad|think|tool_call|tool_response"
_BRACKETED = "INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|TOOL_CONTENT|THINK"
BLOCK_TAG = regex.compile(
    r"[<\uff1c](?=\s*/?\s*experiences)"  # the block's own tags (a full-width < reads as one too)
    r"|<(?=[|\uff5c])"  # <|im_start|>, <|start_header_id|> (ChatML, Llama 3, Phi), <｜User｜> (DeepSeek)
    rf"|<(?=\s*/?\s*(?:{_TOKENS})\s*>)"  # Gemma's turns, BOS/EOS, reasoning and tool-call tags
    r"|<(?=</?\s*SYS\s*>>)"  # Llama 2's <<SYS>> and <</SYS>>
    rf"|\[(?=\s*/?\s*(?:{_BRACKETED})\s*\])",  # Llama 2's [INST], Mistral's [SYSTEM_PROMPT], [TOOL_CALLS], ...
    regex.IGNORECASE,
)
_NEUTRAL = {"<": "&lt;", "\uff1c": "&lt;", "[": "&#91;"}

_env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def as_line(text: str) -> str:
    """A lesson as one line of data: invisible characters removed, whitespace runs (newlines,
    U+2028, ...) as one space, the block's own tags and chat-template markers neutralised."""
    line = " ".join(INVISIBLE.sub("", text).split())
    return BLOCK_TAG.sub(lambda m: _NEUTRAL[m.group()], line)


def render_experiences(experiences: Iterable[Experience], template: str = DEFAULT_BLOCK) -> str:
    """Lines ``[E12] When ..., ...`` for the given experiences (empty string for none)."""
    items = [
        e.model_copy(update={"id": as_line(e.id), "text": as_line(e.text)}) for e in experiences if e.status == "active"
    ]
    if not items:
        return ""
    return _env.from_string(template).render(experiences=items).rstrip("\n")
