"""LoRA/QLoRA fine-tuning on scenario- and task-specific prompts.

``build_examples`` turns a scenario's training interactions into instruction examples with the
serving-time prompt renderer; ``finetune`` trains and saves an adapter that a
:class:`~ragrec.inference.Recommender` loads by scenario name; ``ragrec.finetune.scenario``
scaffolds a new scenario from CSV files and runs the whole path (``ragrec scenario new``,
``ragrec finetune``); ``fit_reranker`` fits the learning-to-rank second stage (no LoRA).
"""

import importlib

_WHERE = {
    "Example": "ragrec.finetune.examples",
    "ExampleSet": "ragrec.finetune.examples",
    "FinetuneConfig": "ragrec.finetune.config",
    "FinetuneResult": "ragrec.finetune.trainer",
    "build_examples": "ragrec.finetune.examples",
    "finetune": "ragrec.finetune.trainer",
    "fit_reranker": "ragrec.finetune.ltr",
    "RerankerConfig": "ragrec.finetune.config",
    "to_dataset": "ragrec.finetune.examples",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragrec.finetune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
