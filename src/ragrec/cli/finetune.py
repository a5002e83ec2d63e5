"""``ragrec scenario new NAME`` and ``ragrec finetune --scenario NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

scenario_app = typer.Typer(help="Create scenarios (catalog, prompts, fine-tuning config).", no_args_is_help=True)

Root = Annotated[
    Optional[Path], typer.Option(help="Folder holding scenario folders (default: $RAGREC_HOME/scenarios).")
]


def _folder(name: str, root: Path | None) -> Path:
    from ragrec import paths

    if root is None and Path(name).is_dir() and (Path(name) / "scenario.yaml").is_file():
        return Path(name)  # a scenario folder given directly
    return (root or paths.home() / "scenarios") / name


def _pairs(values: list[str], what: str) -> dict[str, str]:
    from ragrec.errors import RagrecError

    out = {}
    for v in values:
        key, sep, col = v.partition("=")
        if not sep or not key or not col:
            raise RagrecError(f"{what} expects field=COLUMN, got {v!r}")
        out[key.strip()] = col.strip()
    return out


@scenario_app.command("new")
def new_cmd(
    name: Annotated[str, typer.Argument(help="Scenario name (letters, digits, _ . -).")],
    interactions: Annotated[Path, typer.Option(help="CSV/TSV/Parquet/JSONL of interactions (user, item, ...).")],
    items: Annotated[Optional[Path], typer.Option(help="CSV/TSV/... of items (item id, title, ...).")] = None,
    item_noun: Annotated[str, typer.Option(help="What the catalog holds: movie, game, product...")] = "item",
    column: Annotated[list[str], typer.Option(help="Interaction column for a field: user_id=uid (repeatable).")] = [],  # noqa: B006
    item_column: Annotated[list[str], typer.Option(help="Item column for a field: title=name (repeatable).")] = [],  # noqa: B006
    datetime: Annotated[
        Optional[bool],
        typer.Option("--datetime/--unix", help="Timestamps are date/time text / unix seconds (default: guessed)."),
    ] = None,
    root: Root = None,
    force: Annotated[bool, typer.Option(help="Replace an existing scenario folder.")] = False,
) -> None:
    """Scaffold a scenario: data mapping (columns guessed from the headers), templates, config."""
    from ragrec.finetune.scenario import new_scenario

    folder = _folder(name, root)
    draft = new_scenario(name, folder, interactions=interactions, items=items, columns=_pairs(column, "--column"),
                         item_columns=_pairs(item_column, "--item-column"), item_noun=item_noun,
                         timestamp_format=None if datetime is None else ("datetime" if datetime else "unix"),
                         force=force)  # fmt: skip
    for line in draft.summary():
        typer.echo(line)
    typer.echo(f"created {folder}: edit {draft.path.name} (columns, split, fine-tuning) and templates/*.yaml, then run\n"
               f"  ragrec finetune --scenario {name}" + (f" --root {root}" if root else ""))  # fmt: skip


def finetune_cmd(
    scenario: Annotated[str, typer.Option(help="Scenario name (or its folder).")],
    root: Root = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML of fine-tuning settings (over scenario.yaml's).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Fine-tuning setting key=value (repeatable).")] = [],  # noqa: B006
    model: Annotated[Optional[str], typer.Option(help="Base LM instead of scenario.yaml's.")] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Recommender folder to write (default: <scenario>/recommender).")
    ] = None,
    add_to: Annotated[
        Optional[Path], typer.Option(help="Register into this saved recommender (keeps its scenarios).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint of an interrupted run.")] = False,
) -> None:
    """Prepare data, train the retriever, build examples, train the LoRA adapter with validation,
    and register a recommender that serves the scenario with its adapter."""
    from ragrec.config import load_config, merge_settings, parse_overrides
    from ragrec.finetune import FinetuneConfig
    from ragrec.finetune.scenario import run_scenario

    overrides = parse_overrides(set_)
    if config is not None:
        from_file = load_config(FinetuneConfig, config, section="finetune").model_dump(exclude_unset=True)
        overrides = merge_settings(from_file, overrides)
    run_scenario(_folder(scenario, root), overrides=overrides, model=model, out=out, add_to=add_to, resume=resume,
                 echo=typer.echo)  # fmt: skip
