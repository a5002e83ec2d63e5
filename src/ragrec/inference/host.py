"""``ModelHost``: the one base model of a recommender, the LoRA adapters attached to it (one per
scenario that has one) and the lock under which a request switches to its adapter and runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from ragrec.inference.adapters import check_adapter
from ragrec.inference.models import LoadedModel

__all__ = ["ModelHost"]


class ModelHost:
    """Owns ``loaded`` and the adapters of ``adapters`` (name -> peft adapter folder), attached
    once; :meth:`use` holds the model with one adapter on (or every adapter off) while others
    wait. ``active`` is the adapter the last holder used (``None``: the base model)."""

    def __init__(self, loaded: LoadedModel, adapters: Mapping[str, Path] | None = None) -> None:
        self.loaded = loaded
        self.lock = threading.RLock()
        self.active: str | None = None
        self.adapter_names: dict[str, str] = {}  # owner name -> its peft adapter name (the owner's name when loaded)
        self._attach(dict(adapters or {}))

    def _attach(self, adapters: dict[str, Path]) -> None:
        if not adapters:
            return
        from peft import PeftModel

        model = self.loaded.model
        for name, path in adapters.items():
            check_adapter(path, model, base_model=self.loaded.source)
            self.adapter_names[name] = name
            if isinstance(model, PeftModel):
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
        model.eval()
        self.loaded.model = model

    @contextlib.contextmanager
    def use(self, adapter: str | None) -> Iterator[LoadedModel]:
        """Hold the model with ``adapter`` on (``None``: the base model, every adapter off)."""
        with self.lock:
            model = self.loaded.model
            if hasattr(model, "peft_config"):
                if adapter is not None:
                    model.base_model.enable_adapter_layers()
                    model.set_adapter(self.adapter_names.get(adapter, adapter))
                else:
                    model.base_model.disable_adapter_layers()
            self.active = adapter
            yield self.loaded
