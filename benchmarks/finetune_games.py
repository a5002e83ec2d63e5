"""A second scenario through the user-facing path: Amazon Video Games (LLMRank's processing,
../shared/data/amazon-videogames-llmrank) exported to two CSV files, then exactly

    ragrec scenario new games --interactions games.csv --items games_items.csv --item-noun game
    ragrec finetune --scenario games --add-to .bench/ft_ml100k/recommender

so that one recommender folder serves both scenarios (movies + games) from one base model with
two adapters. Then ``ragrec eval llm`` on sampled Games test users, with the adapter and without
(zero-shot), writes ``benchmarks/results/finetune_games{,_zeroshot}.{json,md}``.

    python benchmarks/finetune.py --stages train register   # the movies adapter first
    python benchmarks/finetune_games.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE.parent / ".bench"
SOURCE = HERE.parents[1] / "shared" / "data" / "amazon-videogames-llmrank" / "Games.test.inter"
TRAIN = ["examples=240", "lora_layers=12", "learning_rate=5e-4", "grad_accum=8", "eval_steps=10", "eval_users=40",
         "patience=2", "max_minutes=30"]  # fmt: skip


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ragrec(*args: str) -> None:
    _log("ragrec " + " ".join(args))
    subprocess.run([sys.executable, "-m", "ragrec", *args], check=True)


def export_csv(out: Path) -> tuple[Path, Path]:
    """Games sequences -> interactions CSV (user, item, position) + items CSV (item, title)."""
    import pandas as pd

    from ragrec import schema as S
    from ragrec.data import load_raw

    data = load_raw("recbole", SOURCE, name="games")
    inter = data.interactions_frame()
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user": inter[S.USER_ID], "item": inter[S.ITEM_ID], "timestamp": inter[S.TIMESTAMP]}).to_csv(
        out / "games.csv", index=False
    )
    items = [data.item(i) for i in data.item_ids()]
    pd.DataFrame({"item": [i.item_id for i in items], "title": [i.title for i in items]}).to_csv(
        out / "games_items.csv", index=False
    )
    _log(f"exported {len(inter):,} interactions and {len(items):,} items to {out}")
    return out / "games.csv", out / "games_items.csv"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="*", default=["csv", "new", "finetune", "eval"])
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--users", type=int, default=200, help="sampled Games test users evaluated")
    p.add_argument("--tune-users", type=int, default=100, help="validation users for the fusion weight")
    p.add_argument("--set", nargs="*", default=[], help="extra fine-tuning overrides key=value")
    args = p.parse_args(argv)
    csv_dir, root = args.work / "games_csv", args.work / "scenarios"
    rec_dir = args.work / "ft_ml100k" / "recommender"
    if "csv" in args.stages:
        export_csv(csv_dir)
    if "new" in args.stages:
        _ragrec("scenario", "new", "games", "--interactions", str(csv_dir / "games.csv"), "--items",
                str(csv_dir / "games_items.csv"), "--item-noun", "game", "--root", str(root), "--force")  # fmt: skip
    if "finetune" in args.stages:
        if not (rec_dir / "recommender.json").is_file():
            raise SystemExit(f"{rec_dir} missing: run benchmarks/finetune.py --stages train register first")
        sets = [a for s in TRAIN + args.set for a in ("--set", s)]
        _ragrec("finetune", "--scenario", "games", "--root", str(root), "--add-to", str(rec_dir), *sets)
    if "eval" in args.stages:
        common = ["--scenario", "games", "--users", str(args.users), "--tune-users", str(args.tune_users)]
        _ragrec("eval", "llm", str(rec_dir), "--out", str(RESULTS / "finetune_games"), *common)
        _ragrec("eval", "llm", str(rec_dir), "--out", str(RESULTS / "finetune_games_zeroshot"), "--no-adapter",
                *common)  # fmt: skip


if __name__ == "__main__":
    main()
