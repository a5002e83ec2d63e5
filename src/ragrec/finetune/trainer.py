"""LoRA / QLoRA training of a scenario's adapter with transformers' ``Trainer``.

The loss is the cross-entropy of the answer tokens only (prompt tokens are masked); for a rank
answer (``rank_loss="choices"``) it is taken over the candidates' letters only, the scores the
ranker reads at serving time. Batches are
left-padded, so every answer ends at the last position and only the last few positions' logits
are computed (``logits_to_keep``): for a one-letter rank answer that skips the 49k-wide output
layer on ~800 prompt positions, a fifth of the model's compute.

Validation is the LLM stage itself on ``eval_users`` validation users (train-only histories,
docs/evaluation.md), through the same ``Recommender`` paths as serving: NDCG@10 of the adapter ranking
the retriever's candidates when the mixture ranks; otherwise ROUGE-L of its explanations against
the users' held-out reviews, or the MAE of its predicted ratings, or the share of chat answers
kept without fallback (``validation_metric``). Checkpoints are saved at each validation;
``EarlyStoppingCallback`` stops after ``patience`` validations without improvement, and the best
checkpoint is loaded at the end. ``resume=True`` continues from the last checkpoint (optimizer,
scheduler, RNG and data position restored). Multi-GPU: run the same script under
``accelerate launch``; the Trainer handles the processes.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from ragrec import schema as S
from ragrec.errors import RagrecError
from ragrec.finetune.config import FinetuneConfig
from ragrec.finetune.examples import ExampleSet, build_examples, to_dataset
from ragrec.inference.adapters import AdapterInfo, model_fingerprint, save_adapter
from ragrec.inference.config import RecommenderConfig
from ragrec.inference.models import LoadedModel
from ragrec.inference.recommender import Recommender
from ragrec.inference.scenario import Scenario

__all__ = ["FinetuneResult", "finetune", "collate_left", "answer_loss"]


@dataclass
class FinetuneResult:
    """Where the adapter went and how training went."""

    adapter: Path
    info: AdapterInfo
    train_seconds: float
    steps: int
    stop_reason: str
    examples: dict[str, int]
    notes: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)  # the Trainer's log history
    model: Any = None  # the peft model (base + trained adapter), ready to serve


def collate_left(pad_id: int):
    """A collator that left-pads ``input_ids`` (``pad_id``) and ``labels`` (-100); a rank row's
    candidate letter ids (``choices``) are right-padded with -1."""

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        c = max((len(r.get("choices") or []) for r in rows), default=0)
        choices = torch.full((len(rows), c), -1, dtype=torch.long)
        for j, r in enumerate(rows):
            m = len(r["input_ids"])
            ids[j, n - m :] = torch.tensor(r["input_ids"])
            labels[j, n - m :] = torch.tensor(r["labels"])
            mask[j, n - m :] = 1
            if r.get("choices"):
                choices[j, : len(r["choices"])] = torch.tensor(r["choices"])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return batch | ({"choices": choices} if c else {})

    return collate


def answer_loss(logits: torch.Tensor, target: torch.Tensor, choices: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens. ``logits`` (B, L, V) predict ``target`` (B, L;
    -100 = not scored). Rows with ``choices`` (B, C letter token ids, -1 padded) have a one-token
    answer at the last position, scored over their letters only; other rows over the vocabulary."""
    ranked = (choices >= 0).any(dim=1) if choices is not None else torch.zeros(len(target), dtype=torch.bool)
    total, count = logits.sum() * 0.0, 0
    if ranked.any():
        mine = choices[ranked]
        letters = logits[ranked, -1, :].gather(1, mine.clamp(min=0)).masked_fill(mine < 0, float("-inf"))
        answer_at = (mine == target[ranked, -1:]).float().argmax(dim=1)
        total = total + torch.nn.functional.cross_entropy(letters, answer_at, reduction="sum")
        count += int(ranked.sum())
    rest = target[~ranked]
    if (rest != -100).any():
        flat = logits[~ranked].reshape(-1, logits.shape[-1])
        total = total + torch.nn.functional.cross_entropy(flat, rest.reshape(-1), ignore_index=-100, reduction="sum")
        count += int((rest != -100).sum())
    return total / max(count, 1)


def _trainer_class():
    from transformers import Trainer

    class AnswerTrainer(Trainer):
        """Answer-only loss on the last positions; validation by the LLM stage's NDCG@10."""

        loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

        def __init__(self, *args, validate, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._validate = validate

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]  # (B, T), left-padded: answers end at T - 1
            answer = (labels != -100).any(dim=0).nonzero()
            keep = int(labels.shape[1] - answer[0].item()) + 1 if len(answer) else 1
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=keep)
            logits = out.logits[:, :-1, :].float()  # (B, keep - 1, V): position p predicts token p + 1
            target = labels[:, -(keep - 1) :] if keep > 1 else labels[:, :0]
            loss = answer_loss(logits, target, inputs.get("choices"))
            return (loss, out) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            was_training = self.model.training
            self.model.eval()
            start = time.perf_counter()
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in self._validate().items()}
            metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 2)
            if was_training:
                self.model.train()
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return AnswerTrainer


def _time_limit(minutes: float | None):
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        """Keeps the training loop, its validations and the final validation within ``minutes``.

        After each optimizer step it stops training when one more step (the mean so far) plus one
        more validation (as long as the last one took) would pass the limit; the stop itself
        triggers the final validation and checkpoint, which the estimate already counted."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.hit = False
            self.step_seconds: list[float] = []
            self.eval_seconds = 0.0
            self._last = self.start

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self._last = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            runtime = (metrics or {}).get("eval_runtime")
            if runtime is not None:
                self.eval_seconds = float(runtime)
            self._last = time.perf_counter()  # the next step's time starts after the validation

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.step_seconds.append(now - self._last)
            self._last = now
            if minutes is None:
                return control
            mean_step = sum(self.step_seconds) / len(self.step_seconds)
            scheduled_eval = self.eval_seconds if control.should_evaluate else 0.0  # runs after this step anyway
            if now - self.start + scheduled_eval + mean_step + self.eval_seconds > minutes * 60:
                self.hit = True
                control.should_training_stop = True
                control.should_evaluate = True
                control.should_save = True
            return control

    return TimeLimit()


def rating_errors(errors) -> dict[str, float]:
    """MAE and RMSE of rating errors (predicted - held-out), the rate task's metrics."""
    import numpy as np

    e = np.asarray(errors, dtype=np.float64)
    return {"rating_mae": float(np.abs(e).mean()), "rating_rmse": float(np.sqrt((e**2).mean()))}


def validation_metric(config: FinetuneConfig, data=None) -> tuple[str, bool]:
    """What early stopping watches, and whether higher is better: the metric of the mixture's first
    task in registration order (rank: the LLM stage's NDCG@10; explain: ROUGE-L against held-out
    reviews; rate: rating MAE; chat: answers kept without fallback), skipping a task whose
    validation data ``data`` lacks (explain without review text)."""
    metric, higher, _ = _validation_plan(config, data)
    return metric, higher


def _validation_plan(config: FinetuneConfig, data=None) -> tuple[str, bool, list[str]]:
    """:func:`validation_metric` and the validation users it is computed on (with ``data``)."""
    from ragrec.tasks import task_specs

    specs = [s for s in task_specs() if s.name in config.mixture]
    users = {s.metric: _validation_users(data, s.metric, config) if data is not None else [] for s in specs}
    spec = next((s for s in specs if users[s.metric]), specs[0])
    return spec.metric, spec.higher_is_better, users[spec.metric]


def _validation_users(data, metric: str, config: FinetuneConfig) -> list[str]:
    from ragrec.eval.explain import review_targets
    from ragrec.eval.llm import sample_users

    if metric == "rouge_l":
        try:
            users = review_targets(data, S.VALID, max_chars=config.max_review_chars,
                                   min_chars=config.min_review_chars)[0]  # fmt: skip
        except RagrecError:  # no review text: explanations cannot be validated against reviews
            return []
    elif metric == "rating_mae":
        users = [u for u, r in _valid_ratings(data).items() if r is not None]
    else:
        users = list(data.targets(S.VALID))
    return sample_users(sorted(users), config.eval_users, seed=config.seed)


def _valid_ratings(data) -> dict[str, float | None]:
    frame = data.interactions_frame()
    if S.RATING not in frame:
        return {}
    held = frame[frame[S.SPLIT] == S.VALID]
    return {str(u): None if r is None or r != r else float(r) for u, r in zip(held[S.USER_ID], held[S.RATING])}


def _validator(rec: Recommender, scenario: str, users: list[str], metric: str):
    from ragrec.eval.chat import evaluate_chat
    from ragrec.eval.explain import evaluate_explanations
    from ragrec.eval.llm import score_llm
    from ragrec.ranking import metric_table

    sc = rec.scenario(scenario)

    def validate() -> dict[str, float]:
        if metric == "ndcg@10":
            table = metric_table(score_llm(rec, scenario, split=S.VALID, users=users, progress=False).ranks(0.0), (10,))
            return {metric: float(table["ndcg@10"]), "recall@10": float(table["recall@10"])}
        if metric == "rouge_l":
            m = evaluate_explanations(rec, scenario, split=S.VALID, users=users, progress=False).metrics()
            return {k: m[k] for k in ("rouge_l", "bleu4", "grounded_rate")}
        if metric == "chat_kept":
            return evaluate_chat(rec, scenario, split=S.VALID, users=users, progress=False).metrics()
        train = sc.data.histories(splits=(S.TRAIN,))
        targets, ratings = sc.data.targets(S.VALID), _valid_ratings(sc.data)
        errors = []
        for u in users:
            h = train[u]
            pred = rec.predict_rating([targets[u]], history=list(h.item_ids), ratings=list(h.ratings or []) or None,
                                      scenario=scenario)[0]  # fmt: skip
            errors.append(pred.expected - ratings[u])
        return rating_errors(errors)

    return validate


def finetune(
    loaded: LoadedModel,
    scenario: Scenario,
    config: FinetuneConfig,
    out: str | PathLike[str],
    *,
    rec_config: RecommenderConfig | None = None,
    work_dir: str | PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    examples: ExampleSet | None = None,
    callbacks: list | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter for ``scenario`` on ``loaded`` and save it to ``out`` (atomically).

    ``loaded.model`` is wrapped in place by peft (the returned ``model`` holds base + adapter).
    Checkpoints go to ``work_dir`` (default: ``out`` + ``.work``); ``resume`` continues from the
    latest one there. ``examples`` replaces the built ones (tests, custom mixtures).
    """
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

    out = Path(out)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    if scenario.adapter is not None:
        raise RagrecError(
            f"scenario {scenario.name!r} already has an adapter ({scenario.adapter}); train from the base"
        )
    if not scenario.data.has_split:
        raise RagrecError(f"dataset {scenario.data.name!r} has no split: fine-tuning needs train/valid/test")
    base_fingerprint = model_fingerprint(loaded.model)
    rec = Recommender(loaded, [scenario], rec_config)
    examples = examples or build_examples(rec, scenario.name, config)
    dataset, too_long = to_dataset(examples.examples, loaded.tokenizer, max_tokens=rec.budget.max_tokens,
                                   choices=config.rank_loss == "choices")  # fmt: skip
    notes = list(examples.notes) + ([f"{too_long} examples longer than the prompt budget dropped"] if too_long else [])
    if len(dataset) == 0:
        raise RagrecError(f"no training examples for scenario {scenario.name!r}: {'; '.join(notes) or 'empty data'}")
    metric, higher, valid_users = _validation_plan(config, scenario.data)
    if not valid_users:
        raise RagrecError(f"scenario {scenario.name!r} has no validation users for early stopping on {metric}")

    model = loaded.model
    if loaded.quantization == "4bit":  # QLoRA: frozen NF4 base, LoRA in the compute dtype
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif loaded.quantization != "none":
        raise RagrecError(f"train on a 4-bit (QLoRA) or unquantised base, not {loaded.quantization!r}")
    layers = None
    if config.lora_layers is not None:
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - config.lora_layers), total))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, layers_to_transform=layers, task_type="CAUSAL_LM")  # fmt: skip
    set_seed(config.seed)  # the LoRA A matrices are drawn here: same seed, same adapter
    model = get_peft_model(model, lora)  # "default": the Trainer saves and reloads checkpoints of that name
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    elif hasattr(model, "disable_input_require_grads"):
        # peft makes the embedding output require grad (for checkpointing); without checkpointing
        # that only forces backward through the layers below the adapted ones.
        model.disable_input_require_grads()
    loaded.model = model
    # The recommender now serves the adapter being trained (use() switches it on by name).
    rec.scenarios[scenario.name] = dataclasses.replace(scenario, adapter=out)
    rec.adapter_names[scenario.name] = "default"

    on_cpu = not torch.cuda.is_available() or loaded.device == "cpu"
    args = TrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the steps
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=higher,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not progress,
        use_cpu=on_cpu,
        dataloader_num_workers=0,
    )
    limit = _time_limit(config.max_minutes)
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=Dataset.from_dict({"user_id": valid_users}),  # validation is by users, see _validator
        data_collator=collate_left(loaded.tokenizer.pad_token_id),
        callbacks=[EarlyStoppingCallback(config.patience), limit, *(callbacks or [])],
        validate=_validator(rec, scenario.name, valid_users, metric),
    )
    start = time.perf_counter()
    checkpoint = resume and any(work.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if checkpoint else None)
    seconds = time.perf_counter() - start
    model.eval()
    state = trainer.state
    if limit.hit:
        stop = f"time limit of {config.max_minutes:g} min"
    elif state.global_step < state.max_steps:
        stop = f"early stopping (no {metric} gain in {config.patience} validations)"
    else:
        stop = "completed"
    if state.best_model_checkpoint:  # load_best_model_at_end: the adapter saved is the best validated one
        stop += f"; best validation at {Path(state.best_model_checkpoint).name}, kept"
    evals = [e for e in state.log_history if f"eval_{metric}" in e]
    info = AdapterInfo(
        base_model=loaded.source,
        base_fingerprint=base_fingerprint,
        scenario=scenario.name,
        tasks=dict(examples.counts),
        templates={
            t: f"{rec.template(scenario, t).scenario}/{t} v{rec.template(scenario, t).version}" for t in examples.counts
        },  # fmt: skip
        split="train (examples); valid (early stopping)",
        metrics={
            f"valid_{metric}_best": state.best_metric,
            "valid_users": len(valid_users),
            "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            "valid_curve": [(e["step"], e[f"eval_{metric}"]) for e in evals],
        },
        train={
            "config": config.model_dump(),
            "seconds": round(seconds, 1),
            "steps": state.global_step,
            "stop_reason": stop,
            "device": loaded.device,
            "quantization": loaded.quantization,
            "examples": len(dataset),
            "processes": trainer.accelerator.num_processes,
        },
    )
    if trainer.is_world_process_zero():  # under `accelerate launch` one process writes the adapter
        save_adapter(model, "default", out, info)
        if not config.keep_checkpoints:  # the best checkpoint is the saved adapter now
            shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(out, info, seconds, state.global_step, stop, dict(examples.counts), notes,
                          list(state.log_history), model)  # fmt: skip
