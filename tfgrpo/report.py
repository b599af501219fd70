"""What a run did, for people: PNG plots and one self-contained ``report.html``.

``write_report(run_dir, out_dir)`` reads whatever the run directory holds and renders it;
a missing file is listed in the report instead of stopping it, and so is a damaged record (a
file that cannot be read, a key of the wrong type: checked against the models of
``tfgrpo.records``, the config's and the library's), named in one line and left out. Only a
steps.jsonl line that is not a record of this version stops it (one line, as it stops a
resume). Plots use matplotlib's headless Agg backend:

* ``reward.png``   mean reward per step, the spread of group mean rewards (min-max and
                   quartiles) around it, epoch boundaries
* ``library.png``  ops applied per step stacked by kind (and leaks caught), library size line
* ``usage.png``    tokens per step by role; cost per step by role (when a price is known)
* ``eval.png``     Mean@k and Pass@k of baseline and library with 95% intervals, per saved eval

``report.html`` (rendered from ``tfgrpo/templates/report.html.j2`` by jinja2, autoescaped)
embeds them as base64 with the library table (provenance, usage credit), the most helpful and
most harmful lessons, evaluations, the best-val selection and the config. A parameter-mode
run shows its own facts and the reward plot (it has no library, ops or per-call price).
The plots live in ``tfgrpo.report_plots``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from experience_store import LibraryState
from tfgrpo.config import build, load_yaml
from tfgrpo.errors import UserError
from tfgrpo.nesting import json_loads
from tfgrpo.records import EvalSummaryRead, ParamsStepRead, SelectionRead, StatusRead, StepRead, read_as
from tfgrpo.report_plots import plot_evals, plot_library, plot_reward, plot_usage
from tfgrpo.rundir import CONFIG, OPS, SELECTION, STATUS, STEPS, RunDir
from tfgrpo.training_free.budget import total_spend

M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------------------- reading a run


@dataclass
class RunData:
    path: Path
    config: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    library: dict[str, Any] | None = None  # the latest readable library version (LibraryState JSON)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # one line each: file, line or key, what is wrong

    mode: str = "training_free"

    @property
    def params_mode(self) -> bool:
        return self.mode == "params"

    @property
    def models(self) -> tuple[str | None, str | None]:
        """(policy, judge); parameter mode has no judge. Read from the config as written, so a
        damaged config still shows the models it names."""
        cfg = self.config or {}
        if self.params_mode:
            return _text(cfg, "model"), None
        policy = _text(cfg, "policy", "model")
        return policy, _text(cfg, "judge", "model") or policy

    @property
    def spend(self):
        return total_spend(s.get("usage") or {} for s in self.steps)

    def damage(self, path: Path, what: str, line: int | None = None) -> None:
        self.damaged.append(f"{path.relative_to(self.path)}{f':{line}' if line else ''}: {what}")


def _text(mapping: Any, *keys: str) -> str | None:
    """The text at ``keys`` of a config as written (None where it is no text, e.g. damaged)."""
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, dict) else None
    return mapping if isinstance(mapping, str) else None


def load_run(path: str | Path) -> RunData:
    """Everything readable in a run directory. What is absent goes to ``missing``; a damaged
    record (a file that cannot be read, a key of the wrong type) goes to ``damaged``, named in
    one line, and is left out: the rest of the run still shows. Raises UserError (one line) for
    a steps.jsonl line that is not a record of this version."""
    rd = RunDir(path)
    run = RunData(path=rd.path)
    status = _record(run, rd.file(STATUS), StatusRead)
    run.status = status.model_dump() if status else None
    run.mode = (status.mode if status else None) or rd.mode
    for name in (CONFIG, STEPS) if run.params_mode else (CONFIG, STEPS, OPS):
        if not rd.file(name).exists() and not (name == OPS and rd.file(STEPS).exists()):  # a run may propose no op
            run.missing.append(name)
    if rd.exists():
        run.config = _config(run, rd)
    run.steps = _steps(run, rd)
    if run.params_mode:  # weights were trained: there is no library and no ops to miss
        return run
    versions = sorted((rd.library_path / "versions").glob("*.json"))
    for version in reversed(versions):  # a damaged newest version: the one before it is shown
        if state := _record(run, version, LibraryState, salvage=False):  # not without its lessons
            run.library = state.model_dump(mode="json")
            break
    if not versions:
        run.missing.append("library/versions")
    for p in rd.eval_summaries():
        if summary := _record(run, p, EvalSummaryRead):
            run.evals[p.parent.name] = summary.model_dump(exclude_none=True)
    selection = _record(run, rd.file(SELECTION), SelectionRead)
    run.selection = selection.model_dump() if selection else None
    return run


def _record(run: RunData, path: Path, model: type[M], *, salvage: bool = True) -> M | None:
    """The JSON file at ``path`` as ``model``; None when absent or when it cannot be read (then
    named in ``run.damaged``). A key of the wrong type is named and, with ``salvage``, left out."""
    try:
        data = json_loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as e:
        run.damage(path, f"cannot read it: {e.strerror or e}")
        return None
    except ValueError as e:
        run.damage(path, f"not JSON ({str(e)[:80]})")
        return None
    record, problem = read_as(model, data, salvage=salvage)
    if problem:
        run.damage(path, problem)
    return record


def _config(run: RunData, rd: RunDir) -> dict[str, Any] | None:
    """config.yaml as written (shown as it is), checked against the mode's config model."""
    from tfgrpo.params.config import ParamsConfig
    from tfgrpo.training_free.config import RunConfig

    try:
        data = load_yaml(rd.config_path)
    except UserError as e:
        run.damaged.append(str(e).replace(f"{run.path}{os.sep}", ""))  # the run directory left out of the path
        return None
    try:
        build(ParamsConfig if run.params_mode else RunConfig, data)
    except UserError as e:
        run.damage(rd.config_path, str(e))
    return data


def _steps(run: RunData, rd: RunDir) -> list[dict[str, Any]]:
    """The step records of either mode of the right types; parameter mode's ``reward_mean`` is
    also its ``mean_reward``. A line that is not a record, or a record of another version
    (a run of an older tfgrpo), stops the report with the reader's one line, as it stops a resume."""
    out = []
    for n, _, row in rd.lines(STEPS):
        step, problem = read_as(ParamsStepRead if run.params_mode else StepRead, row)
        if problem:
            run.damage(rd.file(STEPS), problem, line=n)
        if step is None:
            continue
        out.append(step.model_dump())
        if isinstance(step, ParamsStepRead):
            out[-1]["mean_reward"] = step.reward_mean
    return out


def run_status(run: RunData) -> str:
    """finished, stopped by budget, running, or interrupted (resumable): stopped by Ctrl-C or
    SIGTERM, or still marked running by a process that is gone (killed, crashed)."""
    st, reason = (run.status or {}).get("status"), (run.status or {}).get("reason")
    if st == "finished":
        return f"finished, learned nothing: {reason}" if reason else "finished"
    if st == "failed":
        return f"failed: {str(reason)[:160]}"
    if st == "stopped_by_budget":
        return "stopped by budget"
    if st == "running" and _alive((run.status or {}).get("pid")):
        return "running"
    return "interrupted" if run.config is not None else "not a run"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def best_eval(run: RunData) -> dict[str, Any] | None:
    """The saved eval (with both arms) whose library scored the highest Mean@k."""
    scored = [
        e for e in run.evals.values() if isinstance(e.get("library"), dict) and isinstance(e.get("baseline"), dict)
    ]
    return max(scored, key=lambda e: e["library"].get("mean_at_k", 0.0), default=None)


# ---------------------------------------------------------------------------- HTML


def _cell(v: Any) -> str:
    """A table cell: floats to 3 decimals (intervals too), the rest as text."""
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
    return "" if v is None else str(v)


def _clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary before ``limit`` characters, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;")
    return cut + " …"


def _table(headers: list[str] | None, rows: list[list[Any]], classes: list[str] | None = None) -> dict[str, Any]:
    """A table for the template; ``headers=None`` for a two-column fact list (no empty header row)."""
    return {"headers": headers, "rows": rows, "classes": classes}


def _library(run: RunData) -> dict[str, Any] | None:
    if run.library is None:
        return None
    exps = run.library.get("experiences") or []
    rows, classes = [], []
    # a lesson's epoch as steps.jsonl has it (from 1; a library written before epochs counted from 1 has 0-based ones)
    epoch_of = {r.get("step"): r.get("epoch") for r in run.steps}
    for e in sorted(exps, key=lambda e: (e.get("status") != "active", e.get("created_step", 0))):
        prov, st = e.get("provenance") or {}, e.get("stats") or {}
        epoch = epoch_of.get(prov.get("step"), prov.get("epoch"))
        origin = (
            ""
            if prov.get("step") is None
            else f"step {prov['step']}"
            if epoch is None
            else f"epoch {epoch}, step {prov['step']}"
        )
        rows.append(
            [
                e.get("id"),
                e.get("text"),
                e.get("status"),
                e.get("created_step"),
                e.get("updated_step"),
                origin,
                _clip(", ".join(prov.get("query_ids") or []), 120),
                ", ".join(prov.get("merged_from") or []),
                st.get("retrieved", 0),
                st.get("cited", 0),
                st.get("helpful", 0),
                st.get("harmful", 0),
            ]
        )
        classes.append("" if e.get("status") == "active" else "retired")

    def credit(e: dict[str, Any]) -> int:
        st = e.get("stats") or {}
        return int(st.get("helpful", 0)) - int(st.get("harmful", 0))

    credited = [e for e in exps if (e.get("stats") or {}).get("helpful") or (e.get("stats") or {}).get("harmful")]
    cols = ["id", "lesson", "helpful", "harmful"]
    pick = lambda es: _table(
        cols, [[e["id"], e["text"], e["stats"].get("helpful", 0), e["stats"].get("harmful", 0)] for e in es]
    )  # noqa: E731
    return {
        "step": run.library.get("step"),
        "active": sum(1 for e in exps if e.get("status") == "active"),
        "credited": bool(credited),
        "top": pick([e for e in sorted(credited, key=credit, reverse=True) if credit(e) > 0][:5]),
        "worst": pick([e for e in sorted(credited, key=credit) if credit(e) < 0][:5]),  # only net-harmful ones
        "all": _table(
            [
                "id",
                "lesson",
                "status",
                "created",
                "updated",
                "from",
                "source queries",
                "merged from",
                "shown",
                "cited",
                "helpful",
                "harmful",
            ],
            rows,
            classes,
        ),
    }


def _evals(run: RunData) -> dict[str, Any]:
    """One row per saved eval; the placebo arm's columns (``tfgrpo eval --placebo``) when any eval has one."""
    placebo = any(isinstance(e.get("placebo"), dict) for e in run.evals.values())
    rows = []
    for name, e in run.evals.items():
        b, lib, d = e.get("baseline") or {}, e.get("library") or {}, e.get("diff") or {}
        row = [
            name,
            e.get("n_problems"),
            e.get("k"),
            e.get("n"),
            e.get("seeds"),
            b.get("mean_at_k"),
            b.get("ci95"),
            lib.get("mean_at_k"),
            lib.get("ci95"),
            d.get("mean"),
            d.get("ci95"),
            d.get("p_value"),
        ]
        if placebo:
            pl = e.get("placebo") or {}
            pd = pl.get("diff") or {}
            row += [pl.get("mean_at_k"), pd.get("mean"), pd.get("ci95"), pd.get("p_value")]
        rows.append(row + [e.get("verdict", "")])
    headers = [
        "name",
        "problems",
        "k",
        "n",
        "seeds",
        "baseline Mean@k",
        "95% CI",
        "library Mean@k",
        "95% CI",
        "difference",
        "95% CI",
        "p-value",
    ]
    if placebo:
        headers += ["placebo Mean@k", "library - placebo", "95% CI", "p-value"]
    return _table(headers + ["verdict"], rows)


def _selection(run: RunData) -> dict[str, Any] | None:
    s = run.selection
    if not s:
        return None
    cand = [
        [c.get("epoch"), c.get("step"), c.get("library_size"), c.get("mean_at_k"), c.get("ci95")]
        for c in s.get("candidates", [])
    ]
    return {
        "epoch": s["chosen"]["epoch"],
        "step": s["chosen"]["step"],
        "baseline": (s.get("baseline") or {}).get("mean_at_k"),
        "metric": s.get("metric"),
        "table": _table(["epoch", "step", "library size", "validation score", "95% CI"], cand),
    }


def _facts(run: RunData) -> list[list[Any]]:
    """The summary rows, each mode with its own."""
    cfg = run.config or {}
    steps = run.steps
    if run.params_mode:
        rewards = [s["mean_reward"] for s in steps if s.get("mean_reward") is not None]
        facts = [
            ["mode", "parameter mode (GRPO weight updates)"],
            ["status", run_status(run)],
            ["task", cfg.get("task")],
            ["model", run.models[0]],
            ["steps", len(steps)],
            ["reward first → last", f"{rewards[0]:.3f} → {rewards[-1]:.3f}" if rewards else "-"],
        ]
    else:
        spend = run.spend
        facts = [
            ["mode", "training-free"],
            ["status", run_status(run)],
            ["task", cfg.get("task")],
            ["policy", run.models[0]],
            ["judge", run.models[1] or "-"],
            ["steps", len(steps)],
            ["library size", steps[-1].get("library_size") if steps else None],
            ["tokens", f"{spend.tokens:,}"],
            ["LLM calls", spend.calls],
            [
                "cost",
                f"${spend.cost:.4f}" if not spend.unpriced else f"unknown (no price for {', '.join(spend.unpriced)})",
            ],
            ["leaks caught", sum(s.get("ops_leaked", 0) for s in steps)],
        ]
    if run.status and run.status.get("reason"):
        facts.append(["stopped because", run.status["reason"]])
    return facts


@dataclass
class Report:
    html: Path
    plots: list[Path]
    missing: list[str]
    damaged: list[str]


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Report:
    import jinja2

    run = load_run(run_dir)
    out = Path(out_dir) if out_dir else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[Path, str]] = []
    if run.steps:
        plots.append((plot_reward(run.steps, out), "reward per step"))
        if not run.params_mode:  # parameter mode has no library and pays no per-call price
            plots += [
                (plot_library(run.steps, out), "library per step"),
                (plot_usage(run.steps, out), "tokens and cost per step"),
            ]
    if best_eval(run) is not None:  # an eval of both arms to plot
        plots.append((plot_evals(run.evals, out), "evaluation, baseline vs library"))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
    env.filters["cell"] = _cell
    page = env.get_template("report.html.j2").render(
        name=run.path.name,
        facts=_table(None, _facts(run)),
        missing=run.missing,
        damaged=run.damaged,
        params_mode=run.params_mode,
        plots=[{"alt": alt, "data": base64.b64encode(p.read_bytes()).decode()} for p, alt in plots],
        evals=_evals(run),
        selection=_selection(run),
        library=_library(run),
        config=yaml.safe_dump(run.config, sort_keys=False) if run.config else "(config.yaml missing)",
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return Report(html=html_path, plots=[p for p, _ in plots], missing=run.missing, damaged=run.damaged)
