"""A tool-calling agent written with the official openai SDK, as a user would write one: the
endpoint comes from OPENAI_BASE_URL / OPENAI_API_KEY, the sample from stdin, the answer goes to
stdout. It runs the python tool itself. AGENT_LOG (optional) gets one JSON line per model call,
so tests can compare what tfgrpo recorded with what the agent did; AGENT_STREAM=1 streams."""

import json
import os
import subprocess
import sys

from openai import OpenAI

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "python",
            "description": "Run Python code and return what it prints.",
            "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
        },
    }
]


def ask(client, messages):
    if os.environ.get("AGENT_STREAM") != "1":
        return client.chat.completions.create(model="policy", messages=messages, tools=TOOLS).choices[0].message
    content, calls = "", {}
    for chunk in client.chat.completions.create(model="policy", messages=messages, tools=TOOLS, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            slot = calls.setdefault(
                tc.index, {"id": tc.id, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            slot["function"]["name"] += tc.function.name or ""
            slot["function"]["arguments"] += tc.function.arguments or ""
    from openai.types.chat import ChatCompletionMessage

    return ChatCompletionMessage(role="assistant", content=content or None, tool_calls=list(calls.values()) or None)


def main():
    sample = json.load(sys.stdin)
    client = OpenAI(max_retries=0)
    messages = [
        {"role": "system", "content": "Solve the problem; use the python tool to compute. End with 'Answer: N'."},
        {"role": "user", "content": sample["prompt"]},
    ]
    log = os.environ.get("AGENT_LOG")
    for _ in range(6):
        msg = ask(client, messages)
        if log:
            with open(log, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "sample": sample["id"],
                            "messages": messages,
                            "content": msg.content,
                            "tool_calls": len(msg.tool_calls or []),
                        }
                    )
                    + "\n"
                )
        if not msg.tool_calls:
            print(msg.content)
            return
        messages.append(msg.model_dump(exclude_none=True))
        for tc in msg.tool_calls:
            code = json.loads(tc.function.arguments or "{}").get("code", "")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": (out.stdout + out.stderr)[-2000:]})
    print("Answer: (gave up)")


if __name__ == "__main__":
    main()
