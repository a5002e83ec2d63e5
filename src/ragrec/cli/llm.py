"""``ragrec recommend | explain | chat | demo``, ``ragrec recommender build``, ``ragrec eval llm``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ragrec.cli.retrieval import eval_app
from ragrec.tasks import task_names

console = Console(stderr=True)
recommender_app = typer.Typer(
    help="Assemble recommenders (retriever + LLM) from prepared datasets.", no_args_is_help=True
)

RecDir = Annotated[Path, typer.Argument(help="Saved recommender folder (from `ragrec recommender build` or the demo).")]
User = Annotated[Optional[str], typer.Option("--user", help="User id.")]
History = Annotated[
    Optional[str],
    typer.Option(help="Instead of --user: comma-separated item ids, oldest first ('' = no history: popularity)."),
]
ScenarioOpt = Annotated[Optional[str], typer.Option(help="Scenario (default: the recommender's first).")]
Quant = Annotated[Optional[str], typer.Option(help="Override the quantization: none | 8bit | 4bit.")]
Device = Annotated[Optional[str], typer.Option(help="Override the device: auto | cpu | cuda.")]


def _load(path: Path, quantization: str | None, device: str | None):
    from ragrec.inference import Recommender

    overrides = {k: v for k, v in {"quantization": quantization, "device": device}.items() if v}
    rec = Recommender.from_pretrained(path, **overrides)
    for note in rec.loaded.notes:  # how the model was loaded: e.g. which layers stayed unquantised
        console.print(f"[dim]note: {note}[/]")
    return rec


def _who(user: str | None, history: str | None) -> dict:
    from ragrec.errors import RagrecError

    if user is not None and history is not None:
        raise RagrecError("pass --user or --history, not both")
    if user is None and history is None:
        raise RagrecError("pass --user or --history (--history '' recommends for an empty history: popularity)")
    return {"user_id": user} if user is not None else {"history": [h.strip() for h in history.split(",") if h.strip()]}


@recommender_app.command("build")
def build_cmd(
    dataset: Annotated[str, typer.Argument(help="Prepared dataset (cache name or folder) with a split.")],
    out: Annotated[Path, typer.Option(help="Folder to save the recommender to.")],
    scenario: Annotated[str, typer.Option(help="Scenario name.")] = "default",
    item_noun: Annotated[str, typer.Option(help="What the catalog holds: movie, game, product...")] = "item",
    encoder: Annotated[
        str,
        typer.Option(
            help="Retriever: auto (EASE up to 20,000 items, SASRec above) | ease | sasrec | als | bpr | popularity."
        ),
    ] = "auto",
    text: Annotated[bool, typer.Option(help="Embed item texts (MiniLM) for chat queries.")] = True,
    model: Annotated[str, typer.Option(help="Base LM (alias, Hub id, folder, .gguf).")] = "smollm2-135m-instruct",
    quantization: Annotated[str, typer.Option(help="none | 8bit | 4bit.")] = "none",
    add_to: Annotated[Optional[Path], typer.Option(help="Add the scenario to this saved recommender instead.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Train a retriever on DATASET and save a servable recommender (the LLM is loaded when serving)."""
    from ragrec.data import load_prepared
    from ragrec.errors import RagrecError
    from ragrec.inference.config import RecommenderConfig
    from ragrec.inference.persistence import load_parts, save_recommender
    from ragrec.pipeline import build_scenario, resolve_retriever

    if out.exists() and not force and (add_to is None or out.resolve() != add_to.resolve()):
        raise RagrecError(f"{out} exists; pass --force to replace it")
    data = load_prepared(dataset)
    with console.status(f"training the {resolve_retriever(encoder, len(data.item_ids()))} retriever on {dataset}..."):
        sc = build_scenario(data, scenario, item_noun=item_noun, encoder=encoder, text=text, progress=False)
    scenarios, config = [sc], RecommenderConfig(model=model, quantization=quantization)
    if add_to is not None:
        config, existing = load_parts(add_to)
        if scenario in [s.name for s in existing]:
            raise RagrecError(f"{add_to} already has scenario {scenario!r}")
        scenarios = existing + scenarios
    save_recommender(out, scenarios, config)
    typer.echo(f"saved scenarios {[s.name for s in scenarios]} ({config.model}) -> {out}")


def recommend_cmd(
    rec_dir: RecDir,
    user: User = None,
    history: History = None,
    scenario: ScenarioOpt = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many items.")] = 10,
    task: Annotated[str, typer.Option(help=f"{' | '.join(task_names(recommend=True))}.")] = "rank",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
    diversity: Annotated[
        float | None, typer.Option(help="MMR diversity 0-1 of the final list (default: the scenario's).")
    ] = None,
    exclude_item: Annotated[list[str] | None, typer.Option(help="Never recommend this item id (repeatable).")] = None,
    exclude_category: Annotated[
        list[str] | None, typer.Option(help="Never recommend items of this category (repeatable).")
    ] = None,
    category: Annotated[list[str] | None, typer.Option(help="Only items of this category (repeatable).")] = None,
    max_per_category: Annotated[int | None, typer.Option(help="At most this many items per category.")] = None,
    year_min: Annotated[int | None, typer.Option(help="Only items from this year on.")] = None,
    year_max: Annotated[int | None, typer.Option(help="Only items up to this year.")] = None,
    long_tail: Annotated[
        float | None, typer.Option(help="Popularity penalty 0-1 of the final list (default: the scenario's).")
    ] = None,
    calibration: Annotated[
        float | None,
        typer.Option(help="Pull 0-1 of the final list toward the history's category mix (default: the scenario's)."),
    ] = None,
    quantization: Quant = None,
    device: Device = None,
) -> None:
    """Recommend items for a user (or an explicit history). Rules given here add to the scenario's."""
    rec = _load(rec_dir, quantization, device)
    asked = {"exclude_items": exclude_item, "exclude_categories": exclude_category, "include_categories": category,
             "max_per_category": max_per_category, "year_min": year_min, "year_max": year_max}  # fmt: skip
    res = rec.recommend(**_who(user, history), scenario=scenario, k=k, task=task, diversity=diversity,
                        long_tail=long_tail, calibration=calibration,
                        **{key: v for key, v in asked.items() if v})  # fmt: skip
    sc = rec.scenario(res.scenario)
    if as_json:
        typer.echo(json.dumps({"user_id": res.user_id, "scenario": res.scenario, "task": res.task,
                               "fallback": res.fallback, "notes": list(res.notes),
                               "items": [{**asdict(i), "title": sc.catalog[i.item_id].title} for i in res.items]}))  # fmt: skip
        return
    if res.fallback:
        console.print(f"[yellow]fallback:[/] {res.fallback}")
    for note in res.notes:
        console.print(f"[yellow]note:[/] {note}")
    for i in res.items:
        retr = f"  retriever {i.retriever_score:.3f}" if i.retriever_score is not None else ""
        typer.echo(f"{i.rank:>3}. {sc.catalog[i.item_id].title}  [{i.item_id}]  score {i.score:.3f}{retr}")
        if i.evidence:
            typer.echo(f"       because of: {_evidence_text(i.evidence)}")


def _evidence_text(evidence) -> str:
    """``Heat (31%), Casino (12%)``: the evidence items and their share of the score."""
    return ", ".join(f"{e.title or e.item_id} ({100 * e.share:.0f}%)" for e in evidence)


def explain_cmd(
    rec_dir: RecDir,
    item: Annotated[str, typer.Option(help="Item id to explain.")],
    user: User = None,
    history: History = None,
    scenario: ScenarioOpt = None,
    stream: Annotated[bool, typer.Option(help="Print the text as it is generated.")] = True,
    quantization: Quant = None,
    device: Device = None,
) -> None:
    """Explain why an item suits a user; the text is checked for grounding."""
    rec = _load(rec_dir, quantization, device)
    if stream:  # only checked sentences are streamed; a rejected text is never printed
        s = rec.explain(item, **_who(user, history), scenario=scenario, stream=True)
        for piece in s:
            typer.echo(piece, nl=False)
        typer.echo("")
        exp = s.explanation
        assert exp is not None
    else:
        exp = rec.explain(item, **_who(user, history), scenario=scenario)
        typer.echo(exp.text)
    if exp.evidence:
        typer.echo(f"because of: {_evidence_text(exp.evidence)}")
    for note in ((exp.fallback,) if exp.fallback else ()) + exp.notes:
        console.print(f"[yellow]note:[/] {note}")


def chat_cmd(
    rec_dir: RecDir,
    user: User = None,
    history: History = None,
    scenario: ScenarioOpt = None,
    quantization: Quant = None,
    device: Device = None,
) -> None:
    """Ask follow-up questions, one per line (interactive, or piped on stdin); 'exit' or EOF ends."""
    from ragrec.errors import RagrecError

    rec = _load(rec_dir, quantization, device)
    session = rec.chat(**_who(user, history), scenario=scenario)
    sc = session.scenario
    interactive = sys.stdin.isatty()
    if session.fallback:
        console.print(f"[yellow]fallback:[/] {session.fallback}")
    typer.echo("Recommended for you (ask e.g. 'why the first one?', 'something like <title> but funnier'):")
    for i in session.recommendations(5):
        because = f"  (because of {_evidence_text(i.evidence[:2])})" if i.evidence else ""
        typer.echo(f"  {i.rank}. {sc.catalog[i.item_id].title}{because}")
    while True:
        if interactive:
            console.print("[bold]you>[/] ", end="")
        line = sys.stdin.readline()
        if not line or line.strip().lower() in ("exit", "quit"):
            break
        if not line.strip():
            continue
        try:
            ans = session.ask(line)
        except RagrecError as e:
            console.print(f"[red]error:[/] {e}")
            continue
        typer.echo(f"ragrec> {ans.text}")
        for i in ans.items[:5]:
            because = f"  (because of {_evidence_text(i.evidence[:2])})" if i.evidence else ""
            typer.echo(f"  {i.rank}. {sc.catalog[i.item_id].title} [{i.item_id}]{because}")
        for note in ans.notes + ((ans.fallback,) if ans.fallback else ()):
            console.print(f"  [dim]{note}[/]")


def demo_cmd(
    users: Annotated[int, typer.Option(help="Users to show recommendations for.")] = 3,
    eval_users: Annotated[int, typer.Option(help="Test users in the evaluation table.")] = 100,
    model: Annotated[Optional[str], typer.Option(help="Base LM (default: smollm2-135m-instruct).")] = None,
) -> None:
    """The main job: ML-100K + the default LM, recommendations with explanations, a small evaluation."""
    from ragrec.demo import run_demo

    run_demo(users=users, eval_users=eval_users, model=model, echo=typer.echo)


@eval_app.command("llm")
def eval_llm_cmd(
    rec_dir: RecDir,
    out: Annotated[Path, typer.Option(help="Report path stem: writes .json, .md and _recall.png.")],
    scenario: ScenarioOpt = None,
    users: Annotated[Optional[int], typer.Option(help="Sample this many test users (default: all).")] = None,
    tune_users: Annotated[int, typer.Option(help="Validation users for choosing the fusion weight (0: skip).")] = 200,
    permutations: Annotated[int, typer.Option(help="Cyclic shifts averaged against position bias.")] = 1,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    adapter: Annotated[
        bool, typer.Option(help="Use the scenario's adapter (--no-adapter: the base model, zero-shot).")
    ] = True,
    learned_fusion: Annotated[
        bool, typer.Option(help="Also fit a learned fusion (LLM, retriever, item priors) on the validation users.")
    ] = True,
    quantization: Quant = None,
    device: Device = None,
) -> None:
    """Retriever vs retriever + LLM (zero-shot or adapter) on the test split, with paired bootstrap CIs."""
    import dataclasses

    from ragrec.eval.llm import evaluate_llm_stage
    from ragrec.eval.report import write_report

    rec = _load(rec_dir, quantization, device)
    rec.config = rec.config.model_copy(update={"permutations": permutations})
    sc = rec.scenario(scenario)
    if not adapter and sc.adapter is not None:  # the adapter layers are switched off for this scenario
        rec.scenarios[sc.name] = dataclasses.replace(sc, adapter=None)
    rep = evaluate_llm_stage(rec, sc.name, users=users, tune_users=tune_users, seed=seed,
                             learned_fusion=learned_fusion, log=console.print)  # fmt: skip
    written = write_report(out, [r.row() for r in rep.results], title=rep.title, results=rep.results,
                           comparisons=rep.comparisons, notes=rep.notes, extra=rep.extra)  # fmt: skip
    for r in rep.results:
        console.print(f"{r.system}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.metrics().items()))
    console.print("wrote " + ", ".join(str(p) for p in written.values()))
