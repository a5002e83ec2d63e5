"""``ragrec retriever ...``, ``ragrec index ...``, ``ragrec eval retriever``: train, index, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True)
retriever_app = typer.Typer(help="Train candidate-retrieval encoders.", no_args_is_help=True)
index_app = typer.Typer(help="Build FAISS item indexes.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Evaluate systems under ragrec's protocol (docs/evaluation.md in the source tree).", no_args_is_help=True
)

ENCODER_KINDS = "ease | sasrec | als | bpr | text | popularity | hybrid"  # = ragrec.pipeline.TRAINERS (tested)


@retriever_app.command("train")
def train_cmd(
    dataset: Annotated[str, typer.Argument(help="Prepared dataset (cache name or folder), with a split.")],
    out: Annotated[Path, typer.Option(help="Folder to save the encoder to.")],
    encoder: Annotated[str, typer.Option(help=f"Encoder: {ENCODER_KINDS}.")] = "sasrec",
    config: Annotated[Optional[Path], typer.Option(help="YAML settings (a section per encoder kind, or flat).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a setting: key=value (repeatable).")] = [],  # noqa: B006
    parts: Annotated[str, typer.Option(help="hybrid: saved encoder folders to fuse, comma-separated.")] = "",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    checkpoint_dir: Annotated[
        Optional[Path], typer.Option(help="sasrec: save the best model here whenever validation improves.")
    ] = None,
) -> None:
    """Train (or embed) an encoder and save it; prints what it reached on validation. EASE, ALS and
    BPR choose their settings on validation unless --config / --set give them."""
    from ragrec.config import load_config
    from ragrec.data import load_prepared
    from ragrec.errors import RagrecError
    from ragrec.pipeline import TRAINERS

    trainer = TRAINERS.get(encoder)  # an unknown name: the error lists the registered ones
    data = load_prepared(dataset)
    if not data.has_split:
        raise RagrecError(f"dataset {dataset!r} has no split; prepare it with --split")
    summary: dict[str, object] = {"encoder": encoder, "dataset": data.name}
    if trainer.select is not None and config is None and not set_:  # nothing given: the best settings on validation
        with console.status(f"choosing {encoder}'s settings on validation..."):
            enc, choice = trainer.select(data)
        summary.update({k: v for k, v in choice.items() if k != "grid"})
    else:
        fixed = [f"{k}={v}" for k, v in trainer.fixed.items()]
        cfg = (
            load_config(trainer.config_model, config, [*fixed, *set_], section=trainer.section)
            if trainer.config_model
            else None
        )
        with console.status(f"training {encoder}..."):
            enc, report = trainer.fit(data, cfg, device=device, checkpoint_dir=checkpoint_dir,
                                      parts=[p.strip() for p in parts.split(",") if p.strip()])  # fmt: skip
        summary.update(report)
    enc.save(out)
    typer.echo(json.dumps({**summary, "saved": str(out)}, default=str))


@index_app.command("build")
def build_cmd(
    encoder_dir: Annotated[Path, typer.Argument(help="Saved encoder folder.")],
    dataset: Annotated[str, typer.Argument(help="Prepared dataset whose users' histories the retriever serves.")],
    out: Annotated[Path, typer.Option(help="Folder to save the retriever (encoder + index) to.")],
    factory: Annotated[str, typer.Option(help="FAISS factory string: Flat, HNSW32, IVF1024,PQ32, ...")] = "Flat",
    param: Annotated[list[str], typer.Option(help="Search parameter name=value, e.g. efSearch=128 (repeatable).")] = [],  # noqa: B006
) -> None:
    """Index every catalog item of an encoder and save a ready-to-serve retriever."""
    from ragrec.config import parse_overrides
    from ragrec.data import load_prepared
    from ragrec.retrieval import Retriever, load_encoder

    retriever = Retriever.build(load_encoder(encoder_dir), load_prepared(dataset), factory=factory,
                                search_params=parse_overrides(param))  # fmt: skip
    retriever.save(out)
    typer.echo(f"indexed {len(retriever.index)} items ({factory}) for {len(retriever.histories)} users -> {out}")


@retriever_app.command("query")
def query_cmd(
    retriever_dir: Annotated[Path, typer.Argument(help="Saved retriever folder (from `ragrec index build`).")],
    user: Annotated[list[str], typer.Option(help="User id (repeatable).")],
    k: Annotated[int, typer.Option(help="Candidates per user.")] = 10,
) -> None:
    """Print the candidates of some users as JSON lines."""
    from ragrec.retrieval import Retriever

    for res in Retriever.load(retriever_dir).retrieve(user, k=k):
        typer.echo(json.dumps({"user_id": res.user_id, "fallback": res.fallback,
                               "candidates": [vars(c) for c in res.candidates]}))  # fmt: skip


@eval_app.command("retriever")
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="Prepared dataset with a split.")],
    system: Annotated[
        list[str],
        typer.Option(
            help="NAME=ENCODER_DIR, or NAME=RANKS.csv: per-user target ranks from another library (columns "
            "user_id, rank; see docs/evaluation.md). Repeatable; the first is the reference."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Report path stem: writes .json, .md and _recall.png.")],
    split: Annotated[str, typer.Option(help="valid | test.")] = "test",
    mask_history: Annotated[
        bool, typer.Option(help="Exclude history items from the ranking (ragrec's convention).")
    ] = True,
    k: Annotated[int, typer.Option(help="Candidates for the candidate-recall column.")] = 20,
) -> None:
    """Full-ranking evaluation of saved encoders (and of ranks computed elsewhere), with paired
    bootstrap CIs against the first."""
    from ragrec.data import load_prepared
    from ragrec.errors import RagrecError
    from ragrec.eval.protocol import evaluate_encoder, external_ranks
    from ragrec.eval.report import compare, write_report
    from ragrec.retrieval import load_encoder

    data = load_prepared(dataset)
    results = []
    for spec in system:
        name, sep, path = spec.partition("=")
        if not sep:
            raise RagrecError(f"--system expects NAME=ENCODER_DIR or NAME=RANKS.csv, got {spec!r}")
        if path.lower().endswith(".csv"):
            if not mask_history:
                raise RagrecError("ranks from a CSV are history-masked; drop --no-mask-history")
            res = external_ranks(path, data, split, name)
        else:
            res = evaluate_encoder(
                load_encoder(path), data, split=split, system=name, mask_history=mask_history, progress=True
            )
        res.extra[f"candidate_recall@{k}"] = round(float((res.ranks <= k).mean()), 6)
        results.append(res)
    comparisons = [(f"{r.system} - {results[0].system}", compare(r, results[0])) for r in results[1:]]
    written = write_report(out, [r.row() for r in results], title=f"Retrieval on {data.name} ({split})",
                           results=results, comparisons=comparisons)  # fmt: skip
    for r in results:
        console.print(f"{r.system}: " + ", ".join(f"{k2} {v:.4f}" for k2, v in r.metrics().items()))
    console.print("wrote " + ", ".join(str(p) for p in written.values()))
