"""What every config model shares: strict pydantic models, the ``flag(...)`` marker the CLI
generates its options from, YAML reading and one-line validation errors.

Each mode owns its config (``tfgrpo.training_free.config.RunConfig``,
``tfgrpo.params.config.ParamsConfig``); a setting is declared once, on one field, with its
default, its description and (optionally) its flag.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from tfgrpo.errors import UserError
from tfgrpo.nesting import yaml_load

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated, and
    true/false is no number (pydantic would read ``group_size: true`` as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            kinds = _kinds(cls.model_fields[info.field_name].annotation)
            if kinds & {int, float} and not kinds & {bool, Any}:
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (through Optional, unions and Annotated)."""
    args = get_args(annotation)
    if not args or get_origin(annotation) is Literal:
        return {annotation}
    return (
        set().union(*(_kinds(a) for a in args))
        if get_origin(annotation) in (Union, UnionType, Annotated)
        else {get_origin(annotation)}
    )


def flag(name: str, short: str | None = None) -> dict[str, Any]:
    """``Field(..., json_schema_extra=flag("group-size"))`` exposes the field as ``--group-size``."""
    extra: dict[str, Any] = {"flag": name}
    if short:
        extra["short"] = short
    return extra


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:  # nesting past nesting.MAX_DEPTH included
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{p}: invalid YAML{where}: {what}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping at the top level")
    return data


def build(model: type[M], data: dict[str, Any] | M) -> M:
    """Validate a config; a bad value becomes one line naming the field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not where:
            raise UserError(msg) from None
        if err["type"] == "extra_forbidden":
            raise UserError(
                f"unknown config key {where}; accepted there: {', '.join(_fields_at(model, err['loc'][:-1]))}"
            ) from None
        name = _flag_at(model, err["loc"])
        raise UserError(f"invalid config value for {where}{f' (--{name})' if name else ''}: {msg}") from None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a config mapping accepts at ``loc`` (a path of nested models)."""
    for key in loc:
        info = model.model_fields.get(str(key))
        ann = info.annotation if info else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def setting_name(model: type[BaseModel], dotted: str) -> str:
    """How a user names the setting at ``dotted`` (``sampling.group_size``): its flag, else the YAML path."""
    flag_name = _flag_at(model, tuple(dotted.split(".")))
    return f"--{flag_name}" if flag_name else dotted


def _flag_at(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The command-line flag of the field at ``loc``, if it has one."""
    for i, key in enumerate(loc):
        info = model.model_fields.get(str(key))
        if info is None:
            return None
        if i == len(loc) - 1:
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            return extra.get("flag")
        ann = info.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return None


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
