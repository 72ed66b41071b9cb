"""What a Router needs to know about its pydantic union: its models and each model's type label."""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

# The field a union is taken to be tagged by when it names no discriminator of its own.
DEFAULT_DISCRIMINATOR = "type"


@dataclass(frozen=True)
class UnionSchema:
    """The models of a (discriminated) union and a stable label for each, for logs and counters.

    A model's label is its first tag (`"LINK_CLICK"`) when the union has a string discriminator,
    else its class name.
    """

    models: tuple[type[pydantic.BaseModel], ...]
    discriminator: str | None
    labels: dict[type[pydantic.BaseModel], str]
    #: every tag value a model declares -> that model's label
    labels_by_tag: dict[str, str]

    @classmethod
    def of(cls, union: Any) -> UnionSchema:
        models: list[type[pydantic.BaseModel]] = []
        discriminator = _flatten(union, models)
        if not models:
            raise TypeError(f"Router needs a pydantic model or a union of models; got {union!r}")
        if discriminator is None and all(_tags(m, DEFAULT_DISCRIMINATOR) for m in models):
            discriminator = DEFAULT_DISCRIMINATOR
        labels: dict[type[pydantic.BaseModel], str] = {}
        labels_by_tag: dict[str, str] = {}
        for model in models:
            tags = _tags(model, discriminator) if discriminator else []
            labels[model] = tags[0] if tags else model.__name__
            labels_by_tag.update((tag, labels[model]) for tag in tags)
        return cls(tuple(models), discriminator, labels, labels_by_tag)

    def describe(self) -> str:
        return " | ".join(model.__name__ for model in self.models)

    def label_of_body(self, body: object) -> str | None:
        """The label of the model a raw (invalid) JSON body claims to be, if its tag is a known one."""
        if self.discriminator is None or not isinstance(body, dict):
            return None
        for key in self._wire_keys():
            tag = body.get(key)
            if isinstance(tag, str) and tag in self.labels_by_tag:
                return self.labels_by_tag[tag]
        return None

    def _wire_keys(self) -> list[str]:
        assert self.discriminator is not None
        keys = [self.discriminator]
        for model in self.models:
            field = model.model_fields.get(self.discriminator)
            if field is not None and isinstance(field.alias, str) and field.alias not in keys:
                keys.append(field.alias)
        return keys


def _flatten(tp: Any, models: list[type[pydantic.BaseModel]]) -> str | None:
    """Collect the models of `tp` into `models`; return the discriminator field name if one is named."""
    discriminator: str | None = None
    if typing.get_origin(tp) is typing.Annotated:
        inner, *metadata = typing.get_args(tp)
        for item in metadata:
            name = item.discriminator if isinstance(item, FieldInfo) else item
            if isinstance(name, pydantic.Discriminator):
                name = name.discriminator
            if isinstance(name, str):
                discriminator = name
        inner_discriminator = _flatten(inner, models)
        return discriminator or inner_discriminator
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            discriminator = _flatten(member, models) or discriminator
        return discriminator
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        if tp not in models:
            models.append(tp)
        return None
    raise TypeError(f"a Router routes pydantic models; {tp!r} in its union is not one")


def _tags(model: type[pydantic.BaseModel], field_name: str) -> list[str]:
    """The Literal values of `model.<field_name>`, as strings; [] if it is not a Literal field."""
    field = model.model_fields.get(field_name)
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return []
    return [str(v.value) if isinstance(v, enum.Enum) else str(v) for v in typing.get_args(field.annotation)]
