"""Loading pydantic configs from YAML files and ``key=value`` overrides, with errors naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ragrec.errors import DataFormatError, RagrecError

__all__ = ["load_config", "parse_overrides", "merge_settings", "model_from_yaml", "validation_message"]

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


def _nested_model(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``loc`` (``("interactions", "x")`` -> the model
    of ``interactions``), following optional and list annotations; None when it cannot tell."""
    import typing

    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        ann = current.model_fields[part].annotation
        args = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = args[0] if args else ann
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validation_message(error: ValidationError, model: type[BaseModel] | None = None, *, title: bool = True) -> str:
    """One line for a pydantic error: the model (with ``title``), every bad field with pydantic's
    reason (which lists allowed values for a choice), and the valid field names where a key is unknown."""
    model = model or _ragrec_model(error.title)
    parts = []
    for err in error.errors():
        field = ".".join(map(str, err["loc"])) or "value"
        given = (
            f" (got {err['input']!r})"
            if err["type"] != "extra_forbidden" and not isinstance(err["input"], dict)
            else ""
        )
        line = f"{field}: {err['msg']}{given}"
        if err["type"] == "extra_forbidden" and model is not None:
            holder = _nested_model(model, tuple(err["loc"]))
            if holder is not None:
                line += f" (valid fields: {', '.join(holder.model_fields)})"
        parts.append(line)
    return (f"{error.title}: " if title else "") + "; ".join(parts)


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
        raise DataFormatError(path, validation_message(e, model, title=False)) from None


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=50", "dropout=0.2"]`` -> ``{"epochs": 50, "dropout": 0.2}`` (values parsed as YAML);
    a dotted key sets a nested setting: ``residual.examples=500`` -> ``{"residual": {"examples": 500}}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = [k.strip() for k in key.split(".")]
        if not sep or not all(parts):
            raise RagrecError(f"--set expects key=value, got {pair!r}")
        where = out
        for k in parts[:-1]:
            where = where.setdefault(k, {})
            if not isinstance(where, dict):
                raise RagrecError(f"--set {pair!r}: {k!r} is set to a value and to nested keys")
        where[parts[-1]] = yaml.safe_load(value)
    return out


def merge_settings(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` on top, nested mappings merged key by key (not replaced whole)."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
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
