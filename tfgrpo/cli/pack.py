"""``tfgrpo pack export|import|verify|show|diff|merge``: experience packs (see experience_store.pack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.text import Text
from rich.table import Table

from experience_store import Library, Pack, spec_label
from experience_store.pack import MERGE_THRESHOLD
from tfgrpo.cli.console import emit, err_console, experience_row, plain, user_errors
from tfgrpo.errors import UserError
from tfgrpo.nesting import json_loads
from tfgrpo.rundir import CONFIG, LIBRARY, STEPS, library_dir


def _read_eval(source: Path) -> dict[str, Any]:
    try:
        evals = json_loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # also not UTF-8, nested too deeply, or an int past Python's digit limit
        raise UserError(f"cannot read eval results {source}: {e}") from None
    if not isinstance(evals, dict):
        raise UserError(f"eval results {source} must be a JSON object (tfgrpo eval --json output)")
    return evals


def manifest_table(pack: Pack, title: str) -> Table:
    m = pack.manifest
    t = Table(title=plain(title), title_justify="left", show_header=False)
    for key, value in (
        ("name", m.name),
        ("format", f"{m.format} v{m.format_version}"),
        ("toolkit", m.toolkit_version),
        ("task", m.task),
        ("policy", m.policy_model),
        ("judge", m.judge_model),
        ("source", f"{m.source_run}@{m.source_step}" if m.source_run else None),
        ("embedding", spec_label(m.embedding)),
        ("lessons", m.counts.get("experiences")),
        ("retired", m.counts.get("retired")),
        ("history ops", m.counts.get("history")),
        ("created", m.created),
        ("injection", _injection_label(pack)),
        ("evaluation", _eval_label(m.eval)),
    ):
        t.add_row(key, plain("n/a" if value is None else value))
    return t


def _injection_label(pack: Pack) -> str:
    s = pack.injection_settings()
    return f"{s.mode}, {s.budget_tokens} tokens, top {s.top_k}" + ("" if pack.manifest.injection else " (defaults)")


def _eval_label(ev: dict[str, Any] | None) -> str | None:
    """The recorded evaluation in one line: library vs baseline Mean@k, the difference and its verdict."""
    if not ev or not isinstance(ev.get("library"), dict) or not isinstance(ev.get("baseline"), dict):
        return None

    def num(v: Any, fmt: str) -> str:  # a pack's numbers are the sender's: anything else shows as "?"
        return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"

    k, d = ev.get("k", "?"), ev.get("diff") if isinstance(ev.get("diff"), dict) else {}
    line = (
        f"library {num(ev['library'].get('mean_at_k'), '.3f')} vs baseline "
        f"{num(ev['baseline'].get('mean_at_k'), '.3f')} (Mean@{k}, {ev.get('n_problems', '?')} problems)"
    )
    if isinstance(d.get("mean"), (int, float)):
        line += f", difference {num(d['mean'], '+.3f')}" + (f", p {num(d['p_value'], '.3g')}" if "p_value" in d else "")
    return line + (f"; {ev['verdict']}" if ev.get("verdict") else "")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Portable experience packs: export, import, verify, show, diff, merge.", no_args_is_help=True
    )
    app.add_typer(group, name="pack")
    json_opt = typer.Option(False, "--json", help="Print one JSON object as the last stdout line")
    trust_opt = typer.Option(
        False,
        "--trust-embedding",
        help="Use the pack's own embedder when it is not the offline "
        "lexical or e5 ones (its model name chooses where lessons and queries are sent)",
    )

    @group.command("export")
    @user_errors
    def export_cmd(
        run: Path = typer.Argument(..., help="Run directory"),
        out: Path = typer.Option(..., "--out", "-o", help="Pack to write: x.zip, or a directory"),
        step: Optional[int] = typer.Option(
            None,
            "--step",
            help="Library as it was after this step (default: the one --select best-val kept, else the latest)",
        ),
        eval_file: Optional[Path] = typer.Option(
            None,
            "--eval",
            help="Eval results to record (tfgrpo eval --json output; default: the run's eval.json when it evaluated the exported step)",
        ),
        name: Optional[str] = typer.Option(None, "--name", help="Pack name (default: the run's)"),
        as_json: bool = json_opt,
    ) -> None:
        """Write a run's library (with the ops that built it) as a verifiable pack."""
        from tfgrpo import api

        pack = api.export_pack(
            run, out, step=step, eval_summary=_read_eval(eval_file) if eval_file else None, name=name
        )
        if not pack.active:
            err_console.print(plain(f"warning: {out} holds no lessons (the run's library is empty): serving it changes "
                                    "nothing"), highlight=False, soft_wrap=True)  # fmt: skip
        emit(
            [manifest_table(pack, f"wrote {out}")], {"pack": str(out), **pack.manifest.model_dump(mode="json")}, as_json
        )

    @group.command("verify")
    @user_errors
    def verify_cmd(pack: Path = typer.Argument(..., help="Pack (zip or directory)"), as_json: bool = json_opt) -> None:
        """Check paths, sizes, schema, format version and checksums; exit 2 with the reason if any fails."""
        p = Pack.load(pack)
        if not as_json:
            err_console.print(plain(f"ok: {pack} ({p.manifest.counts.get('experiences', 0)} lessons, checksums match)"))
        emit(
            [],
            {
                "ok": True,
                "pack": str(pack),
                "counts": p.manifest.counts,
                "sha256": {n: f.sha256 for n, f in p.manifest.files.items()},
            },
            as_json,
        )

    @group.command("show")
    @user_errors
    def show_cmd(
        pack: Path = typer.Argument(..., help="Pack (zip or directory)"),
        query: Optional[str] = typer.Option(None, "--query", help="Show what would be injected for this query"),
        trust_embedding: bool = trust_opt,
        as_json: bool = json_opt,
    ) -> None:
        """The manifest and the lessons (or, with --query, the block injected for it)."""
        p = Pack.load(pack, trust_embedding=trust_embedding)
        lessons = Table(title="lessons", title_justify="left")
        lessons.add_column("id")
        lessons.add_column("lesson")
        injected = p.inject(query) if query is not None else None
        for e in p.active:
            if injected is None or e.id in injected.ids:
                lessons.add_row(plain(e.id), plain(e.text))
        payload = {"manifest": p.manifest.model_dump(mode="json"), "experiences": [experience_row(e) for e in p.active]}
        if injected is not None:
            payload["injected"] = {
                "ids": injected.ids,
                "tokens": injected.tokens,
                "mode": injected.mode,
                "text": injected.text,
            }
        shown: list[Any] = [manifest_table(p, str(pack)), lessons]
        if injected is not None:  # the block exactly as the prompt gets it
            lines = [f"injected for the query ({injected.mode}, {injected.tokens} tokens):", *injected.text.split("\n")]
            shown.append(Text("\n").join(plain(line) for line in lines))  # each line escaped, the breaks kept
        emit(shown, payload, as_json)

    @group.command("diff")
    @user_errors
    def diff_cmd(
        a: Path = typer.Argument(..., help="Pack A"),
        b: Path = typer.Argument(..., help="Pack B"),
        as_json: bool = json_opt,
    ) -> None:
        """Lessons only in A (-) and only in B (+), compared by text."""
        d = Pack.load(a).diff(Pack.load(b))
        t = Table(title=plain(f"{a} -> {b}: {d.same} in both"), title_justify="left")
        t.add_column("")
        t.add_column("id")
        t.add_column("lesson")
        for e in d.removed:
            t.add_row("-", plain(e.id), plain(e.text))
        for e in d.added:
            t.add_row("+", plain(e.id), plain(e.text))
        emit([t], d.as_dict(), as_json)

    @group.command("merge")
    @user_errors
    def merge_cmd(
        a: Path = typer.Argument(..., help="Pack A"),
        b: Path = typer.Argument(..., help="Pack B"),
        out: Path = typer.Option(..., "--out", "-o", help="Merged pack to write"),
        threshold: float = typer.Option(
            MERGE_THRESHOLD, "--threshold", help="Cosine similarity at which a lesson of B counts as a duplicate"
        ),
        trust_embedding: bool = trust_opt,
        as_json: bool = json_opt,
    ) -> None:
        """A's lessons plus B's that are not (near-)duplicates of one already kept."""
        merged, skipped = Pack.load(a, trust_embedding=trust_embedding).merge(
            Pack.load(b, trust_embedding=trust_embedding), threshold=threshold, name=out.stem
        )
        try:
            merged.write(out)
        except OSError as e:
            raise UserError(f"cannot write the pack to {out}: {e.strerror or e}") from None
        emit(
            [manifest_table(merged, f"wrote {out}; {len(skipped)} duplicates skipped")],
            {"pack": str(out), "experiences": len(merged.active), "skipped": skipped},
            as_json,
        )

    @group.command("import")
    @user_errors
    def import_cmd(
        pack: Path = typer.Argument(..., help="Pack (zip or directory)"),
        into: Path = typer.Option(
            ...,
            "--into",
            help="New directory to train in (tfgrpo train --out DIR starts from the pack), or a library directory; created if missing",
        ),
        reembed: bool = typer.Option(
            False, "--reembed", help="Re-embed the pack with the library's embedding when the specs differ"
        ),
        trust_embedding: bool = trust_opt,
        as_json: bool = json_opt,
    ) -> None:
        """Verify a pack, then add its lessons to a library (nothing is written if verification fails).
        Into a directory without a run they become version 0, the library a run trained there starts from."""
        p = Pack.load(pack, trust_embedding=trust_embedding)
        try:
            target = library_dir(into)
        except UserError:
            target = into / LIBRARY
        if (target.parent / STEPS).is_file() or (target.parent / CONFIG).is_file():
            raise UserError(
                f"{target.parent} holds a run (finished, running or starting), whose resume would drop the "
                "import: import into a new directory and train there (tfgrpo train --out DIR)"
            )
        if not list((target / "versions").glob("*.json")):
            p.check_embedding()  # a new library takes the pack's embedder: refused before anything is created
        lib = Library(target)
        results = lib.import_pack(p, reembed=reembed, step=0 if max(lib.versions(), default=0) == 0 else None)
        added = sum(1 for r in results if r.status == "applied")
        if not as_json:
            err_console.print(
                plain(f"imported {added} lessons into {target} (step {lib.state.step}, {len(lib)} active)")
            )
        emit(
            [],
            {
                "library": str(target),
                "step": lib.state.step,
                "added": added,
                "skipped": sum(1 for r in results if r.status != "applied"),
                "size": len(lib),
            },
            as_json,
        )
