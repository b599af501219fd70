"""Benchmark: what in-context lessons can do for the real small model at all, before any training.

SmolLM2-135M-Instruct (:mod:`tfgrpo.model_files`, behind ``transformers serve`` on the CPU)
answers the held-out sums of ``tasks/digit_sums.py`` asked plainly: the question alone as the
user message, no worked example, and a system prompt whose instructions do not state the
format (the template's default line). The reward is the task's own (``answer_line``): 1 when
the first ``Answer: N`` line carries the right sum, so an answer without that line scores 0
however right its number. A hand-written library of two lessons tells the model the format;
what they can add is the measure of what injection can do for this model.

Three arms on the same problems with the same sampling seeds, through ``Evaluator.compare``
(the code of ``tfgrpo eval --placebo``):

* ``baseline``: no lessons;
* ``library``: the two lessons, injected as a run injects its library (``rollout.injector``);
* ``placebo``: the same block, each lesson replaced by neutral text of equal token length
  (``placebo.placebo_injector``; counted with the model's own tokenizer when its directory is
  known), so library - placebo is what the lessons SAY, placebo - baseline the prompt format.

Mean@k per arm with BCa 95 % intervals over problems, and the paired differences library -
baseline (``diff``) and library - placebo (``placebo.diff``) with a sign-flip permutation
p-value: the summary ``tfgrpo eval --json`` prints. ``answer_line_rate`` (the share of answers
with any ``Answer: <integer>`` line) tells the format from the arithmetic; ``examples`` shows
the first answers of each arm.

Without ``--api-base`` a ``transformers serve`` process is started for ``--model-dir`` (default:
``tfgrpo models fetch smollm2``) and stopped at the end. Progress goes to stderr; the last
stdout line is one JSON object.

    python bench/real_injection.py --json
    python bench/real_injection.py --api-base http://127.0.0.1:PORT/v1 --model-dir DIR --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench._progress import Progress  # noqa: E402
from experience_store import ExperienceOp, Library  # noqa: E402
from tfgrpo.llm import LLMClient, RetryPolicy  # noqa: E402
from tfgrpo.task_registry import Sample, Task, load_task  # noqa: E402
from tfgrpo.training_free.config import LibraryConfig, SamplingConfig  # noqa: E402
from tfgrpo.training_free.evaluate import Evaluator  # noqa: E402
from tfgrpo.training_free.placebo import placebo_injector  # noqa: E402
from tfgrpo.training_free.policy import PromptPolicy  # noqa: E402
from tfgrpo.training_free.prompting import Prompts  # noqa: E402
from tfgrpo.training_free.rollout import Scorer, injector  # noqa: E402

LESSONS = (
    "When you have the result, end with a final line 'Answer: N', where N is the number.",
    "Keep the reply short: the sum of two digits needs no explanation, only the final line 'Answer: N'.",
)
INSTRUCTIONS = ""  # the template's default line, "You are a careful, capable problem solver.": no format
ANSWER_LINE = re.compile(r"Answer:\s*-?\d+")
SERVED = "smollm2-135m-instruct"


def plain_task(problems: int, example: bool) -> Task:
    """The first ``problems`` held-out items of ``digit_sums``, asked as the question alone (or
    after the task's worked example with ``example``), rewarded by the task's ``answer_line``."""
    base = load_task("digit_sums", heldout=min(max(problems, 200), 399))
    held = base.eval_samples()[:problems]
    samples = [
        Sample(id=s.id, answer=s.answer, messages=s.messages if example else [s.messages[-1]]) for s in held
    ]  # fmt: skip
    return Task(
        dataset=samples, rewards=base.rewards, instructions=INSTRUCTIONS, max_tokens=48, name="digit_sums_plain"
    )


def token_counter(model_dir: str | None, client: LLMClient) -> tuple[Callable[[str], int], str]:
    """The model's own tokenizer when its directory is known, else the client's count."""
    if model_dir:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        return (lambda text: len(tok.encode(text, add_special_tokens=False))), "model tokenizer"
    return client.count_tokens, "client estimate"


@contextlib.contextmanager
def server(args: argparse.Namespace, progress: Progress, log_dir: Path) -> Iterator[tuple[str, str | None]]:
    """(base URL, model directory or None): the given ``--api-base``, or a server started here."""
    model_dir = args.model_dir
    if args.api_base:
        yield args.api_base, model_dir
        return
    if model_dir is None:
        from tfgrpo.model_files import smollm2_dir

        with progress.phase("SmolLM2-135M-Instruct files (fetched and converted once)"):
            model_dir = str(smollm2_dir())
    from tfgrpo.llm.launcher import local_server

    srv = local_server("transformers", model_dir, threads=args.threads, log_path=log_dir / "transformers.log")
    with progress.phase(f"transformers serve ({args.threads} thread(s))"):
        srv.start()
    try:
        yield srv.base_url, model_dir
    finally:
        srv.stop()


def arm_extras(answers: list[dict[str, Any]], arm: str, shown: int) -> dict[str, Any]:
    mine = [a for a in answers if a["arm"] == arm]
    texts = [a["text"] for a in mine if a["text"] is not None]
    return {
        "answer_line_rate": round(sum(bool(ANSWER_LINE.search(t)) for t in texts) / max(len(mine), 1), 4),
        "examples": [{"sample_id": a["sample_id"], "text": a["text"], "correct": a["correct"]} for a in mine[:shown]],
    }


async def evaluate(args: argparse.Namespace, base_url: str, model_dir: str | None, lib_dir: Path, advance) -> dict:
    task = plain_task(args.problems, args.example)
    model = args.model or f"openai/{Path(model_dir).resolve().name if model_dir else SERVED}"
    client = LLMClient(model=model, api_base=base_url, api_key="no-key", concurrency=args.concurrency,
                       timeout=args.timeout, retry=RetryPolicy(max_retries=2))  # fmt: skip
    count, counter = token_counter(model_dir, client)
    library = Library(lib_dir)
    library.apply([ExperienceOp(op="ADD", text=text) for text in LESSONS], step=1)
    inject = injector(library, LibraryConfig(), count)
    placebo = placebo_injector(inject, count)
    sampling = SamplingConfig(group_size=args.k, temperature=args.temperature, max_tokens=args.max_tokens)
    policy = PromptPolicy(client, task, Prompts(), sampling)
    evaluator = Evaluator(policy, Scorer(task), n=args.k, seeds=[args.seed], on_advance=advance)
    report = await evaluator.compare(task.dataset, inject, args.k, placebo=placebo)
    summary = report.summary
    for arm in ("baseline", "library", "placebo"):
        summary[arm].update(arm_extras(report.answers, arm, args.show))
    first = task.dataset[0]
    lib_block, pla_block = inject(first), placebo(first)
    summary["blocks"] = {
        "library": lib_block.text,
        "placebo": pla_block.text,
        "library_tokens": count(lib_block.text),
        "placebo_tokens": count(pla_block.text),
        "counted_with": counter,
    }
    summary["requests"] = client.usage.roles["policy"].calls if "policy" in client.usage.roles else None
    summary["model"] = model
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=100, help="held-out problems (at most 399)")
    ap.add_argument("-k", type=int, default=2, help="answers per problem and arm (Mean@k)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--model-dir", default=None, help="the model's directory (default: tfgrpo models fetch smollm2)")
    ap.add_argument("--api-base", default=None, help="a running OpenAI-compatible server (none is started)")
    ap.add_argument("--model", default=None, help="the client's model name (default: openai/ + the directory's name)")
    ap.add_argument("--threads", type=int, default=1, help="the started server's CPU threads")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    ap.add_argument("--example", action="store_true", help="keep digit_sums' worked example before each question")
    ap.add_argument("--seed", type=int, default=0, help="the sampling seed")
    ap.add_argument("--show", type=int, default=3, help="answers of each arm shown in the JSON")
    ap.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = ap.parse_args(argv)
    if not 1 <= args.problems <= 399:
        ap.error("--problems must be between 1 and 399")
    if args.k < 1:
        ap.error("-k must be at least 1")

    t0 = time.perf_counter()
    progress = Progress("real_injection")
    with tempfile.TemporaryDirectory() as tmp, server(args, progress, Path(tmp)) as (base_url, model_dir):
        with progress.phase(
            f"3 arms x {args.problems} problems x {args.k} answers (temperature {args.temperature:g})",
            total=3 * args.problems,
        ) as advance:
            summary = asyncio.run(evaluate(args, base_url, model_dir, Path(tmp) / "library", advance))
    result = {
        "bench": "real_injection",
        "wall_s": round(time.perf_counter() - t0, 1),
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "example": args.example,
        "lessons": list(LESSONS),
        **summary,
    }
    base, lib, pla = result["baseline"], result["library"], result["placebo"]
    progress.note(
        f"Mean@{args.k}: baseline {base['mean_at_k']:.3f} {base['ci95']}, placebo {pla['mean_at_k']:.3f} "
        f"{pla['ci95']}, library {lib['mean_at_k']:.3f} {lib['ci95']}"
    )
    progress.note(
        f"library - baseline {result['diff']['mean']:+.3f} {result['diff']['ci95']} p={result['diff']['p_value']:.3g}; "
        f"library - placebo {pla['diff']['mean']:+.3f} {pla['diff']['ci95']} p={pla['diff']['p_value']:.3g}"
    )
    if not args.json:
        print(result["verdict"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
