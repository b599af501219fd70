"""The plots of ``tfgrpo report`` (matplotlib, headless): reward, library edits, tokens and
cost per step, and saved evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OP_KINDS = ("ADD", "UPDATE", "MERGE", "DELETE", "RESTORE")


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
    """Tokens per step by role, and cost per step beside it when a price is known (no empty
    cost axis otherwise: the title says how to give a price)."""
    plt = _pyplot()
    xs = [s["step"] for s in steps]
    roles = sorted({r for s in steps for r in (s.get("usage") or {})})
    usage = {role: [(s.get("usage") or {}).get(role, {}) for s in steps] for role in roles}
    priced = any(u.get("cost_usd") is not None for us in usage.values() for u in us)
    fig, axes = plt.subplots(1, 2 if priced else 1, figsize=(10 if priced else 6, 4), squeeze=False)
    tok = axes[0][0]
    bottom_t, bottom_c = [0] * len(xs), [0.0] * len(xs)
    for role, us in usage.items():
        t = [(u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0) for u in us]
        tok.bar(xs, t, bottom=bottom_t, label=role)
        bottom_t = [b + v for b, v in zip(bottom_t, t)]
        if priced:
            c = [u.get("cost_usd") or 0.0 for u in us]
            axes[0][1].bar(xs, c, bottom=bottom_c, label=role)
            bottom_c = [b + v for b, v in zip(bottom_c, c)]
    tok.set(
        xlabel="step",
        ylabel="tokens (prompt + completion)",
        title="Tokens per step by role" + ("" if priced else "\n(no price known: cost needs --price-per-mtok IN,OUT)"),
    )
    if priced:
        axes[0][1].set(xlabel="step", ylabel="USD", title="Cost per step by role")
    for ax in axes[0]:
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
        for i, (metric, ci_key, label) in enumerate(
            (("mean_at_k", "ci95", f"Mean@{k}"), ("pass_at_k", "pass_ci95", f"Pass@{k}"))
        ):
            for j, arm in enumerate(("baseline", "library")):
                v = e[arm].get(metric, 0.0)
                ci = e[arm].get(ci_key) or [v, v]
                ax.bar(
                    i * 3 + j,
                    v,
                    yerr=[[v - ci[0]], [ci[1] - v]],
                    capsize=4,
                    color="tab:gray" if arm == "baseline" else "tab:green",
                    label=arm if i == 0 else None,
                )
            ax.text(i * 3 + 0.5, -0.12, label, ha="center", transform=ax.get_xaxis_transform())
        ax.set_xticks([])
        ax.set_ylim(0, 1.05)
        d = e.get("diff") or {}
        sig = "significant" if d.get("significant") else "no significant difference"
        ax.set_title(
            f"{name}\nMean diff {d.get('mean', 0):+.3f}, p = {d.get('p_value', float('nan')):.3g} ({sig})",
            fontsize="small",
        )
        ax.legend(fontsize="small", loc="upper left")
    return _save(fig, out / "eval.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
