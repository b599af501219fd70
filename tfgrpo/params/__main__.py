"""``python -m tfgrpo.params --task toy --model tiny --json`` (also under ``accelerate launch -m``).

A plain entry point beside the ``tfgrpo train --mode params`` command: options come from the
``ParamsConfig`` fields that carry a flag; the last stdout line is the run summary as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys

from tfgrpo.errors import UserError
from tfgrpo.params.config import ParamsConfig, make_config


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tfgrpo.params", description=(ParamsConfig.__doc__ or "").strip())
    for name, field in ParamsConfig.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if "flag" not in extra:
            continue
        opt = f"--{extra['flag']}"
        help_text = f"{field.description} (default: {field.default})"
        if field.annotation in (bool, bool | None):
            ap.add_argument(opt, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            ap.add_argument(opt, dest=name, default=None, help=help_text)
    ap.add_argument("--resume", default=None, help="Run directory or checkpoint to continue from.")
    ap.add_argument("--json", action="store_true", help="Print the run summary as one JSON line on stdout.")
    ap.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    resume, as_json, quiet = args.pop("resume"), args.pop("json"), args.pop("quiet")
    try:
        cfg = make_config(**{k: v for k, v in args.items() if v is not None})
        from tfgrpo.params import run

        summary = run(cfg, resume=resume, progress=not quiet)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if as_json and os.environ.get("RANK", "0") == "0":  # one line under torchrun / accelerate launch
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
