"""What a run did, for people: PNG plots and one self-contained ``report.html``.

``write_report(run_dir, out_dir)`` reads whatever the run directory holds and renders it;
a missing or unreadable file is listed in the report instead of stopping it. Plots use
matplotlib's headless Agg backend:

* ``reward.png``   mean reward per step, the spread of group mean rewards (min-max and
                   quartiles) around it, epoch boundaries
* ``library.png``  ops applied per step stacked by kind (and leaks caught), library size line
* ``usage.png``    tokens per step by role; cost per step by role (when a price is known)
* ``eval.png``     Mean@k and Pass@k of baseline and library with 95% intervals, per saved eval

``report.html`` embeds them as base64 with the library table (provenance, usage credit), the
most helpful and most harmful lessons, evaluations, the best-val selection and the config.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfgrpo.rundir import CONFIG, OPS, STEPS, RunDir
from tfgrpo.training_free.budget import total_spend

OP_KINDS = ("ADD", "UPDATE", "MERGE", "DELETE", "RESTORE")


# ---------------------------------------------------------------------------- reading a run

@dataclass
class RunData:
    path: Path
    config: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)
    library: dict[str, Any] | None = None  # the latest library version (LibraryState JSON)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)

    mode: str = "training_free"

    @property
    def params_mode(self) -> bool:
        return self.mode == "params"

    @property
    def models(self) -> tuple[str | None, str | None]:
        """(policy, judge); parameter mode has no judge."""
        cfg = self.config or {}
        if self.params_mode:
            return cfg.get("model"), None
        policy = (cfg.get("policy") or {}).get("model")
        return policy, (cfg.get("judge") or {}).get("model") or policy

    @property
    def spend(self):
        return total_spend(s.get("usage") or {} for s in self.steps)


def load_run(path: str | Path) -> RunData:
    """Everything readable in a run directory; what is absent or unreadable goes to ``missing``."""
    rd = RunDir(path)
    p = rd.path
    run = RunData(path=p, mode=rd.mode)
    for name in (CONFIG, STEPS) if run.params_mode else (CONFIG, STEPS, OPS):
        if not rd.file(name).exists():
            run.missing.append(name)
    run.config = rd.read_config() if rd.exists() else None
    if rd.exists() and not run.config:
        run.missing.append(f"{CONFIG} (unreadable)")
    run.steps = rd.step_rows()
    run.status = rd.read_status()
    if run.params_mode:  # weights were trained: there is no library and no ops to miss
        return run
    run.ops = rd.read(OPS)
    versions = sorted((rd.library_path / "versions").glob("*.json")) if (rd.library_path / "versions").is_dir() else []
    if versions:
        try:
            run.library = json.loads(versions[-1].read_text())
        except (OSError, ValueError) as e:
            run.missing.append(f"{versions[-1].relative_to(p)} (unreadable: {type(e).__name__})")
    else:
        run.missing.append("library/versions")
    run.evals = rd.saved_evals()
    run.selection = rd.read_selection()
    return run


def run_status(run: RunData) -> str:
    """finished, stopped by budget, running, or crashed-resumable."""
    st = (run.status or {}).get("status")
    if st == "finished":
        return "finished"
    if st == "stopped_by_budget":
        return "stopped by budget"
    if st == "running" and _alive((run.status or {}).get("pid")):
        return "running"
    return "crashed-resumable" if run.config is not None else "not a run"


def _alive(pid: Any) -> bool:
    import os

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
    """The saved eval whose library scored the highest Mean@k."""
    scored = [e for e in run.evals.values() if isinstance(e.get("library"), dict)]
    return max(scored, key=lambda e: e["library"].get("mean_at_k", 0.0), default=None)


# ---------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    return plt


def _epoch_lines(ax, steps: list[dict[str, Any]]) -> None:
    for prev, cur in zip(steps, steps[1:]):
        if cur.get("epoch") != prev.get("epoch"):
            ax.axvline(cur["step"] - 0.5, color="0.8", linestyle="--", linewidth=1)


def plot_reward(steps: list[dict[str, Any]], out: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [s["step"] for s in steps]
    groups = [[g for g in s.get("group_mean_rewards") or [] if g is not None] for s in steps]
    have = [(x, g) for x, g in zip(xs, groups) if g]
    if have:
        gx = [x for x, _ in have]
        q = np.array([np.percentile(g, [0, 25, 75, 100]) for _, g in have])
        ax.fill_between(gx, q[:, 0], q[:, 3], alpha=0.15, color="tab:blue", label="groups: min to max")
        ax.fill_between(gx, q[:, 1], q[:, 2], alpha=0.3, color="tab:blue", label="groups: middle half")
    means = [(x, s["mean_reward"]) for x, s in zip(xs, steps) if s.get("mean_reward") is not None]
    if means:
        ax.plot([m[0] for m in means], [m[1] for m in means], marker="o", color="tab:blue", label="mean reward")
    _epoch_lines(ax, steps)
    ax.set(xlabel="step", ylabel="reward", title="Reward per step (dashed: new epoch)")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, out / "reward.png")


def plot_library(steps: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [s["step"] for s in steps]
    bottom = [0] * len(steps)
    kinds = [k for k in OP_KINDS if any((s.get("ops_by_kind") or {}).get(k) for s in steps)]
    kinds += sorted({k for s in steps for k in (s.get("ops_by_kind") or {})} - set(OP_KINDS))
    for kind in kinds:
        vals = [(s.get("ops_by_kind") or {}).get(kind, 0) for s in steps]
        ax.bar(xs, vals, bottom=bottom, label=f"{kind} applied")
        bottom = [b + v for b, v in zip(bottom, vals)]
    leaks = [s.get("ops_leaked", 0) for s in steps]
    if any(leaks):
        ax.bar(xs, leaks, bottom=bottom, label="leaks caught", color="tab:red", hatch="//", alpha=0.6)
    ax.set(xlabel="step", ylabel="ops per step", title="Library edits per step and library size")
    ax.set_ylim(0, max([*bottom, *leaks, 1]) * 1.4)  # headroom for the legend
    size = ax.twinx()
    size.plot(xs, [s.get("library_size", 0) for s in steps], color="black", marker="o", label="library size")
    size.set_ylabel("active lessons")
    size.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = size.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize="small")
    return _save(fig, out / "library.png")


def plot_usage(steps: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    fig, (tok, cost) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [s["step"] for s in steps]
    roles = sorted({r for s in steps for r in (s.get("usage") or {})})
    bottom_t, bottom_c, priced = [0] * len(xs), [0.0] * len(xs), False
    for role in roles:
        us = [(s.get("usage") or {}).get(role, {}) for s in steps]
        t = [(u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0) for u in us]
        tok.bar(xs, t, bottom=bottom_t, label=role)
        bottom_t = [b + v for b, v in zip(bottom_t, t)]
        c = [u.get("cost_usd") or 0.0 for u in us]
        priced = priced or any(u.get("cost_usd") is not None for u in us)
        cost.bar(xs, c, bottom=bottom_c, label=role)
        bottom_c = [b + v for b, v in zip(bottom_c, c)]
    tok.set(xlabel="step", ylabel="tokens (prompt + completion)", title="Tokens per step by role")
    cost.set(xlabel="step", ylabel="USD", title="Cost per step by role")
    if not priced:
        cost.text(0.5, 0.5, "no price known\n(set --price-per-mtok IN,OUT)", ha="center", va="center", transform=cost.transAxes)
    for ax in (tok, cost):
        if roles:
            ax.legend(fontsize="small")
    return _save(fig, out / "usage.png")


def plot_evals(evals: dict[str, dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    names = [n for n, e in evals.items() if isinstance(e.get("baseline"), dict) and isinstance(e.get("library"), dict)]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        e = evals[name]
        k = e.get("k", "k")
        for i, (metric, ci_key, label) in enumerate((("mean_at_k", "ci95", f"Mean@{k}"), ("pass_at_k", "pass_ci95", f"Pass@{k}"))):
            for j, arm in enumerate(("baseline", "library")):
                v = e[arm].get(metric, 0.0)
                ci = e[arm].get(ci_key) or [v, v]
                ax.bar(i * 3 + j, v, yerr=[[v - ci[0]], [ci[1] - v]], capsize=4,
                       color="tab:gray" if arm == "baseline" else "tab:green", label=arm if i == 0 else None)
            ax.text(i * 3 + 0.5, -0.12, label, ha="center", transform=ax.get_xaxis_transform())
        ax.set_xticks([])
        ax.set_ylim(0, 1.05)
        d = e.get("diff") or {}
        sig = "significant" if d.get("significant") else "no significant difference"
        ax.set_title(f"{name}\nMean diff {d.get('mean', 0):+.3f}, p = {d.get('p_value', float('nan')):.3g} ({sig})", fontsize="small")
        ax.legend(fontsize="small", loc="upper left")
    return _save(fig, out / "eval.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f4f4f4} img{max-width:100%;display:block;margin:.5em 0 1.5em}
.missing{background:#fff4e5;border:1px solid #f0c36d;padding:.5em 1em} pre{background:#f7f7f7;padding:1em;overflow:auto}
.retired{color:#999}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _table(headers: list[str], rows: list[list[Any]], row_class: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr class=\"{_e(row_class[i]) if row_class else ''}\">" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _library_section(run: RunData) -> str:
    if run.library is None:
        return "<p>No library version found.</p>"
    exps = run.library.get("experiences") or []
    rows, classes = [], []
    for e in sorted(exps, key=lambda e: (e.get("status") != "active", e.get("created_step", 0))):
        prov, st = e.get("provenance") or {}, e.get("stats") or {}
        origin = f"epoch {(prov.get('epoch') or 0) + 1}, step {prov.get('step')}" if prov.get("step") is not None else ""
        rows.append([e.get("id"), e.get("text"), e.get("status"), e.get("created_step"), e.get("updated_step"), origin,
                     ", ".join(prov.get("query_ids") or [])[:120], ", ".join(prov.get("merged_from") or []),
                     st.get("retrieved", 0), st.get("cited", 0), st.get("helpful", 0), st.get("harmful", 0)])
        classes.append("" if e.get("status") == "active" else "retired")
    table = _table(["id", "lesson", "status", "created", "updated", "from", "source queries", "merged from",
                    "shown", "cited", "helpful", "harmful"], rows, classes)

    def credit(e: dict[str, Any]) -> int:
        st = e.get("stats") or {}
        return int(st.get("helpful", 0)) - int(st.get("harmful", 0))

    credited = [e for e in exps if (e.get("stats") or {}).get("helpful") or (e.get("stats") or {}).get("harmful")]
    if credited:
        top = sorted(credited, key=credit, reverse=True)[:5]
        worst = sorted(credited, key=credit)[:5]
        cols = ["id", "lesson", "helpful", "harmful"]
        pick = lambda es: [[e["id"], e["text"], e["stats"].get("helpful", 0), e["stats"].get("harmful", 0)] for e in es]  # noqa: E731
        extremes = (f"<h3>Most helpful lessons</h3>{_table(cols, pick(top))}"
                    f"<h3>Most harmful lessons</h3>{_table(cols, pick([e for e in worst if credit(e) < 0] or worst))}")
    else:
        extremes = ("<h3>Most helpful and most harmful lessons</h3><p>No usage credit recorded yet: no lesson has been "
                    "cited by id in a judged answer.</p>")
    active = sum(1 for e in exps if e.get("status") == "active")
    return (f"<h2>Library after step {_e(run.library.get('step'))}: {active} active lessons</h2>{extremes}"
            f"<h3>All lessons</h3>{table}")


def _eval_section(run: RunData) -> str:
    rows = []
    for name, e in run.evals.items():
        b, lib, d = e.get("baseline") or {}, e.get("library") or {}, e.get("diff") or {}
        rows.append([name, e.get("n_problems"), e.get("k"), e.get("n"), e.get("seeds"), b.get("mean_at_k"), b.get("ci95"),
                     lib.get("mean_at_k"), lib.get("ci95"), d.get("mean"), d.get("ci95"), d.get("p_value"),
                     e.get("verdict", "")])
    parts = ["<h2>Evaluations</h2>"]
    parts.append(_table(["name", "problems", "k", "n", "seeds", "baseline Mean@k", "95% CI", "library Mean@k", "95% CI",
                         "difference", "95% CI", "p", "verdict"], rows) if rows else "<p>No saved evaluation (run tfgrpo eval --library on this run).</p>")
    if run.selection:
        s = run.selection
        cand = [[c.get("epoch"), c.get("step"), c.get("library_size"), c.get("mean_at_k"), c.get("ci95")] for c in s.get("candidates", [])]
        parts.append(f"<h3>Best-val selection: kept epoch {_e(s['chosen']['epoch'])} (step {_e(s['chosen']['step'])}); "
                     f"baseline {_e((s.get('baseline') or {}).get('mean_at_k'))}, {_e(s.get('metric'))}</h3>")
        parts.append(_table(["epoch", "step", "library size", "validation score", "95% CI"], cand))
    return "".join(parts)


@dataclass
class Report:
    html: Path
    plots: list[Path]
    missing: list[str]


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Report:
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[Path, str]] = []
    if run.steps:
        plots += [(plot_reward(run.steps, out), "reward per step"), (plot_library(run.steps, out), "library per step"),
                  (plot_usage(run.steps, out), "tokens and cost per step")]
    if any(isinstance(e.get("library"), dict) for e in run.evals.values()):
        plots.append((plot_evals(run.evals, out), "evaluation, baseline vs library"))
    cfg = run.config or {}
    spend = run.spend
    facts = [
        ["status", run_status(run)], ["task", cfg.get("task")],
        ["policy", run.models[0]], ["judge", run.models[1] or "-"],
        ["steps", len(run.steps)], ["library size", run.steps[-1].get("library_size") if run.steps else None],
        ["tokens", f"{spend.tokens:,}"], ["LLM calls", spend.calls],
        ["cost", f"${spend.cost:.4f}" if not spend.unpriced else f"unknown (no price for {', '.join(spend.unpriced)})"],
        ["leaks caught", sum(s.get("ops_leaked", 0) for s in run.steps)],
    ]
    if run.status and run.status.get("reason"):
        facts.append(["stopped because", run.status["reason"]])
    body = [f"<h1>tfgrpo run {_e(run.path.name)}</h1>", _table(["", ""], facts)]
    if run.missing:
        body.append('<div class="missing"><b>Missing from this run directory</b> (the report shows what exists):<ul>'
                    + "".join(f"<li>{_e(m)}</li>" for m in run.missing) + "</ul></div>")
    body += [f"<h2>{_e(alt.capitalize())}</h2>{_img(p, alt)}" for p, alt in plots]
    body += [_eval_section(run), _library_section(run),
             "<h2>Run config</h2><pre>" + _e(yaml.safe_dump(run.config, sort_keys=False) if run.config else "(config.yaml missing)") + "</pre>"]
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tfgrpo run {_e(run.path.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return Report(html=html_path, plots=[p for p, _ in plots], missing=run.missing)
