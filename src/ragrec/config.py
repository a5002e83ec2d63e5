"""Loading pydantic configs from YAML files and ``key=value`` overrides, with errors naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ragrec.errors import DataFormatError, RagrecError

__all__ = ["load_config", "parse_overrides", "model_from_yaml", "validation_message"]

M = TypeVar("M", bound=BaseModel)


def _ragrec_model(title: str) -> type[BaseModel] | None:
    """The ragrec pydantic model called ``title`` (the name a ValidationError carries), if any."""
    todo, seen = list(BaseModel.__subclasses__()), set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__name__ == title and cls.__module__.startswith("ragrec"):
            return cls
        todo.extend(cls.__subclasses__())
    return None


def validation_message(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for a pydantic error: the model, every bad field with pydantic's reason (which
    lists allowed values for a choice), and the valid field names when a key is unknown."""
    model = model or _ragrec_model(error.title)
    parts = []
    for err in error.errors():
        field = ".".join(map(str, err["loc"])) or "value"
        given = (
            f" (got {err['input']!r})"
            if err["type"] != "extra_forbidden" and not isinstance(err["input"], dict)
            else ""
        )
        parts.append(f"{field}: {err['msg']}{given}")
    line = f"{error.title}: " + "; ".join(parts)
    if model is not None and any(err["type"] == "extra_forbidden" for err in error.errors()):
        line += f" (valid fields: {', '.join(model.model_fields)})"
    return line


def model_from_yaml(model: type[M], path: str | PathLike[str]) -> M:
    """Validate the YAML file ``path`` as ``model``; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"unreadable YAML ({e})") from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise DataFormatError(path, validation_message(e, model)) from None


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=50", "dropout=0.2"]`` -> ``{"epochs": 50, "dropout": 0.2}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RagrecError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config(
    model: type[M], path: str | PathLike[str] | None = None, overrides: Sequence[str] = (), section: str | None = None
) -> M:
    """Build ``model`` from an optional YAML file (optionally one ``section`` of it) plus overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise RagrecError(f"{p}: unreadable config ({e})") from None
        if section is not None and isinstance(raw, dict) and section in raw:
            raw = raw[section]
        if not isinstance(raw, dict):
            raise RagrecError(f"{p}: expected a mapping of settings")
        values.update(raw)
    values.update(parse_overrides(overrides))
    try:
        return model(**values)
    except ValidationError as e:
        raise RagrecError(validation_message(e, model)) from None
