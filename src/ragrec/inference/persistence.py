"""Saving and loading recommender folders (layout: :mod:`ragrec.inference.recommender`), atomically,
without loading any model; a folder that lost a part it was saved with is refused at load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from ragrec.data.dataset import InteractionData
from ragrec.errors import CacheError, RagrecError
from ragrec.inference.adapters import META as ADAPTER_META
from ragrec.inference.adapters import check_adapter
from ragrec.inference.config import RecommenderConfig
from ragrec.inference.rerank import Reranker
from ragrec.inference.scenario import Scenario, ScenarioConfig
from ragrec.io import atomic_directory, atomic_write_text, read_json_meta
from ragrec.prompts import TemplateRegistry
from ragrec.retrieval import Retriever, TextEncoder, load_encoder

__all__ = ["load_parts", "save_recommender", "save_scenario_config", "FORMAT_VERSION"]

FORMAT_VERSION = 1
PARTS = "parts.json"  # per scenario: the templates, adapter and text encoder it was saved with


def load_parts(
    path: str | PathLike[str], *, embedder=None, **overrides: Any
) -> tuple[RecommenderConfig, list[Scenario]]:
    """The config and scenarios of a saved recommender, without loading its model."""
    path = Path(path)
    meta = read_json_meta(path / "recommender.json", "recommender")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RagrecError(f"{path}: recommender format {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    config = RecommenderConfig(**{**meta["config"], **overrides})
    return config, [_load_scenario(path / "scenarios" / name, embedder) for name in meta["scenarios"]]


def save_recommender(path: str | PathLike[str], scenarios: Sequence[Scenario], config: RecommenderConfig) -> Path:
    """Write a recommender folder (see module docstring) without loading any model, atomically."""
    path = Path(path)
    with atomic_directory(path) as staging:
        for sc in scenarios:
            _save_scenario(sc, staging / "scenarios" / sc.name)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": config.model_dump(),
            "scenarios": [s.name for s in scenarios],
        }
        atomic_write_text(staging / "recommender.json", json.dumps(meta, indent=2) + "\n")
    return path


def save_scenario_config(path: str | PathLike[str], config: ScenarioConfig) -> None:
    """Replace one scenario's settings (fusion weight, learned fusion, item noun) in a saved
    recommender folder, atomically, leaving its data, retriever and adapter as they are."""
    target = Path(path) / "scenarios" / config.name / "scenario.json"
    if not target.is_file():
        raise RagrecError(f"{path}: no saved scenario {config.name!r}")
    atomic_write_text(target, config.model_dump_json(indent=2) + "\n")


def _save_scenario(sc: Scenario, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "scenario.json", sc.config.model_dump_json(indent=2) + "\n")  # see save_scenario_config
    sc.data.save(folder / "data")
    sc.retriever.save(folder / "retriever")
    if sc.text is not None:
        sc.text.save(folder / "text")
    for tpl in sc.templates:
        (folder / "templates").mkdir(exist_ok=True)
        atomic_write_text(folder / "templates" / f"{tpl.task}.yaml",
                          yaml.safe_dump(tpl.model_dump(mode="json", exclude_defaults=False), sort_keys=False))  # fmt: skip
    if sc.adapter is not None:
        check_adapter(sc.adapter)  # never copy a damaged adapter into a new folder
        shutil.copytree(sc.adapter, folder / "adapter")
    if sc.reranker is not None:
        sc.reranker.save(folder / "reranker")
    # What the folder must hold when it is loaded again: a part that goes missing later is refused
    # instead of silently replaced (the base model for an adapter, a built-in template).
    parts = {
        "templates": sorted(t.task for t in sc.templates),
        "adapter": None if sc.adapter is None else {"ragrec_meta": (folder / "adapter" / ADAPTER_META).is_file()},
        "text": sc.text is not None,
        "reranker": sc.reranker is not None,
    }
    atomic_write_text(folder / PARTS, json.dumps(parts, indent=2) + "\n")


def _check_parts(folder: Path) -> None:
    """Refuse a saved scenario that lost a part listed in its ``parts.json`` (folders saved before
    ragrec wrote that file are loaded as they are)."""
    if not (folder / PARTS).is_file():
        return
    parts = read_json_meta(folder / PARTS, "scenario parts list")
    missing = [
        f"templates/{t}.yaml" for t in parts.get("templates", []) if not (folder / "templates" / f"{t}.yaml").is_file()
    ]
    if parts.get("text") and not (folder / "text").is_dir():
        missing.append("text/")
    if parts.get("reranker") and not (folder / "reranker").is_dir():
        missing.append("reranker/")
    adapter = parts.get("adapter")
    if adapter is not None and not (folder / "adapter").is_dir():
        missing.append("adapter/")
    if missing:
        raise CacheError(f"{folder}: saved with {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         f"missing now; restore {'it' if len(missing) == 1 else 'them'} or save the recommender again")  # fmt: skip
    if adapter is not None:
        check_adapter(folder / "adapter", require_meta=bool(adapter.get("ragrec_meta")))


def _load_scenario(folder: Path, embedder=None) -> Scenario:
    if not folder.is_dir():
        raise RagrecError(f"{folder}: scenario folder missing")
    config = ScenarioConfig(**read_json_meta(folder / "scenario.json", "scenario"))
    _check_parts(folder)
    text = None
    if (folder / "text").is_dir():
        text = load_encoder(folder / "text")
        if not isinstance(text, TextEncoder):
            raise RagrecError(f"{folder / 'text'}: not a text encoder ({text.kind})")
        text._embedder = embedder
    templates = TemplateRegistry()
    if (folder / "templates").is_dir():
        templates.load_dir(folder / "templates")
    adapter = folder / "adapter" if (folder / "adapter").is_dir() else None
    reranker = Reranker.load(folder / "reranker") if (folder / "reranker").is_dir() else None
    return Scenario(config, InteractionData.load(folder / "data"), Retriever.load(folder / "retriever"), text,
                    templates, adapter, reranker)  # fmt: skip
