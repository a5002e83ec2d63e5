"""New scenarios from a CSV of interactions and a CSV of items, in two commands.

``ragrec scenario new NAME --interactions I.csv --items T.csv`` writes a scenario folder::

    scenario.yaml        data source + column mapping, item noun, split, retriever, model,
                         recommender settings, fine-tuning config (all editable)
    templates/*.yaml     one prompt template per task, copied from ``default`` for editing

``ragrec finetune --scenario NAME`` then reads the files, preprocesses and splits them, trains
the retriever, builds examples, trains the LoRA adapter with validation, and registers the result
as a servable recommender folder (``<scenario>/recommender``, or added to an existing one).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ragrec import schema as S
from ragrec.config import model_from_yaml
from ragrec.data.loaders import DataMapping, TableMapping
from ragrec.data.readers import open_binary
from ragrec.errors import DataFormatError, RagrecError
from ragrec.finetune.config import FinetuneConfig
from ragrec.io import atomic_directory, atomic_write_text

__all__ = ["ScenarioSpec", "ScenarioDraft", "new_scenario", "load_spec", "run_scenario", "guess_columns", "ScenarioRun"]

SPEC = "scenario.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Column names seen in public datasets, per ragrec field (first match wins, case-insensitive).
GUESSES: dict[str, tuple[str, ...]] = {
    S.USER_ID: ("user_id", "userid", "user", "reviewerid", "uid", "customer_id"),
    S.ITEM_ID: ("item_id", "itemid", "item", "movieid", "movie_id", "asin", "parent_asin", "product_id", "iid"),
    S.TIMESTAMP: (
        "timestamp",
        "time",
        "unixreviewtime",
        "ts",
        "when",
        "date",
        "datetime",
        "created_at",
        "event_time",
        "time_stamp",
    ),
    S.RATING: ("rating", "overall", "score", "stars"),
    S.REVIEW: ("review", "reviewtext", "review_text", "text", "comment"),
    S.TITLE: ("title", "name", "product_title", "movie_title"),
    S.YEAR: ("year", "release_year"),
    S.CATEGORIES: ("categories", "genres", "category", "genre", "tags"),
    S.BRAND: ("brand", "manufacturer", "studio"),
    S.DESCRIPTION: ("description", "summary", "overview"),
}
INTERACTION_FIELDS = (S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING, S.REVIEW)
ITEM_FIELDS = (S.ITEM_ID, S.TITLE, S.YEAR, S.CATEGORIES, S.BRAND, S.DESCRIPTION)


class ScenarioSpec(BaseModel):
    """Everything ``ragrec finetune`` needs for one scenario (``scenario.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Scenario name.")
    item_noun: str = Field("item", max_length=40, description="What the catalog holds ('movie', 'game').")
    data: DataMapping = Field(description="Where the interactions and items are, and which columns are which.")
    split: str = Field("loo", description="loo | ratio:0.8,0.1,0.1 (docs/evaluation.md: leave-one-out is the default).")
    k_core: int = Field(0, ge=0, description="Users and items need at least this many interactions.")
    min_rating: float | None = Field(None, description="Drop interactions rated below this (None: keep all).")
    retriever: Literal["auto", "ease", "sasrec", "als", "bpr", "popularity"] = Field(
        "auto",
        description="Candidate retriever; auto: EASE up to 20,000 items (a dense item x item model), SASRec above; "
        "als / bpr: matrix factorisation (implicit).",
    )
    text: bool = Field(False, description="Embed item texts (MiniLM) for chat queries.")
    model: str = Field("smollm2-135m-instruct", description="Base LM the adapter is trained on.")
    recommender: dict[str, Any] = Field(default_factory=dict, description="RecommenderConfig settings.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning settings.")


def _separator(path: Path) -> str:
    ext = [s for s in path.suffixes if s != ".gz"]
    return "\t" if ext and ext[-1] in (".tsv", ".tab") else ","


def _header(path: Path) -> list[str]:
    sep = _separator(path)
    with open_binary(path) as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
    if not first.strip():
        raise DataFormatError(path, "empty file (expected a header line)")
    return next(csv.reader([first], delimiter=sep))


def guess_columns(path: str | PathLike[str], fields: tuple[str, ...], given: dict[str, str] | None = None,
                  required: tuple[str, ...] = ()) -> dict[str, str]:  # fmt: skip
    """ragrec field -> column of ``path`` by the header's names (``given`` wins); required
    fields that cannot be found raise an error listing the header."""
    path = Path(path)
    header = _header(path)
    lower = {h.strip().lower(): h for h in header}
    given = dict(given or {})
    unknown = set(given) - set(fields)
    if unknown:
        raise RagrecError(f"unknown field(s) {sorted(unknown)} for {path.name}; valid: {', '.join(fields)}")
    out = {}
    for field in fields:
        if field in given:
            if given[field] not in header:
                raise RagrecError(f"{path}: no column {given[field]!r}; the header has: {', '.join(header)}")
            out[field] = given[field]
            continue
        hit = next((lower[g] for g in GUESSES[field] if g in lower), None)
        if hit is not None:
            out[field] = hit
        elif field in required:
            raise RagrecError(f"{path}: no column found for {field!r} (the header has: {', '.join(header)}); "
                              f"name it with --column {field}=COLUMN")  # fmt: skip
    return out


@dataclass
class ScenarioDraft:
    """What ``new_scenario`` wrote and guessed: say it to the user before they fine-tune."""

    path: Path  # the scenario.yaml
    columns: dict[str, str]  # ragrec field -> interactions column
    item_columns: dict[str, str]  # ragrec field -> items column
    ignored: dict[str, list[str]]  # file -> columns no field was mapped to
    timestamp_format: str | None  # None: no timestamp column (file order is the time order)
    timestamp_guessed: bool  # the format was read off the first rows, not given
    stats: dict[str, int]  # users, items, interactions as read

    def summary(self) -> list[str]:
        """Lines for a person: the mapping, what was ignored, how time is ordered."""
        lines = ["interactions: " + ", ".join(f"{f} <- {c!r}" for f, c in self.columns.items())]
        if self.item_columns:
            lines.append("items: " + ", ".join(f"{f} <- {c!r}" for f, c in self.item_columns.items()))
        for file, cols in self.ignored.items():
            if cols:
                lines.append(f"ignored in {file}: {', '.join(map(repr, cols))} (map one with --column/--item-column)")
        if self.timestamp_format is None:
            lines.append("no timestamp column: each user's interactions are ordered as in the file")
        else:
            how = "guessed from the first rows" if self.timestamp_guessed else "as given"
            lines.append(f"timestamps: {self.columns[S.TIMESTAMP]!r} read as {self.timestamp_format} ({how})")
        lines.append("read: " + ", ".join(f"{v} {k}" for k, v in self.stats.items()))
        return lines


def _guess_timestamp_format(path: Path, column: str) -> Literal["unix", "datetime"]:
    """``unix`` when the column's first non-empty values are numbers, else ``datetime``."""
    sep = _separator(path)
    with open_binary(path) as f:
        lines = [f.readline().decode("utf-8-sig", errors="replace") for _ in range(21)]
    rows = list(csv.DictReader([line for line in lines if line], delimiter=sep))
    values = [str(r.get(column) or "").strip() for r in rows]
    values = [v for v in values if v]
    try:
        [float(v) for v in values]
    except ValueError:
        return "datetime"
    return "unix"


def new_scenario(
    name: str,
    folder: str | PathLike[str],
    *,
    interactions: str | PathLike[str],
    items: str | PathLike[str] | None = None,
    columns: dict[str, str] | None = None,
    item_columns: dict[str, str] | None = None,
    item_noun: str = "item",
    timestamp_format: Literal["unix", "datetime"] | None = None,
    force: bool = False,
) -> ScenarioDraft:
    """Scaffold a scenario folder (see module docstring) after reading both files through the
    mapping, so that a file ``ragrec finetune`` would reject (duplicate item ids with other
    titles, bad bytes, wrong types) is refused now. ``timestamp_format=None`` reads it off the
    first rows. Returns what was written and guessed."""
    from ragrec.data.loaders import load_tabular
    from ragrec.prompts import builtin_registry
    from ragrec.prompts.registry import TASKS

    folder = Path(folder)
    if folder.exists() and not force:
        raise RagrecError(f"{folder} exists; pass --force (Python: force=True) to replace it")
    if not re.fullmatch(NAME_PATTERN, name):
        raise RagrecError(
            f"bad scenario name {name!r}: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    inter_path = Path(interactions).resolve()
    inter_cols = guess_columns(inter_path, INTERACTION_FIELDS, columns, required=(S.USER_ID, S.ITEM_ID))
    guessed = timestamp_format is None
    if S.TIMESTAMP not in inter_cols:
        fmt = None
    else:
        fmt = timestamp_format or _guess_timestamp_format(inter_path, inter_cols[S.TIMESTAMP])
    mapping = DataMapping(interactions=TableMapping(path=str(inter_path), columns=inter_cols,
                                                   timestamp_format=fmt or "unix"))  # fmt: skip
    ignored = {inter_path.name: [c for c in _header(inter_path) if c not in inter_cols.values()]}
    item_cols: dict[str, str] = {}
    if items is not None:
        item_path = Path(items).resolve()
        item_cols = guess_columns(item_path, ITEM_FIELDS, item_columns, required=(S.ITEM_ID,))
        mapping.items = TableMapping(path=str(item_path), columns=item_cols)
        ignored[item_path.name] = [c for c in _header(item_path) if c not in item_cols.values()]
    spec = ScenarioSpec(name=name, item_noun=item_noun, data=mapping)
    data = load_tabular(mapping=mapping, name=name, scenario=name)  # what finetune will read, validated now
    stats = data.stats()
    builtin = builtin_registry()
    with atomic_directory(folder) as staging:
        atomic_write_text(staging / SPEC, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        (staging / "templates").mkdir()
        for task in TASKS:
            tpl = builtin.get("default", task).model_copy(update={"scenario": name})
            atomic_write_text(staging / "templates" / f"{task}.yaml",
                              yaml.safe_dump(tpl.model_dump(mode="json"), sort_keys=False))  # fmt: skip
    return ScenarioDraft(folder / SPEC, inter_cols, item_cols, ignored, fmt, guessed and fmt is not None,
                         {"users": stats.users, "items": stats.items, "interactions": stats.interactions})  # fmt: skip


def load_spec(folder: str | PathLike[str]) -> ScenarioSpec:
    folder = Path(folder)
    if not (folder / SPEC).is_file():
        raise RagrecError(f"{folder}: not a scenario folder (no {SPEC}; create one with `ragrec scenario new`)")
    spec = model_from_yaml(ScenarioSpec, folder / SPEC)
    for table in (spec.data.interactions, spec.data.items, spec.data.users):
        if table is not None and not Path(table.path).is_absolute():
            table.path = str(folder / table.path)
    return spec


@dataclass
class ScenarioRun:
    """What ``run_scenario`` produced."""

    spec: ScenarioSpec
    result: Any  # FinetuneResult
    recommender: Path
    data_stats: dict
    fusion: dict | None = None  # how the served LLM score is fused with the retriever's (choose_fusion's report)


def run_scenario(
    folder: str | PathLike[str],
    *,
    overrides: dict[str, Any] | None = None,
    model: str | None = None,
    out: str | PathLike[str] | None = None,
    add_to: str | PathLike[str] | None = None,
    resume: bool = False,
    loaded=None,
    echo=print,
    progress: bool = True,
) -> ScenarioRun:
    """Prepare the data, train the retriever, fine-tune the adapter and register a recommender.

    ``overrides`` change fine-tuning settings; the recommender goes to ``out`` (default
    ``<folder>/recommender``), or is written there with the scenarios of ``add_to`` plus this one.
    """
    import torch

    from ragrec.data.loaders import load_tabular
    from ragrec.data.preprocess import PreprocessConfig
    from ragrec.data.sources import prepare
    from ragrec.data.split import SplitConfig
    from ragrec.finetune.trainer import finetune
    from ragrec.inference import RecommenderConfig, load_model
    from ragrec.inference.persistence import load_parts, save_recommender
    from ragrec.pipeline import build_scenario, resolve_retriever
    from ragrec.prompts import TemplateRegistry

    folder = Path(folder)
    spec = load_spec(folder)
    from ragrec.config import merge_settings

    config = FinetuneConfig(**merge_settings(spec.finetune.model_dump(), overrides or {}))
    rec_config = RecommenderConfig(**{**spec.recommender, "model": model or spec.model})
    echo(f"reading {spec.data.interactions.path} ...")
    raw = load_tabular(mapping=spec.data, name=spec.name, scenario=spec.name)
    data = prepare(raw, preprocessing=PreprocessConfig(min_rating=spec.min_rating, user_core=spec.k_core,
                                                       item_core=spec.k_core),
                   split=SplitConfig.parse(spec.split), save_as=folder / "prepared")  # fmt: skip
    stats = data.stats().to_dict()
    echo(f"{spec.name}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions; "
         f"training the {resolve_retriever(spec.retriever, stats['items'])} retriever...")  # fmt: skip
    sc = build_scenario(data, spec.name, item_noun=spec.item_noun, encoder=spec.retriever, text=spec.text)
    if (folder / "templates").is_dir():
        sc.templates = TemplateRegistry().load_dir(folder / "templates")
    recipe, why = choose_recipe(config, sc)
    echo(f"recipe: {recipe} ({why})")
    cuda = torch.cuda.is_available()
    quant = "4bit" if cuda and config.quantization in ("auto", "4bit") and recipe == "classic" else "none"
    if config.quantization == "4bit" and recipe == "residual":
        echo("the residual recipe caches the frozen layers' output: it trains on an unquantised base")
    elif config.quantization == "4bit" and not cuda:
        echo("quantization 4bit (QLoRA) needs CUDA; training a plain LoRA on the CPU instead")
    loaded = loaded or load_model(rec_config.model, quantization=quant, device=rec_config.device)
    if recipe == "reranker":
        result = _run_reranker(loaded, sc, config, rec_config, echo, progress)
    elif recipe == "residual":
        result = _run_residual(loaded, sc, config, rec_config, folder / "adapter", echo, progress)
    else:
        echo(f"fine-tuning on {loaded.device} ({loaded.quantization}): {config.examples} examples, "
             f"mixture {config.mixture}")  # fmt: skip
        result = finetune(loaded, sc, config, folder / "adapter", rec_config=rec_config, resume=resume,
                          progress=progress)  # fmt: skip
        curve = ", ".join(f"step {s}: {v:.4f}" for s, v in result.info.metrics["valid_curve"])
        echo(f"trained in {result.train_seconds / 60:.1f} min, {result.steps} steps ({result.stop_reason}); "
             f"validation NDCG@10: {curve}")  # fmt: skip
        for note in result.notes:
            echo(f"note: {note}")
    sc.adapter = folder / "adapter" if recipe != "reranker" else None  # the reranker trains no LoRA
    scenarios = [sc]
    if add_to is not None:
        rec_config, existing = load_parts(add_to)
        scenarios = [s for s in existing if s.name != spec.name] + scenarios
    target = Path(out) if out is not None else (Path(add_to) if add_to is not None else folder / "recommender")
    save_recommender(target, scenarios, rec_config)
    echo(f"registered scenario {spec.name!r} with its {'reranker' if recipe == 'reranker' else 'adapter'} in {target} "
         f"(scenarios: {', '.join(s.name for s in scenarios)})")  # fmt: skip
    fusion = None
    if recipe == "classic" and config.fusion_users and "rank" in config.mixture:
        fusion = choose_served_fusion(target, spec.name, config.fusion_users, echo=echo, progress=progress)
    return ScenarioRun(spec, result, target, stats, fusion)


def choose_recipe(config: FinetuneConfig, sc) -> tuple[str, str]:
    """Which recipe ``config`` asks for on scenario ``sc``, and why (``auto``: the reranker where it applies)."""
    from ragrec.retrieval import EASEEncoder

    rank_only = set(config.mixture) == {"rank"}
    ease = isinstance(sc.retriever.encoder, EASEEncoder)
    if config.recipe in ("residual", "reranker") and not (rank_only and ease):
        raise RagrecError(f"recipe {config.recipe!r} trains the rank task over an EASE first stage: "
                          + ("set mixture to rank only" if not rank_only else "the scenario's retriever is not EASE"))  # fmt: skip
    if config.recipe != "auto":
        return config.recipe, "asked for"
    if rank_only and ease:
        return "reranker", "auto: a rank-only mixture over an EASE first stage"
    return "classic", "auto: " + ("the mixture has other tasks than rank" if not rank_only
                                  else f"out-of-fold lists need an EASE first stage, not {sc.retriever.encoder.kind}")  # fmt: skip


def _run_reranker(loaded, sc, config: FinetuneConfig, rec_config, echo, progress: bool):
    """The learning-to-rank recipe (ragrec.finetune.ltr); the scenario then serves what validation chose."""
    from ragrec.finetune.ltr import fit_reranker

    rconfig = config.reranker.model_copy(update={"candidates": rec_config.candidates})
    echo(f"reranker: LightGBM over out-of-fold lists, with and without the LLM's item vectors ({loaded.source})")
    run = fit_reranker(sc, loaded, rconfig, progress=progress)
    oof = run.out_of_fold
    echo(f"out-of-fold lists: {oof['lists_with_target']} of {oof['positions']} training positions hold their target "
         f"(recall@{rconfig.candidates} {oof[f'oof_recall@{rconfig.candidates}']}; in-sample "
         f"{oof[f'in_sample_recall@{rconfig.candidates}']})")  # fmt: skip
    echo("validation NDCG@10: " + ", ".join(f"{k} {v:.4f}" for k, v in run.valid.items()) + f"; serving {run.served}")
    if run.served == "fusion":
        echo("no reranker beat the first stage + item priors fusion on validation: the scenario serves that fusion")
        sc.config.fusion = run.fusion
    elif run.served == "reranker_no_llm":
        echo("the reranker without the LLM's features won on validation: the LLM is kept for explain and chat")
    sc.reranker = run.reranker
    return run


def _run_residual(loaded, sc, config: FinetuneConfig, rec_config, out: Path, echo, progress: bool):
    """The residual recipe; the scenario then serves its fusion over a fixed shuffle of the list."""
    from ragrec.finetune.residual import finetune_residual
    from ragrec.inference import Recommender

    rconfig = config.residual.model_copy(update={"candidates": rec_config.candidates})
    echo(f"residual ranker on {loaded.device}: up to {rconfig.examples} out-of-fold lists x {rconfig.epochs:g} epochs, "
         f"LoRA on the top {rconfig.top_layers} layers")  # fmt: skip
    run = finetune_residual(Recommender(loaded, [sc], rec_config), sc.name, rconfig, out, progress=progress)
    res = run.result
    oof = run.out_of_fold
    echo(f"out-of-fold lists: {oof['lists_with_target']} of {oof['positions']} training positions hold their target "
         f"(recall@{rconfig.candidates} {oof[f'oof_recall@{rconfig.candidates}']}; in-sample "
         f"{oof[f'in_sample_recall@{rconfig.candidates}']})")  # fmt: skip
    curve = ", ".join(f"step {s}: {v:.4f}" for s, v in res.curve)
    echo(f"trained in {res.timing['train_seconds'] / 60:.1f} min ({res.stop_reason}); validation NDCG@10: {curve}")
    if res.best_step == 0:
        echo("the LLM did not improve the validation ranking: the scenario serves the first stage + item priors "
             "fusion (the LLM is kept for explain and chat)")  # fmt: skip
    sc.config.fusion = res.fusion
    sc.config.candidate_order = "shuffled"
    return res


def choose_served_fusion(rec_dir: Path, scenario: str, users: int, *, echo=print, progress: bool = True) -> dict:
    """Score ``users`` validation users with the saved recommender's fine-tuned scenario and store
    how its LLM score is fused with the retriever's (:func:`ragrec.eval.llm.choose_fusion`)."""
    from ragrec import schema as S
    from ragrec.eval.llm import choose_fusion, sample_users, score_llm, split_priors
    from ragrec.inference.persistence import save_scenario_config
    from ragrec.inference.recommender import Recommender

    rec = Recommender.from_pretrained(rec_dir)
    sc = rec.scenario(scenario)
    picked = sample_users(list(sc.data.targets(S.VALID)), users)
    valid = score_llm(rec, scenario, split=S.VALID, users=picked, retrieved_only=True, progress=progress)
    weight, fusion, report = choose_fusion(valid, split_priors(sc, S.VALID), max_history=rec.config.max_history)
    sc.config.fusion_weight, sc.config.fusion = weight, fusion
    save_scenario_config(rec_dir, sc.config)
    oof = report.get("out_of_sample_ndcg@10", {})
    if fusion is None:
        how = f"the fusion weight {weight:g}"
    else:
        how = "a learned fusion" if fusion.uses_llm else "the retriever + item priors fusion without the LLM"
    oof_keys = {"weight": "weight", "learned": "learned", "no_llm": "no LLM"}
    echo(f"serving {scenario!r} with {how} (chosen on {len(picked)} validation users"
         + ("; out of sample NDCG@10: " + ", ".join(f"{oof_keys[k]} {v:.4f}" for k, v in oof.items()) if oof else "")
         + ")")  # fmt: skip
    return report
