"""The smallest agent a user might already have: one chat call with the official openai SDK
(endpoint from OPENAI_BASE_URL / OPENAI_API_KEY), the sample from stdin, the answer on stdout."""

import json
import sys

from openai import OpenAI

sample = json.load(sys.stdin)
reply = OpenAI(max_retries=0).chat.completions.create(
    model="policy",
    messages=[
        {"role": "system", "content": "Solve the problem step by step. End with 'Answer: <answer>'."},
        {"role": "user", "content": sample["prompt"]},
    ],
)
print(reply.choices[0].message.content)
