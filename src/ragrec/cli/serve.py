"""``ragrec serve``, ``ragrec retrain``, ``ragrec batch-recommend`` and ``ragrec gguf``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ragrec.cli.llm import Device, Quant, RecDir, _load
from ragrec.serve.settings import ServeSettings

console = Console(stderr=True)
_F = ServeSettings.model_fields
State = Annotated[
    Optional[Path], typer.Option(help="State folder: feedback database and retrained versions (default: PATH-state).")
]


def serve_cmd(
    path: RecDir,
    host: Annotated[str, typer.Option(help=_F["host"].description)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help=_F["port"].description)] = 8000,
    api_key: Annotated[
        Optional[str], typer.Option(envvar="RAGREC_API_KEY", help=f"{_F['api_key'].description} Also RAGREC_API_KEY.")
    ] = None,
    state: State = None,
    batching: Annotated[bool, typer.Option(help=_F["micro_batching"].description)] = True,
    batch_window_ms: Annotated[float, typer.Option(help=_F["batch_window_ms"].description)] = 10.0,
    max_batch: Annotated[int, typer.Option(help=_F["max_batch"].description)] = 16,
    reload_interval: Annotated[float, typer.Option(help=_F["reload_interval_s"].description)] = 5.0,
    timeout: Annotated[float, typer.Option(help=_F["request_timeout_s"].description)] = 120.0,
    log_user_text: Annotated[bool, typer.Option(help=_F["log_user_text"].description)] = False,
    quantization: Quant = None,
    device: Device = None,
) -> None:
    """Serve a saved recommender over HTTP (recommendations, explanations, OpenAI-compatible chat,
    feedback). Listens on 127.0.0.1 unless --host says otherwise."""
    import uvicorn

    from ragrec.serve import Deployment, create_app

    settings = ServeSettings(host=host, port=port, api_key=api_key, micro_batching=batching,
                             batch_window_ms=batch_window_ms, max_batch=max_batch, reload_interval_s=reload_interval,
                             request_timeout_s=timeout, log_user_text=log_user_text)  # fmt: skip
    deployment = Deployment(path, state)
    version = deployment.current()
    console.print(f"loading {version.name} ({version.path}); state in {deployment.state}")
    rec = _load(version.path, quantization, device)
    app = create_app(rec, settings, deployment=deployment)
    console.print(f"[dim]{app.state.ragrec.replay_note}[/]")
    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        console.print(f"[yellow]warning: listening on {host} without an API key[/]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def retrain_cmd(path: RecDir, state: State = None) -> None:
    """Rebuild the served recommender's retrievers from its data plus the stored feedback, write a
    new version and publish it; a running `ragrec serve` switches to it without dropping requests."""
    from ragrec.serve import Deployment, retrain

    version = retrain(Deployment(path, state), progress=True, log=lambda s: console.print(s))
    print(json.dumps({"version": version.name, "path": str(version.path),
                      "interactions_through": version.interactions_through,
                      "items_through": version.items_through}))  # fmt: skip


def batch_recommend_cmd(
    path: RecDir,
    users: Annotated[
        str, typer.Option(help="'all' (every known user) or a file: one user id per line, or a CSV with user_id.")
    ],
    out: Annotated[Path, typer.Option(help="Parquet file to write (atomically).")],
    scenario: Annotated[Optional[str], typer.Option(help="Scenario (default: the recommender's first).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user.")] = 10,
    engine: Annotated[str, typer.Option(help="local | ray (pip install 'ragrec[ray]').")] = "local",
    workers: Annotated[int, typer.Option(help="ray: actors, one model each.")] = 2,
    address: Annotated[Optional[str], typer.Option(help="ray: a cluster address (default: start Ray here).")] = None,
    chunk: Annotated[int, typer.Option(help="Users per recommend_batch call.")] = 32,
    threads: Annotated[int, typer.Option(help="Torch threads per worker.")] = 1,
    quantization: Quant = None,
    device: Device = None,
) -> None:
    """Recommend for many users and write Parquet (user_id, scenario, rank, item_id, score,
    retriever_score, fallback), in this process or on Ray."""
    from ragrec.batch import batch_recommend, read_users

    overrides = {k_: v for k_, v in {"quantization": quantization, "device": device}.items() if v}
    ids = "all" if users == "all" else read_users(users, path, scenario)  # "all": read with the recommender, once
    report = batch_recommend(path, ids, out, scenario=scenario, k=k, engine=engine, workers=workers,
                             address=address, chunk=chunk, threads=threads, **overrides)  # fmt: skip
    print(json.dumps({**vars(report), "users_per_second": round(report.users_per_second, 3)}))


def gguf_cmd(
    model: Annotated[str, typer.Argument(help="Model: built-in alias, folder, .gguf file or Hub id.")],
    quant: Annotated[str, typer.Option(help="F16 | Q8_0 | Q4_K_M | Q4_0 | IQ4_NL.")] = "Q8_0",
    adapter: Annotated[
        Optional[Path], typer.Option(help="Also convert this peft LoRA adapter folder (trained on MODEL).")
    ] = None,
) -> None:
    """Export MODEL (and a LoRA adapter) as GGUF files for the llama.cpp backend, with llama.cpp's own
    converters; prints the cached paths as JSON (the backend finds them by itself:
    `backend_options: {quant: Q4_K_M}`)."""
    from ragrec.inference.gguf import export_adapter, export_model

    out = {"model": str(export_model(model, quant))}
    if adapter is not None:
        out["adapter"] = str(export_adapter(adapter, model))
    print(json.dumps(out))
