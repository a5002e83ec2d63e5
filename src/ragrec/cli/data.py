"""``ragrec data ...``: pull, prepare, inspect datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ragrec.data.loaders import FORMATS, load_raw
from ragrec.data.preprocess import PreprocessConfig
from ragrec.data.sources import SOURCES, cached_names, load_prepared, prepare, pull
from ragrec.data.split import SplitConfig
from ragrec.errors import RagrecError

app = typer.Typer(help="Pull, prepare and inspect interaction datasets.", no_args_is_help=True)
console = Console(stderr=True)

_P = PreprocessConfig.model_fields


def _split(spec: str) -> SplitConfig:
    try:
        return SplitConfig.parse(spec)
    except (ValueError, ValidationError) as e:
        raise RagrecError(f"--split: {e}") from None


@app.command("pull")
def pull_cmd(
    name: Annotated[str, typer.Argument(help=f"Dataset to fetch: {', '.join(SOURCES)}.")],
    source: Annotated[str, typer.Option(help="auto (download, else offline fallback) | url | offline.")] = "auto",
    force: Annotated[bool, typer.Option(help="Fetch and prepare again even if cached.")] = False,
    split: Annotated[str, typer.Option(help="loo | ratio:0.8,0.1,0.1 | file:PATH | none.")] = "loo",
) -> None:
    """Download (or take offline) a named dataset, verify it, prepare it and cache it."""
    with console.status(f"pulling {name}..."):
        report = pull(name, source=source, force=force, split=_split(split))
    if report.from_cache:
        console.print(f"{name}: already prepared at {report.path} (use --force to fetch again)")
        return
    if report.fallback_reason:
        console.print(f"[yellow]fallback[/]: {report.fallback_reason}; used {report.origin}")
    console.print(f"{name}: prepared from {report.origin} at {report.path}")


@app.command("prepare")
def prepare_cmd(
    format: Annotated[str, typer.Argument(help=f"Source format: {', '.join(FORMATS)}.")],
    path: Annotated[Optional[Path], typer.Argument(help="File or folder to read (tabular: optional).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Name to cache it under (default: from the files).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Write to this folder instead of the cache.")] = None,
    meta: Annotated[Optional[Path], typer.Option(help="amazon: item metadata file.")] = None,
    items: Annotated[Optional[Path], typer.Option(help="sequence: item title file.")] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="tabular: YAML column mapping.")] = None,
    scenario: Annotated[str, typer.Option(help="Scenario these interactions belong to.")] = "default",
    min_rating: Annotated[Optional[float], typer.Option(help=_P["min_rating"].description)] = None,
    dedup: Annotated[str, typer.Option(help=_P["dedup"].description)] = "first",
    k_core: Annotated[int, typer.Option(help="Users and items need at least this many interactions.")] = 0,
    user_core: Annotated[Optional[int], typer.Option(help=_P["user_core"].description)] = None,
    item_core: Annotated[Optional[int], typer.Option(help=_P["item_core"].description)] = None,
    split: Annotated[str, typer.Option(help="loo | ratio:0.8,0.1,0.1 | file:PATH | none.")] = "loo",
    describe_from_reviews: Annotated[
        bool,
        typer.Option(
            help="Items without a description get 'reviews mention: ...' from the training reviews "
            "(catalogs of ids, e.g. Amazon reviews without a meta file)."
        ),
    ] = False,  # fmt: skip
) -> None:
    """Read raw files in a published format, preprocess, split and save them."""
    try:
        config = PreprocessConfig(
            min_rating=min_rating,
            dedup=dedup,
            user_core=k_core if user_core is None else user_core,
            item_core=k_core if item_core is None else item_core,
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise RagrecError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    split_config = _split(split)
    options = {"meta": meta, "items": items, "mapping": mapping, "name": name, "scenario": scenario}
    with console.status(f"reading {path} as {format}..."):
        data = load_raw(format, path, **options)
    target = output if output is not None else (name or data.name)
    with console.status("preprocessing and splitting..."):
        data = prepare(data, preprocessing=config, split=split_config, save_as=target,
                       describe_from_reviews=describe_from_reviews)  # fmt: skip
    console.print(f"{data.name}: {len(data.interactions):,} interactions saved to {output or target}")
    if describe_from_reviews:
        console.print(f"{data.info.get('items_described_from_reviews', 0):,} items described from their reviews")
    elif (stats := data.stats()).items_with_title == 0 and stats.has_reviews:
        console.print("no item has a title: --describe-from-reviews gives prompts what reviewers say of each item")


@app.command("stats")
def stats_cmd(
    dataset: Annotated[str, typer.Argument(help="Prepared dataset: cache name or folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Counts of a prepared dataset: users, items, interactions, split sizes."""
    data = load_prepared(dataset)
    stats = data.stats().to_dict()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    table = Table(title=f"{data.name}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key, str(value))
    Console().print(table)


@app.command("list")
def list_cmd() -> None:
    """Datasets that can be pulled and datasets already prepared."""
    for name in SOURCES:
        spec = SOURCES.get(name)
        mark = "prepared" if name in cached_names() else ""
        typer.echo(f"{name:18} {mark:9} {spec.description}")
    for name in cached_names():
        if name not in SOURCES:
            typer.echo(f"{name:18} prepared")
