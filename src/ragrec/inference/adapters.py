"""LoRA adapters on disk: peft's safetensors folder plus ``ragrec_adapter.json`` metadata.

The metadata names the base model and a fingerprint of its weights, the scenario, the tasks and
the prompt template versions it was trained with, the data split and the validation metrics.
It also records the SHA-256 of the weights file, so a damaged or swapped adapter is refused at
load time instead of silently serving noise. Folders are written atomically (staging folder,
then rename): an interrupted save leaves the previous adapter, or nothing, never half of one.

The fingerprint is the mean of the first 32 rows of the input embedding table. The embedding
stays unquantised under bitsandbytes 8/4-bit, so the same base loaded in fp32, fp16 or 4-bit
gives the same numbers within ``1e-3``; a different base model does not.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from ragrec.errors import CacheError, RagrecError
from ragrec.io import atomic_directory, atomic_write_text, read_json_meta, sha256_file

__all__ = ["AdapterInfo", "model_fingerprint", "save_adapter", "read_adapter_info", "check_adapter"]

META = "ragrec_adapter.json"
WEIGHTS = "adapter_model.safetensors"
FORMAT_VERSION = 1
FINGERPRINT_ROWS = 32
FINGERPRINT_ATOL = 1e-3


@dataclass
class AdapterInfo:
    """What an adapter was trained on and how well it did (``ragrec_adapter.json``)."""

    base_model: str
    base_fingerprint: list[float]
    scenario: str
    tasks: dict[str, int]  # task -> training examples
    templates: dict[str, str]  # task -> template version
    split: str
    metrics: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # config, seconds, steps, stop reason
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION


def model_fingerprint(model) -> list[float]:
    """Means of the first rows of ``model``'s input embedding (see module docstring)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        rows = base.get_input_embeddings().weight[:FINGERPRINT_ROWS].float().mean(dim=1)
    return [round(float(x), 6) for x in rows.cpu()]


def save_adapter(model, adapter_name: str, folder: str | PathLike[str], info: AdapterInfo) -> Path:
    """Write the ``adapter_name`` adapter of peft ``model`` with ``info`` to ``folder``, atomically."""
    folder = Path(folder)
    with atomic_directory(folder) as staging:
        model.save_pretrained(str(staging), selected_adapters=[adapter_name], safe_serialization=True)
        # peft writes a non-default adapter under a subfolder named after it
        saved = staging / adapter_name if (staging / adapter_name / WEIGHTS).is_file() else staging
        if saved != staging:
            for child in saved.iterdir():
                child.replace(staging / child.name)
            saved.rmdir()
        if not (staging / WEIGHTS).is_file():
            raise RagrecError(f"peft wrote no {WEIGHTS} for adapter {adapter_name!r}")
        info.weights_sha256 = sha256_file(staging / WEIGHTS)
        atomic_write_text(staging / META, json.dumps(asdict(info), indent=2) + "\n")
    return folder


def read_adapter_info(folder: str | PathLike[str]) -> AdapterInfo | None:
    """The metadata of an adapter folder (``None`` for a plain peft folder without it)."""
    folder = Path(folder)
    if not (folder / META).is_file():
        return None
    meta = read_json_meta(folder / META, "ragrec adapter")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{folder}: adapter format {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    known = AdapterInfo.__dataclass_fields__
    try:
        return AdapterInfo(**{k: v for k, v in meta.items() if k in known})
    except TypeError as e:
        raise CacheError(f"{folder / META}: incomplete adapter metadata ({e})") from None


def check_adapter(
    folder: str | PathLike[str], model=None, *, base_model: str | None = None, require_meta: bool = False
) -> AdapterInfo | None:
    """Refuse an adapter folder that is incomplete, damaged, or trained on another base model.

    Returns its metadata (``None`` for a plain peft folder, which is accepted as it is unless
    ``require_meta``: a folder that ragrec saved with metadata must still have it)."""
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise RagrecError(f"{folder}: not a LoRA adapter folder (no adapter_config.json)")
    read_json_meta(folder / "adapter_config.json", "peft adapter")  # garbage -> CacheError, not a peft traceback
    info = read_adapter_info(folder)
    if info is None:
        if require_meta:
            raise CacheError(
                f"{folder}: {META} missing (the adapter was saved with it; its checksum cannot be checked)"
            )
        return None
    if not (folder / WEIGHTS).is_file():
        raise CacheError(f"{folder}: adapter weights {WEIGHTS} missing")
    if sha256_file(folder / WEIGHTS) != info.weights_sha256:
        raise CacheError(f"{folder}: {WEIGHTS} does not match the checksum in {META} (damaged or replaced)")
    if model is not None:
        have = model_fingerprint(model)
        if len(have) != len(info.base_fingerprint) or any(
            abs(a - b) > FINGERPRINT_ATOL for a, b in zip(have, info.base_fingerprint)
        ):
            raise RagrecError(
                f"{folder}: adapter trained on base model {info.base_model!r}, but the loaded model "
                f"{base_model or ''!s} has other weights (embedding fingerprint differs)"
            )
    return info
