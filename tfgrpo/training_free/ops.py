"""The library edits a judge writes: ``ProposedOp`` (one group's comparison: ADD, UPDATE, DELETE,
NONE) and ``ConsolidatedOp`` (a step's consolidation, which may also MERGE). Both validate alike
and become ``experience_store.ExperienceOp`` to be applied."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic_core import CoreSchema

from experience_store import ExperienceOp
from experience_store.credit import canonical_id

# A judge reply's model: its JSON schema allows no other keys (as strict structured outputs
# require); reading a reply still ignores extra keys.
STRICT_SCHEMA = ConfigDict(json_schema_extra={"additionalProperties": False})
TEXT_OPS = ("ADD", "UPDATE", "MERGE")  # the kinds that carry a lesson's text
# What each kind must carry, besides its reason: the JSON schema a judge is sent is one object per
# kind with exactly these fields required, so a constrained decoder (vLLM's guided decoding,
# OpenAI's strict mode, llama.cpp grammars) can only write ops the validators below accept.
NEEDS = {"ADD": ("text",), "UPDATE": ("id", "text"), "DELETE": ("id",), "MERGE": ("ids", "text"), "NONE": ()}
_FIELDS = {
    "id": {"type": "string", "description": "The library id of the lesson it changes, e.g. E3"},
    "ids": {"type": "array", "items": {"type": "string"}, "minItems": 2, "description": "The library ids it replaces"},
    "text": {"type": "string", "description": "The lesson: 'When <condition>, <strategy>.'"},
    "reason": {"type": "string", "description": "One sentence: why this edit"},
}


class ProposedOp(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    id: str | None = Field(None, description="Library id for UPDATE and DELETE, e.g. E3")
    text: str = Field("", description="The lesson: 'When <condition>, <strategy>.'")
    reason: str = Field("", description="One sentence: why this edit")

    @field_validator("op", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("id", mode="before")
    @classmethod
    def _lesson_id(cls, v: Any) -> Any:
        """A lesson id as the library writes it, however the judge wrote it ([E1], e1, 'E1 ', 1)."""
        return canonical_id(v) if v is not None else None

    @field_validator("text", "reason", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        """``null`` for a field the op does not use (a DELETE's text) is how models write "nothing"."""
        return "" if v is None else v

    @model_validator(mode="after")
    def _fields(self) -> "ProposedOp":
        """An op must carry what its kind needs, so that output cut off mid-op (which the tolerant
        parser can close) is caught and repaired instead of applied half-empty."""
        if self.op in TEXT_OPS and not self.text.strip():
            raise ValueError(f"{self.op} needs a non-empty text")
        if self.op in ("UPDATE", "DELETE") and not self.id:
            raise ValueError(f"{self.op} needs the id of the lesson it changes")
        if self.op == "MERGE" and len(getattr(self, "ids", [])) < 2:
            raise ValueError("MERGE needs at least two ids")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        """One object per kind (see ``NEEDS``), every field required and no other allowed."""
        kinds = cls.model_fields["op"].annotation.__args__  # type: ignore[union-attr]
        return {"title": cls.__name__, "anyOf": [_kind_schema(kind) for kind in kinds]}

    def to_experience(self) -> ExperienceOp:
        return ExperienceOp(
            op=self.op, id=self.id, ids=list(getattr(self, "ids", [])), text=self.text, reason=self.reason
        )


class ConsolidatedOp(ProposedOp):
    op: Literal["ADD", "UPDATE", "DELETE", "MERGE", "NONE"]  # type: ignore[assignment]
    id: str | None = Field(None, description="Library id for UPDATE and DELETE")
    ids: list[str] = Field(default_factory=list, description="Library ids replaced by a MERGE")
    text: str = Field("", description="Lesson text for ADD, UPDATE and MERGE")

    @field_validator("ids", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        return [canonical_id(i) for i in v] if isinstance(v, list) else v


def _kind_schema(kind: str) -> dict[str, Any]:
    fields = (*NEEDS[kind], "reason")
    return {
        "type": "object",
        "properties": {"op": {"type": "string", "enum": [kind]}, **{f: _FIELDS[f] for f in fields}},
        "required": ["op", *fields],
        "additionalProperties": False,
    }
