"""CLI options generated from the config models, so a setting is declared once.

Every field carrying ``flag(...)`` becomes an option whose default is None ("not given"):
a given flag overrides the YAML config, which overrides the model's default.
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass
class FlagSpec:
    flag: str
    short: str | None
    path: tuple[str, ...]  # where the value goes in the command's config model
    field: FieldInfo
    py_type: Any

    @property
    def param(self) -> str:
        return "opt_" + self.flag.replace("-", "_")


def _base_type(annotation: Any) -> Any:
    """int | None -> int; Literal['a','b'] -> str; bool stays bool."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is Literal:
        return type(typing.get_args(annotation)[0])
    return annotation if annotation in (str, int, float, bool) else str


def _walk(model: type[BaseModel], prefix: tuple[str, ...] = ()):
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _walk(ann, prefix + (name,))
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "flag" in extra:
            yield extra["flag"], extra.get("short"), prefix + (name,), info


def collect(model: type[BaseModel], exclude: frozenset[str] = frozenset()) -> dict[str, FlagSpec]:
    """The flags of one command: every field of its config model that carries ``flag(...)``,
    except the ``exclude``d flag names."""
    specs: dict[str, FlagSpec] = {}
    for flag, short, path, info in _walk(model):
        if flag in exclude:
            continue
        if flag in specs:
            raise ValueError(
                f"--{flag} is declared twice in {model.__name__}: {'.'.join(specs[flag].path)} and {'.'.join(path)}"
            )
        specs[flag] = FlagSpec(flag, short, path, info, _base_type(info.annotation))
    return specs


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    ann = info.annotation
    choices = [a for a in typing.get_args(ann) if isinstance(a, str)] if typing.get_origin(ann) is Literal else []
    if choices:
        text += f" [{'|'.join(choices)}]"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, dict) and isinstance(default.get("name"), str):
        default = default["name"]  # a spec given by its name on the command line (--embedding lexical)
    if default not in (None, {}, []):
        text += f" (default: {default})"
    return text


def option_parameters(specs: dict[str, FlagSpec], panel: str | None = None) -> list[inspect.Parameter]:
    params = []
    for spec in specs.values():
        names = [f"--{spec.flag}/--no-{spec.flag}"] if spec.py_type is bool else [f"--{spec.flag}"]
        if spec.short:
            names.append(f"-{spec.short}")
        opt = typer.Option(None, *names, help=_help(spec.field), show_default=False, rich_help_panel=panel)
        params.append(
            inspect.Parameter(
                spec.param, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=typing.Optional[spec.py_type]
            )
        )
    return params


def with_generated_options(specs: dict[str, FlagSpec], panel: str | None = None) -> Callable[[Callable], Callable]:
    """Add the generated options to a command; the command receives them as ``flags``:
    a dict of flag name -> value for the flags the user gave."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "flags"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            flags = {s.flag: kwargs.pop(s.param) for s in specs.values() if kwargs.get(s.param) is not None}
            for s in specs.values():
                kwargs.pop(s.param, None)
            return fn(flags=flags, **kwargs)

        command.__signature__ = sig.replace(parameters=own + option_parameters(specs, panel))  # type: ignore[attr-defined]
        return command

    return wrap


def apply_flags(data: dict[str, Any], flags: dict[str, Any], specs: dict[str, FlagSpec]) -> dict[str, Any]:
    """Set each given flag at its nested path in ``data`` (a config mapping)."""
    for flag, value in flags.items():
        path = specs[flag].path
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


TASK_ARG_HELP = "Argument of the task function as key=value, repeatable (the value is read as YAML: 3, true, text)"


def parse_task_args(pairs: list[str] | None) -> dict[str, Any]:
    """``-T n=3 -T split=test`` -> ``{"n": 3, "split": "test"}``."""
    import yaml

    from tfgrpo.errors import UserError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UserError(f"-T {pair!r}: give a task argument as key=value, e.g. -T n=3")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def with_task_args(data: dict[str, Any], pairs: list[str] | None) -> dict[str, Any]:
    """A config mapping with the ``-T`` arguments on top of its ``task_args``."""
    given = parse_task_args(pairs)
    if given:
        data["task_args"] = {**(data.get("task_args") or {}), **given}
    return data


def describe_tasks(specs: dict[str, FlagSpec]) -> dict[str, FlagSpec]:
    """``--task``'s help lists every built-in task."""
    from tfgrpo.task_registry import builtin_task_names

    spec = specs.get("task")
    if spec is not None:
        field = copy.copy(spec.field)
        field.description = f"Task: a built-in one ({', '.join(builtin_task_names())}) or file.py:name" + (
            " (default: the --library's task)" if field.default is None else ""
        )
        spec.field = field
    return specs
