"""Progress bars, summary tables and the one-line error convention of every command."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import sys
import time
import unicodedata
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tfgrpo.errors import UserError, disk_full

from tfgrpo.hooks import Hooks

if TYPE_CHECKING:
    from experience_store import Experience

err_console = Console(stderr=True)


def configure_logging() -> None:
    """Log level from TFGRPO_LOG (default WARNING); the chatty libraries only show errors."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Escaped("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=os.environ.get("TFGRPO_LOG", "WARNING"), handlers=[handler])
    for noisy in ("LiteLLM", "litellm", "httpx", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}  # controls (ESC, OSC ...), format marks (bidi overrides), separators


def escape_controls(text: str) -> str:
    """``text`` with every control, format and line-separator character written as an escape
    (``\\x1b``, ``\\n``, ``\\u202e``), so nothing in it can act on the terminal."""
    return "".join(
        c.encode("unicode_escape", "backslashreplace").decode("ascii") if unicodedata.category(c) in _UNPRINTABLE else c
        for c in text
    )


class _Escaped(logging.Formatter):
    """Log lines with control characters escaped (:func:`escape_controls`): a warning may quote
    a server's error text, which must not clear the screen or set the window title."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def plain(*parts: Any) -> Text:
    """User, lesson or pack text for a table cell, title or message: never read as rich markup
    (a lesson holding ``[/INST]`` prints as written), control characters escaped."""
    return Text(escape_controls("".join(str(p) for p in parts)))


# Python's own words for an integer past its digit limit end in advice a user cannot take
# (sys.set_int_max_str_digits); a parser's message may also be cut short after "value has".
_INT_LIMIT = re.compile(
    r"Exceeds the limit \((\d+) digits\) for integer string conversion"
    r"(?:: value has (\d+)(?: digits)?)?[\w ]*(?:; use sys\.set_int_max_str_digits\(\) to increase the limit)?"
)


def _int_limit(m: re.Match[str]) -> str:
    return f"a number of {m.group(2) + ' ' if m.group(2) else 'more than ' + m.group(1) + ' '}digits (at most {m.group(1)} allowed)"


def fail(message: str) -> typer.Exit:
    """``error: MESSAGE`` on stderr, the message printed as plain text (a ``[vllm]`` in it stays)."""
    message = _INT_LIMIT.sub(_int_limit, message)
    err_console.print(Text.assemble(("error:", "red"), " ", plain(message)), highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _store_error(e: BaseException) -> bool:
    """experience_store's own error type (it cannot import tfgrpo); checked without importing
    experience_store, so commands that never load it (parameter mode) stay free of chromadb."""
    errors = sys.modules.get("experience_store.errors")
    return errors is not None and isinstance(e, errors.StoreError)


def user_errors(fn: Callable) -> Callable:
    """Errors a user can fix end in one line and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if isinstance(e, UserError) or _store_error(e):
                raise fail(str(e)) from None
            full = disk_full(e)  # wherever a write found the disk full (a run's own writes say how to resume)
            if full is not None:
                raise fail(f"{full}: free some space, then run the command again") from None
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return run


def exit_interrupted(e: KeyboardInterrupt, command: str, run_dir: Any) -> NoReturn:
    """After Ctrl-C or SIGTERM (``Terminated``; status.json already says interrupted): how to
    continue, and the exit status a shell expects (130, or 143 for SIGTERM)."""
    from tfgrpo.rundir import Terminated

    where = f" --resume {run_dir}" if run_dir else ""
    err_console.print(
        f"interrupted; continue with: tfgrpo {command}{where}", highlight=False, markup=False, soft_wrap=True
    )
    raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None


def in_use_hint(e: BaseException) -> str:
    """What to do about a port another program holds."""
    return (
        " (another program holds that port: choose another --port, or --port 0 for a free one)"
        if getattr(e, "errno", None) == errno.EADDRINUSE
        else ""
    )


def notice(line: str) -> None:
    """One line the user must see (a provider's notice, warnings), on stderr, printed as plain text
    (a server's words in it may hold escape sequences: shown escaped)."""
    err_console.print(plain(line), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_hooks(enabled: bool = True) -> Iterator[Hooks]:
    """Hooks that drive one rich progress bar per phase, on stderr; notices print either way."""
    if not enabled:
        yield Hooks(on_notice=notice)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    current: dict[str, Any] = {}

    def on_phase(phase: str, total: int) -> None:
        key = phase.rsplit(" ", 1)[-1]
        if key in current:
            progress.update(current[key], completed=progress.tasks[current[key]].total, visible=False)
        current[key] = progress.add_task(phase, total=max(total, 0))

    def on_advance(key: str) -> None:
        if key in current:
            progress.advance(current[key])

    def on_step(record: Any) -> None:
        for task_id in list(current.values()):
            progress.remove_task(task_id)
        current.clear()
        reward = "n/a" if record.mean_reward is None else f"{record.mean_reward:.3f}"
        progress.console.print(
            f"step {record.step} (epoch {record.epoch}): reward {reward}, judged {record.judged}/{record.groups}, "
            f"ops {record.ops_applied} applied/{record.ops_rejected} rejected, library {record.library_size}"
            + (f", rollouts failed {record.rollout_failures}" if record.rollout_failures else "")
            + (f", judge failures {record.judge_failures}" if record.judge_failures else "")
            + (f", leaks caught {record.ops_leaked}" if record.ops_leaked else "")
        )

    with progress:
        yield Hooks(
            on_phase=on_phase,
            on_advance=on_advance,
            on_step=on_step,
            on_notice=lambda line: progress.console.print(plain(line), highlight=False, soft_wrap=True),
        )


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def usage_table(usage: dict[str, Any]) -> Table:
    t = Table(title="LLM usage by role", title_justify="left")
    for col in ("role", "calls", "from cache", "retries", "failed", "tok in", "tok out", "cached in", "cost $"):
        t.add_column(col, justify="right" if col != "role" else "left")
    for role, u in usage.items():
        t.add_row(
            role,
            str(u["calls"]),
            str(u["cache_hits"]),
            str(u["retries"]),
            str(u["failures"]),
            str(u["prompt_tokens"]),
            str(u["completion_tokens"]),
            str(u["cached_tokens"]),
            fmt(u["cost_usd"], 4) if u["cost_usd"] is not None else "n/a",
        )
    return t


def train_tables(summary: dict[str, Any], steps: list[Any]) -> list[Table]:
    t = Table(title="Training-free GRPO run", title_justify="left")
    for col in ("step", "epoch", "mean reward", "judged", "ops applied", "rejected", "library"):
        t.add_column(col, justify="right")
    for s in steps:
        t.add_row(
            str(s.step),
            str(s.epoch),
            fmt(s.mean_reward),
            f"{s.judged}/{s.groups}",
            str(s.ops_applied),
            str(s.ops_rejected),
            str(s.library_size),
        )
    tail = Table(show_header=False, box=None)
    tail.add_row("steps", str(summary["steps"]))
    tail.add_row("library size", str(summary["library_size"]))
    tail.add_row("judge failures", str(summary["judge_failures"]))  # replies unusable after the repair request
    if summary.get("learned_nothing"):
        tail.add_row("learned nothing", str(summary["learned_nothing"]))
    tail.add_row("rollout failures", str(summary["rollout_failures"]))
    tail.add_row("wall time", f"{summary['wall_s']:.1f} s")
    tail.add_row("run directory", summary["run_dir"])
    tail.add_row("library", summary["library"])
    return [t, usage_table(summary["usage"]), tail]


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def eval_table(report: dict[str, Any]) -> Table:
    k, n, seeds = report["k"], report.get("n", report["k"]), report.get("seeds", [report.get("seed")])
    where = "TRAINING problems" if report.get("on_training_problems") else f"{report.get('split', 'test')} problems"
    t = Table(
        title=f"Evaluation of {report.get('task', '?')} on {report['n_problems']} {where}, k={k}, n={n}, seeds {seeds}",
        caption=report.get("verdict"),
        title_justify="left",
        caption_justify="left",
    )
    for col in ("", f"Mean@{k}", "95% CI", f"Pass@{k}", "95% CI ", "failed requests", "p-value"):
        t.add_column(col, justify="right")
    arms = [a for a in ("baseline", "library") if a in report]
    for arm in arms:
        r = report[arm]
        t.add_row(
            arm,
            fmt(r["mean_at_k"]),
            _ci(r.get("ci95")),
            fmt(r["pass_at_k"]),
            _ci(r.get("pass_ci95")),
            str(r["failures"]),
            "",
        )
    if "library" in report:
        d = report.get("diff") or {"mean": report["library"]["mean_at_k"] - report["baseline"]["mean_at_k"]}
        d_pass = report["library"]["pass_at_k"] - report["baseline"]["pass_at_k"]
        p = f"{d['p_value']:.3g}" if "p_value" in d else ""
        t.add_row("difference", f"{d['mean']:+.3f}", _ci(d.get("ci95")), f"{d_pass:+.3f}", "", "", p)
        placebo = report.get("placebo")
        if placebo:  # tfgrpo eval --placebo: the library's prompt with neutral lessons
            t.add_row(
                "placebo",
                fmt(placebo["mean_at_k"]),
                _ci(placebo.get("ci95")),
                fmt(placebo["pass_at_k"]),
                _ci(placebo.get("pass_ci95")),
                str(placebo["failures"]),
                "",
            )
            dp = placebo["diff"]
            t.add_row(
                "library - placebo",
                f"{dp['mean']:+.3f}",
                _ci(dp.get("ci95")),
                f"{report['library']['pass_at_k'] - placebo['pass_at_k']:+.3f}",
                "",
                "",
                f"{dp['p_value']:.3g}" if "p_value" in dp else "",
            )
    return t


def emit(tables: list[Table], payload: dict[str, Any] | None, as_json: bool) -> None:
    """Tables on stdout; with --json they go to stderr and stdout's last line is the JSON object."""
    console = err_console if as_json else Console()
    for t in tables:
        console.print(t)
    if as_json and payload is not None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()


def experience_row(e: "Experience") -> dict[str, Any]:
    """One lesson as ``library show`` and ``pack show`` print it in JSON."""
    return {
        "id": e.id,
        "text": e.text,
        "status": e.status,
        "revision": e.revision,
        "created_step": e.created_step,
        "updated_step": e.updated_step,
        **e.stats.model_dump(),
    }


def block_until_interrupted(alive: Callable[[], bool]) -> bool:
    """Sleep until Ctrl-C (True) or until ``alive()`` turns false (False)."""
    try:
        while alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        return True
    return False


def duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
