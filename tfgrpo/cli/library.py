"""``tfgrpo library log|show|diff``: every step's library is a version; read them back."""

from __future__ import annotations

from pathlib import Path


import typer
from rich.table import Table

from experience_store import Library, LibraryState, diff_states
from tfgrpo.cli.console import emit, err_console, experience_row, plain, user_errors
from tfgrpo.errors import UserError
from tfgrpo.rundir import library_dir


def open_version(ref: str) -> tuple[Library, LibraryState, str]:
    """``RUN`` (latest) or ``RUN@STEP``: the library, the state at that step, and a label."""
    path, _, step = ref.rpartition("@") if "@" in ref and ref.rpartition("@")[2].isdigit() else (ref, "", "")
    lib = Library(library_dir(Path(path)))
    have = lib.versions()
    if not have:
        raise UserError(f"{path}: the library has no versions yet")
    if step:
        if int(step) not in have:
            raise UserError(f"{path}: no library version for step {step} (it has steps {have[0]} to {have[-1]})")
        return lib, lib.state_at(int(step)), f"{path}@{step}"
    return lib, lib.state, f"{path}@{have[-1]}"


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Read a run's library versions: log, show, diff.", no_args_is_help=True)
    app.add_typer(group, name="library")

    @group.command("log")
    @user_errors
    def log_cmd(
        run: Path = typer.Argument(..., help="Run directory (or its library/ folder)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line"),
    ) -> None:
        """One line per step: library size and what the step added, changed, retired."""
        lib = Library(library_dir(run))
        rows, prev = [], LibraryState()
        for step in lib.versions():
            state = lib.state_at(step)
            d = diff_states(prev, state)
            rows.append({"step": step, "size": len(state.active()), **{k: len(v) for k, v in d.items()}})
            prev = state
        t = Table(title=plain(f"Library versions of {run}"), title_justify="left")
        for col in ("step", "size", "added", "changed", "retired", "restored"):
            t.add_column(col, justify="right")
        for r in rows:
            t.add_row(*(str(r[c]) for c in ("step", "size", "added", "changed", "retired", "restored")))
        emit([t], {"run": str(run), "versions": rows}, as_json)

    @group.command("show")
    @user_errors
    def show_cmd(
        ref: str = typer.Argument(..., help="RUN or RUN@STEP"),
        retired: bool = typer.Option(False, "--retired", help="Also list retired lessons"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line"),
    ) -> None:
        """The lessons of one version with their usage stats."""
        _, state, label = open_version(ref)
        items = state.experiences if retired else state.active()
        t = Table(title=plain(f"{label}: {len(state.active())} active lessons"), title_justify="left")
        for col in ("id", "lesson", "status", "shown", "cited", "helpful", "harmful"):
            t.add_column(col, justify="left" if col in ("id", "lesson", "status") else "right")
        for e in items:
            s = e.stats
            t.add_row(
                plain(e.id), plain(e.text), e.status, str(s.retrieved), str(s.cited), str(s.helpful), str(s.harmful)
            )
        emit(
            [t],
            {
                "version": label,
                "step": state.step,
                "embedding": state.embedding,
                "experiences": [experience_row(e) for e in items],
            },
            as_json,
        )

    @group.command("diff")
    @user_errors
    def diff_cmd(
        a: str = typer.Argument(..., help="RUN@STEP (or RUN for its latest)"),
        b: str = typer.Argument(..., help="RUN@STEP (or RUN for its latest)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line"),
    ) -> None:
        """Lessons added, changed, retired and restored between two versions."""
        _, sa, la = open_version(a)
        _, sb, lb = open_version(b)
        d = diff_states(sa, sb)
        t = Table(title=plain(f"{la} -> {lb}"), title_justify="left")
        t.add_column("", justify="left")
        t.add_column("id")
        t.add_column("lesson")
        marks = {"added": "+", "changed": "~", "retired": "-", "restored": "+", "removed": "-"}
        for kind, items in d.items():
            for e in items:
                t.add_row(marks[kind], plain(e.id), plain(e.text))
        emit([t], {"a": la, "b": lb, **{k: [experience_row(e) for e in v] for k, v in d.items()}}, as_json)
        if not as_json:
            counts = ", ".join(f"{len(v)} {k}" for k, v in d.items() if v)
            err_console.print(plain(f"{la} -> {lb}: {counts or 'no differences'}"), highlight=False, markup=False)


__all__ = ["experience_row", "open_version", "register"]
